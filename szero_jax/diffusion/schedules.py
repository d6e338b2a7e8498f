"""Beta schedules, zero-terminal-SNR rescale and DDIM timestep spacings (host-side numpy).

Naming: ``"linear"`` here is diffusers' linear (``linspace(beta_start, beta_end)``);
``"scaled_linear"`` is ``linspace(sqrt(beta_start), sqrt(beta_end)) ** 2``. DynamiCrafter's
``lvdm`` calls the latter "linear" (``make_beta_schedule``); ``"lvdm_linear"`` is an alias
for it, so a DynamiCrafter config can be written as it reads.
"""
from __future__ import annotations

import dataclasses

import numpy as np

BETA_SCHEDULES = ("linear", "scaled_linear", "lvdm_linear")
SPACINGS = ("leading", "trailing", "linspace", "uniform", "uniform_trailing", "quad")


def make_betas(kind: str, num_train_timesteps: int = 1000, beta_start: float = 0.00085,
               beta_end: float = 0.012) -> np.ndarray:
    """float64 betas [T]. Default range 0.00085-0.012: SD / DynamiCrafter / SVD configs."""
    if kind == "linear":
        return np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
    if kind in ("scaled_linear", "lvdm_linear"):
        return np.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps,
                           dtype=np.float64) ** 2
    raise ValueError(f"kind must be one of {BETA_SCHEDULES}, got {kind!r}")


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Shift and scale sqrt(alpha_bar) so the last step has zero SNR (Lin et al. 2024, Alg. 1)."""
    sqrt_ab = np.sqrt(np.cumprod(1.0 - np.asarray(betas, np.float64)))
    first, last = sqrt_ab[0], sqrt_ab[-1]
    sqrt_ab = (sqrt_ab - last) * (first / (first - last))
    ab = sqrt_ab ** 2
    alphas = np.concatenate([ab[:1], ab[1:] / ab[:-1]])
    return 1.0 - alphas


@dataclasses.dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """Training noise schedule: float64 numpy ``betas`` and ``alphas_cumprod`` [T].

    Plans are built from it on the host and carried into JAX as float32 arrays.
    """
    betas: np.ndarray
    alphas_cumprod: np.ndarray

    @property
    def num_train_timesteps(self) -> int:
        return int(self.betas.shape[0])

    @classmethod
    def create(cls, kind: str = "scaled_linear", num_train_timesteps: int = 1000,
               beta_start: float = 0.00085, beta_end: float = 0.012,
               zero_terminal_snr: bool = False) -> "NoiseSchedule":
        betas = make_betas(kind, num_train_timesteps, beta_start, beta_end)
        if zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        return cls(betas=betas, alphas_cumprod=np.cumprod(1.0 - betas))


def dynamicrafter_schedule() -> NoiseSchedule:
    """DynamiCrafter 512/1024: lvdm "linear" 0.00085-0.012, 1000 steps, zero-terminal-SNR
    (configs/inference_512_v1.0.yaml: linear_start/end, rescale_betas_zero_snr: True)."""
    return NoiseSchedule.create("lvdm_linear", 1000, 0.00085, 0.012, zero_terminal_snr=True)


def stable_diffusion_schedule() -> NoiseSchedule:
    """SD 1.x / SVD training schedule: scaled_linear 0.00085-0.012, 1000 steps (scheduler configs)."""
    return NoiseSchedule.create("scaled_linear", 1000, 0.00085, 0.012)


def ddim_timesteps(num_steps: int, spacing: str, num_train_timesteps: int = 1000,
                   steps_offset: int = 0) -> np.ndarray:
    """Timesteps in sampling order (descending), int64.

    diffusers (``DDIMScheduler.set_timesteps``):
      leading   ``arange(S) * (T // S) + steps_offset`` (SD 1.x uses steps_offset=1)
      trailing  ``round(arange(T, 0, -T / S)) - 1``  (ends at T - 1)
      linspace  ``round(linspace(0, T - 1, S))``
    lvdm (``make_ddim_timesteps``; ``steps_offset`` is ignored, the +-1 is built in):
      uniform           ``range(0, T, T // S) + 1``: leading with offset 1. When S does not
                        divide T this gives more than S steps, as lvdm does.
      uniform_trailing  ``round(arange(T, 0, -T / S)) - 1``: identical to trailing
                        (50 steps: 19, 39, ..., 999; 10 steps: 99, 199, ..., 999).
      quad              ``int(linspace(0, sqrt(0.8 T), S) ** 2) + 1``
    """
    if not isinstance(num_steps, (int, np.integer)) or not 0 < num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be an int in [1, {num_train_timesteps}], got {num_steps!r}")
    t_train, s = num_train_timesteps, int(num_steps)
    if spacing == "leading":
        ts = np.arange(s) * (t_train // s) + steps_offset
    elif spacing in ("trailing", "uniform_trailing"):
        ts = np.round(np.arange(t_train, 0, -t_train / s)).astype(np.int64)[::-1] - 1
    elif spacing == "linspace":
        ts = np.round(np.linspace(0, t_train - 1, s))
    elif spacing == "uniform":
        ts = np.arange(0, t_train, t_train // s) + 1
    elif spacing == "quad":
        ts = (np.linspace(0, np.sqrt(t_train * 0.8), s) ** 2).astype(np.int64) + 1
    else:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    ts = np.asarray(ts, np.int64)[::-1].copy()
    if ts.min() < 0 or ts.max() >= t_train:
        raise ValueError(f"steps_offset={steps_offset} puts timesteps outside [0, {t_train})")
    return ts


def dynamic_rescale_table(num_train_timesteps: int = 1000, base_scale: float = 0.7,
                          turning_step: int = 400) -> np.ndarray:
    """DynamiCrafter's ``scale_arr`` (lvdm/models/ddpm3d.py, float32 buffer): a linear ramp
    from 1 to ``base_scale`` over ``turning_step`` steps, then ``base_scale``.
    Defaults 0.7 and 400: LatentDiffusion(base_scale=0.7, turning_step=400) in ddpm3d.py."""
    ramp = np.linspace(1.0, base_scale, turning_step)
    return np.concatenate([ramp, np.full(num_train_timesteps, base_scale)]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class DynamicRescale:
    """DynamiCrafter's pred_x0 rescale (``use_dynamic_rescale``), the option of
    ``make_ddim_plan``: pred_x0 is multiplied by ``table[t_prev] / table[t]`` each step."""
    base_scale: float = 0.7   # LatentDiffusion(base_scale=0.7) in lvdm/models/ddpm3d.py
    turning_step: int = 400   # LatentDiffusion(turning_step=400) in lvdm/models/ddpm3d.py

    def table(self, num_train_timesteps: int = 1000) -> np.ndarray:
        """``dynamic_rescale_table`` of these settings."""
        return dynamic_rescale_table(num_train_timesteps, self.base_scale, self.turning_step)
