import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from szero_jax.diffusion import ddim_sample, ddim_step, plan_at
from szero_jax.geometry import background_fill, border_mask, warped_disparity
from szero_jax.geometry.warp import forward_warp
from szero_jax.models.attention import cross_view_index
from szero_jax.stereo.crafter_zero import (StereoCrafterZeroConfig, build_events,
                                          num_evaluations, pad_events,
                                          released_refine_schedule, schedule_buckets,
                                          restart_and_refine_evaluations,
                                          stereocrafter_zero_run, stereocrafter_zero_sample)
from tests.helpers.toy_stereo import count_eqns, toy_denoiser, toy_disparity, toy_params, toy_plan

SHAPE = (1, 2, 4, 9, 4)          # B, T, H, W, C
BASE = StereoCrafterZeroConfig(restart_steps=2, restart_rounds=3, warp_every=2,
                               warp_stop_t=2, refine_rounds=2)


@jax.jit
def _jitted(params, x_T, disparity, plan, key, events):
    """One program per (E, K): the schedule and the switches are arguments."""
    fn = functools.partial(toy_denoiser, params)
    return stereocrafter_zero_run(fn, x_T, disparity, plan, key, events, "epsilon")


def _inputs(seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return toy_params(k1), jax.random.normal(k2, SHAPE), toy_disparity(SHAPE[:-1])


def _run(config=BASE, eta=1.0, disparity=None, seed=0, key=3):
    params, x_T, d = _inputs(seed)
    d = d if disparity is None else disparity
    plan = toy_plan(10, eta)
    return _jitted(params, x_T, d, plan, jax.random.PRNGKey(key), build_events(config, 10))


def test_paper_schedule_at_50_steps():
    cfg = StereoCrafterZeroConfig()
    # right after the window (t = 43), then t = 40, 35, ..., 15: the released olist cut at 34
    stages = (6, 9, 14, 19, 24, 29, 34)
    assert cfg.warp_steps(50) == {s: 4 for s in stages}
    assert tuple(s for s, _ in released_refine_schedule(34)) == stages
    # 6 x 7 restart + 44 later steps + 7 stages x 4 refinements
    assert num_evaluations(cfg, 50) == 42 + 44 + 28
    k5 = dataclasses.replace(cfg, restart_steps=5)     # Sec. 4.1's t = 49..45: still 7 stages
    assert sorted(k5.warp_steps(50)) == [5, 9, 14, 19, 24, 29, 34]


@pytest.mark.parametrize("n, total", [(0, 42), (2, 56), (4, 70), (6, 84), (8, 98)])
def test_paper_preset_reproduces_table5_totals(n, total):
    """Table 5 (K = 6, L = 7): "Total Steps" 42, 56, 70, 84, 98 for N = 0, 2, 4, 6, 8."""
    cfg = dataclasses.replace(StereoCrafterZeroConfig(), refine_rounds=n)
    assert restart_and_refine_evaluations(cfg, 50) == total
    assert num_evaluations(cfg, 50) == total + 44       # plus the later plain steps


@pytest.mark.parametrize("k, l", [(6, 5), (6, 9), (11, 7), (21, 9)])
def test_table4_totals_are_k_times_l(k, l):
    cfg = dataclasses.replace(StereoCrafterZeroConfig(), restart_steps=k, restart_rounds=l,
                              refine_rounds=0)
    assert restart_and_refine_evaluations(cfg, 50) == k * l


def test_released_schedule_at_50_steps():
    cfg = StereoCrafterZeroConfig.released()
    assert released_refine_schedule(40)[-2:] == ((39, 5), (40, 5))
    ev = build_events(cfg, 50)
    assert int(ev.restart.sum()) == 42
    assert num_evaluations(cfg, 50) == 42 + 44 + (7 + 7 + 2 + 5 * 6)
    on = np.nonzero(ev.mode != cross_view_index("none"))[0]
    assert on[0] == 25 and on[-1] == 44 and len(on) == 20
    assert ev.step[on[0]] == 1 and ev.step[on[-1]] == 6   # restart round 5 .. final pass step 6


def test_zero_disparity_right_equals_left():
    out = _run(disparity=jnp.zeros(SHAPE[:-1]))
    assert not bool(out.holes.any())
    np.testing.assert_allclose(out.right, out.left, atol=1e-6)


def test_left_view_is_the_plain_sample_without_attention_sharing():
    params, x_T, d = _inputs()
    cfg = dataclasses.replace(BASE, cross_view="none")
    out = _run(cfg, eta=0.0)
    plan = toy_plan(10, 0.0)
    ref, _ = ddim_sample(lambda x, t, p: toy_denoiser(params, x, t, p, None), x_T, plan, None,
                         "epsilon")
    np.testing.assert_allclose(out.left, ref, atol=1e-5)
    # uni_query changes only the right view
    out_uq = _run(BASE, eta=0.0)
    np.testing.assert_allclose(out_uq.left, ref, atol=1e-5)


def test_same_seed_is_bit_identical_and_seed_matters():
    a, b, c = _run(), _run(), _run(key=4)
    np.testing.assert_array_equal(a.right, b.right)
    np.testing.assert_array_equal(a.left, b.left)
    assert float(jnp.abs(a.right - c.right).max()) > 1e-3


@pytest.mark.parametrize("fill", ["left", "background"])
def test_single_round_without_refinement_is_plain_latent_warping(fill):
    """K = 1, L = 1, N = 0: warp at step 0 (holes from the left latent, or the warp
    stretched from the holes' far side; border holes from the left either way: Eq. 3 hard)
    and at each stage (holes keep the right latent: step 1 right after the window, then
    t = 6, 3, 0), plain batched DDIM otherwise."""
    cfg = StereoCrafterZeroConfig(restart_steps=1, restart_rounds=1, warp_every=3,
                                  warp_stop_t=0, refine_rounds=0, first_round_fill=fill)
    params, x_T, d = _inputs()
    out = _run(cfg, eta=0.0)
    plan = toy_plan(10, 0.0)
    mode = cross_view_index("uni_query")
    x_l, x_r = x_T, None
    for i in range(10):
        warped, holes = forward_warp(x_l, d)
        if i == 0:
            first = x_l
            if fill == "background":
                wd = warped_disparity(d)
                first = jnp.where(border_mask(holes)[..., None], x_l,
                                  background_fill(warped, holes, wd))
                assert float(jnp.abs(first - x_l)[holes].max()) > 1e-2   # it changes the fill
            x_r = jnp.where(holes[..., None], first, warped)
        elif i in (1, 3, 6, 9):
            x_r = jnp.where(holes[..., None], x_r, warped)
        p = plan_at(plan, i)
        x = jnp.concatenate([x_l, x_r])
        y, _ = ddim_step(p, x, toy_denoiser(params, x, jnp.full((2,), p.timesteps), p, mode),
                         None, "epsilon")
        x_l, x_r = y[:1], y[1:]
    np.testing.assert_allclose(out.left, x_l, atol=1e-5)
    np.testing.assert_allclose(out.right, x_r, atol=1e-5)


# Switches that change the number of evaluations compile their own program: slow.
_OWN_PROGRAM = pytest.mark.slow


@pytest.mark.parametrize("change", [
    pytest.param(dict(restart_rounds=1), marks=_OWN_PROGRAM),   # noisy restart off
    dict(border="off"),
    dict(border="blend"),
    pytest.param(dict(refine_rounds=0), marks=_OWN_PROGRAM),    # iterative refinement off
    pytest.param(dict(warp_every=100), marks=_OWN_PROGRAM),     # re-warping off
    dict(right_noise="reuse_left"),
    dict(cross_view="none"),                 # cross-view attention off
    dict(first_round_fill="previous_step"),
    dict(first_round_fill="background"),
    dict(restart_sigma_ratio=True),
    dict(refine_sigma_ratio=True),
    dict(refine_noise="all"),
    dict(cross_view_window=(0, 3)),
])
def test_each_switch_changes_the_right_view(change):
    base = _run()
    other = _run(dataclasses.replace(BASE, **change))
    np.testing.assert_array_equal(other.left, base.left)
    assert float(jnp.abs(other.right - base.right).max()) > 1e-4, change


def _eqns(config, steps):
    params, x_T, d = _inputs()
    plan = toy_plan(steps, 1.0)
    fn = functools.partial(toy_denoiser, params)
    jaxpr = jax.make_jaxpr(lambda x, dd, k: stereocrafter_zero_sample(
        fn, x, dd, plan, k, config, "epsilon"))(x_T, d, jax.random.PRNGKey(0))
    return count_eqns(jaxpr.jaxpr)


def test_program_does_not_grow_with_k_l_n_w_or_steps():
    ref = _eqns(BASE, 10)
    assert _eqns(dataclasses.replace(BASE, restart_steps=5, restart_rounds=7, refine_rounds=6,
                                     warp_every=1, warp_stop_t=0), 10) == ref
    assert _eqns(BASE, 30) == ref
    assert _eqns(StereoCrafterZeroConfig.released(), 50) == ref


def test_bad_config_raises_naming_the_field():
    with pytest.raises(ValueError, match="restart_steps"):
        build_events(StereoCrafterZeroConfig(restart_steps=0), 10)
    with pytest.raises(ValueError, match="border"):
        build_events(StereoCrafterZeroConfig(border="soft"), 10)
    with pytest.raises(ValueError, match="cross_view"):
        build_events(StereoCrafterZeroConfig(cross_view="sideways"), 10)
    params, x_T, d = _inputs()
    with pytest.raises(ValueError, match="disparity"):
        stereocrafter_zero_sample(functools.partial(toy_denoiser, params), x_T, d[..., :-1],
                                  toy_plan(10), jax.random.PRNGKey(0), BASE, "epsilon")


def _ideal_v(x, t, p, mode):
    """The exact v-prediction for data concentrated at 0: x = sqrt(1 - ab) eps, so x0 = 0
    and eps = x / sqrt(1 - ab); every latent is pure noise at its step's level."""
    return jnp.sqrt(p.alpha_bar / (1.0 - p.alpha_bar)) * x


def _hole_noise_level(stage, rounds, eta=1.0, seed=1, refine_noise="holes"):
    """Std of the right view's holes / the scheduled level sqrt(1 - ab_prev) right after a
    warp stage at ``stage`` of the 512 model's 50 steps (ideal denoiser), and the left's."""
    from szero_jax.diffusion import dynamicrafter_schedule, make_ddim_plan, plan_slice
    full = make_ddim_plan(dynamicrafter_schedule(), 50, "uniform_trailing", eta=eta)
    plan = plan_slice(full, 0, stage + 1)           # stop right after the stage
    shape = (1, 4, 32, 64, 4)
    d = jnp.zeros(shape[:-1]).at[..., 20:44].set(8.0)
    cfg = StereoCrafterZeroConfig(restart_steps=1, restart_rounds=1, cross_view="none",
                                  refine_schedule=((stage, rounds),), refine_noise=refine_noise)
    out = jax.jit(stereocrafter_zero_run, static_argnums=(0, 6))(
        _ideal_v, jax.random.normal(jax.random.PRNGKey(0), shape), d, plan,
        jax.random.PRNGKey(seed), build_events(cfg, plan.num_steps), "v_prediction")
    level = float(jnp.sqrt(1.0 - full.alpha_bar_prev[stage]))
    holes = np.asarray(out.holes)
    return (float(np.asarray(out.right)[holes].std()) / level,
            float(np.asarray(out.left).std()) / level, holes.mean())


def test_refinement_rounds_draw_their_own_noise():
    """Eta 1, N = 4 at t = 40: the holes leave the stage at the scheduled noise level, as the
    left view does (theory for fresh noise per round: 0.995). Reusing the step's noise in
    every round adds it coherently, ~2x (theory 1.97)."""
    right, left, frac = _hole_noise_level(9, 4)
    assert 0.1 < frac < 0.5
    assert abs(left - 1.0) < 0.02
    assert abs(right - 1.0) < 0.06, right
    right0, _, _ = _hole_noise_level(9, 0)          # no refinement: the plain step
    assert abs(right0 - 1.0) < 0.06, right0
    right_all, _, _ = _hole_noise_level(9, 4, refine_noise="all")   # released
    assert abs(right_all - 1.0) < 0.06, right_all


@pytest.mark.parametrize("change", [{}, dict(refine_noise="all", right_noise="reuse_left",
                                             border="blend", restart_sigma_ratio=True)])
def test_padded_schedule_equals_unpadded_at_eta_1(change):
    """Padding (spare-slot restart events before the real ones) leaves every real event as
    it was, noise included: restart, refinement and the fixed eps' at a larger window."""
    cfg = dataclasses.replace(BASE, **change)
    params, x_T, d = _inputs()
    plan, key = toy_plan(10, 1.0), jax.random.PRNGKey(3)
    ev = build_events(cfg, 10)
    e, k = int(ev.step.shape[0]), int(ev.window.shape[0])
    ref = _jitted(params, x_T, d, plan, key, ev)
    out = _jitted(params, x_T, d, plan, key, pad_events(ev, e + 5, k + 2))
    np.testing.assert_allclose(out.left, ref.left, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.right, ref.right, rtol=1e-6, atol=1e-6)
    assert np.array_equal(np.asarray(out.holes), np.asarray(ref.holes))
    assert pad_events(ev, e, k) is ev
    with pytest.raises(ValueError, match="cannot pad"):
        pad_events(ev, e + 1, k)              # adding events needs a spare slot
    with pytest.raises(ValueError, match="cannot pad"):
        pad_events(ev, e - 1, k)


def test_schedule_buckets_cover_and_minimise():
    sizes = [(99, 5)] * 8 + [(69, 5), (225, 21), (105, 6)]
    b = schedule_buckets(sizes, 2)
    assert len(set(b.values())) == 2
    for (e, k), (ep, kp) in b.items():
        assert ep >= e and kp >= k + (1 if ep > e else 0)
    # the eight 99s share the 105 program; 225 alone: 8*105 + 69->105 + 105 + 225 is least
    assert b[(225, 21)] == (225, 21) and b[(99, 5)] == (105, 7) and b[(69, 5)] == (105, 7)
    assert len(set(schedule_buckets(sizes, 1).values())) == 1
    assert schedule_buckets(sizes, 10) == {s: s for s in sizes}   # one program per size
    assert schedule_buckets([], 3) == {}
    with pytest.raises(ValueError, match="n_buckets"):
        schedule_buckets(sizes, 0)
