"""Full-reference image metrics: PSNR and SSIM over [..., H, W, C] arrays."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _check_pair(x, y, name: str = "x"):
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    if x.shape != y.shape or x.ndim < 3:
        raise ValueError(f"{name} and y must share one shape [..., H, W, C], got {x.shape} and "
                         f"{y.shape}")
    return x, y


@jax.jit
def psnr(x, y, data_range: float = 1.0, mask=None):
    """PSNR in dB per image: [..., H, W, C] -> [...]. mask: bool [..., H, W] of the pixels to
    compare (all by default). Identical images give inf."""
    x, y = _check_pair(x, y)
    err = (x - y) ** 2
    if mask is None:
        mse = jnp.mean(err, axis=(-3, -2, -1))
    else:
        mask = jnp.asarray(mask, bool)
        if mask.shape != x.shape[:-1]:
            raise ValueError(f"mask must have shape {x.shape[:-1]}, got {mask.shape}")
        m = mask[..., None].astype(jnp.float32)
        mse = jnp.sum(err * m, axis=(-3, -2, -1)) / (jnp.sum(m, axis=(-3, -2, -1)) * x.shape[-1])
    return 10.0 * jnp.log10(data_range ** 2 / mse)


def _gaussian_taps(sigma: float, truncate: float = 3.5) -> np.ndarray:
    radius = int(truncate * sigma + 0.5)  # skimage/scipy: win_size = 2 * radius + 1 (11)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (t / sigma) ** 2)
    return (w / w.sum()).astype(np.float32)


def _filter_valid(x, taps):
    """Separable 'valid' filter over H and W of [..., H, W, C]."""
    k = len(taps)
    h, w = x.shape[-3] - k + 1, x.shape[-2] - k + 1
    x = sum(float(t) * x[..., i:i + h, :, :] for i, t in enumerate(taps))
    return sum(float(t) * x[..., :, i:i + w, :] for i, t in enumerate(taps))


@functools.partial(jax.jit, static_argnames="sigma")
def ssim(x, y, data_range: float = 1.0, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03):
    """Mean SSIM per image, [..., H, W, C] -> [...], with a Gaussian window (sigma 1.5, 11
    taps) and population covariances: skimage's structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, channel_axis=-1), the Wang et al. 2004 setting.
    Like skimage, the mean is over pixels at least 5 from the border (a 'valid' filter)."""
    x, y = _check_pair(x, y)
    taps = _gaussian_taps(sigma)
    if min(x.shape[-3:-1]) < len(taps):
        raise ValueError(f"images must be at least {len(taps)}x{len(taps)} for SSIM, got "
                         f"{x.shape[-3:-1]}")
    f = lambda a: _filter_valid(a, taps)
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return jnp.mean(s, axis=(-3, -2, -1))


def hole_ghost(right, true_right, left, mask) -> float:
    """How much a right view's holes show the occluder (issue 15's ghost duplicates): a / (a + b)
    over the ``mask`` pixels (the disoccluded ones), a = mean |right - true_right|, b = mean
    |right - left|. 1 when the holes hold the left view's content at those pixels (the
    occluder, a duplicate at the left view's position; right = left gives 1), 0 when they hold
    the truth, 0.5 when equally far from both. right, true_right, left: [..., H, W, C] in
    [0, 1] (right is clipped to it); mask: bool [..., H, W]; NaN for an empty mask."""
    right = np.clip(np.asarray(right, np.float32), 0.0, 1.0)
    true_right, left = np.asarray(true_right, np.float32), np.asarray(left, np.float32)
    mask = np.asarray(mask, bool)
    if not right.shape == true_right.shape == left.shape or mask.shape != right.shape[:-1]:
        raise ValueError(f"right, true_right, left must share one shape [..., H, W, C] and mask "
                         f"be [..., H, W]; got {right.shape}, {true_right.shape}, {left.shape}, "
                         f"{mask.shape}")
    if not mask.any():
        return float("nan")
    a = float(np.abs(right - true_right)[mask].mean())
    b = float(np.abs(right - left)[mask].mean())
    return a / max(a + b, 1e-12)
