"""VR-ready delivery: file names with player markers, stereo tags written and read back
(Matroska StereoMode, mp4 st3d box, H.264 frame-packing SEI), codecs / 10-bit / lossless,
audio passthrough from a source with an audio track, segment muxing, bad input."""
import os
import subprocess

import numpy as np
import pytest

from szero_jax import io
from szero_jax.io import encode, stereo_metadata

FPS = 10


def views(t=6, h=32, w=48, seed=0):
    """A smooth left view and the right view shifted 3 px (codec-friendly)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    ph = rng.random(3)
    left = np.asarray([np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (xx + k * yy + ph[k] + i / t))
                                 for k in range(3)], -1) for i in range(t)], np.float32)
    return left, np.roll(left, 3, axis=2)


def source_with_audio(path, audio_codec, seconds=1.0, size="48x32"):
    """A test clip with a 440 Hz tone made by the project's FFmpeg (lavfi sources)."""
    cmd = [encode.FFMPEG, "-hide_banner", "-v", "error", "-y", "-f", "lavfi", "-i",
           f"testsrc=s={size}:r={FPS}:d={seconds}", "-f", "lavfi", "-i",
           f"sine=f=440:d={seconds}", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-c:a", audio_codec, "-shortest", str(path)]
    subprocess.run(cmd, check=True, capture_output=True)
    return path


@pytest.mark.parametrize("container", [".mp4", ".mkv"])
def test_every_layout_is_named_and_tagged(tmp_path, container):
    left, right = views()
    delivery = io.Delivery(layouts=io.LAYOUTS, encode=io.EncodeConfig(fps=FPS),
                           container=container)
    files = io.write_stereo_outputs(tmp_path, left, right, delivery)
    names = {f["role"]: f["path"] for f in files}
    assert names == {"left": f"left{container}", "right": f"right{container}",
                     "sbs": f"sbs_LRF_Full_SBS{container}", "half-sbs": f"half-sbs_LR{container}",
                     "tb": f"tb_TBF_fulltb{container}", "half-tb": f"half-tb_TB{container}",
                     "anaglyph": f"anaglyph_redcyan{container}",
                     "anaglyph-dubois": f"anaglyph-dubois_redcyan{container}"}
    assert sorted(os.listdir(tmp_path)) == sorted(names.values())   # no temporaries left
    shapes = {"left": (32, 48), "right": (32, 48), "sbs": (32, 96), "half-sbs": (32, 48),
              "tb": (64, 48), "half-tb": (32, 48), "anaglyph": (32, 48),
              "anaglyph-dubois": (32, 48)}
    expected = {  # what a player reads back, per layout
        ".mp4": {"sbs": "left_right", "half-sbs": "left_right", "tb": "top_bottom",
                 "half-tb": "top_bottom"},
        ".mkv": {"sbs": "left_right", "half-sbs": "left_right", "tb": "top_bottom",
                 "half-tb": "top_bottom", "anaglyph": "anaglyph_cyan_red",
                 "anaglyph-dubois": "anaglyph_cyan_red"}}[container]
    for f in files:
        back = io.read_stereo_metadata(tmp_path / f["path"])
        assert (back["height"], back["width"]) == shapes[f["role"]], f
        assert back["fps"] == FPS and back["video_codec"] == "h264"
        assert back["pix_fmt"] == "yuv420p" and back["frame_packing_sei"] is None  # SEI opt-in
        key = "st3d" if container == ".mp4" else "mkv_stereo_mode"
        assert back[key] == expected.get(f["role"]), f
        other = "mkv_stereo_mode" if container == ".mp4" else "st3d"
        assert back[other] is None
        if "stereo" in f:                  # the record says what was written
            assert {k: back[k] for k in f["stereo"]} == f["stereo"]
        if container == ".mkv" and f["role"] in ("sbs", "tb"):   # FFmpeg's own parse
            assert back["stereo3d_side_data"] == {"sbs": "side by side",
                                                  "tb": "top and bottom"}[f["role"]]
    # the pixels are the layouts (H.264 CRF 18 on a smooth clip)
    sbs, fps = io.read_video(tmp_path / names["sbs"])
    err = np.abs(sbs - io.stereo_layout(left, right, "sbs")).mean()
    # measured 0.029 (4:2:0 chroma on a small, colourful clip; mediapy's path: 0.028)
    assert fps == FPS and sbs.shape == (6, 32, 96, 3) and err < 0.04


def test_st3d_box_is_in_the_sample_entry(tmp_path):
    """The box itself, found by walking moov/trak/.../avc1 (not a byte search): a 13-byte
    full box whose stereo_mode is 2 (left-right), inside the video sample entry."""
    left, right = views(t=2)
    io.write_stereo(tmp_path / "s.mp4", left, right, "sbs", fps=FPS)
    io.write_stereo(tmp_path / "t.mp4", left, right, "half-tb", fps=FPS)
    io.write_video(tmp_path / "flat.mp4", left, fps=FPS)
    assert stereo_metadata.mp4_st3d(tmp_path / "s.mp4") == 2
    assert stereo_metadata.mp4_st3d(tmp_path / "t.mp4") == 1
    assert stereo_metadata.mp4_st3d(tmp_path / "flat.mp4") is None
    data = (tmp_path / "s.mp4").read_bytes()
    at = data.index(b"st3d")
    assert data[at - 4:at] == (13).to_bytes(4, "big") and data[at + 4:at + 8] == bytes(4)


def test_frame_packing_sei_when_asked(tmp_path):
    """x264's frame-packing SEI (3 = side by side, 4 = top-bottom) read from the raw H.264
    stream; such files (SEI + container tag) still decode through io.read_video."""
    left, right = views(t=3)
    cfg = io.EncodeConfig(fps=FPS, frame_packing_sei=True)
    files = io.write_stereo_outputs(tmp_path, left, right,
                                    io.Delivery(layouts=("sbs", "tb", "anaglyph"), encode=cfg))
    got = {f["role"]: io.read_stereo_metadata(tmp_path / f["path"])["frame_packing_sei"]
           for f in files}
    assert got == {"left": None, "right": None, "sbs": "side by side", "tb": "top and bottom",
                   "anaglyph": None}
    assert {f["role"]: f.get("stereo", {}).get("frame_packing_sei") for f in files} == got
    frames, _ = io.read_video(tmp_path / "sbs_LRF_Full_SBS.mp4")
    assert frames.shape == (3, 32, 96, 3)


def test_hevc_10bit_and_lossless(tmp_path):
    left, right = views(t=4)
    sbs = io.stereo_layout(left, right, "sbs")
    io.write_stereo(tmp_path / "h.mp4", left, right, "sbs",
                    config=io.EncodeConfig(codec="h265", fps=FPS, pix_fmt="yuv420p10le"))
    back = io.read_stereo_metadata(tmp_path / "h.mp4")
    assert back["video_codec"] == "hevc" and back["pix_fmt"] == "yuv420p10le"
    assert back["st3d"] == "left_right"
    assert b"hvc1" in (tmp_path / "h.mp4").read_bytes()          # Apple's HEVC sample entry
    assert np.abs(io.read_video(tmp_path / "h.mp4")[0] - sbs).mean() < 0.04   # measured 0.016
    io.write_stereo(tmp_path / "l.mkv", left, right, "tb",
                    config=io.EncodeConfig(fps=FPS, lossless=True))
    back = io.read_stereo_metadata(tmp_path / "l.mkv")
    assert back["video_codec"] == "ffv1" and back["mkv_stereo_mode"] == "top_bottom"
    exact = np.round(io.stereo_layout(left, right, "tb") * 255)
    np.testing.assert_array_equal(np.round(io.read_video(tmp_path / "l.mkv")[0] * 255), exact)


@pytest.mark.parametrize("src_name, codec, out, expect", [
    ("src.mp4", "aac", ".mp4", "aac"),         # copied as it is
    ("src.mov", "pcm_s16le", ".mp4", "aac"),   # mp4 cannot carry PCM: re-encoded to AAC
    ("src.mov", "pcm_s16le", ".mkv", "pcm_s16le"),   # Matroska takes it as it is
])
def test_audio_passthrough(tmp_path, src_name, codec, out, expect):
    src = source_with_audio(tmp_path / src_name, codec)
    assert io.read_stereo_metadata(src)["audio_codec"] == codec
    frames = 10                                   # 1 s at 10 fps, like the source
    left, right = views(t=frames)
    path = tmp_path / f"sbs{out}"
    with io.VideoWriter(path, io.EncodeConfig(fps=FPS), layout="sbs", audio_from=src) as w:
        for k in range(0, frames, 4):             # streamed in chunks
            w.write(io.side_by_side(left[k:k + 4], right[k:k + 4]))
    back = io.read_stereo_metadata(path)
    assert back["audio_codec"] == expect
    assert back["st3d" if out == ".mp4" else "mkv_stereo_mode"] == "left_right"
    # durations: the container's, and the audio stream's own (decoded samples)
    assert abs(back["duration_s"] - frames / FPS) <= 1.0 / FPS, back
    samples = subprocess.run([encode.FFMPEG, "-v", "error", "-i", str(path), "-map", "0:a:0",
                              "-f", "s16le", "-ac", "1", "-ar", "8000", "-"],
                             capture_output=True, check=True).stdout
    assert abs(len(samples) / 2 / 8000 - 1.0) <= 1.0 / FPS
    # an object with .path works as the source too (io.stream.VideoInfo)
    class Info:
        pass
    info = Info()
    info.path = str(src)
    with io.VideoWriter(tmp_path / f"left{out}", io.EncodeConfig(fps=FPS), audio_from=info) as w:
        w.write(left)
    assert io.read_stereo_metadata(tmp_path / f"left{out}")["audio_codec"] == expect


def test_source_without_audio_gives_silent_output(tmp_path):
    io.write_video(tmp_path / "silent.mp4", views(t=2)[0], fps=FPS)
    with io.VideoWriter(tmp_path / "o.mp4", io.EncodeConfig(fps=FPS),
                        audio_from=tmp_path / "silent.mp4") as w:
        w.write(views(t=2)[0])
    assert io.read_stereo_metadata(tmp_path / "o.mp4")["audio_codec"] is None


def test_mux_joins_segments_with_tags_and_audio(tmp_path):
    """Segments written one by one (as a resumable converter does), joined without
    re-encoding, tagged, with the source's audio."""
    src = source_with_audio(tmp_path / "src.mp4", "aac", seconds=1.2)
    left, right = views(t=12)
    segs = []
    for k, (a, b) in enumerate(((0, 5), (5, 12))):
        segs.append(tmp_path / f"seg{k}.mkv")
        with io.VideoWriter(segs[-1], io.EncodeConfig(fps=FPS), layout="tb") as w:
            w.write(io.top_bottom(left[a:b], right[a:b]))
    out = io.mux(tmp_path / "tb_TBF_fulltb.mp4", segs, layout="tb", audio_from=src)
    back = io.read_stereo_metadata(out)
    assert back["st3d"] == "top_bottom" and back["audio_codec"] == "aac"
    frames, fps = io.read_video(out)
    assert frames.shape == (12, 64, 48, 3) and fps == FPS
    assert np.abs(frames - io.top_bottom(left, right)).mean() < 0.04   # measured 0.029
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_image_pairs_are_pngs_with_markers(tmp_path):
    left, right = views(t=1)
    files = io.write_stereo_outputs(tmp_path, left[0], right[0],
                                    io.Delivery(layouts=("sbs", "half-tb")))
    assert [f["path"] for f in files] == ["left.png", "right.png", "sbs_LRF_Full_SBS.png",
                                          "half-tb_TB.png"]
    assert "stereo" not in files[2]               # PNG carries no stereo tag
    np.testing.assert_allclose(io.read_image(tmp_path / "sbs_LRF_Full_SBS.png"),
                               io.side_by_side(left[0], right[0]), atol=0.5 / 255 + 1e-6)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, match", [
    (dict(codec="vp9"), r"codec: expected one of \('h264', 'h265'\)"),
    (dict(crf=60), r"crf: expected a number in \[0, 51\]"),
    (dict(crf=-1), r"crf: expected a number in \[0, 51\]"),
    (dict(pix_fmt="yuv444p"), r"pix_fmt: expected one of \('yuv420p', 'yuv420p10le'\)"),
    (dict(pix_fmt="yuv420p10le", lossless=True), "pix_fmt: lossless writes 8-bit RGB"),
    (dict(preset="turbo"), "preset: expected one of"),
    (dict(fps=0), "fps: expected a frame rate > 0"),
    (dict(fps=float("nan")), "fps: expected a frame rate > 0"),
    (dict(fps="fast"), "fps: expected a frame rate > 0"),
])
def test_encode_config_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        io.EncodeConfig(**kwargs).validate()


