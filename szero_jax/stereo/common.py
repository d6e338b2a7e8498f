"""Shared pieces of the stereo samplers: view stacking, input checks, the border mask.

A *stereo denoiser* is ``denoise_fn(x, t, plan_i, cross_view) -> model_output``: the
diffusion layer's denoiser (``x``, timesteps ``t`` int32 [rows], the step's ``DDIMPlan``
slice for guidance scales) plus the int32 cross-view mode the networks take. ``x`` holds
the two views view-major on the batch axis, ``[left; right]``; CFG lives inside each half.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from szero_jax.models.attention import cross_view_index

StereoDenoiseFn = Callable[[jax.Array, jax.Array, object, jax.Array], jax.Array]


def split_views(x):
    b = x.shape[0] // 2
    return x[:b], x[b:]


def join_views(left, right):
    return jnp.concatenate([left, right], axis=0)


def check_latent_and_disparity(x, disparity, x_name="x_T"):
    """x [B, T, H, W, C] or [B, H, W, C]; disparity x's shape without channels."""
    if x.ndim not in (4, 5):
        raise ValueError(f"{x_name} must be [B, T, H, W, C] or [B, H, W, C], got shape {x.shape}")
    if tuple(disparity.shape) != tuple(x.shape[:-1]):
        raise ValueError(f"disparity must have shape {tuple(x.shape[:-1])} ({x_name} without "
                         f"channels, in latent pixels), got {tuple(disparity.shape)}")


def mode_code(name: str, field: str) -> int:
    try:
        return cross_view_index(name)
    except ValueError as e:
        raise ValueError(f"{field}: {e}") from None
