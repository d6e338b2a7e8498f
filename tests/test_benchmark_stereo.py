"""experiments/benchmark_stereo + experiments/baselines: baselines on one world scene, the
masked scores, the row list, and the StereoCrafter-Zero runner against the public pipeline.
(The schedule padding it shares compiles with, ``stereo.pad_events`` / ``schedule_buckets``,
is tested in test_stereo_crafter_zero.py.)"""
import inspect

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from experiments import baselines as B
from experiments import benchmark_stereo as BS
from szero_jax.world import HELDOUT_SEED_START, make_scene


@pytest.fixture(scope="module")
def scene():
    # whole-pixel disparities: the warp of the left equals the true right on seen pixels
    return make_scene(HELDOUT_SEED_START, 48, 48, 2, integer_disparity=True)


def test_leave_blank_is_exact_outside_disocclusions(scene):
    right = B.leave_blank(scene.left, scene.disparity)
    _, holes, _ = B.warp_left(scene.left, scene.disparity)
    seen = ~scene.disoccluded
    assert holes.any() and np.array_equal(holes, scene.disoccluded)
    assert np.abs(right - scene.right)[seen].max() < 1e-6
    assert np.all(right[holes] == 0.0)


def test_stretch_takes_the_background_side():
    # one row: background d=1 everywhere except a near object (d=3) at columns 4..6
    w = 12
    d = np.ones((1, 1, w), np.float32)
    d[0, 0, 4:7] = 3.0
    left = np.zeros((1, 1, w, 3), np.float32)
    left[0, 0, :, 0] = np.arange(w) / w           # a ramp, so fills are identifiable
    warped, holes, wd = B.warp_left(left, d)
    out = B.stretch_fill(warped, holes, wd)
    cols = np.flatnonzero(holes[0, 0])
    assert cols.size >= 2                      # the disocclusion right of the object + edge
    for c in cols:
        lc = max(i for i in range(c) if not holes[0, 0, i]) if any(
            not holes[0, 0, i] for i in range(c)) else None
        rc = min((i for i in range(c + 1, w) if not holes[0, 0, i]), default=None)
        cands = [i for i in (lc, rc) if i is not None]
        want = min(cands, key=lambda i: wd[0, 0, i])   # smaller disparity = background
        assert out[0, 0, c, 0] == pytest.approx(warped[0, 0, want, 0])
        assert wd[0, 0, want] == pytest.approx(1.0)


def test_baselines_rank_on_a_world_scene(scene):
    scores = {n: B.score_view(f(scene.left, scene.disparity), scene.right, scene.disoccluded,
                              use_lpips=False) for n, f in B.BASELINES.items()}
    ident = B.score_view(scene.left, scene.right, scene.disoccluded, use_lpips=False)
    # filling beats leaving black, in the holes and overall
    for n in ("stretch", "telea"):
        assert scores[n]["hole_psnr"] > scores["leave_blank"]["hole_psnr"] + 5.0
        assert scores[n]["psnr"] > scores["leave_blank"]["psnr"] + 3.0
        assert scores[n]["psnr"] > ident["psnr"] + 3.0
    assert 0.0 < scores["stretch"]["hole_fraction"] < 0.3
    assert scores["stretch"]["hole_ssim"] > scores["leave_blank"]["hole_ssim"]


def test_score_view_perfect_and_masked():
    rng = np.random.default_rng(0)
    truth = rng.random((2, 32, 32, 3)).astype(np.float32)
    mask = np.zeros((2, 32, 32), bool)
    mask[:, 8:16, 8:16] = True
    pred = truth.copy()
    pred[mask] = 0.0
    s = B.score_view(pred, truth, mask)
    mse = np.mean(truth[mask] ** 2)
    assert s["hole_psnr"] == pytest.approx(10 * np.log10(1 / mse), rel=1e-4)
    assert s["lpips"] > 0 and s["hole_lpips"] == pytest.approx(s["lpips"], rel=1e-4)
    same = B.score_view(truth, truth, mask)
    assert same["ssim"] == pytest.approx(1.0) and same["hole_ssim"] == pytest.approx(1.0)
    assert same["lpips"] < 1e-6


