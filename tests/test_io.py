"""io: round trips, layouts, anaglyphs, atomic writes and error messages."""
import os

import numpy as np
import pytest

from szero_jax.io import (EncodeConfig, VideoWriter, anaglyph, read_image, read_video,
                          side_by_side, stereo_layout, top_bottom, write_image, write_stereo,
                          write_video)
from szero_jax.io import atomic as atomic_module
from szero_jax.io import encode as encode_module


def smooth_video(t=6, h=64, w=96, seed=0):
    """Smooth colour ramps moving over time: H.264 keeps them well."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    phase = rng.random(3)
    frames = [np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (xx + yy * k + phase[k] + i / t))
                        for k in range(3)], -1) for i in range(t)]
    return np.asarray(frames, np.float32)


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((a - b) ** 2))


def test_video_round_trip(tmp_path):
    frames = smooth_video()
    out = write_video(tmp_path / "v.mp4", frames, fps=10)
    back, fps = read_video(out)
    assert back.shape == frames.shape and back.dtype == np.float32 and fps == pytest.approx(10)
    assert psnr(back, frames) > 30.0  # measured 33.3 dB (yuv420p chroma on a colourful clip)
    grey = np.repeat(frames[..., :1], 3, axis=-1)
    write_video(tmp_path / "g.mp4", grey)
    assert psnr(read_video(tmp_path / "g.mp4")[0], grey) > 42.0  # measured 48.6 dB
    assert sorted(os.listdir(tmp_path)) == ["g.mp4", "v.mp4"]  # no temporary left behind


def test_image_round_trip_exact(tmp_path):
    img = (np.random.default_rng(0).random((9, 7, 3)) * 255).astype(np.uint8)
    write_image(tmp_path / "a.png", img)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), img / np.float32(255))
    grey = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4, 1)
    write_image(tmp_path / "g.png", grey)
    back = read_image(tmp_path / "g.png")
    assert back.shape == (3, 4, 3)
    np.testing.assert_allclose(back[..., 1], grey[..., 0], atol=0.5 / 255 + 1e-6)


def test_layouts_values():
    left = np.zeros((2, 4, 6, 3), np.float32)
    right = np.ones((2, 4, 6, 3), np.float32)
    sbs = side_by_side(left, right)
    assert sbs.shape == (2, 4, 12, 3) and sbs[..., :6, :].max() == 0 and sbs[..., 6:, :].min() == 1
    half = side_by_side(left, right + np.arange(6, dtype=np.float32)[:, None], half=True)
    assert half.shape == (2, 4, 6, 3)
    np.testing.assert_allclose(half[0, 0, 3:, 0], [1.5, 3.5, 5.5])  # pairs averaged
    tb = top_bottom(left, right)
    assert tb.shape == (2, 8, 6, 3) and tb[:, 4:].min() == 1 and tb[:, :4].max() == 0
    assert top_bottom(left, right, half=True).shape == (2, 4, 6, 3)
    with pytest.raises(ValueError, match="even"):
        side_by_side(left[..., :5, :], right[..., :5, :], half=True)
    with pytest.raises(ValueError, match="one shape"):
        side_by_side(left, right[:, :3])


def test_anaglyphs():
    rng = np.random.default_rng(0)
    left, right = rng.random((2, 5, 4, 3)).astype(np.float32)
    rc = anaglyph(left, right)
    np.testing.assert_array_equal(rc[..., 0], left[..., 0])
    np.testing.assert_array_equal(rc[..., 1:], right[..., 1:])
    rel = anaglyph(left, right, "release")  # StereoCrafter-Zero: red = right view's green
    np.testing.assert_array_equal(rel[..., 0], right[..., 1])
    np.testing.assert_array_equal(rel[..., 1:], left[..., 1:])
    white = np.ones((1, 1, 3), np.float32)
    dub = anaglyph(white, white, "dubois")
    np.testing.assert_allclose(dub[0, 0], [1.0, 0.999, 1.0], atol=1e-6)  # rows sum to ~1
    red_only = anaglyph(np.eye(3, dtype=np.float32)[0][None, None], np.zeros((1, 1, 3)), "dubois")
    np.testing.assert_allclose(red_only[0, 0], [0.437, 0.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="RGB"):
        anaglyph(left[..., :1], right[..., :1])
    u8 = anaglyph((left * 255).astype(np.uint8), (right * 255).astype(np.uint8))
    assert u8.dtype == np.float32 and u8.max() <= 1.0


def test_write_stereo_layouts(tmp_path):
    left, right = smooth_video(t=3, seed=1), smooth_video(t=3, seed=2)
    write_stereo(tmp_path / "s.mp4", left, right, "half-sbs")
    back, _ = read_video(tmp_path / "s.mp4")
    assert back.shape == (3, 64, 96, 3)
    assert psnr(back, stereo_layout(left, right, "half-sbs")) > 28.0  # measured 31.4 dB
    write_stereo(tmp_path / "a.png", left[0], right[0], "anaglyph-dubois")
    assert read_image(tmp_path / "a.png").shape == (64, 96, 3)
    with pytest.raises(ValueError, match="layout"):
        stereo_layout(left, right, "vr180")


@pytest.mark.parametrize("frames, match", [
    (np.zeros((4, 4, 3)), r"\[T, H, W, C\]"),
    (np.zeros((2, 4, 4, 4)), "C in"),
    (np.zeros((2, 4, 4, 3), np.int32), "dtype"),
    (np.full((2, 4, 4, 3), 2.0), r"\[0, 1\]"),
    (np.full((2, 4, 4, 3), np.nan), "NaN"),
    (np.zeros((2, 5, 4, 3)), "even"),
])
def test_write_video_rejects_bad_frames(tmp_path, frames, match):
    with pytest.raises(ValueError, match=match):
        write_video(tmp_path / "x.mp4", frames)
    assert os.listdir(tmp_path) == []


def test_write_rejects_bad_folders(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_image(tmp_path / "missing" / "a.png", np.zeros((2, 2, 3)))
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        write_image(tmp_path / "dir.png", np.zeros((2, 2, 3)))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root writes anywhere: simulate the denial
        monkeypatch.setattr(atomic_module.os, "access", lambda *a, **k: False)
    with pytest.raises(PermissionError, match="not writable"):
        write_video(locked / "v.mp4", np.zeros((2, 4, 4, 3)))
    locked.chmod(0o700)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    # an encoder that dies (an unknown codec option makes ffmpeg exit non-zero)
    monkeypatch.setattr(encode_module.EncodeConfig, "video_args",
                        lambda self, layout: ["-c:v", "no_such_encoder"])
    (tmp_path / "keep.mp4").write_bytes(b"old")
    with pytest.raises(OSError, match="encoding .* failed"):
        write_video(tmp_path / "keep.mp4", smooth_video(t=2))
    assert sorted(os.listdir(tmp_path)) == ["keep.mp4"]
    assert (tmp_path / "keep.mp4").read_bytes() == b"old"  # the old file is untouched
    monkeypatch.undo()
    # an error in the caller's loop after frames went in: no file, no temporaries
    with pytest.raises(RuntimeError, match="caller failed"):
        with VideoWriter(tmp_path / "keep.mp4", EncodeConfig()) as w:
            w.write(smooth_video(t=2))
            raise RuntimeError("caller failed")
    assert sorted(os.listdir(tmp_path)) == ["keep.mp4"]
    assert (tmp_path / "keep.mp4").read_bytes() == b"old"


def test_read_rejects_missing_truncated_and_non_media(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "nope.mp4")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "nope.png")
    write_video(tmp_path / "v.mp4", smooth_video(t=4))
    data = (tmp_path / "v.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="could not decode video"):
        read_video(tmp_path / "cut.mp4")
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(ValueError, match="could not decode video"):
        read_video(tmp_path / "text.mp4")
    write_image(tmp_path / "i.png", np.zeros((16, 16, 3)))
    raw = (tmp_path / "i.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="could not decode image"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "t.png").write_text("hello")
    with pytest.raises(ValueError, match="could not decode image"):
        read_image(tmp_path / "t.png")
