"""Stereo-pair metrics that need no reference right view."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from szero_jax.geometry import backward_warp, occlusion_mask


def _views(left, right, min_ndim: int = 4):
    left, right = jnp.asarray(left, jnp.float32), jnp.asarray(right, jnp.float32)
    if left.shape != right.shape or left.ndim < min_ndim:
        layout = "[B, H, W, C] or [B, T, H, W, C]" if min_ndim == 4 else "[B, T, H, W, C]"
        raise ValueError(f"left and right must share one shape {layout}, got {left.shape} and "
                         f"{right.shape}")
    return left, right


@jax.jit
def left_right_consistency(left, right, disparity):
    """Mean absolute error between the left view and the right view backward-warped onto it
    with the intended disparity (left's, pixels), over left pixels visible in the right view
    (in frame and not occluded). [B, (T,) H, W, C] -> [B]; ~0 for a perfect warp."""
    left, right = _views(left, right)
    disparity = jnp.asarray(disparity, jnp.float32)
    if disparity.shape != left.shape[:-1]:
        raise ValueError(f"disparity must have shape {left.shape[:-1]}, got {disparity.shape}")
    estimate, valid = backward_warp(right, disparity)
    good = (valid & ~occlusion_mask(disparity))[..., None].astype(jnp.float32)
    axes = tuple(range(1, left.ndim))
    err = jnp.sum(jnp.abs(estimate - left) * good, axis=axes)
    return err / jnp.maximum(jnp.sum(good, axis=axes) * left.shape[-1], 1.0)


@functools.partial(jax.jit, static_argnames="max_shift")
def vertical_disparity(left, right, max_shift: int = 8):
    """Estimated vertical offset of the right view in rows ([B, (T,) H, W, C] -> [B]; 0 for a
    rectified pair; s > 0 means right[y] ~ left[y - s]). Horizontal parallax leaves the row
    profile (mean of each row) unchanged, so the best shift of the row-profile gradients by
    normalised cross-correlation, refined to sub-row by a parabola, measures vertical offset."""
    left, right = _views(left, right)
    h = left.shape[-3]
    if not 1 <= max_shift < h // 2:
        raise ValueError(f"max_shift must be in [1, H/2) = [1, {h // 2}), got {max_shift}")
    profile = lambda v: jnp.diff(jnp.mean(v.reshape(v.shape[0], -1, *v.shape[-3:]),
                                          axis=(1, 3, 4)), axis=-1)
    pl, pr = profile(left), profile(right)
    n = pl.shape[-1]
    core = slice(max_shift, n - max_shift)

    def ncc(s):
        a = pl[:, core]
        b = pr[:, max_shift + s:n - max_shift + s]
        a, b = a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True)
        return jnp.sum(a * b, -1) / jnp.sqrt(jnp.sum(a * a, -1) * jnp.sum(b * b, -1) + 1e-20)

    scores = jnp.stack([ncc(s) for s in range(-max_shift, max_shift + 1)], -1)  # [B, 2S+1]
    best = jnp.argmax(scores, -1)
    interior = (best > 0) & (best < 2 * max_shift)
    i = jnp.clip(best, 1, 2 * max_shift - 1)
    take = lambda k: jnp.take_along_axis(scores, k[:, None], -1)[:, 0]
    ym, y0, yp = take(i - 1), take(i), take(i + 1)
    curved = interior & (ym - 2 * y0 + yp < 0)
    frac = jnp.where(curved, 0.5 * (ym - yp) / jnp.where(curved, ym - 2 * y0 + yp, -1.0), 0.0)
    return (best - max_shift).astype(jnp.float32) + frac


@jax.jit
def temporal_flicker(left, right):
    """Frame-difference energy of the right view relative to the left: [B, T, H, W, C] -> [B],
    mean((R_t+1 - R_t)^2) / mean((L_t+1 - L_t)^2). 1 = the right view changes over time as
    much as the left; > 1 = it flickers more."""
    left, right = _views(left, right, min_ndim=5)
    if left.shape[1] < 2:
        raise ValueError(f"temporal_flicker needs T >= 2 frames, got T={left.shape[1]}")
    energy = lambda v: jnp.mean(jnp.diff(v, axis=1) ** 2, axis=(1, 2, 3, 4))
    return energy(right) / jnp.maximum(energy(left), 1e-12)
