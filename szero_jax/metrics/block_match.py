"""Disparity of a stereo pair estimated by block matching, and its error against an intended one.

Measures whether a right view's parallax follows the disparity it was made from (e.g. a
depth map), independently of how it was made: for every left pixel the integer shift ``d``
in a search range that maximises the zero-mean normalised cross-correlation (ZNCC) of the
``block`` x ``block`` windows around ``left(x)`` and ``right(x - d)`` (all channels
together), refined to sub-pixel by a parabola through the scores at ``d - 1, d, d + 1``.
ZNCC ignores a block's gain and offset, so a diffusion right view with a slightly different
tone still matches. A pixel is *confident* when its left block is textured, its best score
reaches ``min_score``, and the right-to-left match lands back within ``lr_tolerance`` px
(the left-right check, which rejects occluded pixels and ambiguous matches).

    est = block_match_disparity(left, right, max_disparity_px=20)     # BlockMatch
    err = block_match_error(left, right, intended_px)                  # BlockMatchError

Convention as ``geometry.forward_warp``: ``right(x - d) ~ left(x)``, d > 0 nearer.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from szero_jax.geometry import occlusion_mask


@dataclasses.dataclass(frozen=True)
class BlockMatchConfig:
    # Project choices, sized on the 80x128 world frames (metrics tests): a 7 px window is
    # the usual local-stereo size (e.g. OpenCV StereoBM's default blockSize is 21 at full
    # HD, ~7 at this size); 0.02 of the [0, 1] range is ~5 grey levels of texture.
    block: int = 7              # odd window side, px
    min_texture: float = 0.02   # std of the left window (values in [0, 1]) to count as textured
    min_score: float = 0.5      # ZNCC of the best match to count as confident
    lr_tolerance: float = 1.0   # px between the left-to-right and right-to-left estimates

    def validate(self) -> "BlockMatchConfig":
        if not (isinstance(self.block, int) and self.block >= 3 and self.block % 2 == 1):
            raise ValueError(f"block: expected an odd int >= 3 (BlockMatchConfig), got "
                             f"{self.block!r}")
        for name, lo, hi in (("min_texture", 0.0, 1.0), ("min_score", -1.0, 1.0),
                             ("lr_tolerance", 0.0, 1e4)):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and lo <= v <= hi):
                raise ValueError(f"{name}: expected a number in [{lo}, {hi}] "
                                 f"(BlockMatchConfig), got {v!r}")
        return self


class BlockMatch(NamedTuple):
    disparity: jax.Array   # [..., H, W] float32, px (right(x - d) ~ left(x))
    score: jax.Array       # [..., H, W] ZNCC of the best match (-1 where nothing matched)
    textured: jax.Array    # [..., H, W] bool: the left window's std >= min_texture
    confident: jax.Array   # [..., H, W] bool: textured, score >= min_score, left-right check


class BlockMatchError(NamedTuple):
    """Block-matched disparity against an intended one, over the *scored* pixels: textured in
    the left view and visible in the right under the intended disparity (the same pixels
    whatever the right view is, so two right views' errors compare)."""
    mean_abs_error_px: jax.Array   # [...] mean |estimate - intended| over the scored pixels
    median_abs_error_px: jax.Array  # [...] their median (robust to a periodic texture's
                                    # wrong-period matches)
    within_1px: jax.Array          # [...] fraction of them with |error| <= 1 px
    confident_fraction: jax.Array  # [...] fraction of them passing the confidence tests
    confident_mean_abs_error_px: jax.Array   # [...] the mean over the confident ones only
    scored_fraction: jax.Array     # [...] scored pixels / all pixels


def _box(x, block: int):
    """Sum over the block x block window centred on each pixel of [B, H, W] (zeros outside),
    by differences of cumulative sums (compiles far faster on XLA:CPU than reduce_window)."""
    r = block // 2

    def along(a, axis):
        n = a.shape[axis]
        pad = [(0, 0)] * a.ndim
        pad[axis] = (r + 1, r)
        c = jnp.cumsum(jnp.pad(a, pad), axis=axis)
        hi = jax.lax.slice_in_dim(c, block, block + n, axis=axis)
        lo = jax.lax.slice_in_dim(c, 0, n, axis=axis)
        return hi - lo

    return along(along(x, 1), 2)


def _window_count(h: int, w: int, block: int):
    """In-frame pixels of each pixel's window, [H, W] (analytic: a box filter of a constant
    would be constant-folded by XLA, slowly)."""
    r = block // 2
    n = lambda size: (jnp.minimum(jnp.arange(size) + r, size - 1)
                      - jnp.maximum(jnp.arange(size) - r, 0) + 1).astype(jnp.float32)
    return n(h)[:, None] * n(w)[None, :]


def _scores(left, right, d_min: int, d_max: int, block: int):
    """ZNCC [D, B, H, W] of left(x) against right(x - d), d = d_min..d_max, windows weighted
    by the in-frame samples of the shifted right view; -2 where the centre is out of frame or
    fewer than half the window is in."""
    b, h, w, c = left.shape
    pad = max(d_max, -d_min, 0)
    padded = jnp.pad(right, ((0, 0), (0, 0), (pad, pad), (0, 0)))
    inside = jnp.pad(jnp.ones((b, h, w), jnp.float32), ((0, 0), (0, 0), (pad, pad)))

    def one(d):
        r = jax.lax.dynamic_slice_in_dim(padded, pad - d, w, axis=2)   # right(x - d)
        m = jax.lax.dynamic_slice_in_dim(inside, pad - d, w, axis=2)
        n = _box(m, block) * c
        s = lambda a: _box(jnp.sum(a, -1) * m, block)
        ml, mr = s(left) / jnp.maximum(n, 1.0), s(r) / jnp.maximum(n, 1.0)
        vl = s(left * left) / jnp.maximum(n, 1.0) - ml * ml
        vr = s(r * r) / jnp.maximum(n, 1.0) - mr * mr
        cov = s(left * r) / jnp.maximum(n, 1.0) - ml * mr
        zncc = cov / jnp.sqrt(jnp.maximum(vl * vr, 1e-12))
        ok = (m > 0) & (n >= 0.5 * block * block * c)
        return jnp.where(ok, jnp.clip(zncc, -1.0, 1.0), -2.0)

    return jax.lax.map(one, jnp.arange(d_min, d_max + 1))


def _winner(scores, d_min: int):
    """Best shift per pixel with the parabola's sub-pixel offset, and its score."""
    n = scores.shape[0]
    best = jnp.argmax(scores, axis=0)
    take = lambda k: jnp.take_along_axis(scores, jnp.clip(k, 0, n - 1)[None], 0)[0]
    y0, ym, yp = take(best), take(best - 1), take(best + 1)
    curve = ym - 2.0 * y0 + yp
    interior = (best > 0) & (best < n - 1) & (ym > -2.0) & (yp > -2.0) & (curve < 0)
    frac = jnp.where(interior, 0.5 * (ym - yp) / jnp.where(interior, curve, -1.0), 0.0)
    disparity = (best + d_min).astype(jnp.float32) + jnp.clip(frac, -0.5, 0.5)
    return disparity, jnp.where(y0 > -2.0, y0, -1.0)


def _right_to_left(scores, d_min: int):
    """The right view's scores: right(x) ~ left(x + d) is the left's score at x + d (the same
    window pair), so each shift's slice moves left by d; -2 past the frame."""
    w = scores.shape[-1]
    x = jnp.arange(w)

    def one(s, d):
        src = x + d
        inside = (src >= 0) & (src < w)
        return jnp.where(inside, jnp.take(s, jnp.clip(src, 0, w - 1), axis=-1), -2.0)

    return jax.vmap(one)(scores, jnp.arange(scores.shape[0]) + d_min)


def _match(left, right, d_min: int, d_max: int, config: BlockMatchConfig) -> BlockMatch:
    scores = _scores(left, right, d_min, d_max, config.block)
    d_l, score = _winner(scores, d_min)
    d_r = _winner(_right_to_left(scores, d_min), d_min)[0]
    w = left.shape[2]
    x = jnp.arange(w, dtype=jnp.float32)
    target = jnp.clip(jnp.round(x - d_l), 0, w - 1).astype(jnp.int32)
    back = jnp.take_along_axis(d_r, target, axis=2)
    cnt = _window_count(left.shape[1], w, config.block) * left.shape[-1]
    mean = _box(jnp.sum(left, -1), config.block) / cnt
    var = _box(jnp.sum(left * left, -1), config.block) / cnt - mean * mean
    textured = jnp.sqrt(jnp.maximum(var, 0.0)) >= config.min_texture
    confident = (textured & (score >= config.min_score)
                 & (jnp.abs(back - d_l) <= config.lr_tolerance))
    return BlockMatch(d_l, score, textured, confident)


_match_jit = jax.jit(_match, static_argnames=("d_min", "d_max", "config"))


def _images(left, right):
    left, right = jnp.asarray(left, jnp.float32), jnp.asarray(right, jnp.float32)
    if left.shape != right.shape or left.ndim < 3:
        raise ValueError(f"left and right: expected one shape [..., H, W, C], got {left.shape} "
                         f"and {right.shape}")
    return left, right


def _range(lo, hi, width: int) -> tuple[int, int]:
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (lo, hi)) or lo > hi:
        raise ValueError(f"min_disparity_px, max_disparity_px: expected finite numbers with min "
                         f"<= max, got {lo!r} and {hi!r}")
    lo, hi = int(math.floor(lo)), int(math.ceil(hi))
    if hi - lo > width - 1:
        raise ValueError(f"max_disparity_px - min_disparity_px: expected < the width {width}, "
                         f"got {hi - lo}")
    return lo, hi


