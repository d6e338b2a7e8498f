"""The arithmetic of a whole-video conversion, free of files and networks: overlapping
windows and their blend weights, the letterbox between the source frame and the model's,
one disparity normalisation for the whole video with its bounds smoothed over time,
the stitching of depth windows, and the seam metric. ``pipelines.footage_job`` runs it.

Windows (``plan_windows``). A video of T frames is cut into windows of the model's clip
length L overlapping by O frames (stride L - O); the last window is moved back to end at
the last frame (so it may overlap more), and a video shorter than L is padded by repeating
its last frame and trimmed back. Every frame's results are a weighted mean over the windows
that cover it (``frame_weights``): in an overlap of O frames the later window's weight rises
``i / O`` (i = 0 .. O - 1) and the earlier one's falls ``1 - i / O``, as DepthCrafter's
released inference blends with ``linspace(0, 1, O)``. So a window's *first* frame never
counts where an earlier window covers it, which matters here: the first frame is
DynamiCrafter's image-conditioned frame, and its hole fill differs most from the other
windows' (measured on the tiny family: mean |difference| in the holes 0.15-0.17 on a
window's first frame against 0.03-0.07 on its others, mostly colour). Weights are
normalised to sum 1 per frame (the last window, moved back, may overlap more).

Depth (``DepthStitcher``). The depth model returns *relative* disparity whose scale and
shift vary from one window to the next. DepthCrafter's inference hides this by seeding the
overlap's noise with the previous window's latents; the stages here return decoded depth,
so each window is instead aligned to the stitched result on the overlap by a least-squares
scale and shift (scale kept positive), then blended with the ramp weights.

Normalisation (``normalise``). One mapping of relative disparity to pixels for the whole
video, not one per window, so the depth scale does not jump at seams: per frame the low and
high percentiles (1, 99, as ``geometry.disparity_from_depth``) of the content, smoothed over
time by a Gaussian of ``bounds_sigma_s`` seconds (long shots drift; within a few seconds the
bounds are one), then ``clip((v - lo) / (hi - lo))`` and the usual convergence and scale.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from szero_jax.pipelines.composite import CompositeConfig
from szero_jax.pipelines.config import check_int, check_number

RIGHT_MODES = ("composite", "latent")
PERCENTILES = (1.0, 99.0)   # as geometry.disparity_from_depth


@dataclasses.dataclass(frozen=True)
class FootageConfig:
    """How a video is cut, blended and written (sampling / depth / stereo settings are in
    their own configs)."""
    right: str = "composite"            # "composite" (source resolution, input kept) or
                                        # "latent" (the method's decoded right view, upsampled)
    overlap: Optional[int] = None       # frames shared by consecutive windows; None: half
                                        # the window (DepthCrafter: 25 of 110; a quarter
                                        # leaves seams 1.38x the within-window change on the
                                        # tiny family, half 1.05x, three quarters 0.98x at
                                        # 1.9x the windows of half: benchmark_footage overlap)
    depth_window: Optional[int] = None  # frames per depth-model call; None: the depth
                                        # UNet's clip length (DepthCrafter's infer: 110)
    composite: CompositeConfig = CompositeConfig()
    bounds_sigma_s: float = 2.0         # s; smoothing of the normalisation bounds (ours)
    segment_frames: int = 64            # frames per output segment (the assembly's resume
                                        # unit; fixed, so resumed outputs are bit-identical)
    lossless: bool = False              # FFV1 (.mkv) instead of H.264 CRF 18 (.mp4)
    write_disparity: bool = False       # also write the source-size pixel disparity used
                                        # (disparity.npy, float32 [T, H, W])

    def validate(self) -> "FootageConfig":
        owner = "FootageConfig"
        if self.right not in RIGHT_MODES:
            raise ValueError(f"right: expected one of {RIGHT_MODES}, got {self.right!r} ({owner})")
        if self.overlap is not None:
            check_int(owner, "overlap", self.overlap, 0)
        if self.depth_window is not None:
            check_int(owner, "window", self.depth_window, 2)
        if not isinstance(self.composite, CompositeConfig):
            raise ValueError(f"composite: expected a CompositeConfig ({owner})")
        self.composite.validate()
        check_number(owner, "bounds_sigma_s", self.bounds_sigma_s, 0.0, 1e4)
        check_int(owner, "segment_frames", self.segment_frames, 1)
        return self

    def overlap_for(self, window: int, name: str = "overlap") -> int:
        o = window // 2 if self.overlap is None else int(self.overlap)
        if not 0 <= o < window:
            raise ValueError(f"{name}: expected an overlap in [0, {window - 1}] frames for "
                             f"{window}-frame windows, got {o}")
        return o


# ----------------------------------------------------------------------------- windows
class Window(NamedTuple):
    index: int
    start: int   # first frame (of the padded timeline)
    stop: int    # one past the last


def plan_windows(frames: int, length: int, overlap: int) -> tuple[Window, ...]:
    """Windows of ``length`` frames over ``frames`` (see the module docstring); a video
    shorter than ``length`` gets one window over its padded timeline."""
    check_int("plan_windows", "frames", frames, 1)
    check_int("plan_windows", "length", length, 1)
    check_int("plan_windows", "overlap", overlap, 0, length - 1)
    if frames <= length:
        return (Window(0, 0, length),)
    stride = length - overlap
    starts = list(range(0, frames - length + 1, stride))
    if starts[-1] + length < frames:
        starts.append(frames - length)
    return tuple(Window(i, s, s + length) for i, s in enumerate(starts))


def padded_length(frames: int, windows) -> int:
    return max(frames, windows[-1].stop)


def frame_weights(windows, overlap: int, t: int) -> list[tuple[int, float]]:
    """``[(window index, weight > 0)]`` of frame ``t``: ramps over the first / last
    ``overlap`` frames of each window (none at the video's ends), normalised to sum 1."""
    out = []
    last, span = len(windows) - 1, max(int(overlap), 1)
    for w in windows:
        if not w.start <= t < w.stop:
            continue
        rise = 1.0 if w.index == 0 else (t - w.start) / span
        fall = 1.0 if w.index == last else (w.stop - t) / span
        if min(rise, fall) > 0:
            out.append((w.index, min(1.0, rise, fall)))
    total = sum(v for _, v in out)
    return [(k, v / total) for k, v in out]


def covering(windows, t: int) -> tuple[int, ...]:
    return tuple(w.index for w in windows if w.start <= t < w.stop)


def split_windows(windows, process: int, processes: int):
    """The contiguous block of ``windows`` process ``process`` of ``processes`` converts
    (several hosts: each takes its block, process 0 assembles)."""
    check_int("split_windows", "processes", processes, 1)
    check_int("split_windows", "process", process, 0, processes - 1)
    n = len(windows)
    lo, hi = n * process // processes, n * (process + 1) // processes
    return tuple(windows[lo:hi])


# ----------------------------------------------------------------------------- letterbox
@dataclasses.dataclass(frozen=True)
class Letterbox:
    """The source frame (H, W) scaled to fit inside the model's (h, w), centred, the rest
    black: every source pixel is seen by the model (so every hole has a diffusion fill),
    and every window is fitted the same way."""
    source: tuple    # (H, W)
    model: tuple     # (h, w)

    @property
    def scale(self) -> float:
        return min(self.model[0] / self.source[0], self.model[1] / self.source[1])

    @property
    def content(self) -> tuple:
        """(top, left, height, width) of the source's picture inside the model frame."""
        ch = min(self.model[0], max(1, round(self.source[0] * self.scale)))
        cw = min(self.model[1], max(1, round(self.source[1] * self.scale)))
        return ((self.model[0] - ch) // 2, (self.model[1] - cw) // 2, ch, cw)

    def content_mask(self) -> np.ndarray:
        top, left, ch, cw = self.content
        mask = np.zeros(self.model, bool)
        mask[top:top + ch, left:left + cw] = True
        return mask

    def to_model(self, x):
        """[n, H, W, C] (or [n, H, W]) float -> the model frame [n, h, w(, C)] (area-
        antialiased resize, zeros around)."""
        top, left, ch, cw = self.content
        x = jnp.asarray(x, jnp.float32)
        img = jax.image.resize(x, (x.shape[0], ch, cw) + x.shape[3:], "linear", antialias=True)
        pad = [(0, 0), (top, self.model[0] - ch - top), (left, self.model[1] - cw - left)]
        return jnp.pad(img, pad + [(0, 0)] * (x.ndim - 3))

    def disparity_to_model(self, d):
        """Source-pixel disparity [n, H, W] -> model-frame pixels (0 on the bars)."""
        return self.to_model(d) * (self.content[3] / self.source[1])

    def from_model(self, x):
        """The model frame [n, h, w(, C)] -> the source size [n, H, W(, C)] (the content,
        resized bilinearly)."""
        top, left, ch, cw = self.content
        x = jnp.asarray(x, jnp.float32)[:, top:top + ch, left:left + cw]
        return jax.image.resize(x, (x.shape[0],) + tuple(self.source) + x.shape[3:], "linear",
                                antialias=True)


# ----------------------------------------------------------------------------- normalisation
def frame_bounds(values, mask=None, percentiles=PERCENTILES) -> np.ndarray:
    """Per-frame (low, high) percentiles of ``values`` [n, H, W] over ``mask`` [H, W]."""
    v = np.asarray(values, np.float32)
    flat = v.reshape(v.shape[0], -1) if mask is None else v[:, np.asarray(mask, bool)]
    return np.stack([np.percentile(flat, percentiles[0], axis=1),
                     np.percentile(flat, percentiles[1], axis=1)], axis=1).astype(np.float64)


def smooth_bounds(bounds, sigma_frames: float) -> np.ndarray:
    """Gaussian smoothing of per-frame bounds [T, 2] over time (edge-normalised, so a shot
    shorter than sigma gets nearly its mean bounds); sigma 0 = as they are."""
    b = np.asarray(bounds, np.float64)
    if sigma_frames <= 0 or b.shape[0] == 1:
        return b.copy()
    r = int(np.ceil(3 * sigma_frames))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_frames) ** 2)
    t = b.shape[0]
    same = lambda x: np.convolve(x, k, "full")[r:r + t]      # centred, any kernel length
    num = np.stack([same(b[:, i]) for i in range(2)], axis=1)
    den = same(np.ones(t))[:, None]
    return num / den


