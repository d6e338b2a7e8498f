import jax
import jax.numpy as jnp
import numpy as np
import pytest

from szero_jax.diffusion import (make_ddim_plan, make_euler_plan, predict_x0_eps,
                                 stable_diffusion_schedule)
from szero_jax.stereo.dissolve import blur_depth, dissolve_depth, propagate_disparity


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