def block_match_disparity(left, right, max_disparity_px, min_disparity_px=0,
                          config: BlockMatchConfig = BlockMatchConfig()) -> BlockMatch:
    """Per-pixel disparity of the pair ``left``, ``right`` [..., H, W, C] (floats, [0, 1]
    scale for ``min_texture``), searched over the integers ``min_disparity_px`` ..
    ``max_disparity_px`` (then sub-pixel; see the module docstring). Returns a
    ``BlockMatch`` of [..., H, W] arrays. jit-compiled per shape and range."""
    left, right = _images(left, right)
    lo, hi = _range(min_disparity_px, max_disparity_px, left.shape[-2])
    config = config.validate()
    lead, (h, w, c) = left.shape[:-3], left.shape[-3:]
    flat = lambda a: a.reshape((-1, h, w, c))
    out = _match_jit(flat(left), flat(right), lo, hi, config)
    return BlockMatch(*(a.reshape(lead + (h, w)) for a in out))


@functools.partial(jax.jit, static_argnames=("d_min", "d_max", "config"))
def _error(left, right, d, d_min: int, d_max: int, config: BlockMatchConfig) -> BlockMatchError:
    est = _match(left, right, d_min, d_max, config)
    scored = est.textured & ~occlusion_mask(d)
    axes = (-2, -1)
    count = jnp.sum(scored, axes)
    err = jnp.abs(est.disparity - d)
    mean = lambda v, m: jnp.sum(jnp.where(m, v, 0.0), axes) / jnp.maximum(jnp.sum(m, axes), 1)
    conf = scored & est.confident
    median = jnp.nanmedian(jnp.where(scored, err, jnp.nan).reshape(err.shape[:-2] + (-1,)), -1)
    return BlockMatchError(mean(err, scored), jnp.nan_to_num(median),
                           mean((err <= 1.0).astype(jnp.float32), scored),
                           jnp.sum(conf, axes) / jnp.maximum(count, 1), mean(err, conf),
                           count / (d.shape[-1] * d.shape[-2]))


