"""What report.html shows of a footage conversion, gathered while the frames stream past
(``footage_job`` never holds the whole video, so ``io.report.ReportFrames.sample`` cannot
pick the frames afterwards).

    sampler = ReportSampler(frames=T, width=W, pixel_range=(lo, hi))
    sampler.add(start, left_u8, right_u8, disparity_px, holes)   # every assembled chunk
    kept = sampler.take()          # this segment's sampled frames (saved with the segment)
    state = sampler.state()        # the histogram so far (saved in the segment's record)
    frames = report_frames(work_dir)   # -> io.report.ReportFrames

The frames are the ones ``ReportFrames.sample`` would pick (``REPORT_FRAMES`` evenly spaced),
shrunk by an integer factor to at most ``MAX_WIDTH`` pixels (block means; a block is a hole
if any of its pixels is), so a 1080p report stays a few MB. The histogram counts every pixel
of every frame at the source size, on bins fixed before the first frame (the disparity's
whole range, known from the plan), so it survives a resume unchanged.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

from szero_jax.io import report as io_report

REPORT_FRAMES = 4                            # as generate's report
MAX_WIDTH = 2 * io_report.THUMB_WIDTH        # the widest io.report displays a frame (px)
BINS = io_report.HIST_BINS


def sample_indices(frames: int, count: int = REPORT_FRAMES) -> tuple:
    """The frames ``io.report.ReportFrames.sample`` shows of a ``frames``-frame video."""
    idx = np.linspace(0, frames - 1, min(count, frames)).round().astype(int)
    return tuple(int(i) for i in np.unique(idx))


def _shrink(x: np.ndarray, factor: int, reduce=np.mean) -> np.ndarray:
    """[H, W, ...] -> [H // f, W // f, ...] by ``reduce`` over f x f blocks."""
    if factor == 1:
        return x
    h, w = (x.shape[0] // factor) * factor, (x.shape[1] // factor) * factor
    blocks = x[:h, :w].reshape(h // factor, factor, w // factor, factor, *x.shape[2:])
    return reduce(blocks, axis=(1, 3))


class ReportSampler:
    """Keeps the sampled frames of the chunks it is shown and a histogram of all of them."""

    def __init__(self, frames: int, width: int, pixel_range: tuple):
        lo, hi = (float(v) for v in pixel_range)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise ValueError(f"pixel_range: expected finite (lo, hi) with lo <= hi, got "
                             f"{pixel_range!r}")
        if lo == hi:                             # a flat disparity: one visible bin around it
            lo, hi = lo - 0.5, hi + 0.5
        self.indices = set(sample_indices(frames))
        self.factor = max(1, math.ceil(width / MAX_WIDTH))
        self.range = (lo, hi)
        self.counts = np.zeros(BINS, np.int64)
        self._kept: list = []

    def add(self, start: int, left, right, disparity, holes) -> None:
        """A chunk of frames ``start ..``: uint8 views [n, H, W, 3], pixel disparity and
        holes [n, H, W]."""
        d = np.clip(np.asarray(disparity, np.float32), *self.range)
        self.counts += np.histogram(d, bins=BINS, range=self.range)[0]
        for i in range(d.shape[0]):
            if start + i in self.indices:
                f = self.factor
                views = [np.round(_shrink(np.asarray(v[i], np.float32), f)).astype(np.uint8)
                         for v in (left, right)]
                self._kept.append({"index": start + i, "left": views[0], "right": views[1],
                                   "disparity": _shrink(d[i], f),
                                   "holes": _shrink(np.asarray(holes[i], bool), f, np.any)})

    def take(self) -> Optional[dict]:
        """The sampled frames added since the last call, stacked (None if none)."""
        kept, self._kept = self._kept, []
        if not kept:
            return None
        return {k: np.stack([np.asarray(x[k]) for x in kept]) for k in kept[0]}

    def state(self) -> dict:
        return {"counts": [int(c) for c in self.counts], "range": list(self.range)}

    def load(self, state: dict) -> None:
        if list(state["range"]) != list(self.range) or len(state["counts"]) != BINS:
            raise ValueError(f"state: a histogram over {state['range']} does not continue one "
                             f"over {list(self.range)}")
        self.counts = np.asarray(state["counts"], np.int64)


def report_frames(segments_dir, state: dict) -> io_report.ReportFrames:
    """The ReportFrames of a finished conversion: the ``report_*.npz`` files a
    ``ReportSampler``'s ``take`` results were saved to in ``segments_dir``, and the
    histogram of its final ``state``."""
    parts = [np.load(p) for p in sorted(Path(segments_dir).glob("report_*.npz"))]
    if not parts:
        raise FileNotFoundError(f"segments_dir: no report_*.npz frames in {str(segments_dir)!r}")
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0].files}
    edges = np.linspace(*state["range"], BINS + 1)
    return io_report.ReportFrames(joined["left"], joined["right"], joined["disparity"],
                                  joined["holes"], tuple(int(i) for i in joined["index"]),
                                  histogram=(np.asarray(state["counts"]), edges))
