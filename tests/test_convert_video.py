"""experiments/convert_video.py: real footage to stereo (streaming, the input exact, audio
kept, resumable, device-independent), delivered as generate's outputs are (VR names, stereo
tags read back, report.html), its bad inputs, and the streaming FFmpeg I/O."""
import json
import os
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from szero_jax import io
from szero_jax.io import stream
from szero_jax.io.encode import EncodeConfig, VideoWriter
from szero_jax.pipelines import footage_job as J
from szero_jax.pipelines.config import DepthConfig
from tests.test_report import blankness, needs_chromium, render

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--steps", "3", "--restart_steps", "1", "--restart_rounds", "1", "--refine_rounds", "0"]


def run(*args, env=None, check=True, timeout=900):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "experiments.convert_video", *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def clip(folder, frames, h=160, w=256, audio=True):
    from experiments.benchmark_footage import make_clip
    return make_clip(Path(folder), frames, h, w, audio=audio)


def write(path, frames_u8, config=EncodeConfig(fps=24, lossless=True)):
    with VideoWriter(path, config) as wr:
        wr.write(frames_u8)
    return path


def frame_times(path) -> np.ndarray:
    """Every decoded video frame's timestamp (s), as FFmpeg's showinfo prints it."""
    shown = subprocess.run([stream.FFMPEG, "-hide_banner", "-i", str(path), "-map", "0:v:0",
                            "-vf", "showinfo", "-f", "null", "-"], capture_output=True,
                           text=True, check=True).stderr
    return np.array([float(t) for t in re.findall(r"pts_time:([\d.]+)", shown)])


def decoded_durations(path):
    """(video, audio) seconds as decoded from ``path``: the last frame's timestamp plus one
    frame, and the audio's sample count over its rate (resampled to 48 kHz mono)."""
    video = frame_times(path)[-1] + 1 / float(stream.probe_video(path).fps)
    pcm = subprocess.run([stream.FFMPEG, "-v", "error", "-i", str(path), "-map", "0:a:0",
                          "-ac", "1", "-ar", "48000", "-f", "s16le", "-"], capture_output=True,
                         check=True).stdout
    return video, len(pcm) / 2 / 48000


# ----------------------------------------------------------------------------- io.stream
def test_stream_round_trip_exact_and_audio(tmp_path):
    """Segments written by io.encode (FFV1), joined by io.encode.mux with a source's audio,
    read back frame for frame by io.stream."""
    frames = np.random.RandomState(0).randint(0, 256, (11, 32, 48, 3), np.uint8)
    seg = [write(tmp_path / "a.mkv", frames[:6]), write(tmp_path / "b.mkv", frames[6:])]
    with_audio, _, _ = clip(tmp_path / "src", 12, 32, 48)
    info = stream.probe_video(with_audio)
    assert (info.width, info.height, info.frames, info.fps, info.audio_codec) == (
        48, 32, 12, Fraction(24), "aac")
    out = io.mux(tmp_path / "out.mkv", seg, audio_from=info, durations=[Fraction(6, 24),
                                                                       Fraction(5, 24)])
    got = stream.probe_video(out)
    assert got.frames == 11 and got.audio_codec == "aac" and got.video_codec == "ffv1"
    with stream.FrameReader(got) as r:
        first = r.read(4)
        r.skip(2)
        rest = np.concatenate(list(r.chunks(3)))
    np.testing.assert_array_equal(np.concatenate([first, rest]), np.delete(frames, [4, 5], 0))
    assert any(s.startswith("Audio: aac") for s in stream.streams(out))