def test_rows_and_scaled_configs():
    rows = BS.all_rows()
    names = [r.name for r in rows]
    assert len(names) == len(set(names)) == 35
    assert {"bg_fill", "bg_condition", "bg_both"} <= set(names)
    assert {f"K{k}_L{l}" for k in (6, 11, 21) for l in (5, 7, 9)} <= set(names)
    assert {f"K6_L7_N{n}" for n in (0, 2, 4, 6, 8)} <= set(names)
    assert len(BS.all_rows(quick=True)) == 27
    sel = BS.select_rows(rows, ["baselines", "K6_L5"], [])
    assert [r.name for r in sel] == ["identity", "leave_blank", "stretch", "telea", "K6_L5"]
    with pytest.raises(ValueError, match="unknown row"):
        BS.select_rows(rows, ["nope"], [])
    k21 = next(r for r in rows if r.name == "K21_L9")
    assert BS.stereo_config(k21, 49).restart_steps == 21
    c = BS.stereo_config(k21, 24)      # 25-step run: K, w and the stop step scale by 24/50
    assert (c.restart_steps, c.restart_rounds, c.warp_every, c.warp_stop_t) == (10, 9, 2, 7)
    from szero_jax.stereo import StereoCrafterZeroConfig
    released = next(r for r in rows if r.name == "released")
    assert BS.stereo_config(released, 49) == StereoCrafterZeroConfig.released()
    with pytest.raises(ValueError, match="50-step positions"):
        BS.stereo_config(released, 19)


def test_consistency_score_and_composite_rows():
    """lr_error: lowest for the true right view, then the left view's warp (bilinear
    resampling there and back blurs the texture), then right = left (no parallax)."""
    from szero_jax.pipelines.composite import composite_right
    scene = BS.world_scenes(1, 48, 64, 2)[0]
    warp = np.asarray(composite_right(scene.left, scene.disparity, scene.left).right)
    exact = BS._score(scene, warp, use_lpips=False)["lr_error"]
    flat = BS._score(scene, scene.left, use_lpips=False)["lr_error"]
    truth = BS._score(scene, scene.right, use_lpips=False)["lr_error"]
    assert truth < 0.5 * exact and exact < 0.5 * flat     # measured 0.0095, 0.024, 0.068
    assert set(BS.COMPOSITE_ROWS) <= {r.name for r in BS.all_rows()}


def test_resume_key(tmp_path):
    """--resume continues only a run with the same settings, and says which differ."""
    path = tmp_path / "r.json"
    assert BS.load_resumable(path, {"steps": 50}) is None
    key = {"protocol": "image", "steps": 50, "seed": 0}
    BS.write_json(path, {"run": key, "scenes": {"a": {}}})
    assert BS.load_resumable(path, key)["scenes"] == {"a": {}}
    with pytest.raises(ValueError, match="other settings .*steps"):
        BS.load_resumable(path, dict(key, steps=20))


def test_middlebury_scene_is_consistent():
    s = BS.middlebury_scene(64, 64, 2)
    assert s.left.shape == s.right.shape == (2, 64, 64, 3) and s.disparity.shape == (2, 64, 64)
    assert np.isfinite(s.disparity).all() and 2.0 < s.disparity.max() < 12.0
    warped = B.stretch(s.left, s.disparity)
    ident = B.score_view(s.left, s.right, use_lpips=False)
    score = B.score_view(warped, s.right, s.disoccluded, use_lpips=False)
    # the true disparity explains the true right view far better than no shift
    assert score["psnr"] > ident["psnr"] + 4.0 and score["ssim"] > ident["ssim"] + 0.3


