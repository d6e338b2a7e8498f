"""Input checks at the pipelines' edge, stage timing and progress reporting.

Progress: a pipeline takes ``callback(stage, done, total)``; it is called once when a stage
starts (``done = 0``) and once per network evaluation of a diffusion stage, from inside the
jitted scan through ``jax.debug.callback``.
"""
from __future__ import annotations

import functools
import time
from typing import Callable, Optional

import jax
import numpy as np

Callback = Optional[Callable[[str, int, int], None]]


def check_prompt(prompt, name: str = "prompt", allow_empty: bool = False) -> str:
    if not isinstance(prompt, str):
        raise ValueError(f"{name}: expected a string, got {type(prompt).__name__}")
    if not allow_empty and not prompt.strip():
        raise ValueError(f"{name}: expected a non-empty text prompt")
    return prompt


def check_frames(x, name: str, ndim: int, size: Optional[tuple] = None) -> np.ndarray:
    """Float RGB in [0, 1] with ``ndim`` dims ([H, W, 3] or [T, H, W, 3]) -> float32 numpy.
    A leading batch axis of 1 is dropped. ``size``: required (H, W)."""
    x = np.asarray(x)
    layout = "[H, W, 3]" if ndim == 3 else "[T, H, W, 3]"
    if x.ndim == ndim + 1 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != ndim or x.shape[-1] != 3 or min(x.shape) == 0:
        raise ValueError(f"{name}: expected {layout} RGB, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name}: expected float values in [0, 1], got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: contains NaN/inf")
    if x.min() < -1e-3 or x.max() > 1 + 1e-3:
        raise ValueError(f"{name}: expected values in [0, 1], got [{x.min():.4g}, {x.max():.4g}]")
    if size is not None and tuple(x.shape[-3:-1]) != tuple(size):
        raise ValueError(f"{name}: expected height x width {tuple(size)}, got {x.shape[-3:-1]}")
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def check_depth(depth, shape: tuple, name: str = "depth") -> np.ndarray:
    """Finite real map of exactly ``shape`` (a leading batch axis of 1 is dropped)."""
    d = np.asarray(depth)
    if d.ndim == len(shape) + 1 and d.shape[0] == 1:
        d = d[0]
    if not np.issubdtype(d.dtype, np.number) or np.issubdtype(d.dtype, np.complexfloating):
        raise ValueError(f"{name}: expected real numbers, got dtype {d.dtype}")
    if tuple(d.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)} (the output's frames x height x "
                         f"width), got {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"{name}: contains {d.size - np.isfinite(d).sum()} NaN/inf values")
    return d.astype(np.float32)


def check_size(h: int, w: int, multiple: int, name: str = "image"):
    if h % multiple or w % multiple:
        raise ValueError(f"{name}: height and width must be multiples of {multiple} (VAE and "
                         f"UNet downsampling), got {h}x{w}")


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def check_config(config, cls, name: str):
    """``config`` is a ``cls`` whose own ``validate()`` passes (it names the bad field)."""
    if not isinstance(config, cls):
        raise ValueError(f"{name}: expected a {cls.__name__}, got {type(config).__name__}")
    if cls.validate.__code__.co_argcount == 1:      # the stereo configs validate per schedule
        config.validate()
    return config


_ACTIVE: list = []   # the running StageTimer (host side), read by the traced tick's callback


def _report(stage: str, _):
    if _ACTIVE:
        _ACTIVE[-1].tick(stage)


def tick(stage: str, x):
    """Call inside a traced network evaluation (``x``: any traced array, e.g. the step):
    the running pipeline's callback gets ``(stage, n, total)`` for the n-th evaluation. The
    host function is module-level, so jitted programs stay cached across calls."""
    jax.debug.callback(functools.partial(_report, stage), x)


class StageTimer:
    """Wall time of each stage (results blocked on) and progress through the callback."""

    def __init__(self, callback: Callback = None):
        self.callback = callback
        self.timings: dict[str, float] = {}
        self._count: dict[str, int] = {}
        self._total: dict[str, int] = {}

    def run(self, stage: str, fn, *args, total: int = 1, **kwargs):
        """``fn(*args, **kwargs)`` timed as ``stage``; ``total``: its network evaluations."""
        self._count[stage], self._total[stage] = 0, total
        if self.callback is not None:
            self.callback(stage, 0, total)
        _ACTIVE.append(self)
        start = time.perf_counter()
        try:
            out = jax.block_until_ready(fn(*args, **kwargs))
            jax.effects_barrier()
        finally:
            _ACTIVE.remove(self)
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start
        return out

    def tick(self, stage: str):
        self._count[stage] = self._count.get(stage, 0) + 1
        if self.callback is not None:
            self.callback(stage, self._count[stage], self._total.get(stage, 0))