def test_mux_durations_keep_segment_timestamps_exact(tmp_path):
    """Many short segments at 30000/1001 fps joined by io.encode.mux with their exact
    lengths: every frame's timestamp is within Matroska's 1 ms of k / fps (without the
    lengths FFmpeg's concat offsets each segment by its ms-rounded duration: 9 ms off after
    20 segments of 64 frames, measured), and bad durations are refused."""
    fps = Fraction(30000, 1001)
    config = EncodeConfig(fps=fps, preset="ultrafast")
    segs = [write(tmp_path / f"s{k}.mkv", np.full((16, 16, 16, 3), 10 * k, np.uint8), config)
            for k in range(12)]
    out = io.mux(tmp_path / "joined.mp4", segs, durations=[Fraction(16) / fps] * 12)
    pts = frame_times(out)
    assert pts.shape == (192,)
    assert np.abs(pts - np.arange(192) / float(fps)).max() <= 1.0e-3
    with pytest.raises(ValueError, match=r"durations: expected 12 segment lengths > 0 "
                                         r"\(seconds, one per segment\), got 11"):
        io.mux(tmp_path / "bad.mp4", segs, durations=[0.5] * 11)
    with pytest.raises(ValueError, match=r"durations: expected 12 segment lengths > 0"):
        io.mux(tmp_path / "bad.mp4", segs, durations=[0.5] * 11 + [0])
    with pytest.raises(ValueError, match=r"durations: expected 12 segment lengths > 0"):
        io.mux(tmp_path / "bad.mp4", segs, durations=[0.5] * 11 + [float("nan")])
    assert not (tmp_path / "bad.mp4").exists()


def test_exact_frame_rate_is_kept(tmp_path):
    path = tmp_path / "ntsc.mp4"
    subprocess.run([stream.FFMPEG, "-v", "error", "-f", "lavfi", "-i",
                    "testsrc=size=64x32:rate=24000/1001", "-t", "0.5", "-pix_fmt", "yuv420p",
                    str(path)], check=True)
    assert stream.probe_video(path).fps == Fraction(24000, 1001)


# ----------------------------------------------------------------------------- bad input
def test_bad_videos(tmp_path):
    with pytest.raises(FileNotFoundError, match="--input: no video file"):
        stream.probe_video(tmp_path / "missing.mp4", "--input")
    (tmp_path / "junk.mp4").write_text("not a video")
    with pytest.raises(ValueError, match="--input: could not read .* as a video"):
        stream.probe_video(tmp_path / "junk.mp4", "--input")
    good = write(tmp_path / "good.mkv", np.zeros((20, 32, 48, 3), np.uint8) + 100)
    data = good.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(ValueError, match="--input: .* does not decode cleanly"):
        stream.probe_video(tmp_path / "cut.mkv", "--input")
    empty = write(tmp_path / "e.mkv", np.zeros((3, 32, 48, 3), np.uint8))
    zero = tmp_path / "zero.mkv"             # the stream header, no frames
    subprocess.run([stream.FFMPEG, "-v", "error", "-i", str(empty), "-c", "copy", "-frames:v",
                    "0", str(zero)], check=True)
    with pytest.raises(ValueError, match="--input: could not read .*no frames"):
        stream.probe_video(zero, "--input")
    audio = tmp_path / "audio.mkv"
    subprocess.run([stream.FFMPEG, "-v", "error", "-f", "lavfi", "-i", "sine", "-t", "0.3",
                    str(audio)], check=True)
    with pytest.raises(ValueError, match="no video stream"):
        stream.probe_video(audio, "--input")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="--input: the folder .* holds no videos"):
        stream.list_videos(tmp_path / "folder", "--input")


@pytest.fixture(scope="module")
def tiny():
    from szero_jax import pipelines
    return pipelines.load_video_models(None)


