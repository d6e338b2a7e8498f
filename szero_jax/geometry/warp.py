"""Horizontal forward warp (z-buffered splat) and backward warp (gather) along image rows.

Convention (DESIGN.md): disparity `d` in pixels of the array it applies to, positive = the
point moves left in the right view, `x_right = x_left - d`; source column `c` lands on target
column `floor(c - d + 0.5)`.

Why the z-buffer key is the source column alone. Two sources `c1 < c2` of one row that land on
the same target `t` satisfy `c - d in [t - 0.5, t + 0.5)`, so `d2 > c2 - t - 0.5 >= c1 - t + 0.5
>= d1`: the larger source column always has the strictly larger disparity (is nearer). The
same holds for any non-decreasing integer rounding of `d` (e.g. the released truncation). So a
scatter-max of the source column is exactly the "nearest wins, ties -> larger column" z-buffer
of a key packing quantised disparity above the column, with no quantisation, no range limit
and half the work (where float32 rounding of the target makes two sources collide whose
disparities differ by ~1e-5 px, it agrees with a 1/256-px key, which calls them a tie); the
exact equality to a disparity-keyed loop is tested.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _check_pair(x, disparity, x_name: str):
    """Validate x [B,T,H,W,C] / [B,H,W,C] against disparity [B,T,H,W] / [B,H,W]."""
    x, disparity = jnp.asarray(x), jnp.asarray(disparity)
    if x.ndim not in (4, 5):
        raise ValueError(f"{x_name} must be [B, T, H, W, C] or [B, H, W, C], got shape {x.shape}")
    if disparity.shape != x.shape[:-1]:
        raise ValueError(
            f"disparity must have shape {x.shape[:-1]} (the shape of {x_name} without channels), "
            f"got {disparity.shape}")
    if not jnp.issubdtype(disparity.dtype, jnp.floating) and not jnp.issubdtype(
            disparity.dtype, jnp.integer):
        raise ValueError(f"disparity must be a real array, got dtype {disparity.dtype}")
    return x, disparity


def _targets(d):
    """Target column of every source pixel of rows d [N, W], and whether it lands in the row."""
    width = d.shape[-1]
    t = jnp.floor(jnp.arange(width, dtype=jnp.float32) - d.astype(jnp.float32) + 0.5)
    inside = jnp.isfinite(t) & (t >= 0) & (t < width)  # NaN disparity: the source is dropped
    return jnp.where(inside, t, 0).astype(jnp.int32), inside


def _winners(d):
    """Per target pixel of rows d [N, W], the source column winning the z-buffer (-1: hole).

    One flat scatter-max over all rows. Outside targets go to a dump slot past the end
    (explicit: a negative index would wrap before scatter's mode='drop' sees it), so every
    index is in bounds. Columns are int16 when they fit: half the scatter's memory traffic."""
    n, width = d.shape
    t, inside = _targets(d)
    flat = jnp.where(inside, jnp.arange(n, dtype=jnp.int32)[:, None] * width + t, n * width)
    dtype = jnp.int16 if width <= jnp.iinfo(jnp.int16).max else jnp.int32
    cols = jnp.broadcast_to(jnp.arange(width, dtype=dtype), (n, width))
    winner = jnp.full((n * width + 1,), -1, dtype).at[flat.reshape(-1)].max(
        cols.reshape(-1), mode="promise_in_bounds")
    return winner[:-1].reshape(n, width).astype(jnp.int32)


def forward_warp(x, disparity):
    """Splat the left view `x` into the right view: `(warped, holes)`.

    x: [B, T, H, W, C] or [B, H, W, C] (any C: latents or pixels); disparity: x's shape without
    C, in pixels, either sign. Targets outside the row are dropped; where several sources land
    on one target the nearest (largest disparity) wins, ties -> larger source column (the
    released code truncates the shift: pass `jnp.trunc(d)` to reproduce it). Non-finite
    disparities are dropped. Returns warped (x's shape and dtype, zeros in holes) and holes
    (bool, disparity's shape). jit-able; batch, frames and rows share one scatter-max and one
    gather (flattened: equivalent to vmapping the per-row kernel, and faster on CPU).
    """
    x, disparity = _check_pair(x, disparity, "x")
    shape = x.shape
    width, channels = shape[-2], shape[-1]
    winner = _winners(disparity.reshape(-1, width))
    holes = winner < 0
    rows = jnp.arange(winner.shape[0], dtype=jnp.int32)[:, None] * width
    src = (rows + jnp.maximum(winner, 0)).reshape(-1)
    gathered = x.reshape(-1, channels).at[src].get(mode="promise_in_bounds")
    warped = jnp.where(holes.reshape(-1, 1), jnp.zeros((), x.dtype), gathered)
    return warped.reshape(shape), holes.reshape(shape[:-1])


def occlusion_mask(disparity):
    """Source (left) pixels that are not seen in the warped view: beaten in the z-buffer by a
    nearer pixel, or shifted out of the frame. disparity [..., H, W] -> bool, same shape."""
    disparity = jnp.asarray(disparity)
    if disparity.ndim < 2:
        raise ValueError(f"disparity must be [..., H, W], got shape {disparity.shape}")
    d = disparity.reshape(-1, disparity.shape[-1])
    t, inside = _targets(d)
    won = jnp.take_along_axis(_winners(d), t, axis=-1)
    visible = inside & (won == jnp.arange(d.shape[-1], dtype=jnp.int32))
    return ~visible.reshape(disparity.shape)


def backward_warp(x_right, disparity, mode: str = "linear"):
    """Sample the right view at `c - d` for every left pixel: `(x_left_estimate, valid)`.

    x_right: [B, T, H, W, C] or [B, H, W, C]; disparity: the left view's disparity, x_right's
    shape without C. mode "linear" interpolates between the two nearest columns; "nearest"
    takes column floor(c - d + 0.5) (the forward warp's target). valid marks samples inside the
    row (occlusions are not detected here: see `occlusion_mask`); invalid samples are zero.
    """
    if mode not in ("linear", "nearest"):
        raise ValueError(f"mode must be 'linear' or 'nearest', got {mode!r}")
    x_right, disparity = _check_pair(x_right, disparity, "x_right")
    width = x_right.shape[-2]
    pos = jnp.arange(width, dtype=jnp.float32) - disparity.astype(jnp.float32)
    if mode == "nearest":
        pos = jnp.floor(pos + 0.5)
    valid = jnp.isfinite(pos) & (pos >= 0) & (pos <= width - 1)
    pos = jnp.where(valid, pos, 0.0)
    lo = jnp.clip(jnp.floor(pos), 0, width - 1).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, width - 1)
    frac = (pos - lo)[..., None]
    take = lambda idx: jnp.take_along_axis(x_right, idx[..., None], axis=-2)
    out = take(lo) if mode == "nearest" else take(lo) * (1 - frac) + take(hi) * frac
    out = jnp.where(valid[..., None], out, 0).astype(x_right.dtype)
    return out, valid


