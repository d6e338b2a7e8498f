"""Disparity maps in pixels from relative depth or disparity, and resizing them."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def minmax_signed(v, axes=None):
    """Min-max of ``v`` over ``axes`` (default: all) to [-1, 1]: the depth2img condition
    map (diffusers ``StableDiffusionDepth2ImgPipeline``) and DepthCrafter's disparity target."""
    lo = jnp.min(v, axis=axes, keepdims=True)
    hi = jnp.max(v, axis=axes, keepdims=True)
    return 2.0 * (v - lo) / jnp.maximum(hi - lo, 1e-6) - 1.0


def _normalise(v, percentiles):
    """Map each clip (leading axis) to [0, 1] between its low and high percentiles, clipped."""
    axes = tuple(range(1, v.ndim))
    lo = jnp.percentile(v, percentiles[0], axis=axes, keepdims=True)
    hi = jnp.percentile(v, percentiles[1], axis=axes, keepdims=True)
    span = hi - lo
    # A flat map carries no depth: zero disparity (as the released _norm_depth does).
    ok = span > jnp.finfo(v.dtype).eps * jnp.maximum(jnp.abs(hi), 1.0)
    return jnp.where(ok, jnp.clip((v - lo) / jnp.where(ok, span, 1.0), 0.0, 1.0), 0.0)


def disparity_from_depth(depth, max_disparity: float, kind: str = "depth",
                         convergence: float | None = None,
                         percentiles: tuple[float, float] = (1.0, 99.0),
                         exponent: float = 1.0, width: int | None = None):
    """Disparity in pixels (positive = moves left in the right view) from a relative map.

    depth: [B, T, H, W] clips or [B, H, W] images; normalised per clip (per item of B).
    kind: "depth" = relative depth (larger is farther, must be > 0; inverted to 1/depth), or
      "disparity" = relative inverse depth (larger is nearer), e.g. DepthCrafter's output.
    max_disparity: the near-to-far disparity span as a fraction of `width`. StereoDiffusion
      shifts by 8% of the latent width (0.08); StereoCrafter-Zero by `scale/100 * W` (scale 8
      by default, 4 in most released examples: 0.08 / 0.04).
    convergence: None keeps the far plane at zero disparity (all shifts >= 0, as both released
      codes do); a value c in [0, 1] puts zero parallax at normalised disparity c, so farther
      points get negative disparity (down to -c * span).
    percentiles: robust normalisation bounds (project choice: (0, 100) is the released min-max).
    exponent: applied to the normalised disparity (StereoCrafter-Zero's scale_disparity_factor).
    width: pixel width the disparity applies to; default depth.shape[-1].

    NaN/inf values are rejected (ValueError) when depth is concrete; under jit the check is
    skipped, so validate first.
    """
    if kind not in ("depth", "disparity"):
        raise ValueError(f"kind must be 'depth' or 'disparity', got {kind!r}")
    if depth.ndim not in (3, 4):
        raise ValueError(f"depth must be [B, T, H, W] or [B, H, W], got shape {depth.shape}")
    if not (0.0 < float(max_disparity) <= 1.0):
        raise ValueError(f"max_disparity must be a fraction of the width in (0, 1], got "
                         f"{max_disparity} (a percentage like 8 means 0.08)")
    if convergence is not None and not 0.0 <= float(convergence) <= 1.0:
        raise ValueError(f"convergence must be None or in [0, 1], got {convergence}")
    lo_p, hi_p = percentiles
    if not 0.0 <= lo_p < hi_p <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    if exponent <= 0:
        raise ValueError(f"exponent must be > 0, got {exponent}")
    if not isinstance(depth, jax.core.Tracer):
        host = np.asarray(depth)
        if not np.issubdtype(host.dtype, np.number):
            raise ValueError(f"depth must be numeric, got dtype {host.dtype}")
        if not np.all(np.isfinite(host)):
            raise ValueError(f"depth contains {np.size(host) - np.isfinite(host).sum()} NaN/inf "
                             "values; fill or mask them before converting to disparity")
        if kind == "depth" and np.any(host <= 0):
            raise ValueError("depth must be > 0 everywhere for kind='depth' (it is inverted); "
                             "pass kind='disparity' for inverse-depth maps")
    scale = max_disparity * (depth.shape[-1] if width is None else width)
    return _disparity(jnp.asarray(depth, jnp.float32), kind == "depth", convergence,
                      tuple(percentiles), float(exponent), float(scale))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _disparity(v, invert, convergence, percentiles, exponent, scale):
    n = _normalise(1.0 / v if invert else v, percentiles) ** exponent
    return (n if convergence is None else n - convergence) * scale


def resize_disparity(disparity, size: tuple[int, int], method: str = "bilinear"):
    """Resize disparity [..., H, W] to size (h, w); values scale by w / W (pixels of the new
    width). Bilinear without antialiasing, half-pixel centres: torch's F.interpolate
    (bilinear, align_corners=False), as StereoCrafter-Zero resizes to latent size."""
    if disparity.ndim < 2:
        raise ValueError(f"disparity must be [..., H, W], got shape {disparity.shape}")
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (h, w) with positive entries, got {size}")
    if method not in ("bilinear", "nearest"):
        raise ValueError(f"method must be 'bilinear' or 'nearest', got {method!r}")
    h, w = int(size[0]), int(size[1])
    out = jax.image.resize(jnp.asarray(disparity, jnp.float32),
                           disparity.shape[:-2] + (h, w), method=method, antialias=False)
    return out * (w / disparity.shape[-1])