def test_bad_jobs_fail_before_work(tmp_path, tiny):
    video, disparity, _ = clip(tmp_path, 10, 32, 48, audio=False)
    info = stream.probe_video(video)
    job = lambda **kw: J.FootageJob(info, "a background", **kw)
    J.check_job(tiny, job(depth_file=str(disparity),
                          depth=DepthConfig(kind="disparity_px", blur_sigma=0.0)))
    np.save(tmp_path / "short.npy", np.ones((9, 32, 48), np.float32))
    with pytest.raises(ValueError, match=r"depth: expected shape \(10, 32, 48\) .* got \(9, 32, 48\)"):
        J.check_job(tiny, job(depth_file=str(tmp_path / "short.npy")))
    np.save(tmp_path / "small.npy", np.ones((10, 16, 48), np.float32))
    with pytest.raises(ValueError, match=r"depth: expected shape"):
        J.check_job(tiny, job(depth_file=str(tmp_path / "small.npy")))
    dvid = write(tmp_path / "dv.mkv", np.zeros((7, 32, 48, 3), np.uint8))
    with pytest.raises(ValueError, match="depth: the depth video has 7 frames of 32x48; "
                                         "expected 10 of 32x48"):
        J.check_job(tiny, job(depth_file=str(dvid)))
    with pytest.raises(FileNotFoundError, match="depth: no depth file"):
        J.check_job(tiny, job(depth_file=str(tmp_path / "none.npy")))
    with pytest.raises(ValueError, match="depth_kind: 'disparity_px' describes a given map"):
        J.check_job(tiny, job(depth=DepthConfig(kind="disparity_px")))
    odd = write(tmp_path / "odd.mkv", np.zeros((4, 33, 48, 3), np.uint8))
    with pytest.raises(ValueError, match="input: the frame size 48x33 is odd"):
        J.check_job(tiny, J.FootageJob(stream.probe_video(odd), "a background"))
    bad = np.ones((10, 32, 48), np.float32)
    bad[3, 1, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="depth: contains 1 NaN/inf values"):
        J._given_values_check(np.load(tmp_path / "nan.npy", mmap_mode="r"), "depth")
    from szero_jax.pipelines.footage import FootageConfig
    with pytest.raises(ValueError, match="overlap: expected an overlap in"):
        J.check_job(tiny, job(footage=FootageConfig(overlap=8)))
    # delivery: the source's frame rate, one lossless switch, FFV1 in mkv
    with pytest.raises(ValueError, match=r"encode: fps 25 differs from the source's 24; "
                                         r"footage keeps the source frame rate"):
        J.check_job(tiny, job(encode=EncodeConfig(fps=25)))
    with pytest.raises(ValueError, match=r"encode: lossless=True but footage.lossless=False"):
        J.check_job(tiny, job(encode=EncodeConfig(fps=24, lossless=True)))
    with pytest.raises(ValueError, match=r"container: lossless \(FFV1\) is written to '.mkv', "
                                         r"got '.mp4'"):
        J.check_job(tiny, job(footage=FootageConfig(lossless=True), container=".mp4"))
    with pytest.raises(ValueError, match=r"container: expected one of \('.mp4', '.mkv'\), "
                                         r"got '.avi'"):
        J.check_job(tiny, job(container=".avi"))
    with pytest.raises(ValueError, match=r"crf: expected a number in \[0, 51\]"):
        J.check_job(tiny, job(encode=EncodeConfig(fps=24, crf=60)))
    assert J.check_job(tiny, job()).encode == EncodeConfig(fps=Fraction(24))
    assert J.check_job(tiny, job()).container == ".mp4"
    first = job()
    J.prepare_work_dir(tmp_path / "work", first, J.check_job(tiny, first), resume=False)
    other = job(footage=FootageConfig(overlap=3))
    with pytest.raises(ValueError, match="resume: the work folder .* was made with other "
                                         "settings \\(footage differ\\)"):
        J.prepare_work_dir(tmp_path / "work", other, J.check_job(tiny, other), resume=True)


def test_launcher_bad_input_errors(tmp_path):
    odd = write(tmp_path / "odd.mkv", np.zeros((4, 33, 48, 3), np.uint8))
    proc = run("--input", odd, "--output_dir", tmp_path / "out", check=False, timeout=300)
    assert proc.returncode != 0 and "frame size 48x33 is odd" in proc.stderr
    assert not any((tmp_path / "out").glob("*.mp4"))
    (tmp_path / "empty").mkdir()
    proc = run("--input", tmp_path / "empty", "--output_dir", tmp_path / "out", check=False,
               timeout=300)
    assert proc.returncode != 0 and "holds no videos" in proc.stderr
    locked = tmp_path / "locked"
    locked.write_text("a file, not a folder")
    proc = run("--input", odd, "--output_dir", locked, check=False, timeout=300)
    assert proc.returncode != 0 and "exists and is not a folder" in proc.stderr


