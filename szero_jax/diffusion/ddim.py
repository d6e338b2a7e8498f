"""DDIM: a plan of per-step arrays, one step, inversion, and the ``lax.scan`` samplers.

Order of operations in one guided step, exactly as lvdm's ``DDIMSampler.p_sample_ddim``
(DynamiCrafter) does it:
  1. ``out = uncond + s (cond - uncond)`` on the raw model output (v for v-models);
  2. guidance rescale of ``out`` against ``cond`` (``guidance(..)``, skipped when 0);
  3. ``pred_x0, eps`` from ``out`` at ``alpha_bar_t`` (``predict_x0_eps``);
  4. dynamic rescale: ``pred_x0 *= scale(t_prev) / scale(t)`` (``plan.x0_rescale``); ``eps``
     is *not* recomputed. (``x * scale(t)`` in ddpm3d.py is training only.)
  5. ``x_prev = sqrt(ab_prev) pred_x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma noise``.
Steps 1-2 belong to the denoiser (``cfg_denoiser`` or the caller's own), 3-5 to ``ddim_step``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence, Union

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from szero_jax.diffusion.guidance import check_prediction_type, predict_x0_eps
from szero_jax.diffusion.guidance import guidance as guided_output
from szero_jax.diffusion.schedules import DynamicRescale, NoiseSchedule, ddim_timesteps


@flax.struct.dataclass
class DDIMPlan:
    """Per-step arrays [S] in sampling order (noisiest first). Slice one step with
    ``plan_at(plan, i)``; ``lax.scan`` over a plan hands the body one step at a time."""
    timesteps: jax.Array         # int32, model timestep t
    alpha_bar: jax.Array         # alpha_bar at t
    alpha_bar_prev: jax.Array    # alpha_bar at the next (less noisy) step
    sigma: jax.Array             # eta * sqrt((1-ab_prev)/(1-ab) (1 - ab/ab_prev))
    dir_coef: jax.Array          # sqrt(1 - ab_prev - sigma^2), see make_ddim_plan
    guidance_scale: jax.Array    # CFG scale of this step
    guidance_rescale: jax.Array  # guidance-rescale factor of this step (0 = off)
    x0_rescale: jax.Array        # dynamic-rescale factor on pred_x0 (1 = off)
    step: jax.Array              # int32 position in sampling order, 0..S-1

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])


def plan_at(plan, i):
    """Step ``i`` of a DDIM or Euler plan (``i`` may be traced)."""
    return jax.tree.map(lambda a: a[i], plan)


def plan_slice(plan, start: int, stop: int):
    """Steps ``start:stop`` of a plan, e.g. to resume sampling from an inverted latent."""
    return jax.tree.map(lambda a: a[start:stop], plan)


def _per_step(value, n: int, name: str) -> np.ndarray:
    arr = np.asarray(value, np.float32)
    if arr.ndim == 0:
        return np.full(n, arr, np.float32)
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {arr.shape}")
    return arr


@dataclasses.dataclass(frozen=True, eq=False)
class GuidanceScales:
    """The CFG pair of a plan: scalars or per-step arrays [S] (defaults: guidance off)."""
    scale: Union[float, np.ndarray] = 1.0    # uncond + scale (cond - uncond); 1 = cond only
    rescale: Union[float, np.ndarray] = 0.0  # guidance rescale (Lin et al. 2024 Sec. 3.4); 0 = off


def make_ddim_plan(schedule: NoiseSchedule, num_steps: Optional[int],
                   spacing: Union[str, Sequence[int]], eta: float = 0.0, *,
                   steps_offset: int = 0, set_alpha_to_one: bool = False,
                   guidance: GuidanceScales = GuidanceScales(),
                   dynamic_rescale: Optional[DynamicRescale] = None) -> DDIMPlan:
    """Precompute a DDIM plan.

    ``spacing``: one of ``SPACINGS`` (with ``num_steps`` and ``steps_offset``), or an explicit
    array of timesteps (descending ints; ``num_steps`` then None or its length).
    ``alpha_bar_prev`` of a step is alpha_bar at the next timestep of the list (lvdm and, for
    the evenly spaced cases, diffusers); after the last step it is ``alphas_cumprod[0]``
    (lvdm ``make_ddim_sampling_parameters``; diffusers ``set_alpha_to_one=False``) or 1.
    ``guidance``: the steps' CFG scale and guidance rescale (``GuidanceScales``).
    ``dynamic_rescale``: DynamiCrafter's pred_x0 rescale (``use_dynamic_rescale`` in the
    512 config), None for off; ``DynamicRescale()`` holds ddpm3d.py's base_scale 0.7 and
    turning_step 400.
    ``dir_coef`` is computed here in float64: in float32 ``1 - ab_prev - sigma^2`` cancels
    to ~1e-7 at zero terminal SNR with eta = 1 (exactly 0 in exact arithmetic), which the
    float32 references (diffusers, lvdm) turn into a ~3e-4 * eps error at the first step.
    """
    if not isinstance(schedule, NoiseSchedule):
        raise ValueError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    if not 0.0 <= float(eta):
        raise ValueError(f"eta must be >= 0, got {eta}")
    if not isinstance(guidance, GuidanceScales):
        raise ValueError(f"guidance: expected a GuidanceScales, got {guidance!r}")
    if dynamic_rescale is not None and not isinstance(dynamic_rescale, DynamicRescale):
        raise ValueError(f"dynamic_rescale: expected a DynamicRescale or None, "
                         f"got {dynamic_rescale!r}")
    n_train = schedule.num_train_timesteps
    if isinstance(spacing, str):
        ts = ddim_timesteps(num_steps, spacing, n_train, steps_offset)
    else:
        ts = np.asarray(spacing, np.int64)
        ok = ts.ndim == 1 and ts.size > 0 and np.all(np.diff(ts) < 0)
        if not ok or ts.min() < 0 or ts.max() >= n_train:
            raise ValueError(f"spacing: explicit timesteps must be strictly descending ints in "
                             f"[0, {n_train}), got {ts}")
        if num_steps is not None and num_steps != ts.shape[0]:
            raise ValueError(f"num_steps: expected None or {ts.shape[0]} (the explicit "
                             f"timesteps' length), got {num_steps!r}")
    n = ts.shape[0]
    acp = schedule.alphas_cumprod
    final = 1.0 if set_alpha_to_one else acp[0]
    ab = acp[ts]
    ab_prev = np.concatenate([acp[ts[1:]], [final]])
    sigma = eta * np.sqrt((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev))
    dir_coef = np.sqrt(np.maximum(1.0 - ab_prev - sigma ** 2, 0.0))
    if dynamic_rescale is not None:
        scale = dynamic_rescale.table(n_train)[ts]
        scale_prev = np.concatenate([scale[1:], scale[-1:]])  # last step: ratio 1, as lvdm
        x0_rescale = (scale_prev / scale).astype(np.float32)
    else:
        x0_rescale = np.ones(n, np.float32)
    f32 = lambda a: jnp.asarray(np.asarray(a, np.float32))
    return DDIMPlan(
        timesteps=jnp.asarray(ts, jnp.int32), alpha_bar=f32(ab), alpha_bar_prev=f32(ab_prev),
        sigma=f32(sigma), dir_coef=f32(dir_coef),
        guidance_scale=f32(_per_step(guidance.scale, n, "guidance.scale")),
        guidance_rescale=f32(_per_step(guidance.rescale, n, "guidance.rescale")),
        x0_rescale=f32(x0_rescale), step=jnp.arange(n, dtype=jnp.int32))


def ddim_step(plan_i: DDIMPlan, x, model_output, noise, prediction_type: str):
    """One DDIM update from ``x`` at ``plan_i.timesteps`` -> ``(x_prev, pred_x0)``.

    ``noise`` (same shape as ``x``, or None for none) is scaled by ``plan_i.sigma``.
    """
    x0, eps = predict_x0_eps(model_output, x, plan_i.alpha_bar, prediction_type)
    x0 = x0 * plan_i.x0_rescale
    x_prev = jnp.sqrt(plan_i.alpha_bar_prev) * x0 + plan_i.dir_coef * eps
    if noise is not None:
        x_prev = x_prev + plan_i.sigma * noise
    return x_prev.astype(x.dtype), x0.astype(x.dtype)


def ddim_invert_step(plan_i: DDIMPlan, x, model_output, prediction_type: str):
    """Reverse of a deterministic step (StereoDiffusion Eq. 9): ``x`` at ``alpha_bar_prev``,
    ``model_output`` evaluated on it at ``plan_i.timesteps`` -> ``(x at alpha_bar, pred_x0)``.

    For eps models this is ``x_t = sqrt(ab/ab_prev) x + (sqrt(1/ab - 1) - sqrt(1/ab_prev - 1))
    sqrt(ab) eps``; v outputs are turned into eps at the level the model was told. Eq. 9 as
    printed lacks the ``sqrt(ab)`` on the eps term (DDIM's Eq. 13 is in ``x / sqrt(ab)``
    coordinates); with it, this is the exact reverse of ``ddim_step`` at eta 0 for fixed eps,
    as in null-text inversion's code.
    """
    _, eps = predict_x0_eps(model_output, x, plan_i.alpha_bar, prediction_type)
    a_prev, a_t = plan_i.alpha_bar_prev, plan_i.alpha_bar
    x0 = (x - jnp.sqrt(1.0 - a_prev) * eps) / jnp.sqrt(a_prev)
    x_next = jnp.sqrt(a_t) * x0 + jnp.sqrt(1.0 - a_t) * eps
    return x_next.astype(x.dtype), x0.astype(x.dtype)


DenoiseFn = Callable[[jax.Array, jax.Array, DDIMPlan], jax.Array]


def _batch_t(plan_i: DDIMPlan, x):
    return jnp.broadcast_to(plan_i.timesteps, (x.shape[0],))


def ddim_body(denoise_fn: DenoiseFn, prediction_type: str):
    """The scan body of ``ddim_sample``: ``(x, (plan_i, noise_i)) -> (x_prev, (x_prev, pred_x0))``.

    ``denoise_fn(x, t, plan_i)`` gets the batch of timesteps ``t`` int32 [B] and the step's
    plan slice (guidance scales, step index) and returns the final (guided) model output.
    """
    check_prediction_type(prediction_type)

    def body(x, inputs):
        plan_i, noise_i = inputs
        out = denoise_fn(x, _batch_t(plan_i, x), plan_i)
        x_prev, x0 = ddim_step(plan_i, x, out, noise_i, prediction_type)
        return x_prev, (x_prev, x0)

    return body


def _check_noise(noise, plan: DDIMPlan, x):
    if noise is not None and tuple(noise.shape) != (plan.num_steps, *x.shape):
        raise ValueError(f"noise must have shape {(plan.num_steps, *x.shape)} (steps, *x_T.shape), "
                         f"got {tuple(noise.shape)}")


def ddim_sample(denoise_fn: DenoiseFn, x_T, plan: DDIMPlan, noise, prediction_type: str,
                return_trajectory: bool = False):
    """Run a whole plan as one ``lax.scan``.

    ``noise``: [S, *x_T.shape] (the noise of each step, sampling order) or None (eta = 0).
    Returns ``(x_0, pred_x0 of the last step)``, or with ``return_trajectory`` the stacked
    ``(x after each step, pred_x0 of each step)``, both [S, *x_T.shape].
    """
    _check_noise(noise, plan, x_T)
    body = ddim_body(denoise_fn, prediction_type)
    if return_trajectory:
        _, (xs, x0s) = jax.lax.scan(body, x_T, (plan, noise))
        return xs, x0s

    def last_only(carry, inputs):
        x_prev, (_, x0) = body(carry[0], inputs)
        return (x_prev, x0), None

    (x, x0), _ = jax.lax.scan(last_only, (x_T, jnp.zeros_like(x_T)), (plan, noise))
    return x, x0


def ddim_invert(denoise_fn: DenoiseFn, x_0, plan: DDIMPlan, prediction_type: str):
    """Deterministic DDIM inversion of a clean latent ``x_0`` along ``plan`` (in reverse).

    Returns [S, *x_0.shape] in *sampling order*: entry ``i`` is the latent at
    ``plan.timesteps[i]``, i.e. the input of sampling step ``i`` (entry 0 is x_T).
    Starts from level ``alpha_bar_prev`` of the last step (1 or ``alphas_cumprod[0]``:
    build the plan with ``set_alpha_to_one=True`` to start from x_0 itself).
    """
    check_prediction_type(prediction_type)
    rev = jax.tree.map(lambda a: a[::-1], plan)

    def body(x, plan_i):
        out = denoise_fn(x, _batch_t(plan_i, x), plan_i)
        x_next, _ = ddim_invert_step(plan_i, x, out, prediction_type)
        return x_next, x_next

    _, xs = jax.lax.scan(body, x_0, rev)
    return xs[::-1]


def cfg_denoiser(model_fn: Callable, cond, uncond) -> DenoiseFn:
    """A guided ``denoise_fn`` from ``model_fn(x, t, context) -> output``.

    Runs the conditional and unconditional passes as one batch ``[x; x]`` with contexts
    ``cond`` / ``uncond`` (pytrees, concatenated on axis 0), then ``guidance`` with the
    step's ``guidance_scale`` and ``guidance_rescale`` (lvdm order, see module docstring).
    """
    both = jax.tree.map(lambda c, u: jnp.concatenate([c, u], axis=0), cond, uncond)

    def denoise(x, t, plan_i):
        b = x.shape[0]
        out = model_fn(jnp.concatenate([x, x], 0), jnp.concatenate([t, t], 0), both)
        return guided_output(out[:b], out[b:], plan_i.guidance_scale, plan_i.guidance_rescale)

    return denoise


def draw_noise(key, plan: DDIMPlan, shape, dtype=jnp.float32):
    """Standard normal noise for every step: [S, *shape] (the sampler's ``noise`` argument)."""
    return jax.random.normal(key, (plan.num_steps, *shape), dtype)
