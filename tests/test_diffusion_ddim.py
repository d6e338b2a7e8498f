"""DDIM plan / step / scan sampler against diffusers' DDIMScheduler and lvdm's spacing."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp

from szero_jax.diffusion import (DynamicRescale, GuidanceScales, NoiseSchedule, cfg_denoiser,
                                 ddim_invert, ddim_sample, ddim_step, ddim_timesteps,
                                 dynamic_rescale_table, dynamicrafter_schedule,
                                 make_ddim_plan, plan_at)

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


def _diffusers_ddim(prediction_type, spacing, zero_snr, steps_offset, num_steps):
    sch = diffusers.DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        prediction_type=prediction_type, timestep_spacing=spacing,
        rescale_betas_zero_snr=zero_snr, clip_sample=False, set_alpha_to_one=False,
        steps_offset=steps_offset)
    sch.set_timesteps(num_steps)
    return sch


@pytest.mark.parametrize("prediction_type,spacing,zero_snr,steps_offset,eta", [
    ("v_prediction", "trailing", True, 0, 0.0),
    ("v_prediction", "trailing", True, 0, 1.0),
    ("epsilon", "leading", False, 1, 0.0),
    ("epsilon", "leading", False, 1, 1.0),
])
def test_ddim_step_matches_diffusers(prediction_type, spacing, zero_snr, steps_offset, eta):
    num_steps = 10
    sch = _diffusers_ddim(prediction_type, spacing, zero_snr, steps_offset, num_steps)
    ours = NoiseSchedule.create("scaled_linear", zero_terminal_snr=zero_snr)
    # The schedule itself, in diffusers' float32.
    np.testing.assert_allclose(ours.alphas_cumprod, sch.alphas_cumprod.numpy(), atol=1e-6)
    plan = make_ddim_plan(ours, num_steps, spacing, eta, steps_offset=steps_offset)
    np.testing.assert_array_equal(np.asarray(plan.timesteps), sch.timesteps.numpy())
    # Reference in float64 (same code): diffusers' float32 `(1 - ab_prev - sigma^2) ** 0.5`
    # cancels at zero terminal SNR and eta 1 (see make_ddim_plan), a ~1e-3 error of its own.
    sch.alphas_cumprod = sch.alphas_cumprod.double()
    sch.final_alpha_cumprod = sch.alphas_cumprod[0]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 8, 8))
    for i in range(num_steps):
        out, noise = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
        ref = sch.step(torch.from_numpy(out), sch.timesteps[i], torch.from_numpy(x), eta=eta,
                       variance_noise=torch.from_numpy(noise))
        f32 = lambda a: jnp.asarray(a, jnp.float32)
        x_prev, x0 = ddim_step(plan_at(plan, i), f32(x), f32(out), f32(noise), prediction_type)
        x_ref, x0_ref = ref.prev_sample.numpy(), ref.pred_original_sample.numpy()
        assert np.abs(np.asarray(x_prev) - x_ref).max() < 1e-5, i
        # pred_x0 of a random eps output at small alpha_bar is ~50: compare relatively.
        assert np.abs(np.asarray(x0) - x0_ref).max() < 1e-6 * max(1.0, np.abs(x0_ref).max()), i
        x = x_ref


def test_ddim_sample_scan_matches_diffusers_loop():
    """The scan, a toy linear denoiser and fixed noise vs diffusers' loop (v, trailing, eta 1)."""
    num_steps = 10
    sch = _diffusers_ddim("v_prediction", "trailing", True, 0, num_steps)
    sch.alphas_cumprod = sch.alphas_cumprod.double()
    sch.final_alpha_cumprod = sch.alphas_cumprod[0]
    plan = make_ddim_plan(NoiseSchedule.create("scaled_linear", zero_terminal_snr=True),
                          num_steps, "trailing", 1.0)
    rng = np.random.default_rng(1)
    x_T = rng.standard_normal((1, 4, 6, 6))
    noise = rng.standard_normal((num_steps, *x_T.shape))
    w = 0.5 + 0.1 * rng.standard_normal((4,))

    def model(x, t):  # depends on x and t, like a network
        return x * w[:, None, None] * (1.0 - t / 2000.0)

    def denoise_fn(x, t, plan_i):
        return jnp.einsum("bchw,c->bchw", x, jnp.asarray(w, jnp.float32)) * (
            1.0 - t[:, None, None, None] / 2000.0)

    xs, x0s = jax.jit(ddim_sample, static_argnums=(0, 4, 5))(
        denoise_fn, jnp.asarray(x_T, jnp.float32), plan, jnp.asarray(noise, jnp.float32),
        "v_prediction", True)
    x = torch.from_numpy(x_T)
    for i, t in enumerate(sch.timesteps):
        x = sch.step(model(x, float(t)), t, x, eta=1.0,
                     variance_noise=torch.from_numpy(noise[i])).prev_sample
        assert np.abs(np.asarray(xs[i]) - x.numpy()).max() < 1e-5, i


def _jaxpr_size(num_steps):
    plan = make_ddim_plan(dynamicrafter_schedule(), num_steps, "uniform_trailing", 1.0,
                          guidance=GuidanceScales(7.5, 0.7), dynamic_rescale=DynamicRescale())
    denoise = cfg_denoiser(lambda x, t, c: jnp.tanh(x * c[:, None, None, None]),
                           jnp.ones((1,)), jnp.zeros((1,)))
    x_T = jnp.zeros((1, 8, 8, 4))
    noise = jnp.zeros((num_steps, *x_T.shape))
    fn = lambda p, x, n: ddim_sample(denoise, x, p, n, "v_prediction")
    jaxpr = jax.make_jaxpr(fn)(plan, x_T, noise)
    hlo = jax.jit(fn).lower(plan, x_T, noise).as_text()
    return len(str(jaxpr).splitlines()), len(hlo.splitlines())