def test_encode_config_accepts_exact_rates():
    assert io.EncodeConfig(fps="30000/1001").rate == encode.Fraction(30000, 1001)
    assert io.EncodeConfig(fps=29.97).rate == encode.Fraction(2997, 100)


@pytest.mark.parametrize("call, error, match", [
    (lambda p: io.VideoWriter(p / "x.avi"), ValueError, r"path: expected a name ending in \("),
    (lambda p: io.VideoWriter(p / "x.mp4", io.EncodeConfig(lossless=True)), ValueError,
     r"path: lossless \(FFV1\) is written to .mkv"),
    (lambda p: io.VideoWriter(p / "x.mp4", layout="vr180"), ValueError, "layout: expected one of"),
    (lambda p: io.VideoWriter(p / "x.mp4", audio_from=p / "none.mp4"), FileNotFoundError,
     "audio_from: no file at"),
    (lambda p: io.VideoWriter(p / "missing" / "x.mp4"), FileNotFoundError, "does not exist"),
    (lambda p: io.mux(p / "x.mp4", []), ValueError, "segments: expected at least one"),
    (lambda p: io.mux(p / "x.mp4", [p / "nope.mkv"]), FileNotFoundError, "segments: no file"),
    (lambda p: io.Delivery(layouts=("sbs", "vr180")).validate(), ValueError,
     r"layouts: expected a subset of"),
    (lambda p: io.Delivery(container=".avi").validate(), ValueError,
     r"container: expected one of \('.mp4', '.mkv'\)"),
    (lambda p: io.Delivery(encode=io.EncodeConfig(lossless=True)).validate(), ValueError,
     r"container: lossless \(FFV1\) is written to '.mkv'"),
])
def test_bad_arguments_fail_before_encoding(tmp_path, call, error, match):
    with pytest.raises(error, match=match):
        call(tmp_path)
    assert os.listdir(tmp_path) == []


