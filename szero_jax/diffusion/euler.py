"""Euler (EDM / k-diffusion) sampling for SVD-family models such as DepthCrafter.

Mirrors diffusers' ``EulerDiscreteScheduler`` without churn (``s_churn = 0``, as SVD and
DepthCrafter sample). The state lives in sigma space, ``x = x0 + sigma eps``; the network sees
``c_in x`` with ``c_in = 1 / sqrt(sigma^2 + 1)`` (the VP latent at ``alpha_bar = c_in^2``) and,
for SVD's continuous v-prediction, the timestep ``0.25 log(sigma)``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from szero_jax.diffusion.guidance import check_prediction_type
from szero_jax.diffusion.schedules import NoiseSchedule, stable_diffusion_schedule

# SVD-xt's scheduler (stable-video-diffusion-img2vid-xt scheduler_config.json; the EDM range
# also in Stability's generative-models svd options): sigma 0.002-700, Karras rho 7, leading
# spacing with steps_offset 1, continuous timesteps, v-prediction.
SVD_SIGMA_MIN = 0.002
SVD_SIGMA_MAX = 700.0


@flax.struct.dataclass
class EulerPlan:
    """Per-step arrays [S] in sampling order; ``init_noise_sigma`` scales unit noise to x_T."""
    sigma: jax.Array
    sigma_next: jax.Array        # 0 after the last step
    timesteps: jax.Array         # float32 model timestep (0.25 log sigma, or the discrete t)
    step: jax.Array              # int32 position, 0..S-1
    init_noise_sigma: float = flax.struct.field(pytree_node=False, default=1.0)

    @property
    def num_steps(self) -> int:
        return int(self.sigma.shape[0])

    @property
    def alpha_bar(self):
        """The VP noise level of each step, ``1 / (1 + sigma^2)`` (for Eq. 5-style formulas)."""
        return 1.0 / (1.0 + self.sigma ** 2)


def _sigma_to_t(sigma: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """Fractional training timestep of each sigma by linear interpolation in log sigma."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, None]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
    return (1 - w) * low + w * (low + 1)


@dataclasses.dataclass(frozen=True)
class KarrasSigmas:
    """The Karras et al. 2022 (EDM) sigma ramp of an Euler plan; an end left None takes the
    range from the training schedule at the spaced timesteps, as diffusers does."""
    sigma_min: Optional[float] = SVD_SIGMA_MIN   # SVD-xt scheduler_config.json (see above)
    sigma_max: Optional[float] = SVD_SIGMA_MAX   # SVD-xt scheduler_config.json (see above)
    rho: float = 7.0   # EDM's rho, fixed in diffusers' EulerDiscreteScheduler (SVD-xt)