@jax.jit
def normalise(values, bounds):
    """``clip((v - lo) / (hi - lo), 0, 1)`` per frame of ``values`` [n, H, W] with
    ``bounds`` [n, 2]; a flat frame (hi ~ lo) carries no depth: 0 (as the percentile
    normalisation of ``geometry``)."""
    lo, hi = bounds[:, 0, None, None], bounds[:, 1, None, None]
    span = hi - lo
    ok = span > jnp.finfo(jnp.float32).eps * jnp.maximum(jnp.abs(hi), 1.0)
    return jnp.where(ok, jnp.clip((values - lo) / jnp.where(ok, span, 1.0), 0.0, 1.0), 0.0)


def to_pixels(normalised, max_disparity: float, width: int, convergence=None):
    """Normalised disparity in [0, 1] -> pixels of a ``width``-wide frame (as
    ``geometry.disparity_from_depth``: convergence None keeps the far plane at 0)."""
    n = normalised if convergence is None else normalised - convergence
    return n * (max_disparity * width)


# ----------------------------------------------------------------------------- depth stitch
def _affine(src, dst):
    """Least-squares (a, b), a > 0, with a * src + b ~ dst (flattened arrays)."""
    s, d = src.astype(np.float64).ravel(), dst.astype(np.float64).ravel()
    cs, cd = s - s.mean(), d - d.mean()
    a = max(float((cs * cd).mean() / max((cs * cs).mean(), 1e-12)), 1e-6)
    return a, float(d.mean() - a * s.mean())


