"""Checks and conversions of frame arrays at the io edge."""
from __future__ import annotations

import numpy as np


def to_uint8(x, name: str, ndim: int) -> np.ndarray:
    """float in [0, 1] or uint8 with `ndim` dims and 1 or 3 channels -> uint8 (validated)."""
    x = np.asarray(x)
    if x.ndim != ndim or x.shape[-1] not in (1, 3):
        layout = "[T, H, W, C]" if ndim == 4 else "[H, W, C]"
        raise ValueError(f"{name} must be {layout} with C in (1, 3), got shape {x.shape}")
    if min(x.shape) == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be float in [0, 1] or uint8, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN/inf")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"{name} must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
