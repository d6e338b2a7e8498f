"""Masks on warp holes: StereoCrafter-Zero's border columns and hole dilation."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def border_mask(holes, min_valid_frames: int | None = None, side: str = "both"):
    """Columns at the image edge that the warp left (almost) empty, as in the released
    `clean_border` (lvdm/models/samplers/ddim_stereo.py) behind the paper's Eq. 3.

    holes: bool [B, T, H, W] (or [B, H, W], one frame). Per batch item, a column is blank when
    every row has fewer than `min_valid_frames` valid frames (released: the count of valid
    frames per pixel is compared with 16, the 16-frame model's length, i.e. "a hole in at least
    one frame"; default None = T). Only the unbroken run of blank columns starting at the image
    edge counts ("right" for positive disparities, "left" for negative ones, "both").
    Returns bool of holes' shape, True in the border columns of every frame and row.
    """
    if holes.ndim not in (3, 4):
        raise ValueError(f"holes must be [B, T, H, W] or [B, H, W], got shape {holes.shape}")
    if side not in ("left", "right", "both"):
        raise ValueError(f"side must be 'left', 'right' or 'both', got {side!r}")
    h4 = holes if holes.ndim == 4 else holes[:, None]
    frames = h4.shape[1]
    need = frames if min_valid_frames is None else int(min_valid_frames)
    if need < 1:
        raise ValueError(f"min_valid_frames must be >= 1, got {min_valid_frames}")
    valid_frames = jnp.sum(~h4.astype(bool), axis=1)  # [B, H, W]
    blank = jnp.all(valid_frames < need, axis=1)  # [B, W]
    from_left = jnp.cumprod(blank, axis=-1).astype(bool)
    from_right = jnp.cumprod(blank[:, ::-1], axis=-1)[:, ::-1].astype(bool)
    cols = {"left": from_left, "right": from_right, "both": from_left | from_right}[side]
    return jnp.broadcast_to(cols[:, None, None, :], h4.shape).reshape(holes.shape)


def dilate_holes(holes, radius: int):
    """Grow a bool mask [..., H, W] by `radius` pixels (square window of side 2r + 1)."""
    if holes.ndim < 2:
        raise ValueError(f"holes must be [..., H, W], got shape {holes.shape}")
    if int(radius) != radius or radius < 0:
        raise ValueError(f"radius must be a non-negative integer, got {radius}")
    if radius == 0:
        return holes.astype(bool)
    k = 2 * int(radius) + 1
    window = (1,) * (holes.ndim - 2) + (k, k)
    grown = jax.lax.reduce_window(holes.astype(jnp.int32), 0, jax.lax.max, window,
                                  (1,) * holes.ndim, "SAME")
    return grown.astype(bool)