def test_scan_program_does_not_grow_with_steps():
    n10, n50 = _jaxpr_size(10), _jaxpr_size(50)
    assert n10 == n50


def test_lvdm_spacings():
    # fixtures/README.md: DynamiCrafter's uniform_trailing at 10 steps is 99, 199, ..., 999.
    np.testing.assert_array_equal(ddim_timesteps(10, "uniform_trailing"), np.arange(999, 0, -100))
    np.testing.assert_array_equal(ddim_timesteps(50, "uniform_trailing"), np.arange(999, 0, -20))
    # lvdm "uniform" = range(0, T, T // S) + 1 = diffusers leading with steps_offset 1.
    np.testing.assert_array_equal(ddim_timesteps(50, "uniform"), np.arange(981, 0, -20))
    np.testing.assert_array_equal(ddim_timesteps(50, "uniform"),
                                  ddim_timesteps(50, "leading", steps_offset=1))
    assert len(ddim_timesteps(30, "uniform")) == 31  # lvdm's own quirk when S does not divide T


def test_dynamic_rescale_factors():
    plan = make_ddim_plan(dynamicrafter_schedule(), 10, "uniform_trailing", 1.0,
                          dynamic_rescale=DynamicRescale())
    # scale(t) = linspace(1, 0.7, 400)[t] below t = 400, 0.7 above: only the last steps move.
    ramp = np.linspace(1.0, 0.7, 400).astype(np.float32)
    expected = np.ones(10, np.float32)
    expected[6:9] = [ramp[299] / ramp[399], ramp[199] / ramp[299], ramp[99] / ramp[199]]
    np.testing.assert_allclose(np.asarray(plan.x0_rescale), expected, rtol=1e-6)


def test_explicit_timesteps_and_options_give_the_same_plan():
    """``spacing`` as an array is the string spacing's plan; ``DynamicRescale()`` is
    ddpm3d.py's table; per-step guidance arrays pass through as given."""
    sched = dynamicrafter_schedule()
    ts = ddim_timesteps(10, "uniform_trailing")
    scales = np.linspace(1.0, 7.5, 10).astype(np.float32)
    a = make_ddim_plan(sched, 10, "uniform_trailing", 1.0,
                       guidance=GuidanceScales(scales, 0.7), dynamic_rescale=DynamicRescale())
    b = make_ddim_plan(sched, None, ts, 1.0, guidance=GuidanceScales(scales, 0.7),
                       dynamic_rescale=DynamicRescale(0.7, 400))
    for name in ("timesteps", "alpha_bar", "alpha_bar_prev", "sigma", "dir_coef",
                 "guidance_scale", "guidance_rescale", "x0_rescale", "step"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)))
    np.testing.assert_array_equal(np.asarray(a.guidance_scale), scales)
    np.testing.assert_array_equal(np.asarray(a.guidance_rescale), np.full(10, 0.7, np.float32))
    np.testing.assert_array_equal(DynamicRescale().table(), dynamic_rescale_table(1000, 0.7, 400))


def test_ddim_inversion_round_trip():
    """Invert then sample: exact when eps does not depend on x (Eq. 9 undoes Eq. 1)."""
    plan = make_ddim_plan(NoiseSchedule.create("scaled_linear"), 20, "leading", 0.0,
                          steps_offset=1, set_alpha_to_one=True)
    x0 = jnp.asarray(np.random.default_rng(0).standard_normal((1, 8, 8, 4)), jnp.float32)
    denoise = lambda x, t, p: jnp.broadcast_to(jnp.sin(t / 100.0)[:, None, None, None], x.shape)

    @jax.jit
    def round_trip(plan, x0):
        traj = ddim_invert(denoise, x0, plan, "epsilon")
        return ddim_sample(denoise, traj[0], plan, None, "epsilon")[0]

    x_rec = round_trip(plan, x0)
    assert float(jnp.abs(x_rec - x0).max()) < 1e-4


def test_plan_reproduces_lvdm_fixture_steps(fixtures_dir):
    """Without the UNet: recover each step's v from lvdm's recorded pred_x0 (undoing the
    dynamic rescale), then our step must give lvdm's next latent (plan: alphas, sigma, eta 1,
    dynamic rescale, uniform_trailing, alphas_cumprod[0] after the last step)."""
    f = np.load(fixtures_dir / "dynamicrafter" / "ddim_tiny_trajectory.npz")
    plan = make_ddim_plan(dynamicrafter_schedule(), 10, "uniform_trailing", 1.0,
                          dynamic_rescale=DynamicRescale())
    np.testing.assert_array_equal(np.asarray(plan.timesteps), f["ddim_timesteps"][::-1])
    for i in range(10):
        p = plan_at(plan, i)
        x, x0 = f["x_inter"][i], f["pred_x0"][i + 1]
        a = float(p.alpha_bar)
        v = (np.sqrt(a) * x - x0 / float(p.x0_rescale)) / np.sqrt(1.0 - a)
        x_prev, got_x0 = ddim_step(p, jnp.asarray(x), jnp.asarray(v, jnp.float32),
                                   jnp.asarray(f["noise"][i]), "v_prediction")
        np.testing.assert_allclose(np.asarray(got_x0), x0, atol=1e-5)
        assert np.abs(np.asarray(x_prev) - f["x_inter"][i + 1]).max() < 1e-5, i
