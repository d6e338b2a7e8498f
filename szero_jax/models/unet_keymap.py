"""Key maps from diffusers UNet state-dict keys to the Flax params of ``unet2d``/``unet_st``.

Both UNets name their Flax modules after the diffusers modules: ``name.<i>`` becomes
``name_<i>``, a block and its child are merged at the top (``down_blocks.1.resnets.0`` ->
``down_blocks_1_resnets_0``), ``to_out.0`` is ``to_out``. Pure functions of the key; the
transform is a function of the tensor, applied by the converter.
"""
from __future__ import annotations

from typing import Callable, Tuple

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]
_BLOCKS = ("down_blocks_", "up_blocks_", "mid_block")


def _identity(w: np.ndarray) -> np.ndarray:
    return w


def _kernel(w: np.ndarray) -> np.ndarray:
    """torch Linear [out, in] -> [in, out]; Conv [out, in, *k] -> [*k, in, out]."""
    if w.ndim == 2:
        return w.T
    if w.ndim in (4, 5):
        return w.transpose(tuple(range(2, w.ndim)) + (1, 0))
    raise ValueError(f"weight must be 2-D (Linear) or 4/5-D (Conv), got shape {w.shape}")


def _projection(w: np.ndarray) -> np.ndarray:
    """``proj_in``/``proj_out``: a 1x1 Conv (SD 1.x) or a Linear (SD 2.x) -> Dense kernel."""
    if w.ndim == 4:
        if w.shape[2:] != (1, 1):
            raise ValueError(f"proj_in/proj_out conv must be 1x1, got shape {w.shape}")
        w = w[:, :, 0, 0]
    return _kernel(w)


def diffusers_unet_key(key: str) -> Tuple[str, Transform]:
    """diffusers UNet key -> ("a/b/c" Flax param path, transform), the form
    ``convert.common.convert_state_dict`` takes. Raises ValueError on a malformed key."""
    parts = key.split(".")
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"key must look like 'module.param', got {key!r}")
    *mods, leaf = parts
    names: list[str] = []
    for p in mods:
        if not p.isdigit():
            names.append(p)
        elif not names:
            raise ValueError(f"key {key!r} starts with an index")
        elif names[-1] == "to_out":
            if p != "0":
                raise ValueError(f"key {key!r}: only to_out.0 holds parameters")
        else:
            names[-1] += f"_{p}"
    if len(names) > 1 and names[0].startswith(_BLOCKS):
        names[:2] = [f"{names[0]}_{names[1]}"]
    module = "/".join(names)
    if leaf in ("bias", "mix_factor"):
        return f"{module}/{leaf}", _identity
    if leaf != "weight":
        raise ValueError(f"unexpected parameter {key!r} (expected .weight, .bias or .mix_factor)")
    if "norm" in names[-1]:
        return f"{module}/scale", _identity
    if names[-1] in ("proj_in", "proj_out"):
        return f"{module}/kernel", _projection
    return f"{module}/kernel", _kernel
