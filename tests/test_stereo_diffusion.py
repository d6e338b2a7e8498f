import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from szero_jax.diffusion import ddim_sample, ddim_step, plan_at
from szero_jax.geometry import forward_warp
from szero_jax.stereo.stereodiffusion import (StereoDiffusionConfig,
                                              build_stereodiffusion_events, stereodiffusion_run)
from tests.helpers.toy_stereo import count_eqns, toy_denoiser, toy_params, toy_plan

SHAPE = (1, 4, 10, 4)    # B, H, W, C (image)
BASE = StereoDiffusionConfig(shift_fraction=0.2, spsmd_every=3, deblur=True)


@jax.jit
def _jitted(params, x_T, d, plan, key, events):
    return stereodiffusion_run(functools.partial(toy_denoiser, params), x_T, d, plan, key,
                               events, "epsilon")


def _inputs():
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    d = jnp.full(SHAPE[:-1], 1.0).at[:, 1:3, 3:6].set(3.0)
    return toy_params(k1), jax.random.normal(k2, SHAPE), d


def _run(config=BASE, disparity=None, steps=10, key=0):
    params, x_T, d = _inputs()
    d = d if disparity is None else disparity
    ev = build_stereodiffusion_events(config, steps)
    return _jitted(params, x_T, d, toy_plan(steps), jax.random.PRNGKey(key), ev)


def test_schedule_defaults_at_50_steps():
    ev = build_stereodiffusion_events(StereoDiffusionConfig(), 50)
    assert list(np.nonzero(ev.action == 1)[0]) == [10]            # 20 % of 50
    assert list(np.nonzero(ev.action == 2)[0]) == [20, 30, 40]    # released SPSMD steps
    assert ev.mode[9] == 0 and (ev.mode[10:] == 1).all()          # uni from step 10


def test_zero_disparity_right_equals_left():
    out = _run(disparity=jnp.zeros(SHAPE[:-1]))
    np.testing.assert_allclose(out.right, out.left, atol=1e-6)


def test_left_unchanged_without_attention_sharing_and_shift_is_eq3():
    params, x_T, d = _inputs()
    cfg = dataclasses.replace(BASE, attention="none", spsmd="off", deblur=False)
    out = _run(cfg)
    plan = toy_plan(10)
    ref, _ = ddim_sample(lambda x, t, p: toy_denoiser(params, x, t, p, None), x_T, plan, None,
                         "epsilon")
    np.testing.assert_allclose(out.left, ref, atol=1e-5)
    # the right view is the left trajectory shifted after step 2, then denoised alone
    xs, _ = ddim_sample(lambda x, t, p: toy_denoiser(params, x, t, p, None), x_T, plan, None,
                        "epsilon", return_trajectory=True)
    warped, holes = forward_warp(xs[2], d)
    right = jnp.where(holes[..., None], 0.0, warped)
    right, _ = ddim_sample(lambda x, t, p: toy_denoiser(params, x, t, p, None), right,
                           jax.tree.map(lambda a: a[3:], plan), None, "epsilon")
    np.testing.assert_allclose(out.right, right, atol=1e-5)
    np.testing.assert_array_equal(out.shifted, ~holes)


def test_paper_and_released_spsmd_differ_only_in_the_right_view():
    """Paper (Eq. 6-7, masked right input replaced) and released (masked output replaced)
    SPSMD give different right views and the same left view."""
    ev_paper = build_stereodiffusion_events(dataclasses.replace(BASE, spsmd="paper"), 10)
    ev_rel = build_stereodiffusion_events(dataclasses.replace(BASE, spsmd="released"), 10)
    params, x_T, d = _inputs()
    plan = toy_plan(10)
    a = _jitted(params, x_T, d, plan, jax.random.PRNGKey(0), ev_paper)
    b = _jitted(params, x_T, d, plan, jax.random.PRNGKey(0), ev_rel)
    assert float(jnp.abs(a.right - b.right).max()) > 1e-4
    np.testing.assert_array_equal(a.left, b.left)


def test_same_seed_bit_identical():
    a, b = _run(), _run()
    np.testing.assert_array_equal(a.right, b.right)
    np.testing.assert_array_equal(a.left, b.left)