def test_bad_frames_fail_clearly(tmp_path):
    left, right = views(t=2)
    with pytest.raises(ValueError, match=r"height and width must be even .* got 31x48"):
        io.write_stereo_outputs(tmp_path, left[:, :31], right[:, :31])
    with pytest.raises(ValueError, match="left, right: expected one shape"):
        io.write_stereo_outputs(tmp_path, left, right[:, :, :40])
    with pytest.raises(ValueError, match="left: contains NaN/inf"):
        io.write_stereo_outputs(tmp_path, np.full_like(left, np.nan), right)
    with pytest.raises(FileNotFoundError, match="out_dir: no folder"):
        io.write_stereo_outputs(tmp_path / "nope", left, right)
    assert os.listdir(tmp_path) == []                   # checked before any file
    with pytest.raises(ValueError, match="frames: no frames were written"):
        with io.VideoWriter(tmp_path / "empty.mp4"):
            pass
    with pytest.raises(ValueError, match="frames: expected frames of 32x48"):
        with io.VideoWriter(tmp_path / "x.mp4") as w:
            w.write(left)
            w.write(left[:, :16])
    with pytest.raises(ValueError, match=r"frames: expected values in \[0, 1\]"):
        with io.VideoWriter(tmp_path / "x.mp4") as w:
            w.write(left * 3)
    with pytest.raises(ValueError, match=r"frames: height and width must be even"):
        with io.VideoWriter(tmp_path / "x.mp4") as w:
            w.write(left[:, :31])
    assert os.listdir(tmp_path) == []