class DepthStitcher:
    """Blends depth windows, given in order, into per-frame relative disparity
    (see the module docstring); ``add`` returns the frames that no later window touches."""

    def __init__(self, windows, overlap: int, frames: int, mask=None):
        self.windows, self.overlap, self.frames = tuple(windows), int(overlap), int(frames)
        self.mask = None if mask is None else np.asarray(mask, bool)
        self._acc: dict[int, np.ndarray] = {}     # weighted sums of the windows so far
        self._wsum: dict[int, float] = {}         # and their weights
        self._next = 0          # first frame not yet returned
        self.alignments: list[tuple[float, float]] = []

    def add(self, window: Window, rel) -> list[tuple[int, np.ndarray]]:
        rel = np.asarray(rel, np.float64)
        seen = [t for t in range(window.start, window.stop) if t in self._acc]
        if seen:
            sel = (slice(None),) if self.mask is None else (slice(None), self.mask)
            src = rel[[t - window.start for t in seen]][sel]
            dst = np.stack([self._acc[t] / self._wsum[t] for t in seen])[sel]
            a, b = _affine(src, dst)
        else:
            a, b = 1.0, 0.0
        self.alignments.append((a, b))
        weights = {t: dict(frame_weights(self.windows, self.overlap, t))
                   for t in range(window.start, window.stop)}
        for t in range(window.start, window.stop):
            w = weights[t].get(window.index, 0.0)
            if w == 0.0:                 # a later window's first frame (see the module doc)
                continue
            part = w * (a * rel[t - window.start] + b)
            self._acc[t] = part if t not in self._acc else self._acc[t] + part
            self._wsum[t] = self._wsum.get(t, 0.0) + w
        done_upto = (self.windows[window.index + 1].start if window.index + 1 < len(self.windows)
                     else window.stop)
        out = []
        for t in range(self._next, min(done_upto, self.frames)):
            out.append((t, (self._acc.pop(t) / self._wsum.pop(t)).astype(np.float32)))
        for t in [t for t in self._acc if t < done_upto]:
            self._acc.pop(t)            # padded frames past the video's end
            self._wsum.pop(t)
        self._next = max(self._next, min(done_upto, self.frames))
        return out