# ----------------------------------------------------------------------------- end to end
def test_convert_folder_lossless_true_disparity(tmp_path):
    """A folder of two clips (14 frames with audio: 3 windows; 4 frames: shorter than a
    window, padded and trimmed), the true disparity, lossless: the left output is the
    input, the right view is the forward warp of the input farther than 4 px from every
    hole, the audio is kept, summary.json lists files, timings, seams."""
    from scipy.ndimage import distance_transform_edt
    from experiments.baselines import warp_left
    from experiments.benchmark_footage import read_all
    src, depth = tmp_path / "in", tmp_path / "depth"
    long_clip, long_d, _ = clip(src, 14)
    short_clip, short_d, _ = clip(src, 4, audio=False)
    depth.mkdir()
    for c, d in ((long_clip, long_d), (short_clip, short_d)):
        os.replace(d, depth / f"{c.stem}.npy")
    proc = run("--input", src, "--output_dir", tmp_path / "out", "--depth", depth,
               "--depth_kind", "disparity_px", "--blur_sigma", "0", "--lossless", *FAST)
    assert "[stereo] frames" in proc.stdout and "[assemble] frames" in proc.stdout
    for name, c in (("long", long_clip), ("short", short_clip)):
        out = tmp_path / "out" / c.stem
        summary = json.loads((out / "summary.json").read_text())
        assert [f["path"] for f in summary["files"]] == [
            "left.mkv", "right.mkv", "sbs_LRF_Full_SBS.mkv", "summary.json", "report.html"]
        assert sorted(os.listdir(out)) == sorted(f["path"] for f in summary["files"])
        source = read_all(c)
        left, right = read_all(out / "left.mkv"), read_all(out / "right.mkv")
        np.testing.assert_array_equal(left, source)
        warped, holes, _ = warp_left(source.astype(np.float32) / 255,
                                     np.load(depth / f"{c.stem}.npy"))
        far = np.stack([distance_transform_edt(~h) for h in holes]) > 4
        np.testing.assert_array_equal(right[far], np.round(warped * 255).astype(np.uint8)[far])
        sbs = read_all(out / "sbs_LRF_Full_SBS.mkv")
        np.testing.assert_array_equal(sbs, np.concatenate([left, right], axis=2))
        # the Matroska StereoMode, read back, on the SBS file only; FFV1; the source's rate
        for f in summary["files"][:3]:
            back = io.read_stereo_metadata(out / f["path"])
            assert back["mkv_stereo_mode"] == ("left_right" if f["role"] == "sbs" else None)
            assert back["video_codec"] == "ffv1" and back["st3d"] is None
            assert {k: back[k] for k in f.get("stereo", {})} == f.get("stereo", {})
            assert stream.probe_video(out / f["path"]).fps == Fraction(24)
        assert summary["settings"]["encode"]["lossless"] is True
        assert summary["settings"]["container"] == ".mkv"
        assert summary["frames"] == source.shape[0] and summary["fps"] == "24"
        page = (out / "report.html").read_text()
        shown = [int(i) for i in re.findall(r'alt="left frame (\d+)"', page)]
        assert shown == ([0, 4, 9, 13] if name == "long" else [0, 1, 2, 3])
        assert summary["windows"]["stereo"] == (3 if name == "long" else 1)   # overlap 4
        for stage in ("read", "encode", "invert", "stereo", "decode", "assemble", "mux"):
            assert summary["timings_s"][stage] > 0, stage
        assert abs(sum(summary["stage_share"].values()) - 1) < 1e-6
        assert summary["frames_per_second"] > 0
        m = summary["metrics"]
        assert 0 < m["hole_fraction"] < 0.2
        assert m["left_right_consistency"] < m["left_right_consistency_input_vs_itself"]
        if name == "long":
            assert any(s.startswith("Audio: aac") for s in stream.streams(out / "right.mkv"))
            v, a = decoded_durations(out / "right.mkv")
            # measured: video 0.5833 s; audio 0.6037 s (Matroska keeps the AAC priming)
            assert abs(v - 14 / 24) <= 1e-3 and abs(a - v) <= 1 / 24, (v, a)
            assert m["seam_pairs"] > 0 and m["inside_pairs"] > 0
        else:
            assert not any(s.startswith("Audio") for s in stream.streams(out / "right.mkv"))
    assert not any((tmp_path / "out" / ".convert-work").iterdir())   # work folders removed


