"""experiments/train_tiny.py: its config, training loop, data and conditioning (fast), and
end to end at a toy size: fine-tuning from the shipped family (slow)."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from szero_jax import checkpoints, tiny, world

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_depth_stage_fine_tunes_from_init_from(tmp_path):
    """Two steps of the depth stage from the shipped networks (--init_from) on 4 fresh 32x32
    clips: the saved UNet has the shipped shapes, moved by a small nonzero amount, and the
    report records the steps and a finite loss."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("vae", "image_encoder"):     # the frozen networks the depth stage loads
        shutil.copytree(checkpoints.TINY_DIR / name, out / name)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train_tiny", "--stage", "depth", "--steps", "2",
         "--num_clips", "4", "--latent_clips", "4", "--height", "32", "--width", "32",
         "--batch_size", "2", "--init_from", str(checkpoints.TINY_DIR),
         "--work_dir", str(tmp_path / "work"), "--output_dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shipped, _ = tiny.load_tiny_family(["depth_unet"])["depth_unet"]
    tuned, _ = checkpoints.load_params(out / "depth_unet", tiny.FAMILIES["depth_unet"])
    assert jax.tree.map(np.shape, tuned) == jax.tree.map(np.shape, shipped)
    delta = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(jax.tree.leaves(tuned), jax.tree.leaves(shipped)))
    assert 0.0 < delta < 0.05          # two AdamW steps in warmup: moved, but barely
    report = json.loads((tmp_path / "work" / "train_depth.json").read_text())
    assert report["steps"] == 2 and np.isfinite(report["final_loss"])
    assert (tmp_path / "work" / "clips_4_32x32x16.npz").is_file()


# ----------------------------------------------------------------------------- fast
def test_config_validate_names_the_bad_field(tmp_path):
    from experiments.train_tiny import TrainConfig
    assert TrainConfig().validate() == TrainConfig()
    bad = {"stage": "unet", "steps": 0, "batch_size": -1, "height": 20, "width": 100,
           "frames": 0, "num_clips": 0, "latent_clips": 500, "num_eval": 0, "log_every": 0,
           "save_every": 0, "seed": -1, "work_dir": "", "init_from": str(tmp_path / "nope")}
    for field, value in bad.items():
        with pytest.raises(ValueError, match=f"^{field}:"):
            TrainConfig(**{field: value}).validate()
    with pytest.raises(ValueError, match="^batch_size:"):     # distinct clips per CLIP batch
        TrainConfig(stage="clip", num_clips=8, latent_clips=8, batch_size=9).validate()
    TrainConfig(stage="depth", num_clips=8, latent_clips=8, batch_size=9).validate()
    cfg = TrainConfig(stage="video", steps=None, batch_size=None)
    assert cfg.stages == ("video",) and cfg.steps_for("video") == 1600
    assert cfg.batch_for("video") == 4 and TrainConfig().stages[-1] == "eval"


def test_fit_resumed_equals_uninterrupted(tmp_path):
    """A run stopped after its step-2 checkpoint and resumed == the same run uninterrupted
    (batches, keys and the schedule depend on the step alone; optimiser state restored)."""
    from experiments.train_tiny import TrainConfig, fit

    class Stop(Exception):
        pass

    def loss_fn(params, frozen, batch, key):
        noise = 0.01 * jax.random.normal(key, batch.shape)
        return jnp.mean((params["w"] - batch - noise) ** 2), {"w0": params["w"][0]}

    calls = []

    def batch_fn(rng, stop_at=None):
        calls.append(1)
        if len(calls) == stop_at:
            raise Stop
        return rng.standard_normal(4).astype(np.float32)

    cfg = lambda work, resume: TrainConfig(stage="clip", steps=5, work_dir=str(work),
                                           resume=resume, log_every=1, save_every=2)
    init = {"w": jnp.zeros(4)}
    straight, rep = fit(cfg(tmp_path / "a", False), "clip", init, loss_fn, batch_fn, None)
    calls.clear()
    with pytest.raises(Stop):                    # dies fetching step 4's batch
        fit(cfg(tmp_path / "b", False), "clip", init, loss_fn,
            lambda rng: batch_fn(rng, stop_at=4), None)
    for _ in range(300):                         # the async step-2 save finalises
        if (tmp_path / "b" / "state_clip" / "2").is_dir():
            break
        time.sleep(0.1)
    resumed, rep_b = fit(cfg(tmp_path / "b", True), "clip", init, loss_fn, batch_fn, None)
    np.testing.assert_array_equal(np.asarray(straight["w"]), np.asarray(resumed["w"]))
    assert rep_b["resumed_at"] == 2 and rep_b["history"] == rep["history"][2:]
    assert json.loads((tmp_path / "b" / "train_clip.json").read_text()) == rep_b
    assert float(np.abs(np.asarray(straight["w"])).max()) > 0   # it did train