def _nearest_valid(valid, reverse: bool = False):
    """Per pixel of rows valid [..., W], the column of the nearest valid pixel at or before
    it (at or after it with ``reverse``), -1 where there is none."""
    w = valid.shape[-1]
    cols = jnp.arange(w, dtype=jnp.int32)
    if reverse:
        flipped = jnp.where(valid[..., ::-1], cols, -1)          # position from the right
        found = jax.lax.cummax(flipped, axis=valid.ndim - 1)[..., ::-1]
        return jnp.where(found >= 0, w - 1 - found, -1)
    return jax.lax.cummax(jnp.where(valid, cols, -1), axis=valid.ndim - 1)


def background_fill(x, holes, warped_disparity):
    """Fill the holes of a forward-warped view from the background side: each hole pixel of
    x [..., H, W, C] takes the nearest non-hole pixel of its row whose warped disparity
    [..., H, W] is the smaller (farther: a disocclusion uncovers background), the only one at
    a frame edge, zero in an all-hole row. This is "stretch" (edge fill, StereoDiffusion
    Tab. 1), the classical baseline; the samplers use it as an option for the holes' first
    content, in place of the unwarped left view's (which is the occluder: a ghost)."""
    x, holes, wd = jnp.asarray(x), jnp.asarray(holes), jnp.asarray(warped_disparity)
    valid = ~holes
    lc, rc = _nearest_valid(valid), _nearest_valid(valid, reverse=True)
    take = lambda a, col: jnp.take_along_axis(a, jnp.maximum(col, 0), axis=-1)
    d_l = jnp.where(lc >= 0, take(wd, lc), jnp.inf)
    d_r = jnp.where(rc >= 0, take(wd, rc), jnp.inf)
    col = jnp.where(d_l <= d_r, lc, rc)
    filled = jnp.take_along_axis(x, jnp.maximum(col, 0)[..., None], axis=-2)
    fill = jnp.where((col >= 0)[..., None], filled, jnp.zeros((), x.dtype))
    return jnp.where(holes[..., None], fill, x)


def warped_disparity(disparity):
    """The disparity [..., H, W] of the source winning each right-view pixel (zero in the
    holes): ``background_fill``'s key."""
    disparity = jnp.asarray(disparity)
    return forward_warp(disparity[..., None].astype(jnp.float32), disparity)[0][..., 0]
