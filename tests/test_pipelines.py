"""Pipelines on tiny random bundles: shapes, invariants, input validation, loaders."""
import dataclasses

import jax
import numpy as np
import pytest

from szero_jax.pipelines import (VideoModels, depth_to_stereo_image, image_to_stereo_image,
                                 image_to_stereo_video, load_sd_models, load_video_models,
                                 text_to_stereo_image, video_to_stereo_video)
from szero_jax.pipelines import stages
from szero_jax.pipelines.config import DepthConfig, SamplingConfig
from szero_jax.stereo import StereoCrafterZeroConfig, StereoDiffusionConfig
from tests.helpers.tiny_models import FRAMES, SIZE, save_video_bundle, sd_models, video_models

STEPS = 4
SAMPLING = SamplingConfig(steps=STEPS)
NO_BLUR = DepthConfig(blur_sigma=0.0)
CFG = StereoCrafterZeroConfig(restart_steps=1, restart_rounds=2, warp_every=2, warp_stop_t=0,
                              refine_rounds=1)
IMAGE = np.random.RandomState(0).rand(SIZE, SIZE, 3).astype(np.float32)
PROMPT = "a small red square"
# The left and right rows go through the networks as one batch: bitwise equal on this
# machine, but CI's CPU gave 5e-6 (XLA:CPU's kernels round a batch's rows differently
# at tile boundaries); a disparity leak is > 1e-3 (the ramp runs).
ROW_ROUNDING = 1e-4


def _ramp_depth():
    """[T, H, W] depth: far background, a near block (nonzero disparity, occlusion edges)."""
    d = np.full((FRAMES, SIZE, SIZE), 4.0, np.float32)
    d[:, 8:24, 10:22] = 1.0
    return d


def _run(depth_map, seed=0, stereo=CFG, **kw):
    return image_to_stereo_video(video_models(), IMAGE, PROMPT,
                                 sampling=SamplingConfig(steps=STEPS, seed=seed), depth=NO_BLUR,
                                 stereo=stereo, depth_map=depth_map, **kw)


@pytest.fixture(scope="module")
def runs():
    """One compiled program set, reused: zero disparity, a depth map, the same seed again."""
    log = []
    zero = _run(np.ones((FRAMES, SIZE, SIZE), np.float32))
    ramp = _run(_ramp_depth(), callback=lambda *a: log.append(a))
    again = _run(_ramp_depth())
    return zero, ramp, again, log


def test_image_to_stereo_video_shapes_and_progress(runs):
    _, ramp, _, log = runs
    assert ramp.left.shape == ramp.right.shape == (FRAMES, SIZE, SIZE, 3)
    assert ramp.disparity.shape == ramp.holes.shape == ramp.depth.shape == (FRAMES, SIZE, SIZE)
    assert 0.0 <= ramp.left.min() and ramp.right.max() <= 1.0
    # near block at 8 % of the width, far plane at zero
    np.testing.assert_allclose(ramp.disparity.max(), 0.08 * SIZE, rtol=1e-5)
    assert ramp.disparity.min() == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < ramp.holes.mean() < 0.2
    assert {"conditioning", "left", "decode_left", "depth", "stereo", "decode"} <= set(ramp.timings)
    left_ticks = [d for s, d, _ in log if s == "left"]
    assert left_ticks == list(range(STEPS + 1))          # start + one per step
    stereo = [(d, t) for s, d, t in log if s == "stereo"]
    assert stereo[-1][0] == stereo[-1][1] > STEPS
    # .settings: the configs as resolved (None fields filled from the checkpoint)
    m, got = video_models(), ramp.settings
    assert got["sampling"] == SamplingConfig(steps=STEPS, guidance=m.config.guidance,
                                             fs=m.unet.config.default_fs)
    assert got["depth"] == DepthConfig(blur_sigma=0.0, max_disparity=m.config.max_disparity)
    assert got["stereo"] == CFG


def test_zero_disparity_right_equals_left(runs):
    zero, ramp, _, _ = runs
    assert not zero.holes.any() and np.all(zero.disparity == 0)
    np.testing.assert_allclose(zero.right, zero.left, atol=ROW_ROUNDING)
    assert np.abs(ramp.right - ramp.left).mean() > 1e-3