@pytest.mark.parametrize("change", [
    dict(spsmd="off"), dict(spsmd="released"), dict(deblur=False),
    dict(attention="none"), dict(attention="bi"), dict(shift_fraction=0.4),
    dict(attention_start=6),
])
def test_each_switch_changes_the_output(change):
    base, other = _run(), _run(dataclasses.replace(BASE, **change))
    assert float(jnp.abs(other.right - base.right).max()) > 1e-4, change


def test_program_does_not_grow_with_steps():
    params, x_T, d = _inputs()
    fn = functools.partial(toy_denoiser, params)

    def eqns(steps, cfg):
        ev = build_stereodiffusion_events(cfg, steps)
        plan = toy_plan(steps)
        return count_eqns(jax.make_jaxpr(lambda x: stereodiffusion_run(
            fn, x, d, plan, jax.random.PRNGKey(0), ev, "epsilon"))(x_T).jaxpr)

    assert eqns(10, BASE) == eqns(50, StereoDiffusionConfig())


def test_bad_config_raises():
    with pytest.raises(ValueError, match="spsmd"):
        build_stereodiffusion_events(StereoDiffusionConfig(spsmd="sometimes"), 10)
    with pytest.raises(ValueError, match="attention"):
        build_stereodiffusion_events(StereoDiffusionConfig(attention="swap"), 10)


# ---------------------------------------------------------------- image_to_stereo_image's right view
def _photo_and_depth():
    from tests.helpers.tiny_models import SIZE
    photo = np.random.RandomState(3).rand(SIZE, SIZE, 3).astype(np.float32)
    depth = np.ones((SIZE, SIZE), np.float32)
    depth[8:24, 12:22] = 3.0          # a near box ("disparity": larger is nearer)
    return photo, depth


def test_image_to_stereo_image_rejects_a_bad_right_mode_before_work():
    from szero_jax.pipelines import image_to_stereo_image
    photo, depth = _photo_and_depth()
    with pytest.raises(ValueError, match=r"right: expected one of \('composite', 'latent'\)"):
        image_to_stereo_image(object(), photo, depth, right="warp")


@pytest.mark.slow
def test_image_to_stereo_image_composite_keeps_the_photo_and_the_warp():
    """right="composite" (default): left is the photo bit for bit; the right view is the
    photo's forward warp exactly wherever the fill weight is 0 and the method's right view
    (the "latent" output) where it is 1. right="latent": the null-text reconstruction."""
    from szero_jax.metrics import psnr
    from szero_jax.pipelines import image_to_stereo_image
    from szero_jax.pipelines.composite import hole_alpha
    from szero_jax.pipelines.config import DepthConfig, SamplingConfig
    from szero_jax.stereo import NullTextConfig
    from tests.helpers.tiny_models import sd_models
    photo, depth = _photo_and_depth()
    kw = dict(sampling=SamplingConfig.stereo_image(steps=3),
              depth=DepthConfig.stereo_image(max_disparity=0.16),
              stereo=StereoDiffusionConfig(null_text=NullTextConfig(inner_steps=2)))
    comp = image_to_stereo_image(sd_models(), photo, depth, **kw)
    lat = image_to_stereo_image(sd_models(), photo, depth, right="latent", **kw)
    assert comp.settings["right"] == "composite" and lat.settings["right"] == "latent"
    assert comp.left.dtype == np.float32 and np.array_equal(comp.left, photo)
    assert float(psnr(lat.left, photo)) < 30.0        # the latent round trip changes it
    np.testing.assert_array_equal(comp.disparity, lat.disparity)
    assert comp.disparity.max() == pytest.approx(0.16 * photo.shape[1], rel=1e-5)
    warped, holes = forward_warp(jnp.asarray(photo)[None], jnp.asarray(comp.disparity)[None])
    warped, holes = np.asarray(warped[0]), np.asarray(holes[0])
    np.testing.assert_array_equal(comp.holes, holes)
    np.testing.assert_array_equal(lat.holes, holes)
    alpha = np.asarray(hole_alpha(holes, 2, 2))
    far, inside = alpha == 0.0, alpha == 1.0
    assert holes.any() and far.mean() > 0.5 and inside.sum() >= holes.sum()
    np.testing.assert_array_equal(comp.right[far], warped[far])
    np.testing.assert_allclose(comp.right[inside], lat.right[inside], atol=1e-6)
    assert "composite" in comp.timings and "composite" not in lat.timings
