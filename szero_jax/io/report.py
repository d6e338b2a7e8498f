"""report.html: one self-contained page to look at a result (images embedded as PNG data
URIs, charts as inline SVG, no network, no external files).

    frames = ReportFrames.sample(res.left, res.right, res.disparity, res.holes, count=4)
    write_report(out_dir / "report.html", frames, summary, title="StereoCrafter-Zero demo")

Sections: the written files (``summary["files"]``: path, role, layout, stereo tags); a
strip of sampled frames (left, right, red-cyan anaglyph); the disparity of those frames
(turbo colour map, pixels) and its histogram over the whole result; the hole mask over the
right view (red); the per-stage timings as a bar chart (``summary["timings_s"]``); the
metrics table (``summary["metrics"]``, nested keys flattened) and the settings
(``summary["settings"]`` and ``summary["stereo_config"]``). Any of these keys may be absent.

Streaming converters that never hold the whole video pass the frames they kept and their own
histogram: ``ReportFrames(left, right, disparity, holes, indices, histogram=(counts,
edges))``. A small inline script reports an image that failed to decode on the browser's
console (the Chromium test checks the console stays empty).
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io as _io
import json
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from szero_jax.io.atomic import atomic_output
from szero_jax.io.stereo import anaglyph

THUMB_WIDTH = 320        # CSS width of each strip image (small frames are scaled up)
HIST_BINS = 48


def _as_frames(x, name: str, channels: Optional[int]) -> np.ndarray:
    x = np.asarray(x)
    want = 4 if channels else 3
    if x.ndim == want - 1:
        x = x[None]
    if x.ndim != want or (channels and x.shape[-1] != channels) or min(x.shape) == 0:
        raise ValueError(f"{name}: expected [T, H, W{', 3' if channels else ''}] or a single "
                         f"frame, got shape {x.shape}")
    return x


@dataclasses.dataclass(frozen=True)
class ReportFrames:
    """The frames a report shows: [n, H, W, 3] views (float in [0, 1] or uint8), [n, H, W]
    disparity (px) and holes (bool), their frame indices, and a (counts, edges) histogram of
    the whole result's disparity (None: of these frames)."""
    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray
    holes: np.ndarray
    indices: tuple
    histogram: Optional[tuple] = None

    @classmethod
    def sample(cls, left, right, disparity, holes, count: int = 4) -> "ReportFrames":
        """``count`` evenly spaced frames of a [T, ...] result (or the one frame of an image
        pair, [H, W, 3]); the histogram covers every frame."""
        left, right = _as_frames(left, "left", 3), _as_frames(right, "right", 3)
        disparity = _as_frames(disparity, "disparity", None)
        holes = _as_frames(holes, "holes", None)
        if not (left.shape == right.shape and disparity.shape == holes.shape == left.shape[:3]):
            raise ValueError(f"left, right, disparity, holes: expected [T, H, W(, 3)] of one "
                             f"size, got {left.shape}, {right.shape}, {disparity.shape}, "
                             f"{holes.shape}")
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count: expected an int >= 1, got {count!r}")
        idx = np.unique(np.linspace(0, left.shape[0] - 1, min(count, left.shape[0])).round()
                        .astype(int))
        d = np.asarray(disparity, np.float64)
        finite = d[np.isfinite(d)]
        hist = np.histogram(finite, bins=HIST_BINS) if finite.size else None
        return cls(left[idx], right[idx], disparity[idx], holes[idx].astype(bool),
                   tuple(int(i) for i in idx), hist)