@pytest.fixture(scope="module")
def mp4_run(tmp_path_factory):
    """One default conversion (H.264 in mp4) of a 14-frame clip with audio (two 8-frame
    windows), every layout: (input, output folder, summary)."""
    folder = tmp_path_factory.mktemp("mp4")
    video, disparity, _ = clip(folder / "in", 14, 48, 64)
    out = folder / "out"
    run("--input", video, "--output_dir", out, "--depth", disparity, "--depth_kind",
        "disparity_px", "--blur_sigma", "0", "--format", "all", *FAST)
    return video, out, json.loads((out / "summary.json").read_text())


def test_mp4_outputs_carry_vr_names_tags_and_audio(mp4_run):
    """VR-player names; the st3d box read back from each layout's mp4 (none on the eyes and
    anaglyphs: st3d has no anaglyph mode) matching summary.json's records; H.264 at the
    source's exact 24 fps; the source's AAC audio in every file, as long as the video
    within one frame."""
    from experiments.benchmark_footage import read_all
    video, out, summary = mp4_run
    names = [f["path"] for f in summary["files"]]
    assert names == ["left.mp4", "right.mp4", *(io.output_name(x, ".mp4") for x in io.LAYOUTS),
                     "summary.json", "report.html"]
    assert [f["role"] for f in summary["files"]] == ["left", "right", *io.LAYOUTS, "summary",
                                                     "report"]
    assert sorted(p for p in os.listdir(out) if not p.startswith(".")) == sorted(names)
    expect = {"sbs": "left_right", "half-sbs": "left_right", "tb": "top_bottom",
              "half-tb": "top_bottom"}
    _, source_audio = decoded_durations(video)
    for f in summary["files"][:-2]:
        back = io.read_stereo_metadata(out / f["path"])
        assert back["st3d"] == expect.get(f["role"]) and back["mkv_stereo_mode"] is None, f
        assert {k: back[k] for k in f.get("stereo", {})} == f.get("stereo", {})
        assert (back["video_codec"], back["pix_fmt"], back["audio_codec"]) == (
            "h264", "yuv420p", "aac")
        info = stream.probe_video(out / f["path"])
        assert (info.fps, info.frames) == (Fraction(24), 14)
        v, a = decoded_durations(out / f["path"])
        assert abs(v - 14 / 24) <= 1e-3, (f, v)
        # measured: audio 0.58373 s vs video 0.58367 s; the source .mkv decodes 0.60373 s
        # (20 ms of AAC priming that Matroska does not mark and the mp4 edit list drops)
        assert abs(a - v) <= 1 / 24 and abs(a - source_audio) <= 1 / 24, (f, a, v, source_audio)
    assert summary["settings"]["encode"] == {"codec": "h264", "crf": 18.0, "pix_fmt": "yuv420p",
                                             "fps": "24", "lossless": False, "preset": "medium",
                                             "frame_packing_sei": False}
    # the lossy SBS is the two eyes side by side (within H.264 CRF 18 on a 48x64 clip)
    left, right = read_all(out / "left.mp4"), read_all(out / "right.mp4")
    sbs = read_all(out / io.output_name("sbs", ".mp4"))
    assert np.abs(sbs.astype(int) - np.concatenate([left, right], axis=2)).mean() < 3.0


@needs_chromium
def test_convert_report_renders_in_chromium(mp4_run, tmp_path):
    """report.html of the conversion: the sampled frames of the outputs (4 of 14), their
    disparity and holes, the timings and seam metrics; rendered, not blank, no console
    errors."""
    _, out, summary = mp4_run
    page = (out / "report.html").read_text()
    assert [int(i) for i in re.findall(r'alt="left frame (\d+)"', page)] == [0, 4, 9, 13]
    for text in ("seam_over_inside", "hole_change_at_seams", "timings per stage",
                 "sbs_LRF_Full_SBS.mp4", "st3d=left_right", "encode.codec"):
        assert text in page, text
    shot, console = render(out / "report.html", tmp_path / "shot.png")
    assert not console, console
    b = blankness(shot)
    assert b["non_background"] > 0.2 and b["colours"] > 1000, b


