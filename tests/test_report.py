"""report.html: self-contained (every image an embedded PNG that decodes), all sections
present, and rendered by headless Chromium (Debian's `chromium` package) into a screenshot
that is not blank, with nothing on the console. Skips where Chromium is absent."""
import base64
import io as _io
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from szero_jax.io import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not installed (Debian: apt-get install -y chromium; "
                             ".ci/run installs it on CI)")


def render(page: Path, png: Path, size=(1280, 2600)):
    """Headless Chromium screenshot of ``page``; returns (RGB array, console lines)."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr",
             "--v=0", "--hide-scrollbars", f"--window-size={size[0]},{size[1]}",
             f"--screenshot={png}", page.resolve().as_uri()],
            capture_output=True, text=True, errors="replace", timeout=180, check=False)
    assert png.is_file(), proc.stderr[-3000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return np.asarray(Image.open(png).convert("RGB")), console


def blankness(shot: np.ndarray) -> dict:
    """How much of a screenshot is not its background colour (the most common one)."""
    flat = shot.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    background = colours[counts.argmax()]
    return {"non_background": float(np.mean(np.any(flat != background, axis=1))),
            "colours": int(len(colours)), "std": float(shot.std())}


def synthetic(t=8, h=80, w=128):
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    left = np.stack([np.stack([0.5 + 0.4 * np.sin(6 * xx + i / 3), 0.5 + 0.4 * np.cos(5 * yy),
                               0.5 + 0.3 * np.sin(4 * (xx + yy))], -1) for i in range(t)])
    left = left.astype(np.float32)
    disparity = np.broadcast_to(np.linspace(0, 12, w, dtype=np.float32), (t, h, w)).copy()
    holes = np.zeros((t, h, w), bool)
    holes[:, :, 40:44] = True
    summary = {"prompt": "a test scene", "frames": t, "height": h, "width": w,
               "timings_s": {"load_models": 1.2, "left": 3.4, "depth": 0.8, "stereo": 10.1,
                             "decode": 0.5, "total_wall": 16.2},
               "metrics": {"left_right_consistency": 0.0123, "hole_fraction": 0.03,
                           "disparity_px": {"min": 0.0, "max": 12.0}},
               "settings": {"sampling": {"steps": 20, "seed": 0}, "depth": {"kind": "depth"}},
               "files": [{"path": "left.mp4", "role": "left"},
                         {"path": "sbs_LRF_Full_SBS.mp4", "role": "sbs", "layout": "sbs",
                          "marker": "_LRF_Full_SBS", "stereo": {"st3d": "left_right"}}]}
    return left, np.roll(left, 3, axis=2), disparity, holes, summary


def embedded_images(text: str):
    return [Image.open(_io.BytesIO(base64.b64decode(m)))
            for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_report_is_self_contained_with_every_section(tmp_path):
    left, right, disparity, holes, summary = synthetic()
    frames = report.ReportFrames.sample(left, right, disparity, holes, count=3)
    assert frames.indices == (0, 4, 7)
    assert frames.histogram[0].sum() == disparity.size        # over every frame
    path = report.write_report(tmp_path / "report.html", frames, summary, title="Test")
    text = path.read_text()
    for heading in ("Files", "Frames: left, right, anaglyph", "Disparity", "Histogram",
                    "Holes", "Timings per stage", "Metrics", "Settings"):
        assert f">{heading}" in text, heading
    images = embedded_images(text)
    # 3 frames x (left, right, anaglyph, disparity, holes) + the colour scale
    assert len(images) == 16 and all(im.size[0] > 0 for im in images)
    assert not re.search(r'(src|href)="(?!data:)', text)      # nothing loaded from outside
    assert "sbs_LRF_Full_SBS.mp4" in text and "st3d=left_right" in text
    assert "10.10 s" in text and "sampling.steps" in text and "disparity_px.max" in text
    # the hole overlay is red where the holes are
    overlay = np.asarray(images[13].convert("RGB"), np.float32) / 255   # after 9 + 3 + 1
    assert overlay[:, 40:44, 0].mean() > 0.6 and overlay[:, 40:44, 1:].mean() < 0.4
    # an image result (one frame) works too
    one = report.ReportFrames.sample(left[0], right[0], disparity[0], holes[0])
    assert one.indices == (0,)
    assert len(embedded_images(report.render_html(one, {}))) == 6


def test_report_rejects_bad_input(tmp_path):
    left, right, disparity, holes, summary = synthetic(t=2)
    with pytest.raises(ValueError, match="left, right, disparity, holes: expected"):
        report.ReportFrames.sample(left, right, disparity[:, :10], holes)
    with pytest.raises(ValueError, match="count: expected an int >= 1"):
        report.ReportFrames.sample(left, right, disparity, holes, count=0)
    with pytest.raises(ValueError, match="left: expected"):
        report.ReportFrames.sample(left[..., :2], right, disparity, holes)
    frames = report.ReportFrames.sample(left, right, disparity, holes)
    with pytest.raises(ValueError, match=r"path: expected a name ending in .html"):
        report.write_report(tmp_path / "report.txt", frames, summary)
    with pytest.raises(ValueError, match="frames: expected a ReportFrames"):
        report.render_html(left, summary)


@needs_chromium
def test_chromium_check_catches_errors_and_blank_pages(tmp_path):
    """The checks below can fail: a page with a script error and a broken image shows on the
    console; an empty page is blank."""
    left, right, disparity, holes, summary = synthetic(t=1)
    text = report.render_html(report.ReportFrames.sample(left, right, disparity, holes), summary)
    broken = text.replace('src="data:image/png;base64,', 'src="data:image/png;base64,AAAA', 1)
    broken = broken.replace("</body>", "<script>noSuchFunction()</script></body>")
    (tmp_path / "broken.html").write_text(broken)
    _, console = render(tmp_path / "broken.html", tmp_path / "broken.png")
    assert any("noSuchFunction" in line for line in console), console
    assert any("report image failed" in line for line in console), console
    (tmp_path / "blank.html").write_text("<!DOCTYPE html><html><body></body></html>")
    shot, console = render(tmp_path / "blank.html", tmp_path / "blank.png")
    assert blankness(shot)["non_background"] == 0.0 and not console


@needs_chromium
def test_report_renders_in_chromium(tmp_path):
    left, right, disparity, holes, summary = synthetic()
    path = report.write_report(tmp_path / "report.html",
                               report.ReportFrames.sample(left, right, disparity, holes, 3),
                               summary, title="Chromium test")
    shot, console = render(path, tmp_path / "shot.png")
    assert not console, console
    b = blankness(shot)
    assert b["non_background"] > 0.2 and b["colours"] > 1000 and b["std"] > 20, b
    # the turbo-coloured disparity maps are on the page: dark-red and blue pixels present
    r, g, bl = (shot[..., k].astype(int) for k in range(3))
    assert np.mean((r > 150) & (g < 60) & (bl < 60)) > 0.001      # red end (and the holes)
    assert np.mean((bl > 150) & (r < 100)) > 0.001                 # blue end
