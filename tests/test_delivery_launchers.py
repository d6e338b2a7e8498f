"""What generate delivers: VR-player file names, stereo tags read back from the mp4 / mkv it
writes, summary records that match the files, report.html rendered in Chromium; the
encoding flags' bad values for generate and convert_video (README Bad input rows). The
pipeline is stubbed (instant) except in the slow test, which runs `make demo`'s command as
it is. convert_video's delivered files: tests/test_convert_video.py."""
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from tests.test_report import blankness, needs_chromium, render

ROOT = Path(__file__).resolve().parents[1]


def fake_result(t=4, h=48, w=64):
    from szero_jax import pipelines
    from szero_jax.pipelines.config import DepthConfig, SamplingConfig
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    left = np.asarray([np.stack([0.5 + 0.4 * np.sin(6 * xx + i), 0.5 + 0.3 * np.cos(5 * yy),
                                 0.5 + 0.2 * np.sin(3 * (xx + yy))], -1) for i in range(t)],
                      np.float32)
    disparity = np.broadcast_to(np.linspace(0, 8, w, dtype=np.float32), (t, h, w)).copy()
    holes = np.zeros((t, h, w), bool)
    holes[:, :, 20:23] = True
    return pipelines.StereoVideo(left, np.roll(left, 4, axis=2), disparity, holes,
                                 np.broadcast_to(np.linspace(1, 0, w, dtype=np.float32),
                                                 (t, h, w)).copy(),
                                 {"left": 0.1, "depth": 0.2, "stereo": 0.3},
                                 {"sampling": SamplingConfig(), "depth": DepthConfig()})


def run_generate(monkeypatch, out, *args, models=None):
    from absl import flags
    from experiments import generate
    from szero_jax import pipelines
    fake = fake_result()
    monkeypatch.setattr(pipelines, "image_to_stereo_video", lambda *a, **k: fake)
    bundle = types.SimpleNamespace(config=types.SimpleNamespace(guidance=7.5,
                                                                max_disparity=0.08))
    monkeypatch.setattr(generate, "_models", models or (lambda: bundle))
    monkeypatch.setattr(generate, "_input_image", lambda m: fake.left[0])
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["generate", f"--output_dir={out}", "--prompt=a test", *args])
        generate.main(["generate"])
    finally:
        flags.FLAGS.unparse_flags()
    return fake


@pytest.mark.parametrize("args, suffix, key, codec, pix_fmt", [
    ((), ".mp4", "st3d", "h264", "yuv420p"),
    (("--container=mkv", "--codec=h265", "--pix_fmt=yuv420p10le", "--crf=24"), ".mkv",
     "mkv_stereo_mode", "hevc", "yuv420p10le"),
])
def test_generate_outputs_carry_names_and_tags(tmp_path, monkeypatch, args, suffix, key, codec,
                                               pix_fmt):
    from szero_jax import io
    out = tmp_path / "out"
    fake = run_generate(monkeypatch, out, "--format=all", *args)
    summary = json.loads((out / "summary.json").read_text())
    names = [f["path"] for f in summary["files"]]
    assert sorted(os.listdir(out)) == sorted(names)
    assert set(names) == {f"left{suffix}", f"right{suffix}", f"depth{suffix}", "summary.json",
                          "report.html"} | {io.output_name(x, suffix) for x in io.LAYOUTS}
    expect = {"sbs": "left_right", "half-sbs": "left_right", "tb": "top_bottom",
              "half-tb": "top_bottom"}
    if suffix == ".mkv":
        expect.update({"anaglyph": "anaglyph_cyan_red", "anaglyph-dubois": "anaglyph_cyan_red"})
    for f in summary["files"]:
        if f["role"] in ("summary", "report"):
            continue
        back = io.read_stereo_metadata(out / f["path"])
        assert back[key] == expect.get(f["role"]), f
        assert back["video_codec"] == codec and back["pix_fmt"] == pix_fmt and back["fps"] == 8
        if "stereo" in f:
            assert {k: back[k] for k in f["stereo"]} == f["stereo"]
    assert summary["settings"]["encode"]["codec"] == ("h265" if codec == "hevc" else "h264")
    assert summary["timings_s"]["write_outputs"] > 0
    sbs, _ = io.read_video(out / io.output_name("sbs", suffix))
    assert np.abs(sbs - io.side_by_side(fake.left, fake.right)).mean() < 0.04
    assert "report.html" in names and (out / "report.html").stat().st_size > 10_000


@needs_chromium
def test_generate_report_renders_in_chromium(tmp_path, monkeypatch):
    out = tmp_path / "out"
    run_generate(monkeypatch, out)
    shot, console = render(out / "report.html", tmp_path / "shot.png")
    assert not console, console
    b = blankness(shot)
    assert b["non_background"] > 0.2 and b["colours"] > 1000, b