@pytest.mark.slow
def test_resume_after_sigkill_is_identical(tmp_path):
    from experiments import benchmark_footage as BF
    res = BF.resume(tmp_path, frames=150)
    assert res["segments_kept_after_kill"] >= 1 and res["windows_kept_after_kill"] >= 1
    assert res["final_files_after_kill"] == []
    assert all(res["bytes_identical"].values()) and res["right_frames_identical"]


@pytest.mark.slow
def test_one_two_four_devices_identical(tmp_path):
    from experiments import benchmark_footage as BF
    res = BF.devices(tmp_path, frames=40)
    # Each run with XLA:CPU's intra-op pool pinned to 4 threads (BF.devices' docstring; the
    # per-window program itself: tests/test_footage_devices.py).
    for n in (2, 4):
        assert res["bytes_identical"][n] and res["right_frames_identical"][n], res
        assert res["right_values_differing"][n] == 0


@pytest.mark.slow
def test_memory_does_not_grow_with_length(tmp_path):
    from experiments import benchmark_footage as BF
    res = BF.memory(tmp_path, 100, 400)
    assert res["long_over_short"] < 1.3, res


@pytest.mark.slow
def test_long_clip_true_disparity_and_depth_model(tmp_path):
    """The issue's 200-frame 160x256 world clip, composite, both depth sources (10 steps)."""
    from experiments import benchmark_footage as BF
    video, disparity_file, scene = BF.make_clip(tmp_path, 200, 160, 256)
    for name, args in (("gt", ["--depth", disparity_file, "--depth_kind", "disparity_px",
                               "--blur_sigma", "0"]), ("model", [])):
        out = tmp_path / name
        BF.convert(["--input", video, "--output_dir", out, "--lossless", "--steps", "10",
                    "--write_disparity", *args])
        used = np.load(out / "disparity.npy")
        if name == "gt":
            np.testing.assert_array_equal(used, scene.disparity)
        checks = BF.check_outputs(out, video, used)
        assert checks["left_equals_input"] and checks["right_equals_warp_beyond_4px"]
        assert checks["audio_kept"] and checks["frames_in_out"] == [200, 200]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["windows"]["stereo"] == 49        # 8-frame windows, overlap 4


@pytest.mark.slow
def test_two_processes_split_windows_identical(tmp_path):
    """jax.distributed with 2 local CPU processes (gloo): each converts its block of the
    windows into the shared work folder, process 0 assembles; same files as one process."""
    import socket
    video, disparity, _ = clip(tmp_path, 30, audio=False)
    args = ["--input", video, "--depth", disparity, "--depth_kind", "disparity_px",
            "--blur_sigma", "0", "--lossless", *FAST]
    run(*args, "--output_dir", tmp_path / "one")
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    common = [sys.executable, "-m", "experiments.convert_video", *map(str, args), "--output_dir",
              str(tmp_path / "two"), "--distributed", "--coordinator_address",
              f"localhost:{port}", "--num_processes", "2"]
    other = subprocess.Popen([*common, "--process_id", "1"], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = subprocess.run([*common, "--process_id", "0"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=1200)
    second = other.communicate(timeout=600)[0]
    assert first.returncode == 0 and other.returncode == 0, first.stderr[-3000:] + second[-3000:]
    assert "converted this process's windows" in second
    for name in ("left.mkv", "right.mkv", "sbs_LRF_Full_SBS.mkv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["processes"] == 2


def test_grayscale_depth_video_is_read_exactly(tmp_path):
    """A depth given as a grayscale video is decoded to its 8-bit values (memory-mapped
    uint8 in the work folder)."""
    gray = np.random.RandomState(0).randint(0, 256, (5, 16, 24), np.uint8)
    video = write(tmp_path / "depth.mkv", np.repeat(gray[..., None], 3, axis=-1))
    J._depth_video_to_npy(stream.probe_video(video), tmp_path / "depth.npy")
    got = np.load(tmp_path / "depth.npy", mmap_mode="r")
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, gray)