def block_match_error(left, right, disparity, config: BlockMatchConfig = BlockMatchConfig(),
                      margin_px: int = 2) -> BlockMatchError:
    """How far the right view's block-matched disparity is from the intended ``disparity``
    [..., H, W] (px, the left view's): see ``BlockMatchError`` ([...] arrays). The search
    covers the intended range, 0 and ``margin_px`` more on each side. A right view equal to
    the left (the zero-disparity control) scores about the intended mean disparity."""
    left, right = _images(left, right)
    d = np.asarray(disparity, np.float32)
    if d.shape != left.shape[:-1] or not np.all(np.isfinite(d)):
        raise ValueError(f"disparity: expected finite values of shape {left.shape[:-1]}, got "
                         f"shape {d.shape}")
    if not (isinstance(margin_px, int) and margin_px >= 0):
        raise ValueError(f"margin_px: expected an int >= 0, got {margin_px!r}")
    w = left.shape[-2]
    lo = min(0.0, float(d.min())) - margin_px
    hi = min(max(0.0, float(d.max())) + margin_px, lo + w - 1)
    lo, hi = _range(lo, hi, w)
    lead, (h, _, c) = left.shape[:-3], left.shape[-3:]
    out = _error(left.reshape((-1, h, w, c)), right.reshape((-1, h, w, c)),
                 jnp.asarray(d.reshape((-1, h, w))), lo, hi, config.validate())
    return BlockMatchError(*(a.reshape(lead) for a in out))