def test_left_view_independent_of_disparity_and_seed_deterministic(runs):
    zero, ramp, again, _ = runs
    # uni_query cross-view leaves the left rows alone: the left view is the plain sample
    np.testing.assert_allclose(ramp.left, zero.left, atol=1e-5)
    np.testing.assert_array_equal(ramp.right, again.right)


def test_right_condition_warped_vs_released(runs):
    """The right view's image condition: "warped" (default) moves the first-frame latent with
    the first frame's disparity; "left" (released) shares the left's. Only the right view
    changes."""
    import jax.numpy as jnp
    from szero_jax.geometry import forward_warp
    _, ramp, _, _ = runs
    released = _run(_ramp_depth(), stereo=dataclasses.replace(CFG, right_condition="left"))
    np.testing.assert_allclose(released.left, ramp.left, atol=1e-6)
    assert np.abs(released.right - ramp.right).mean() > 1e-3

    z = jnp.asarray(np.random.RandomState(1).randn(1, FRAMES, 6, 8, 4), jnp.float32)
    d = np.zeros((1, FRAMES, 6, 8), np.float32)
    d[:, 0, :, 4:] = 2.0                     # frame 0 decides; later frames' values are ignored
    d[:, 1:] = 5.0
    ctx = stages.Context({"concat": z}, {"concat": z}, {"concat": -z}, jnp.int32(1))
    left = stages.with_right_condition(ctx, jnp.asarray(d),
                                       dataclasses.replace(CFG, right_condition="left"))
    assert left.right == {} and left.cond is ctx.cond and left.uncond is ctx.uncond
    warped_ctx = stages.with_right_condition(ctx, jnp.asarray(d), CFG)
    assert set(warped_ctx.right) == {"concat"} and warped_ctx.cond is ctx.cond
    got = np.asarray(warped_ctx.right["concat"])
    warped, holes = forward_warp(z, jnp.broadcast_to(jnp.asarray(d[:, :1]), d.shape))
    want = np.where(np.asarray(holes)[..., None], np.asarray(z), np.asarray(warped))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[0, -1, :, 2:6], np.asarray(z)[0, -1, :, 4:8])  # moved by 2
    assert np.asarray(holes)[0, :, :, 6:].all() and not np.asarray(holes)[0, :, :, :6].any()
    # holes stretched from their far side: here the frame edge, so column 5's values
    bg = stages.with_right_condition(
        ctx, jnp.asarray(d), dataclasses.replace(CFG, right_condition="warped_background"))
    got = np.asarray(bg.right["concat"])
    np.testing.assert_array_equal(got[..., :6, :], want[..., :6, :])
    np.testing.assert_array_equal(got[..., 6:, :], np.repeat(want[..., 5:6, :], 2, axis=-2))


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompt="  "), "prompt"),
    (dict(image=np.zeros((SIZE, SIZE))), "image"),
    (dict(image=IMAGE * 255), r"\[0, 1\]"),
    (dict(image=IMAGE.astype(np.float16)[..., :2]), "image"),
    (dict(image=np.zeros((SIZE, SIZE, 3), np.uint8)), "dtype"),
    (dict(image=np.zeros((SIZE + 4, SIZE, 3), np.float32),
          depth_map=np.ones((FRAMES, SIZE + 4, SIZE))), "multiples"),
    (dict(depth_map=np.full((FRAMES, SIZE, SIZE), np.nan)), "NaN"),
    (dict(depth_map=np.ones((FRAMES, SIZE, SIZE // 2))), "depth_map: expected shape"),
    (dict(depth_map=np.ones((FRAMES + 1, SIZE, SIZE))), r"depth_map: expected shape \(2, 32"),
    (dict(depth=DepthConfig(max_disparity=2.0)), "max_disparity"),
    (dict(sampling=SamplingConfig(steps=0)), r"steps: expected an int in \[1, inf\]"),
    (dict(depth=DepthConfig(dissolve_step=60)), "dissolve_step"),
    (dict(depth=DepthConfig(kind="inverse")), "kind: expected one of"),
    (dict(depth=DepthConfig(source="model")), "depth_map: passed, but DepthConfig.source"),
    (dict(depth=np.ones((FRAMES, SIZE, SIZE))), "depth: expected a DepthConfig"),
    (dict(sampling="fast"), "sampling: expected a SamplingConfig"),
    (dict(stereo=dataclasses.replace(CFG, restart_steps=STEPS + 1)), "restart_steps"),
    (dict(stereo="paper"), "stereo"),
    (dict(stereo=dataclasses.replace(CFG, right_condition="right")), "right_condition"),
])
def test_image_to_stereo_video_rejects_bad_input(kwargs, match):
    args = dict(image=IMAGE, prompt=PROMPT, depth_map=np.ones((FRAMES, SIZE, SIZE)))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        image_to_stereo_video(video_models(), args.pop("image"), args.pop("prompt"),
                              **{"stereo": CFG, "sampling": SAMPLING, **args})


def test_missing_depth_model_needs_a_depth_map():
    with pytest.raises(ValueError, match="no depth network"):
        image_to_stereo_video(video_models(depth=False), IMAGE, PROMPT, sampling=SAMPLING)
    with pytest.raises(ValueError, match="depth_map: DepthConfig.source is 'given'"):
        image_to_stereo_video(video_models(), IMAGE, PROMPT, sampling=SAMPLING,
                              depth=DepthConfig(source="given"))
    with pytest.raises(ValueError, match="models"):
        image_to_stereo_video(object(), IMAGE, PROMPT)


def test_video_to_stereo_video_rejects_bad_input():
    vid = np.zeros((FRAMES + 1, SIZE, SIZE, 3), np.float32)
    with pytest.raises(ValueError, match="frames"):
        video_to_stereo_video(video_models(), vid, PROMPT,
                              depth_map=np.ones((FRAMES + 1, SIZE, SIZE)))
    with pytest.raises(ValueError, match=r"start_step: expected an int in \[0, 1\]"):
        video_to_stereo_video(video_models(), vid[:FRAMES], PROMPT,
                              sampling=SamplingConfig.inversion(steps=3, start_step=2))


def test_sd_pipelines_reject_bad_input():
    m4, d = sd_models(), np.ones((SIZE, SIZE), np.float32)
    size = (SIZE, SIZE)
    with pytest.raises(ValueError, match="depth_map: pass a depth map"):
        text_to_stereo_image(m4, PROMPT, size=size)
    with pytest.raises(ValueError, match="prompt"):
        text_to_stereo_image(m4, "", size=size, depth_map=d)
    with pytest.raises(ValueError, match="multiples"):
        text_to_stereo_image(m4, PROMPT, size=(SIZE + 2, SIZE), depth_map=d)
    with pytest.raises(ValueError, match="size: expected"):
        text_to_stereo_image(m4, PROMPT, size=SIZE, depth_map=d)
    with pytest.raises(ValueError, match="sampling: StereoDiffusion samples deterministically"):
        text_to_stereo_image(m4, PROMPT, size=size, depth_map=d, sampling=SamplingConfig())
    with pytest.raises(ValueError, match="depth.max_disparity"):
        text_to_stereo_image(m4, PROMPT, size=size, depth_map=d, depth=DepthConfig())
    with pytest.raises(ValueError, match="stereo: expected a StereoDiffusionConfig"):
        text_to_stereo_image(m4, PROMPT, size=size, depth_map=d, stereo=CFG)
    with pytest.raises(ValueError, match="5 input channels"):
        depth_to_stereo_image(m4, d, PROMPT)
    with pytest.raises(ValueError, match="NaN"):
        image_to_stereo_image(m4, IMAGE, np.full((SIZE, SIZE), np.inf))
    with pytest.raises(ValueError, match="depth_map: expected shape"):
        image_to_stereo_image(m4, IMAGE, np.ones((SIZE, SIZE + 8)))
    with pytest.raises(ValueError, match="null_text"):
        image_to_stereo_image(m4, IMAGE, d, stereo=StereoDiffusionConfig(null_text=None))
    with pytest.raises(ValueError, match="models"):
        text_to_stereo_image(video_models(), PROMPT, depth_map=d)


def test_load_video_models_round_trip(tmp_path):
    m = video_models()
    load = load_video_models(save_video_bundle(m, tmp_path / "ck"))
    assert isinstance(load, VideoModels) and load.config == m.config
    assert load.depth is not None and load.depth.unet.config == m.depth.unet.config
    for a, b in zip(jax.tree.leaves(m.unet.params), jax.tree.leaves(load.unet.params)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(load.tokenizer([PROMPT]), m.tokenizer([PROMPT]))


def test_loaders_report_missing_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="no directory"):
        load_video_models(tmp_path / "nothing")
    (tmp_path / "vae").mkdir()
    with pytest.raises(FileNotFoundError, match="lacks"):
        load_video_models(tmp_path)
    with pytest.raises(FileNotFoundError, match="lacks"):
        load_sd_models(tmp_path)


@pytest.mark.slow
def test_image_to_stereo_video_with_the_depth_model():
    res = image_to_stereo_video(video_models(), IMAGE, PROMPT, sampling=SAMPLING, stereo=CFG,
                                depth=DepthConfig(steps=2, dissolve_step=20))
    assert res.depth.shape == (FRAMES, SIZE, SIZE) and np.all(np.isfinite(res.depth))
    assert 0.0 <= res.depth.min() and res.depth.max() <= 1.0 + 1e-6
    np.testing.assert_allclose(res.disparity.max(), 0.08 * SIZE, rtol=1e-4)
    assert res.timings["depth"] > 0


@pytest.mark.slow
def test_video_to_stereo_video_reconstructs_the_input():
    from szero_jax.metrics import psnr
    m = video_models()
    rs = np.random.RandomState(3)
    base = np.kron(rs.rand(FRAMES, 4, 4, 3), np.ones((1, 8, 8, 1))).astype(np.float32)
    roundtrip = np.asarray(stages.decode(m, stages.encode(m, base[None])))[0]
    flat = np.ones((FRAMES, SIZE, SIZE))
    zero = video_to_stereo_video(m, base, PROMPT, sampling=SamplingConfig.inversion(steps=8),
                                 stereo=CFG, depth_map=flat)
    np.testing.assert_allclose(zero.right, zero.left, atol=1e-5)
    late = video_to_stereo_video(m, base, PROMPT,
                                 sampling=SamplingConfig.inversion(steps=8, start_step=4),
                                 stereo=CFG, depth_map=flat)
    # the left view is the VAE round trip of the input up to DDIM inversion's discretisation
    # error, which shrinks when less of the trajectory is inverted (random UNet: 18 / 21 dB;
    # 25 steps from step 1: 25 dB, from step 10: 29 dB)
    full = np.asarray(psnr(zero.left, roundtrip))
    part = np.asarray(psnr(late.left, roundtrip))
    assert np.all(full > 15.0) and np.all(part > full + 1.0)


@pytest.mark.slow
def test_sd_pipelines_shapes_and_zero_disparity():
    from szero_jax.stereo import NullTextConfig
    m4, m5 = sd_models(), sd_models(5)
    flat, ramp = np.ones((SIZE, SIZE), np.float32), np.tile(np.linspace(1, 2, SIZE), (SIZE, 1))
    size = (SIZE, SIZE)
    zero = text_to_stereo_image(m4, PROMPT, size=size, depth_map=flat,
                                sampling=SamplingConfig.stereo_image(steps=5))
    np.testing.assert_allclose(zero.right, zero.left, atol=ROW_ROUNDING)
    seen = []
    shifted = text_to_stereo_image(m4, PROMPT, size=size,
                                   sampling=SamplingConfig.stereo_image(steps=5),
                                   depth_map=lambda im: seen.append(im.shape) or ramp)
    assert seen == [(SIZE, SIZE, 3)] and shifted.left.shape == (SIZE, SIZE, 3)
    assert np.abs(shifted.right - shifted.left).mean() > 1e-3 and shifted.holes.any()
    assert shifted.settings["sampling"].guidance == 9.0      # the text mode's scale
    short_inversion = StereoDiffusionConfig(null_text=NullTextConfig(inner_steps=2))
    inv = image_to_stereo_image(m4, IMAGE, flat, sampling=SamplingConfig.stereo_image(steps=3),
                                stereo=short_inversion)
    np.testing.assert_allclose(inv.right, inv.left, atol=1e-5)
    dep = depth_to_stereo_image(m5, ramp, PROMPT, sampling=SamplingConfig.stereo_image(steps=3))
    assert dep.right.shape == (SIZE, SIZE, 3) and dep.disparity.max() == pytest.approx(0.08 * SIZE)