# ----------------------------------------------------------------------------- images
def _u8(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    return np.round(np.clip(np.nan_to_num(x.astype(np.float32)), 0, 1) * 255).astype(np.uint8)


def _png(rgb) -> str:
    buf = _io.BytesIO()
    Image.fromarray(_u8(rgb)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(rgb, alt: str) -> str:
    h, w = np.asarray(rgb).shape[:2]
    width = THUMB_WIDTH if w < THUMB_WIDTH else min(w, 2 * THUMB_WIDTH)
    return (f'<img src="{_png(rgb)}" alt="{html.escape(alt)}" width="{width}" '
            f'height="{round(width * h / w)}">')


def _turbo(values, lo: float, hi: float) -> np.ndarray:
    from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
    t = (np.asarray(values, np.float64) - lo) / max(hi - lo, 1e-12)
    rgb = colormaps["turbo"](np.clip(np.nan_to_num(t), 0, 1))[..., :3]
    return rgb.astype(np.float32)


def _hole_overlay(right, holes) -> np.ndarray:
    base = _u8(right).astype(np.float32) / 255.0
    red = np.array([1.0, 0.0, 0.0], np.float32)
    return np.where(holes[..., None], 0.35 * base + 0.65 * red, base)


# ----------------------------------------------------------------------------- charts (SVG)
def _histogram_svg(counts, edges, width=560, height=220) -> str:
    counts, edges = np.asarray(counts, float), np.asarray(edges, float)
    pad_l, pad_b, pad_t = 48, 34, 10
    plot_w, plot_h = width - pad_l - 30, height - pad_b - pad_t
    top = max(counts.max(), 1.0)
    bar_w = plot_w / len(counts)
    bars = "".join(
        f'<rect x="{pad_l + i * bar_w:.1f}" y="{pad_t + plot_h * (1 - c / top):.1f}" '
        f'width="{max(bar_w - 1, 1):.1f}" height="{plot_h * c / top:.1f}" fill="#3b6fb6"/>'
        for i, c in enumerate(counts))
    ticks = "".join(
        f'<text x="{pad_l + f * plot_w:.1f}" y="{height - 16}" text-anchor="middle">'
        f'{edges[0] + f * (edges[-1] - edges[0]):.2f}</text>' for f in (0, 0.25, 0.5, 0.75, 1))
    return (f'<svg class="chart" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="disparity histogram">'
            f'{bars}<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{pad_l + plot_w}" '
            f'y2="{pad_t + plot_h}" stroke="#333"/>{ticks}'
            f'<text x="{pad_l + plot_w / 2}" y="{height - 2}" text-anchor="middle">'
            f'disparity (px)</text><text x="4" y="{pad_t + 10}">{int(top)}</text>'
            f'<text x="4" y="{pad_t + plot_h}">0</text></svg>')


def _timings_svg(timings: dict, width=560) -> str:
    items = [(k, float(v)) for k, v in timings.items()
             if isinstance(v, (int, float)) and k != "total_wall"]
    if not items:
        return "<p>No timings recorded.</p>"
    row, label_w = 24, 150
    height = row * len(items) + 30
    top = max(v for _, v in items) or 1.0
    plot_w = width - label_w - 90
    rows = "".join(
        f'<text x="{label_w - 6}" y="{i * row + 17}" text-anchor="end">{html.escape(k)}</text>'
        f'<rect x="{label_w}" y="{i * row + 4}" width="{max(plot_w * v / top, 1):.1f}" '
        f'height="{row - 8}" fill="#d98b2b"/>'
        f'<text x="{label_w + plot_w * v / top + 6:.1f}" y="{i * row + 17}">{v:.2f} s</text>'
        for i, (k, v) in enumerate(items))
    total = timings.get("total_wall")
    foot = (f'<text x="{label_w}" y="{height - 6}">total wall time {float(total):.2f} s'
            f'</text>') if isinstance(total, (int, float)) else ""
    return (f'<svg class="chart" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="timings per stage">'
            f'{rows}{foot}</svg>')


# ----------------------------------------------------------------------------- tables
def _flatten(tree, prefix="") -> list:
    """Nested dicts -> [("a.b", leaf), ...] in order."""
    if isinstance(tree, dict) and (tree or not prefix):
        out = []
        for k, v in tree.items():
            out += _flatten(v, f"{prefix}{k}.")
        return out
    return [(prefix[:-1], tree)]


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _table(rows, head=("name", "value")) -> str:
    if not rows:
        return "<p>None recorded.</p>"
    body = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in rows)
    return (f"<table><thead><tr><th>{head[0]}</th><th>{head[1]}</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _files_table(files) -> str:
    if not files:
        return "<p>No file list recorded.</p>"
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(f.get(k)) if f.get(k) is not None else '')}"
                         f"</td>" for k in ("path", "role", "layout", "marker")) +
        f"<td>{html.escape(', '.join(f'{k}={v}' for k, v in (f.get('stereo') or {}).items() if v))}"
        f"</td></tr>" for f in files)
    return ("<table><thead><tr><th>file</th><th>role</th><th>layout</th><th>marker</th>"
            f"<th>stereo tags</th></tr></thead><tbody>{rows}</tbody></table>")


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1d1d1f;
background:#fafafa}h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid
#ccc;padding-bottom:4px}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid
#ccc;padding:3px 8px;text-align:left}th{background:#eee}.strip{display:flex;flex-wrap:wrap;
gap:8px}figure{margin:0 8px 8px 0}figcaption{font-size:12px;color:#555}img{image-rendering:
pixelated;border:1px solid #bbb;background:#fff}.chart text{font-size:11px;fill:#333}
.meta{color:#555;font-size:13px}
"""
CHECK_IMAGES = """<script>
window.addEventListener('load', function () {
  for (const img of document.images) {
    if (!img.complete || img.naturalWidth === 0) console.error('report image failed: ' + img.alt);
  }
});
</script>"""


def render_html(frames: ReportFrames, summary: dict, title: str = "Stereo result") -> str:
    """The report page as a string (see the module docstring)."""
    if not isinstance(frames, ReportFrames):
        raise ValueError(f"frames: expected a ReportFrames, got {type(frames).__name__}")
    summary = summary or {}
    d = np.asarray(frames.disparity, np.float64)
    finite = d[np.isfinite(d)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    strip, disp, holes = [], [], []
    for k, i in enumerate(frames.indices):
        left, right = frames.left[k], frames.right[k]
        ana = anaglyph(left, right, "red_cyan")
        strip.append("".join(f"<figure>{_img(x, f'{n} frame {i}')}<figcaption>{n}, frame {i}"
                             f"</figcaption></figure>" for n, x in
                             (("left", left), ("right", right), ("anaglyph", ana))))
        disp.append(f"<figure>{_img(_turbo(frames.disparity[k], lo, hi), f'disparity frame {i}')}"
                    f"<figcaption>disparity, frame {i}</figcaption></figure>")
        frac = float(np.mean(frames.holes[k]))
        holes.append(f"<figure>{_img(_hole_overlay(right, frames.holes[k]), f'holes frame {i}')}"
                     f"<figcaption>holes over the right view, frame {i} ({100 * frac:.1f}% "
                     f"of pixels)</figcaption></figure>")
    bar = _turbo(np.linspace(lo, hi, 256)[None].repeat(12, 0), lo, hi)
    hist = frames.histogram or np.histogram(finite if finite.size else [0.0], bins=HIST_BINS)
    settings = _flatten(summary.get("settings", {}))
    if "stereo_config" in summary:
        settings += _flatten(summary["stereo_config"], "stereo_config.")
    info = [(k, summary[k]) for k in ("prompt", "image", "input", "checkpoint", "frames",
                                      "height", "width", "mode") if k in summary]
    page = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>{' &middot; '.join(html.escape(f'{k}: {_fmt(v)}') for k, v in info)}"
        "</p>",
        "<h2>Files</h2>", _files_table(summary.get("files")),
        "<h2>Frames: left, right, anaglyph (red-cyan)</h2>",
        "".join(f"<div class='strip'>{s}</div>" for s in strip),
        "<h2>Disparity</h2>", f"<div class='strip'>{''.join(disp)}</div>",
        f"<figure>{_img(bar, 'disparity colour scale')}<figcaption>colour scale: {lo:.2f} px "
        f"(left) to {hi:.2f} px (right)</figcaption></figure>",
        "<h3>Histogram</h3>", _histogram_svg(*hist),
        "<h2>Holes (disoccluded pixels the model filled)</h2>",
        f"<div class='strip'>{''.join(holes)}</div>",
        "<h2>Timings per stage</h2>", _timings_svg(summary.get("timings_s", {})),
        "<h2>Metrics</h2>", _table(_flatten(summary.get("metrics", {}))),
        "<h2>Settings</h2>", _table(settings),
        "<details><summary>summary.json</summary><pre>",
        html.escape(json.dumps(summary, indent=1, default=str)), "</pre></details>",
        CHECK_IMAGES, "</body></html>"]
    return "\n".join(page)


def write_report(path, frames: ReportFrames, summary: dict, title: str = "Stereo result") -> Path:
    """Writes ``render_html(frames, summary, title)`` to ``path`` (.html) atomically."""
    if Path(path).suffix.lower() != ".html":
        raise ValueError(f"path: expected a name ending in .html, got {str(path)!r}")
    text = render_html(frames, summary, title)
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)