def test_normalise_disparity_is_minmax_to_signed():
    from experiments.train_tiny import normalise_disparity
    d = np.random.default_rng(0).uniform(1, 9, (3, 4, 5, 6)).astype(np.float32)
    lo, hi = d.min((1, 2, 3), keepdims=True), d.max((1, 2, 3), keepdims=True)
    np.testing.assert_allclose(normalise_disparity(d), 2 * (d - lo) / (hi - lo) - 1, atol=2e-7)
    assert normalise_disparity(np.full((2, 3, 3), 4.0, np.float32)).max() == -1.0  # flat: no 0/0


def test_training_context_is_the_stages_context():
    """The video stage's conditioning (token batches, with dropping) gives the tokens of
    stages.context for the same prompt and first frame: conditional, and with both
    conditions dropped the unconditional half ("" and a zero image)."""
    from experiments.train_tiny import null_text, video_context
    from szero_jax.pipelines import stages
    from szero_jax.pipelines.bundles import load_video_models
    from szero_jax.pipelines.config import SamplingConfig
    models = load_video_models()
    scene = world.make_scene(world.HELDOUT_SEED_START + 1, 32, 48, 2)
    image01 = jnp.asarray(scene.left[:1])
    latent = jnp.zeros((1, 1, 8, 12, 4))
    ctx = stages.context(models, scene.caption, image01, latent,
                         stages.resolve(models, SamplingConfig()))
    wrap = lambda net: {"params": net.params}
    text_params = wrap(models.text_encoder)
    frozen = {"text": text_params, "vision": wrap(models.image_encoder),
              "null_text": null_text(text_params)}
    params = {"resampler": wrap(models.resampler)}
    tokens = jnp.asarray(tiny.tokenizer()([scene.caption]))
    signed = image01 * 2 - 1
    for drop, want in ((False, ctx.cond["text"]), (True, ctx.uncond["text"])):
        flag = jnp.array([drop])
        text, img = video_context(params, frozen, tokens, signed, flag, flag)
        np.testing.assert_allclose(np.asarray(jnp.concatenate([text, img], 1)),
                                   np.asarray(want), atol=1e-5)