# Runner vs pipeline (measured on CPU, 8 frames at 64x64, 5 steps): conditional-only, as both
# run at guidance 1: bit-identical, padded or not; the runner with full CFG (the
# unconditional half computed, uncond + 1 * (cond - uncond)) differs by rounding, 5.1e-6.
ATOL_SAME_PROGRAM = 1e-6
ATOL_FULL_CFG = 2e-5


@pytest.mark.slow
def test_runner_matches_the_public_pipeline():
    """The benchmark's StereoCrafter-Zero row (public stages, shared inversion, padded
    schedule) equals video_to_stereo_video given the same disparity (random tiny weights):
    the pipeline's disparity from a given map is handed to the runner."""
    from szero_jax.pipelines import random_video_models, video_to_stereo_video
    from szero_jax.pipelines.config import DepthConfig, SamplingConfig
    from szero_jax.stereo import StereoCrafterZeroConfig, build_events

    models = random_video_models(jax.random.PRNGKey(0), *BS.random_configs())
    s = make_scene(HELDOUT_SEED_START + 3, 64, 64, models.num_frames)
    cfg = StereoCrafterZeroConfig(restart_steps=1, restart_rounds=2, warp_every=1,
                                  warp_stop_t=1, refine_rounds=1)
    ref = video_to_stereo_video(models, s.left, s.caption,
                                sampling=SamplingConfig.inversion(steps=5, seed=0), stereo=cfg,
                                depth=DepthConfig(kind="disparity", blur_sigma=2.0),
                                depth_map=s.disparity)
    assert ref.disparity.max() > 2.0                 # a real shift, not the trivial case
    runner = BS.VideoRunner(models, 5, 0)
    assert runner.cond_only                          # guidance 1: as the pipeline does
    prep = runner.prepare(s.left, s.caption)
    ev = build_events(cfg, runner.plan_steps)
    e, k = int(ev.step.shape[0]), int(ev.window.shape[0])
    for cond_only, atol in ((True, ATOL_SAME_PROGRAM), (False, ATOL_FULL_CFG)):
        runner.cond_only = cond_only
        left, right, nfe = runner.szero(prep, ref.disparity, cfg, pad_to=(e + 2, k + 1))
        assert nfe == e
        np.testing.assert_allclose(left, ref.left, atol=atol)
        np.testing.assert_allclose(right, ref.right, atol=atol)


# ------------------------------------------------------------------ image protocol (tiny SD)
def test_image_rows_are_the_paper_ablations():
    """``sd`` is Tab. 1's full method (attention + SPSMD, no deblur); each ablation changes
    only the switches its name says (Tab. 2)."""
    from szero_jax.stereo import StereoDiffusionConfig
    rows = {r.name: r for r in BS.image_rows()}
    assert list(rows) == ["identity", "leave_blank", "stretch", "telea", "vae_ceiling", "sd",
                          "sd_plain", "sd_attn_none", "sd_no_spsmd", "sd_deblur", "sd_attn_bi",
                          "sd_spsmd_released", "sd_caption"]
    full = BS.sd_config(rows["sd"])
    assert full == StereoDiffusionConfig()
    assert (full.attention, full.spsmd, full.deblur) == ("uni", "paper", False)
    want = {"sd_plain": ("none", "off", False), "sd_attn_none": ("none", "paper", False),
            "sd_no_spsmd": ("uni", "off", False), "sd_deblur": ("uni", "paper", True),
            "sd_attn_bi": ("bi", "paper", False), "sd_spsmd_released": ("uni", "released", False),
            "sd_caption": ("uni", "paper", False)}
    for name, sw in want.items():
        c = BS.sd_config(rows[name])
        assert (c.attention, c.spsmd, c.deblur) == sw, name
        assert c.null_text == full.null_text            # one inversion serves every row
        assert rows[name].caption == (name == "sd_caption")   # ... of one prompt
    sel = BS.select_rows(BS.image_rows(), ["sd_ablations"], ["sd_attn_bi"])
    assert [r.name for r in sel] == ["sd_plain", "sd_attn_none", "sd_no_spsmd", "sd_deblur",
                                     "sd_spsmd_released", "sd_caption"]
    assert set(BS.IMAGE_COMPOSITE_ROWS) <= set(rows)


