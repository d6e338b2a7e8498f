"""Euler (EDM) sampler against diffusers' EulerDiscreteScheduler as SVD-xt configures it."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp

from szero_jax.diffusion import (KarrasSigmas, dissolve_index, euler_sample, euler_step,
                                 make_euler_plan, plan_at)

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


def _svd_scheduler(sigma_min, sigma_max, num_steps):
    # stable-video-diffusion-img2vid-xt/scheduler/scheduler_config.json
    sch = diffusers.EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        prediction_type="v_prediction", timestep_spacing="leading", steps_offset=1,
        use_karras_sigmas=True, sigma_min=sigma_min, sigma_max=sigma_max,
        timestep_type="continuous", interpolation_type="linear")
    sch.set_timesteps(num_steps)
    return sch


@pytest.mark.parametrize("sigma_min,sigma_max", [(0.002, 700.0), (None, None)])
def test_euler_matches_diffusers(sigma_min, sigma_max):
    num_steps = 8
    sch = _svd_scheduler(sigma_min, sigma_max, num_steps)
    plan = make_euler_plan(num_steps=num_steps, karras=KarrasSigmas(sigma_min, sigma_max))
    np.testing.assert_allclose(np.asarray(plan.sigma), sch.sigmas[:-1].numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(plan.timesteps), sch.timesteps.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(plan.init_noise_sigma, float(sch.init_noise_sigma), rtol=1e-6)
    rng = np.random.default_rng(0)
    w = (0.5 + 0.1 * rng.standard_normal(4)).astype(np.float32)
    x_T = (rng.standard_normal((1, 4, 6, 6)) * float(sch.init_noise_sigma)).astype(np.float32)

    x = torch.from_numpy(x_T)
    ref_x, ref_x0 = [], []
    for t in sch.timesteps:
        x_in = sch.scale_model_input(x, t)
        out = torch.tanh(x_in * torch.from_numpy(w)[:, None, None]) * (1 + 0.1 * t)
        r = sch.step(out, t, x)
        x = r.prev_sample
        ref_x.append(x.numpy())
        ref_x0.append(r.pred_original_sample.numpy())

    def denoise_fn(x_in, t, plan_i):
        return jnp.tanh(x_in * w[:, None, None]) * (1 + 0.1 * t[:, None, None, None])

    xs, x0s = euler_sample(denoise_fn, jnp.asarray(x_T), plan, "v_prediction", True)
    for i in range(num_steps):
        scale = max(1.0, np.abs(ref_x[i]).max())
        assert np.abs(np.asarray(xs[i]) - ref_x[i]).max() < 1e-5 * scale, i
        assert np.abs(np.asarray(x0s[i]) - ref_x0[i]).max() < 1e-5, i


def test_dissolve_level_is_released_index():
    """Released StereoCrafter-Zero: 50-step Euler schedule, index 50 - dissolve_step; the
    level's alpha_bar = 1 / (1 + sigma^2) grows (less noise) as dissolve_step shrinks."""
    plan = make_euler_plan(num_steps=50)
    sch = _svd_scheduler(0.002, 700.0, 50)
    for level in (5, 20, 30, 40):
        i = dissolve_index(level)
        assert float(plan_at(plan, i).sigma) == pytest.approx(float(sch.sigmas[50 - level]), rel=1e-6)
    ab = np.asarray(plan.alpha_bar)
    assert ab[dissolve_index(5)] > ab[dissolve_index(40)]
    with pytest.raises(ValueError, match="dissolve_step"):
        dissolve_index(0)
