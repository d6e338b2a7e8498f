"""StereoDiffusion sampler (paper Sec. 3.1-3.3): stereo pixel shift of the latent at step
t', symmetric pixel-shift masking denoise (SPSMD) at regular intervals, deblur, and
self-attention sharing between the views, as one ``lax.scan`` over both views.

Both views are one batch ``[left; right]`` from step 0 (they are identical until the shift,
so the right half of the early calls repeats the left; one network copy in the program is
worth more than those calls). The views share the step noise (the paper samples with eta 0).

Paper vs released code (lez-s/StereoDiffusion; see docs/references.md):
  * SPSMD: the paper's Eq. 6-7 puts the shifted left latent into the masked positions of the
    right *input* ``X'_t'`` and takes the right's DDIM update from it with the model output of
    the unmodified input (``spsmd="paper"``); the released code overwrites the right's
    *output* there (``"released"``). Eq. 7 writes the left latent as ``x_{t'-1}`` (the left's
    output); put into an input at level t' that mixes noise levels and breaks "zero
    disparity gives two equal views", so we read it as the left latent at the same level,
    the left's input ``x_t'``;
  * shift at 20 % of the steps (Sec. 3.1; released step 10 of 50), SPSMD every 10 steps after
    it (released: steps 20, 30, 40), attention sharing from the shift step (released 10).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from szero_jax.diffusion import DDIMPlan, ddim_step, plan_at
from szero_jax.diffusion.guidance import check_prediction_type
from szero_jax.geometry import forward_warp
from szero_jax.stereo.inversion import NullTextConfig
from szero_jax.stereo.common import (StereoDenoiseFn, check_latent_and_disparity, join_views,
                                     mode_code, split_views)


@dataclasses.dataclass(frozen=True)
class StereoDiffusionConfig:
    shift_fraction: float = 0.2       # Sec. 3.1: t' at 20 % of the denoising steps
    spsmd: str = "paper"              # Eq. 6-7; "released": overwrite x_prev; "off"
    spsmd_every: int = 10             # Sec. 3.2 "regular intervals"; released steps 20, 30, 40
    deblur: bool = False              # Eq. 8 optional (Sec. 4.3: helps on some images only)
    attention: str = "uni"            # Alg. 1 uni/bi; released txt2stereoimg.py --direction uni
    attention_start: Optional[int] = None  # None: the shift step (released: step 10)
    null_text: NullTextConfig = NullTextConfig()  # image-to-stereo's inversion (img2stereo.py)

    def shift_step(self, num_steps: int) -> int:
        return int(round(self.shift_fraction * num_steps))

    def validate(self, num_steps: int) -> None:
        if self.spsmd not in ("paper", "released", "off"):
            raise ValueError(f"spsmd must be 'paper', 'released' or 'off', got {self.spsmd!r}")
        if self.attention not in ("none", "uni", "bi"):
            raise ValueError(f"attention must be 'none', 'uni' or 'bi', got {self.attention!r}")
        if not 0 <= self.shift_step(num_steps) < num_steps:
            raise ValueError(f"shift_fraction must put the shift inside the {num_steps} steps, "
                             f"got {self.shift_fraction}")
        if self.spsmd_every < 1:
            raise ValueError(f"spsmd_every must be >= 1, got {self.spsmd_every}")
        if not isinstance(self.null_text, NullTextConfig):
            raise ValueError(f"null_text: expected a NullTextConfig, got "
                             f"{type(self.null_text).__name__}")
        self.null_text.validate()


_NOTHING, _SHIFT, _SPSMD = 0, 1, 2


class StereoDiffusionEvents(NamedTuple):
    """The schedule as data (host numpy; pass as a jit argument)."""
    action: np.ndarray     # int32 [S]: 0 nothing, 1 pixel shift, 2 SPSMD after this step
    mode: np.ndarray       # int32 [S]: cross-view mode of the step
    deblur: np.ndarray     # bool scalar
    spsmd_paper: np.ndarray  # bool scalar: Eq. 6-7 (else the released overwrite)


def build_stereodiffusion_events(config: StereoDiffusionConfig, num_steps: int
                                 ) -> StereoDiffusionEvents:
    config.validate(num_steps)
    shift = config.shift_step(num_steps)
    steps = np.arange(num_steps)
    action = np.where(steps == shift, _SHIFT, _NOTHING)
    if config.spsmd != "off":
        later = (steps > shift) & ((steps - shift) % config.spsmd_every == 0)
        action = np.where(later, _SPSMD, action)
    start = shift if config.attention_start is None else config.attention_start
    mode = np.where(steps >= start, mode_code(config.attention, "attention"), mode_code("none", ""))
    return StereoDiffusionEvents(action.astype(np.int32), mode.astype(np.int32),
                                 np.bool_(config.deblur), np.bool_(config.spsmd == "paper"))


class StereoDiffusionOutput(NamedTuple):
    left: jax.Array
    right: jax.Array
    shifted: jax.Array   # bool: M of Eq. 7, the right-view pixels the shift filled


def stereodiffusion_sample(denoise_fn: StereoDenoiseFn, x_T, disparity, plan: DDIMPlan, key,
                           config: StereoDiffusionConfig = StereoDiffusionConfig(),
                           prediction_type: str = "epsilon", x_T_right=None
                           ) -> StereoDiffusionOutput:
    """Sample a stereo image pair (or video, [B, T, H, W, C]) from the left latent ``x_T``.

    disparity: x_T's shape without channels, in latent pixels (the pixel shift's ``s D``,
    Eq. 3). key: step noise (eta > 0) and the deblur noise. ``x_T_right``: the right view's
    start (default ``x_T``; image-to-stereo passes the same inverted latent). SD is an eps
    model, hence the prediction_type default.
    """
    return stereodiffusion_run(denoise_fn, x_T, disparity, plan, key,
                               build_stereodiffusion_events(config, plan.num_steps),
                               prediction_type, x_T_right)


def stereodiffusion_run(denoise_fn: StereoDenoiseFn, x_T, disparity, plan: DDIMPlan, key,
                        events: StereoDiffusionEvents, prediction_type: str = "epsilon",
                        x_T_right=None) -> StereoDiffusionOutput:
    """``stereodiffusion_sample`` with the schedule as data."""
    check_prediction_type(prediction_type)
    check_latent_and_disparity(x_T, disparity)
    if events.action.shape[0] != plan.num_steps:
        raise ValueError(f"events have {events.action.shape[0]} steps, the plan {plan.num_steps}")
    x_T_right = x_T if x_T_right is None else x_T_right
    if x_T_right.shape != x_T.shape:
        raise ValueError(f"x_T_right must have shape {x_T.shape}, got {x_T_right.shape}")
    k_step, k_blur = jax.random.split(key)
    noise = jax.random.normal(k_step, (plan.num_steps,) + x_T.shape, x_T.dtype)
    blur_noise = jax.random.normal(k_blur, x_T.shape, x_T.dtype)    # eps_t' of Eq. 8
    deblur, spsmd_paper = jnp.asarray(events.deblur), jnp.asarray(events.spsmd_paper)

    def body(carry, inputs):
        x, shifted = carry
        p, action, mode, n = inputs
        t = jnp.broadcast_to(p.timesteps, (x.shape[0],))
        out = denoise_fn(x, t, p, mode)
        n2 = join_views(n, n)
        x_prev, _ = ddim_step(p, x, out, n2, prediction_type)
        left_prev, right_prev = split_views(x_prev)
        left_in, right_in = split_views(x)
        _, out_r = split_views(out)

        def nothing():
            return right_prev, shifted

        def shift():                                              # Eq. 3 (+ Eq. 8)
            warped, holes = forward_warp(left_prev, disparity)
            fill = jnp.where(deblur, blur_noise, jnp.zeros_like(warped))
            return jnp.where(holes[..., None], fill, warped), ~holes

        def spsmd():
            m = shifted[..., None]
            warped_in, _ = forward_warp(left_in, disparity)                 # Eq. 7
            paper, _ = ddim_step(p, jnp.where(m, warped_in, right_in), out_r, n,
                                 prediction_type)                           # Eq. 6
            warped_prev, _ = forward_warp(left_prev, disparity)
            released = jnp.where(m, warped_prev, right_prev)
            return jnp.where(spsmd_paper, paper, released), shifted

        right_prev, shifted = jax.lax.switch(action, [nothing, shift, spsmd])
        return (join_views(left_prev, right_prev), shifted), None

    carry = (join_views(x_T, x_T_right), jnp.zeros(disparity.shape, bool))
    xs = (plan, jnp.asarray(events.action), jnp.asarray(events.mode), noise)
    (x, shifted), _ = jax.lax.scan(body, carry, xs)
    left, right = split_views(x)
    return StereoDiffusionOutput(left, right, shifted)