SD_SIZE, SD_STEPS = (48, 64), 3


@pytest.fixture(scope="module")
def sd_models():
    return BS.load_sd(None, random_weights=True)


def _exact_map(h, w, span):
    """A pixel map that the pipeline's own normalisation (1-99 percentile min-max x span)
    leaves unchanged: >= 10 % of the pixels at 0 and at ``span``, a ramp between."""
    n = np.clip(np.linspace(-0.2, 1.2, w, dtype=np.float32), 0.0, 1.0)
    return np.broadcast_to(n, (h, w)).copy(), span * np.broadcast_to(n, (h, w))


# Both tests below compile the tiny SD's null-text inversion (~1.5 min on the loaded CPU).
@pytest.mark.slow
def test_sd_runner_equals_image_to_stereo_image(sd_models):
    """The shared-inversion path gives image_to_stereo_image's views, and its disparity is
    the given pixel map: for a map the pipeline's normalisation maps onto itself, the
    pipeline's px disparity equals the map and both paths' latent maps agree exactly."""
    from szero_jax import tiny
    from szero_jax.pipelines import image as I, image_to_stereo_image
    from szero_jax.pipelines.config import DepthConfig, SamplingConfig
    from szero_jax.stereo import StereoDiffusionConfig
    h, w = SD_SIZE
    img = BS.world_scenes(1, h, w, 2)[0].left[0]
    rel, px = _exact_map(h, w, tiny.SD_MAX_DISPARITY * w)
    depth = DepthConfig.stereo_image(max_disparity=tiny.SD_MAX_DISPARITY)
    runner = BS.SDImageRunner(sd_models, SD_STEPS, 0, SD_SIZE)
    assert runner.sampling.guidance == 7.5 and runner.depth == depth
    hw = (h // sd_models.vae_factor, w // sd_models.vae_factor)
    own_px, own_lat = I._disparities(rel, depth, hw)
    np.testing.assert_allclose(own_px, px, atol=1e-5)
    np.testing.assert_allclose(runner.latent_disparity(px, hw), own_lat, atol=1e-6)
    # the method's own pair (image_to_stereo_image's right="latent" where it has the option)
    own = {"right": "latent"} if "right" in inspect.signature(
        image_to_stereo_image).parameters else {}
    prep = runner.prepare(img)
    for cfg in (StereoDiffusionConfig(), StereoDiffusionConfig(deblur=True, attention="bi")):
        ref = image_to_stereo_image(sd_models, img, rel, stereo=cfg, depth=depth,
                                    sampling=SamplingConfig.stereo_image(steps=SD_STEPS), **own)
        left, right, nfe = runner.stereo(prep, px, cfg)
        assert nfe == SD_STEPS
        np.testing.assert_allclose(left, ref.left, atol=1e-5)
        np.testing.assert_allclose(right, ref.right, atol=1e-5)
        assert np.abs(right - left).mean() > 1e-3           # a real shift, not the trivial case


def test_image_benchmark_baselines_on_frame_0(sd_models):
    """The image protocol without SD rows (no inversion to compile): frame 0 only, the
    baselines scored exactly as on that frame alone, the disparity record."""
    h, w = SD_SIZE
    scene = BS.world_scenes(1, h, w, 2)[0]
    rows = BS.select_rows(BS.image_rows(), ["baselines", "models"], ["sd"])
    res = BS.run_image_benchmark([scene], rows, sd_models=sd_models, steps=SD_STEPS,
                                 use_lpips=False, log=lambda m: None)
    per = res["scenes"][scene.name]
    assert list(per["rows"]) == ["identity", "leave_blank", "stretch", "telea", "vae_ceiling"]
    assert per["inversion"] == {}
    one = B.score_view(B.stretch(scene.left[:1], scene.disparity[:1]), scene.right[:1],
                       scene.disoccluded[:1], use_lpips=False)
    assert per["rows"]["stretch"]["psnr"] == pytest.approx(one["psnr"], abs=1e-6)
    clip = B.score_view(B.stretch(scene.left, scene.disparity), scene.right,
                        scene.disoccluded, use_lpips=False)
    assert abs(clip["psnr"] - one["psnr"]) > 1e-3              # frame 0, not the clip
    d, f = per["disparity"]["gt"], sd_models.vae_factor
    assert d["max_px"] == pytest.approx(float(scene.disparity[0].max()))
    assert 0.5 * d["max_px"] / f < d["latent_max_px"] <= d["max_px"] / f + 1e-6  # 1/f width
    assert d["pipeline_conversion_max_abs_diff_px"] > 1.0          # why the map bypasses it
    assert res["settings"]["guidance"] == 7.5 and res["settings"]["max_disparity"] == 0.16


@pytest.mark.slow
def test_image_benchmark_small_run(sd_models):
    """A 3-step image-protocol run (random tiny SD weights, one world scene, true disparity):
    every row's label, finite scores, one inversion."""
    h, w = SD_SIZE
    scene = BS.world_scenes(1, h, w, 2)[0]
    res = BS.run_image_benchmark([scene], BS.image_rows(), sd_models=sd_models,
                                 steps=SD_STEPS, use_lpips=False, log=lambda m: None)
    per = res["scenes"][scene.name]
    names = [r.name for r in BS.image_rows()]
    assert list(per["rows"]) == names[:6] + ["sd_composite"] + names[6:]
    for label, s in per["rows"].items():
        assert all(np.isfinite(s[k]) for k in ("psnr", "ssim", "hole_psnr", "lr_error")), label
    inv = per["inversion"]
    assert sorted(inv) == ["caption", "empty"] and inv["caption"]["prompt"] == scene.caption
    for v in inv.values():
        assert SD_STEPS <= v["adam_steps"] <= SD_STEPS * 10
        assert v["network_evaluations"] == v["adam_steps"] + 3 * SD_STEPS
    # the composite keeps the exact warp outside the holes: beats the SD view overall
    assert per["rows"]["sd_composite"]["psnr"] > per["rows"]["sd"]["psnr"]
    assert per["rows"]["sd_deblur"]["psnr"] != per["rows"]["sd"]["psnr"]
    assert res["summary"]["means"]["world"]["sd"]["nfe"] == SD_STEPS


def test_resume_reads_renamed_rows(tmp_path):
    """A JSON from before --protocol (row ``stereodiffusion``, no protocol key) resumes under
    today's names."""
    path = tmp_path / "old.json"
    BS.write_json(path, {"run": {"steps": 50, "rows": ["szero", "stereodiffusion"]},
                         "scenes": {"a": {"rows": {
                             "stereodiffusion": {"row": "stereodiffusion", "psnr": 1.0},
                             "stereodiffusion_composite@tiny": {"row": "stereodiffusion"},
                             "szero": {"row": "szero"}}}}})
    key = {"protocol": "video", "steps": 50, "rows": ["szero", "stereodiffusion_video_unet"]}
    old = BS.load_resumable(path, key)
    rows = old["scenes"]["a"]["rows"]
    assert sorted(rows) == ["stereodiffusion_video_unet",
                            "stereodiffusion_video_unet_composite@tiny", "szero"]
    assert rows["stereodiffusion_video_unet"] == {"row": "stereodiffusion_video_unet", "psnr": 1.0}
    with pytest.raises(ValueError, match="protocol"):
        BS.load_resumable(path, dict(key, protocol="image"))