def test_encode_frames_matches_the_vae():
    """Training latents = the VAE's posterior mean of each frame (in chunks of clips)."""
    from experiments.train_tiny import ENCODE_FRAMES, encode_frames, to_signed
    from szero_jax.models.vae import AutoencoderKL
    params, cfg = tiny.load_tiny_family(["vae"])["vae"]
    video = np.stack([np.round(world.make_scene(s, 32, 32, ENCODE_FRAMES // 2 + 4).left * 255)
                      .astype(np.uint8) for s in range(2)])       # 2 calls: chunking covered
    z = encode_frames(params, cfg, video)
    flat = to_signed(video.reshape(-1, 32, 32, 3))
    want = np.asarray(AutoencoderKL(cfg).apply(params, flat, method="encode")[0])
    assert z.shape == (2, ENCODE_FRAMES // 2 + 4, 8, 8, 4)
    np.testing.assert_allclose(z.reshape(want.shape), want, atol=2e-5)


def test_help_lists_shared_and_own_flags():
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "experiments.train_tiny", "--help"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text[-3000:]
    for name in ("steps", "seed", "output_dir", "height", "width", "frames", "stage",
                 "batch_size", "work_dir", "init_from"):
        assert f"--{name}:" in text or f"--[no]{name}:" in text, name
    assert str(checkpoints.TINY_DIR) in text          # this launcher's --output_dir default


def test_config_from_flags():
    from absl import flags
    from experiments.train_tiny import TrainConfig, config_from_flags
    fl = flags.FLAGS
    fl.unparse_flags()
    try:
        fl(["train_tiny", "--stage=depth", "--steps=7", "--height=32", "--resume",
            "--output_dir=/tmp/x"])
        cfg = config_from_flags()
    finally:
        fl.unparse_flags()
    assert cfg == TrainConfig(stage="depth", steps=7, height=32, resume=True, output_dir="/tmp/x")


# ----------------------------------------------------------------------------- VAE decoder
def _vae_tree_max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_vae_decoder_stage_needs_init_from():
    from experiments.train_tiny import TrainConfig
    with pytest.raises(ValueError, match="^init_from: the vae_decoder stage"):
        TrainConfig(stage="vae_decoder").validate()
    assert "vae_decoder" not in TrainConfig().stages          # not part of "all"
    with pytest.raises(ValueError, match="^decoder_channels:"):
        TrainConfig(stage="video", decoder_channels=(32, 64, 128)).validate()
    with pytest.raises(ValueError, match="^decoder_channels:"):
        TrainConfig(stage="vae_decoder", init_from=str(checkpoints.TINY_DIR),
                    decoder_channels=(32, 0, 128)).validate()


def test_wider_decoder_keeps_the_latent_interface():
    """decoder_block_out_channels widens the decoder only: the encoder's params (shapes and
    names) and the latent are those of the shipped VAE; decode maps the same latent to an
    image of the same size; a level count that would change the latent size is refused."""
    import dataclasses
    from experiments.train_tiny import split_vae_params
    from szero_jax.models.vae import AutoencoderKL
    params, cfg = tiny.load_tiny_family(["vae"])["vae"]
    wide = dataclasses.replace(cfg, decoder_block_out_channels=(32, 64, 128))
    x = jnp.zeros((1, 32, 48, 3))
    fresh = AutoencoderKL(wide).init(jax.random.PRNGKey(0), x)
    dec_w, enc_w = split_vae_params(fresh)
    dec_s, enc_s = split_vae_params(params)
    assert jax.tree.map(np.shape, enc_w) == jax.tree.map(np.shape, enc_s)
    n = lambda tree: sum(a.size for a in jax.tree.leaves(tree))
    assert n(dec_w) > 3 * n(dec_s)
    mixed = {"params": {**enc_s, **dec_w}}
    mean = AutoencoderKL(wide).apply(mixed, x, method="encode")[0]
    np.testing.assert_array_equal(np.asarray(mean),
                                  np.asarray(AutoencoderKL(cfg).apply(params, x, method="encode")[0]))
    assert AutoencoderKL(wide).apply(mixed, mean, method="decode").shape == x.shape
    with pytest.raises(ValueError, match="^decoder_block_out_channels:"):
        dataclasses.replace(cfg, decoder_block_out_channels=(32, 64))


@pytest.mark.slow
def test_vae_decoder_stage_keeps_the_encoder(tmp_path):
    """Three steps of --stage vae_decoder from the shipped family on 2 fresh 32x32 clips: the
    saved VAE's encoder side is bit-identical to the shipped one (so are its latents and its
    config, scaling_factor included), the decoder moved, and the held-out measure was logged
    at the start and at each checkpoint."""
    from experiments.train_tiny import TrainConfig, split_vae_params, train
    cfg = TrainConfig(stage="vae_decoder", steps=3, batch_size=2, num_clips=2, latent_clips=2,
                      height=32, width=32, num_eval=1, save_every=2,
                      init_from=str(checkpoints.TINY_DIR),
                      work_dir=str(tmp_path / "work"), output_dir=str(tmp_path / "out"))
    report = train(cfg)["vae_decoder"]
    shipped, shipped_cfg = checkpoints.load_params(checkpoints.TINY_DIR / "vae", tiny.FAMILIES["vae"])
    tuned, tuned_cfg = checkpoints.load_params(tmp_path / "out" / "vae", tiny.FAMILIES["vae"])
    assert tuned_cfg == shipped_cfg
    dec_t, enc_t = split_vae_params(tuned)
    dec_s, enc_s = split_vae_params(shipped)
    assert set(enc_s) == {"encoder", "quant_conv"} and "post_quant_conv" in dec_s
    for a, b in zip(jax.tree.leaves(enc_t), jax.tree.leaves(enc_s)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree.map(np.shape, dec_t) == jax.tree.map(np.shape, dec_s)
    assert 0.0 < _vae_tree_max_diff(dec_t, dec_s) < 0.05   # three AdamW steps in warmup
    assert report["steps"] == 3 and np.isfinite(report["final_loss"])
    rows = [json.loads(r) for r in
            (tmp_path / "work" / "heldout_vae_decoder.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2, 3]
    assert all(10 < r["vae_psnr_frames_db"] < 40 and 0 < r["vae_lpips_frames"] < 1 for r in rows)


@pytest.mark.slow
def test_vae_joint_stage_moves_the_encoder(tmp_path):
    """Three steps of --stage vae_joint from the shipped family: encoder and decoder both
    moved (a little: warmup), same architecture, scaling_factor re-measured, the held-out measure logged at 0, 2, 3 and equal to the shipped VAE's at 0."""
    from experiments import eval_tiny
    from experiments.train_tiny import TrainConfig, split_vae_params, train
    cfg = TrainConfig(stage="vae_joint", steps=3, batch_size=2, num_clips=2, latent_clips=2,
                      height=32, width=32, num_eval=1, save_every=2,
                      init_from=str(checkpoints.TINY_DIR),
                      work_dir=str(tmp_path / "work"), output_dir=str(tmp_path / "out"))
    assert train(cfg)["vae_joint"]["steps"] == 3
    shipped, shipped_cfg = checkpoints.load_params(checkpoints.TINY_DIR / "vae", tiny.FAMILIES["vae"])
    tuned, tuned_cfg = checkpoints.load_params(tmp_path / "out" / "vae", tiny.FAMILIES["vae"])
    assert dataclasses.replace(tuned_cfg, scaling_factor=1.0) == \
        dataclasses.replace(shipped_cfg, scaling_factor=1.0)
    # re-measured on the 2 training clips (1 / latent std): same order as the shipped one
    assert tuned_cfg.scaling_factor != shipped_cfg.scaling_factor
    assert 0.5 < tuned_cfg.scaling_factor / shipped_cfg.scaling_factor < 2
    for side_t, side_s in zip(split_vae_params(tuned), split_vae_params(shipped)):
        assert 0.0 < _vae_tree_max_diff(side_t, side_s) < 0.05
    rows = [json.loads(r) for r in
            (tmp_path / "work" / "heldout_vae_joint.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2, 3]
    from szero_jax.pipelines.bundles import load_video_models
    clips = eval_tiny.HeldOut.render(1, 32, 32, tiny.FRAMES)
    ref, _ = eval_tiny.eval_vae(load_video_models(), clips)
    np.testing.assert_allclose(rows[0]["vae_psnr_frames_db"], ref["vae_psnr_frames_db"], atol=1e-4)


def test_vae_decoder_loss_decreases_on_a_fixed_batch(tmp_path):
    """fit() with vae_decoder_loss on one fixed batch (posterior means of 4 world frames,
    32x32) lowers the L1 + LPIPS loss, and the PSNR rises."""
    from experiments.train_tiny import (TrainConfig, fit, split_vae_params, to_signed,
                                        vae_decoder_loss)
    from szero_jax.models.vae import AutoencoderKL
    params, cfg = tiny.load_tiny_family(["vae"])["vae"]
    model = AutoencoderKL(cfg)
    frames = np.stack([world.make_scene(s, 32, 32, 1).left[0] for s in range(4)])
    target = to_signed(np.round(frames * 255).astype(np.uint8))
    z = np.asarray(model.apply(params, target, method="encode")[0])
    batch = {"z": z, "target": target}
    decoder, encoder_side = split_vae_params(params)
    loss_fn = jax.jit(vae_decoder_loss(model))
    before = loss_fn(decoder, encoder_side, batch, None)
    config = TrainConfig(stage="vae_decoder", steps=12, work_dir=str(tmp_path),
                         init_from=str(checkpoints.TINY_DIR), log_every=4, save_every=12)
    trained, _ = fit(config, "vae_decoder", decoder, vae_decoder_loss(model), lambda rng: batch,
                     encoder_side)
    after = loss_fn(trained, encoder_side, batch, None)
    print("loss %.4f -> %.4f, psnr %.2f -> %.2f, lpips %.4f -> %.4f" % (
        before[0], after[0], before[1]["psnr"], after[1]["psnr"], before[1]["lpips"],
        after[1]["lpips"]))
    assert float(after[0]) < 0.9 * float(before[0])
    assert float(after[1]["psnr"]) > float(before[1]["psnr"]) + 0.5


def test_budgeted_steps_fits_the_rest_of_the_budget():
    from experiments.train_tiny import budgeted_steps
    # 10 steps/s, 20 s of a 120 s budget spent at step 50: 90 % of 100 s more = 900 steps
    assert budgeted_steps(50, 10_000, 10.0, 20.0, 120.0) == 950
    assert budgeted_steps(50, 500, 10.0, 20.0, 120.0) == 500       # --steps caps it
    assert budgeted_steps(50, 10_000, 10.0, 130.0, 120.0) == 50     # over: what is done


def test_fit_within_a_time_budget_shortens_the_schedule_and_resume_keeps_it(tmp_path):
    """A 3 s budget on a 100,000-step run: the schedule is fitted after the probe (the run
    ends with the rate at its floor, 5 % of the peak), the train state keeps the fitted
    length, and a resumed run with a larger budget does not refit it."""
    from experiments.train_tiny import LR, TrainConfig, fit, lr_schedule

    def loss_fn(params, frozen, batch, key):
        time.sleep(0.002)                        # traced once: not a per-step cost
        return jnp.mean((params["w"] - batch) ** 2), {}

    def batch_fn(rng):
        time.sleep(0.01)                         # ~100 steps/s at most
        return rng.standard_normal(4).astype(np.float32)

    cfg = TrainConfig(stage="clip", steps=100_000, work_dir=str(tmp_path), log_every=50,
                      save_every=100_000, time_budget_s=3.0)
    _, rep = fit(cfg, "clip", {"w": jnp.zeros(4)}, loss_fn, batch_fn, None)
    assert 21 < rep["steps"] < 1000 and rep["wall_s"] < 3.0 + 1.5
    assert rep["stopped_at"] in (None, *range(rep["steps"]))
    total = rep["steps"]
    assert float(lr_schedule("clip", total)(total)) == pytest.approx(0.05 * LR["clip"])
    if rep["stopped_at"] is None:                # finished inside the budget: resume = done
        again = dataclasses.replace(cfg, resume=True, time_budget_s=60.0)
        _, rep2 = fit(again, "clip", {"w": jnp.zeros(4)}, loss_fn, batch_fn, None)
        assert rep2["steps"] == total and rep2["resumed_at"] == total and rep2["history"] == []


def test_clip_cache_renders_the_same_with_workers(tmp_path):
    from experiments.train_tiny import clip_cache
    one = clip_cache(tmp_path / "a", 3, 32, 32, 1)
    two = clip_cache(tmp_path / "b", 3, 32, 32, 1, workers=2)
    for k in ("video", "disparity", "tokens"):
        np.testing.assert_array_equal(one[k], two[k])
    assert one["video"].shape == (3, 2, 32, 32, 3)
