import jax
import jax.numpy as jnp
import numpy as np
import pytest

from szero_jax.diffusion import (make_ddim_plan, make_euler_plan, predict_x0_eps,
                                 stable_diffusion_schedule)
from szero_jax.stereo.dissolve import (blur_depth, dissolve_depth, propagate_disparity,
                                      released_disparity)


def test_dissolve_ddim_is_eq5():
    plan = make_ddim_plan(stable_diffusion_schedule(), 50, "leading", steps_offset=1)
    latent = jax.random.normal(jax.random.PRNGKey(0), (1, 2, 4, 4, 4))
    eps = lambda x, t: 0.5 * x + 0.01 * t.reshape(-1, 1, 1, 1, 1)
    out = dissolve_depth(eps, latent, plan, 40, "epsilon")
    ab = float(plan.alpha_bar[10])                    # index 50 - 40
    t = int(plan.timesteps[10])
    ref = latent / np.sqrt(ab) - np.sqrt(1 / ab - 1) * (0.5 * latent + 0.01 * t)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_dissolve_euler_sees_the_scaled_latent_and_its_timestep():
    plan = make_euler_plan(num_steps=50)
    latent = jnp.ones((1, 1, 2, 2, 4))
    seen = {}

    def v_model(x, t):
        seen["x"], seen["t"] = x, t
        return jnp.zeros_like(x)

    out = dissolve_depth(v_model, latent, plan, 20)
    s = float(plan.sigma[30])
    np.testing.assert_allclose(seen["x"], latent / np.sqrt(s ** 2 + 1), rtol=1e-6)
    np.testing.assert_allclose(seen["t"], 0.25 * np.log(s), rtol=1e-5)
    np.testing.assert_allclose(out, latent / (s ** 2 + 1), rtol=1e-5)   # v = 0: c_skip x
    # stronger dissolve = noisier level = more shrinkage toward the mean (v = 0 toy)
    assert float(dissolve_depth(v_model, latent, plan, 40).mean()) < float(out.mean())


def test_blur_removes_high_frequencies_and_keeps_constants():
    x = jnp.tile(jnp.array([0.0, 1.0]), 8)[None, None, None, :].repeat(6, axis=2)  # [1,1,6,16]
    g = blur_depth(x, 2.0)
    b = blur_depth(x, 3, kind="box")
    assert float(g[..., 4:-4].std()) < 0.01 * float(x.std())
    np.testing.assert_allclose(float(b[..., 4:-4].std()), float(x.std()) / 3, rtol=1e-5)
    np.testing.assert_allclose(blur_depth(jnp.full((1, 5, 7), 3.0), 1.5), 3.0, rtol=1e-6)
    with pytest.raises(ValueError, match="odd"):
        blur_depth(x, 4, kind="box")


def test_propagation_removes_per_frame_scale_and_shift():
    base = jax.random.uniform(jax.random.PRNGKey(1), (1, 1, 6, 6))
    scales = jnp.array([1.0, 2.0, 0.5, 3.0, 1.5])
    shifts = jnp.array([0.0, 0.3, -0.2, 1.0, 0.1])
    frames = base * scales[None, :, None, None] + shifts[None, :, None, None]
    out = propagate_disparity(frames, momentum=0.5)
    # every frame is the first one again: alignment recovers scale and shift exactly
    np.testing.assert_allclose(out, jnp.broadcast_to(base, frames.shape), atol=1e-4)
    flicker_in = float(jnp.abs(jnp.diff(frames, axis=1)).mean())
    assert float(jnp.abs(jnp.diff(out, axis=1)).mean()) < 1e-3 * flicker_in
    with pytest.raises(ValueError, match="momentum"):
        propagate_disparity(frames, momentum=1.0)


def test_released_dissolving_is_conditional_and_not_renormalised():
    """Released depthcrafter.py + funcs_stereo.py, written out by hand: one *conditional*
    UNet call on c_in * latent at index 50 - dissolve_step, pred_original_sample (v), decode,
    (x + 1) / 2 clamped, channel mean, shift = value * scale / 100 * W. The same through
    ``dissolve_depth`` with the conditional model and ``released_disparity``."""
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((1, 2, 4, 6, 4)).astype(np.float32)
    w_dec = rng.standard_normal((4, 3)).astype(np.float32) * 0.5      # toy decoder
    ctx = {"cond": 1.0, "uncond": 0.2}

    def model_fn(x, t, which):          # a v-model whose output depends on the condition
        return 0.4 * ctx[which] * x + 0.02 * t.reshape(-1, 1, 1, 1, 1)

    decode = lambda z: np.asarray(z) @ w_dec
    plan, step, scale = make_euler_plan(num_steps=50), 30, 0.08
    i = 50 - step
    s, t = float(plan.sigma[i]), float(plan.timesteps[i])
    v = 0.4 * latent / np.sqrt(s ** 2 + 1) + 0.02 * t                  # cond only
    x0 = v * (-s / np.sqrt(s ** 2 + 1)) + latent / (s ** 2 + 1)
    ref = np.clip(decode(x0) / 2 + 0.5, 0, 1).mean(-1) * scale * latent.shape[-2]

    z = dissolve_depth(lambda x, tt: model_fn(x, tt, "cond"), jnp.asarray(latent), plan, step)
    out = np.asarray(released_disparity(jnp.asarray(decode(z)), scale))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    # the project's default guides the dissolving call like the sampling (CFG 1.2)
    guided = lambda x, tt: (model_fn(x, tt, "uncond")
                            + 1.2 * (model_fn(x, tt, "cond") - model_fn(x, tt, "uncond")))
    z_cfg = np.asarray(dissolve_depth(guided, jnp.asarray(latent), plan, step))
    assert np.abs(z_cfg - np.asarray(z)).max() > 0.05 * np.abs(np.asarray(z)).max()
    # without re-normalisation the dissolved map keeps the shrunken range of its x0
    sharp = np.asarray(released_disparity(jnp.asarray(decode(latent)), scale))
    assert np.ptp(out) < 0.8 * np.ptp(sharp)


def test_released_disparity_checks_and_exponent():
    d = jnp.array([[[[-1.0, -1.0], [1.0, 1.0], [3.0, 3.0]]]])    # [1, 1, 3 (W), 2 (C)]
    np.testing.assert_allclose(released_disparity(d, 0.1), [[[0.0, 0.3, 0.3]]], atol=1e-7)
    np.testing.assert_allclose(released_disparity(d * 0.0, 0.1, exponent=2.0),
                               [[[0.075, 0.075, 0.075]]], atol=1e-7)   # 0.5^2 * 0.1 * 3
    with pytest.raises(ValueError, match="max_disparity"):
        released_disparity(d, 8.0)
    with pytest.raises(ValueError, match="decoded"):
        released_disparity(jnp.zeros((4, 4)), 0.1)