def make_euler_plan(schedule: Optional[NoiseSchedule] = None, num_steps: int = 25, *,
                    spacing: str = "leading", steps_offset: int = 1,
                    karras: Optional[KarrasSigmas] = KarrasSigmas(),
                    continuous_timesteps: bool = True) -> EulerPlan:
    """Precompute an Euler plan; the defaults are SVD-xt's scheduler (see SVD_SIGMA_*) on the
    scaled_linear 0.00085-0.012 training schedule. ``num_steps`` 25: the SVD / DepthCrafter
    pipeline default (DepthCrafter's run.py uses 5). ``karras``: the sigma ramp
    (``KarrasSigmas``), or None for the training sigmas at the spaced timesteps.
    Spacings as diffusers: leading (with ``steps_offset``), trailing, linspace.
    """
    schedule = stable_diffusion_schedule() if schedule is None else schedule
    if not isinstance(schedule, NoiseSchedule):
        raise ValueError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    n_train = schedule.num_train_timesteps
    if not isinstance(num_steps, (int, np.integer)) or not 0 < num_steps <= n_train:
        raise ValueError(f"num_steps must be an int in [1, {n_train}], got {num_steps!r}")
    if karras is not None and not isinstance(karras, KarrasSigmas):
        raise ValueError(f"karras: expected a KarrasSigmas or None, got {karras!r}")
    # diffusers computes these in float32; a zero-SNR last step gets alpha_bar 2^-24.
    acp = schedule.alphas_cumprod.astype(np.float32)
    acp[-1] = max(acp[-1], 2.0 ** -24)
    if spacing == "leading":
        ts = np.arange(num_steps)[::-1] * (n_train // num_steps) + steps_offset
    elif spacing == "trailing":
        ts = np.round(np.arange(n_train, 0, -n_train / num_steps)) - 1
    elif spacing == "linspace":
        ts = np.linspace(0, n_train - 1, num_steps)[::-1]
    else:
        raise ValueError(f"spacing must be 'leading', 'trailing' or 'linspace', got {spacing!r}")
    ts = ts.astype(np.float32)
    train_sigmas = np.sqrt((1 - acp) / acp)
    sigmas = np.interp(ts, np.arange(n_train), train_sigmas)
    if karras is not None:
        lo = sigmas[-1] if karras.sigma_min is None else karras.sigma_min
        hi = sigmas[0] if karras.sigma_max is None else karras.sigma_max
        rho = karras.rho
        ramp = np.linspace(0, 1, num_steps)
        sigmas = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
        ts = _sigma_to_t(sigmas, np.log(train_sigmas))
    sigmas = sigmas.astype(np.float32)
    model_t = 0.25 * np.log(sigmas) if continuous_timesteps else ts
    s_max = float(sigmas.max())
    init = s_max if spacing in ("linspace", "trailing") else float(np.sqrt(s_max ** 2 + 1))
    return EulerPlan(sigma=jnp.asarray(sigmas), sigma_next=jnp.asarray(np.append(sigmas[1:], 0)),
                     timesteps=jnp.asarray(model_t, jnp.float32),
                     step=jnp.arange(num_steps, dtype=jnp.int32), init_noise_sigma=init)


def euler_x0(plan_i: EulerPlan, x, model_output, prediction_type: str):
    """Denoised estimate from the raw output (EDM preconditioning c_skip / c_out)."""
    check_prediction_type(prediction_type)
    s = plan_i.sigma
    if prediction_type == "epsilon":
        return x - s * model_output
    if prediction_type == "v_prediction":
        return model_output * (-s / jnp.sqrt(s ** 2 + 1)) + x / (s ** 2 + 1)
    return model_output


def euler_step(plan_i: EulerPlan, x, model_output, prediction_type: str):
    """One Euler step ``x -> x + (x - x0) / sigma * (sigma_next - sigma)``: ``(x_next, x0)``."""
    x0 = euler_x0(plan_i, x, model_output, prediction_type)
    d = (x - x0) / plan_i.sigma
    return (x + d * (plan_i.sigma_next - plan_i.sigma)).astype(x.dtype), x0.astype(x.dtype)


def euler_model_input(plan_i: EulerPlan, x):
    """``c_in x`` (diffusers ``scale_model_input``) and the batch of model timesteps [B]."""
    return x / jnp.sqrt(plan_i.sigma ** 2 + 1), jnp.broadcast_to(plan_i.timesteps, (x.shape[0],))


def euler_sample(denoise_fn: Callable, x_T, plan: EulerPlan, prediction_type: str,
                 return_trajectory: bool = False):
    """Whole plan as one ``lax.scan``. ``x_T`` is already scaled (unit noise times
    ``plan.init_noise_sigma``); ``denoise_fn(c_in x, t, plan_i)`` returns the (guided) output.
    Returns ``(x_0, last pred_x0)`` or the stacked per-step ``(x, pred_x0)``."""
    check_prediction_type(prediction_type)

    def body(carry, plan_i):
        x = carry[0]
        x_in, t = euler_model_input(plan_i, x)
        x_next, x0 = euler_step(plan_i, x, denoise_fn(x_in, t, plan_i), prediction_type)
        return (x_next, x0), ((x_next, x0) if return_trajectory else None)

    last, traj = jax.lax.scan(body, (x_T, jnp.zeros_like(x_T)), plan)
    return traj if return_trajectory else last


def dissolve_alpha_bar(plan, dissolve_step: int):
    """alpha_bar of StereoCrafter-Zero's dissolve level (Eq. 5) in a 50-step DDIM or Euler plan."""
    return plan.alpha_bar[dissolve_index(dissolve_step, plan.num_steps)]


def dissolve_index(dissolve_step: int, num_steps: int = 50) -> int:
    """Index into a ``num_steps`` plan for StereoCrafter-Zero's dissolve level (released
    ``depthcrafter.py``: step ``num_steps - dissolve_step`` of a 50-step schedule; larger
    ``dissolve_step`` = noisier level = stronger low-pass; examples use 5-40)."""
    if not 0 < dissolve_step <= num_steps:
        raise ValueError(f"dissolve_step must be in [1, {num_steps}], got {dissolve_step}")
    return num_steps - dissolve_step