# ----------------------------------------------------------------------------- seams
class SeamMeter:
    """The frame-to-frame change of the right view on hole pixels: mean |right_t -
    right_{t-1}| over pixels that are holes in both frames, pooled separately over frame
    pairs where the windows' blend weights change (the seams: every pair that enters,
    crosses or leaves an overlap) and over pairs inside one window."""

    def __init__(self, windows, overlap: int):
        self.windows, self.overlap = tuple(windows), int(overlap)
        self.sums = {"seam": 0.0, "inside": 0.0}
        self.counts = {"seam": 0, "inside": 0}
        self.pairs = {"seam": 0, "inside": 0}

    def add(self, t: int, prev_right, prev_holes, right, holes) -> None:
        both = np.asarray(prev_holes, bool) & np.asarray(holes, bool)
        n = int(both.sum())
        if t == 0 or n == 0:
            return
        same = (frame_weights(self.windows, self.overlap, t)
                == frame_weights(self.windows, self.overlap, t - 1))
        kind = "inside" if same else "seam"
        diff = np.abs(np.asarray(right, np.float32) - np.asarray(prev_right, np.float32))
        self.sums[kind] += float(diff[both].sum()) / 255.0
        self.counts[kind] += n * diff.shape[-1]
        self.pairs[kind] += 1

    def state(self) -> dict:
        return {"sums": dict(self.sums), "counts": dict(self.counts), "pairs": dict(self.pairs)}

    def load(self, state: dict) -> None:
        self.sums, self.counts, self.pairs = (dict(state["sums"]), dict(state["counts"]),
                                              dict(state["pairs"]))

    def summary(self) -> dict:
        mean = {k: (self.sums[k] / self.counts[k] if self.counts[k] else None) for k in self.sums}
        ratio = (mean["seam"] / mean["inside"] if mean["seam"] is not None and mean["inside"]
                 else None)
        return {"hole_change_at_seams": mean["seam"], "hole_change_inside_windows": mean["inside"],
                "seam_over_inside": ratio, "seam_pairs": self.pairs["seam"],
                "inside_pairs": self.pairs["inside"]}