# One row per README "Bad input" row of the encoding flags: the error, and no work done.
@pytest.mark.parametrize("flag, match", [
    ("--codec=vp9", r"flag --codec=vp9: value should be one of <h264\|h265>"),
    ("--crf=60", r"flag --crf=60: 60.0 is not a number in the range \[0.0, 51.0\]"),
    ("--crf=-1", r"flag --crf=-1: -1.0 is not a number in the range \[0.0, 51.0\]"),
    ("--pix_fmt=yuv444p", r"flag --pix_fmt=yuv444p: value should be one of "
                          r"<yuv420p\|yuv420p10le>"),
    ("--container=avi", r"flag --container=avi: value should be one of <mp4\|mkv>"),
    ("--format=vr180", r"flag --format=vr180: value should be one of <sbs\|half-sbs\|tb\|"
                       r"half-tb\|anaglyph\|anaglyph-dubois\|all>"),
])
def test_bad_encoding_flags_are_refused_at_parsing(flag, match):
    from absl import flags
    from experiments import generate  # noqa: F401  (defines the launcher's flags)
    flags.FLAGS.unparse_flags()
    try:
        with pytest.raises(flags.IllegalFlagValueError, match=match):
            flags.FLAGS(["generate", flag])
    finally:
        flags.FLAGS.unparse_flags()


@pytest.mark.parametrize("flag, match", [
    ("--codec=vp9", r"flag --codec=vp9: value should be one of <h264\|h265>"),
    ("--crf=60", r"flag --crf=60: 60.0 is not a number in the range \[0.0, 51.0\]"),
    ("--pix_fmt=yuv444p", r"flag --pix_fmt=yuv444p: value should be one of "
                          r"<yuv420p\|yuv420p10le>"),
    ("--container=avi", r"flag --container=avi: value should be one of <mp4\|mkv>"),
])
def test_convert_video_refuses_bad_encoding_flags(flag, match):
    """The same shared flags, as convert_video parses them (its own process)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "experiments.convert_video", flag,
                           "--input=missing.mp4"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert re.search("FATAL Flags parsing error: " + match, proc.stderr), proc.stderr[-2000:]


@pytest.mark.parametrize("args, match", [
    (("--lossless", "--container=mp4"), r"--container: --lossless writes FFV1, which goes in "
                                        r"mkv; got --container=mp4"),
    (("--lossless", "--pix_fmt=yuv420p10le"), r"--pix_fmt: lossless writes 8-bit RGB \(FFV1 "
                                              r"gbrp\); leave pix_fmt at 'yuv420p' with "
                                              r"lossless, got 'yuv420p10le'"),
])
def test_convert_video_bad_lossless_combinations_fail_before_any_work(tmp_path, monkeypatch,
                                                                     args, match):
    from absl import flags
    from experiments import convert_video
    from szero_jax.io import EncodeConfig, VideoWriter
    video = tmp_path / "in.mkv"
    with VideoWriter(video, EncodeConfig(fps=24, lossless=True)) as w:
        w.write(np.zeros((2, 16, 16, 3), np.uint8))

    def no_models():
        raise AssertionError("models were loaded")
    monkeypatch.setattr(convert_video, "_models", no_models)
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["convert_video", f"--input={video}", f"--output_dir={tmp_path / 'out'}",
                     *args])
        with pytest.raises(ValueError, match=match):
            convert_video.main(["convert_video"])
    finally:
        flags.FLAGS.unparse_flags()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fps", ["0", "-8", "nan"])
def test_bad_fps_fails_before_any_work(tmp_path, monkeypatch, fps):
    def no_models():
        raise AssertionError("models were loaded")
    with pytest.raises(ValueError, match=rf"--fps: expected a frame rate > 0 \(a number or "
                                         rf"'num/den'\), got {float(fps)}"):
        run_generate(monkeypatch, tmp_path / "out", f"--fps={fps}", models=no_models)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_demo_sbs_is_tagged_and_its_report_renders(tmp_path):
    """`make demo`'s command (python -m experiments.generate, its defaults; the shipped tiny
    family on the bundled sample): the SBS file carries st3d, the report renders."""
    from szero_jax import io
    out = tmp_path / "demo"
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "experiments.generate", f"--output_dir={out}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    back = io.read_stereo_metadata(out / "sbs_LRF_Full_SBS.mp4")
    assert back["st3d"] == "left_right" and back["width"] == 2 * back["height"] * 128 // 80
    assert io.read_stereo_metadata(out / "left.mp4")["st3d"] is None
    from tests.test_report import CHROMIUM
    if CHROMIUM:
        shot, console = render(out / "report.html", tmp_path / "demo.png")
        assert not console, console
        assert blankness(shot)["non_background"] > 0.2
