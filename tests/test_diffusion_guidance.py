"""Parameterisations, classifier-free guidance, inversion step and input validation."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp

from szero_jax.diffusion import (GuidanceScales, NoiseSchedule, ddim_invert_step, ddim_timesteps,
                                 dissolve_alpha_bar, dynamicrafter_schedule, guidance,
                                 make_betas, make_ddim_plan, make_euler_plan, plan_at,
                                 predict_x0_eps)

torch = pytest.importorskip("torch")


def test_predict_x0_eps_round_trips():
    rng = np.random.default_rng(0)
    x0, eps = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((2, 3, 5, 4))
    ab = 0.3
    x = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps
    v = np.sqrt(ab) * eps - np.sqrt(1 - ab) * x0
    for kind, out in (("epsilon", eps), ("v_prediction", v), ("sample", x0)):
        got_x0, got_eps = predict_x0_eps(jnp.asarray(out), jnp.asarray(x), ab, kind)
        np.testing.assert_allclose(np.asarray(got_x0), x0, atol=1e-5)
        np.testing.assert_allclose(np.asarray(got_eps), eps, atol=1e-5)
    with pytest.raises(ValueError, match="prediction_type"):
        predict_x0_eps(x, x, ab, "eps")


def test_guidance_matches_diffusers_rescale_noise_cfg():
    from diffusers.guiders.guider_utils import rescale_noise_cfg
    rng = np.random.default_rng(1)
    cond = rng.standard_normal((2, 4, 3, 8, 8)).astype(np.float32)
    uncond = rng.standard_normal((2, 4, 3, 8, 8)).astype(np.float32)
    guided = uncond + 7.5 * (cond - uncond)
    ref = rescale_noise_cfg(torch.from_numpy(guided), torch.from_numpy(cond), 0.7).numpy()
    got = guidance(jnp.asarray(cond), jnp.asarray(uncond), 7.5, 0.7)
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-5)
    # rescale 0 is plain CFG, traced or not
    plain = jax.jit(guidance)(cond, uncond, jnp.float32(7.5), jnp.float32(0.0))
    np.testing.assert_allclose(np.asarray(plain), guided, atol=1e-5)


def test_invert_step_is_ddim_inversion_and_undoes_a_deterministic_step():
    """StereoDiffusion Eq. 9 with the sqrt(ab_{t+1}) factor on eps (see ddim_invert_step)."""
    plan = make_ddim_plan(NoiseSchedule.create("scaled_linear"), 50, "leading", 0.0,
                          steps_offset=1)
    p = plan_at(plan, 20)
    rng = np.random.default_rng(2)
    z = jnp.asarray(rng.standard_normal((1, 4, 4, 4)), jnp.float32)
    eps = jnp.asarray(rng.standard_normal((1, 4, 4, 4)), jnp.float32)
    z_next, _ = ddim_invert_step(p, z, eps, "epsilon")
    a_t, a_next = float(p.alpha_bar_prev), float(p.alpha_bar)  # inversion goes t -> t+1
    eq9 = (np.sqrt(a_next / a_t) * z
           + (np.sqrt(1 / a_next - 1) - np.sqrt(1 / a_t - 1)) * np.sqrt(a_next) * eps)
    np.testing.assert_allclose(np.asarray(z_next), np.asarray(eq9), atol=1e-5)
    from szero_jax.diffusion import ddim_step
    back, _ = ddim_step(p, z_next, eps, None, "epsilon")
    np.testing.assert_allclose(np.asarray(back), np.asarray(z), atol=1e-5)


def test_lvdm_linear_is_scaled_linear():
    # lvdm make_beta_schedule("linear") squares a linspace of square roots.
    betas = make_betas("lvdm_linear")
    np.testing.assert_allclose(betas, np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2)
    np.testing.assert_array_equal(betas, make_betas("scaled_linear"))
    acp = dynamicrafter_schedule().alphas_cumprod
    assert acp[-1] < 1e-12 and acp[0] == pytest.approx(1 - 0.00085, rel=1e-9)


def test_dissolve_alpha_bar_in_ddim_and_euler_plans():
    ddim = make_ddim_plan(dynamicrafter_schedule(), 50, "uniform_trailing")
    # dissolve_step 40 of 50 -> index 10 -> t = 999 - 10 * 20 = 799
    assert int(ddim.timesteps[10]) == 799
    assert float(dissolve_alpha_bar(ddim, 40)) == pytest.approx(
        float(dynamicrafter_schedule().alphas_cumprod[799]), rel=1e-6)
    euler = make_euler_plan(num_steps=50)
    s = float(euler.sigma[45])
    assert float(dissolve_alpha_bar(euler, 5)) == pytest.approx(1 / (1 + s * s), rel=1e-6)


@pytest.mark.parametrize("call,match", [
    (lambda: make_betas("cosine"), "kind"),
    (lambda: ddim_timesteps(0, "trailing"), "num_steps"),
    (lambda: ddim_timesteps(10, "middle"), "spacing"),
    (lambda: make_ddim_plan(dynamicrafter_schedule(), 10, "trailing", -1.0), "eta"),
    (lambda: make_ddim_plan(dynamicrafter_schedule(), 10, "trailing",
                            guidance=GuidanceScales(scale=[1.0, 2.0])), "guidance.scale"),
    (lambda: make_ddim_plan(dynamicrafter_schedule(), 10, "trailing", guidance=7.5), "guidance"),
    (lambda: make_ddim_plan(dynamicrafter_schedule(), 10, "trailing", dynamic_rescale=True),
     "dynamic_rescale"),
    (lambda: make_ddim_plan(dynamicrafter_schedule(), None, [5, 9]), "spacing"),
    (lambda: make_ddim_plan(dynamicrafter_schedule(), 3, [9, 5]), "num_steps"),
    (lambda: make_ddim_plan("linear", 10, "trailing"), "schedule"),
    (lambda: make_euler_plan(num_steps=10, spacing="uniform"), "spacing"),
    (lambda: make_euler_plan(num_steps=10, karras=True), "karras"),
])
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
