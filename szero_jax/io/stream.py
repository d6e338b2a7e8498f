"""Streaming video in through FFmpeg: probe a video and read its frames in chunks, so that
memory does not depend on its length. Writing goes through ``io.encode`` (``VideoWriter``
streams frames out, ``mux`` joins segments with the stereo tags and the source's audio:
pass it a ``VideoInfo`` as ``audio_from``).

Why FFmpeg as a subprocess (imageio-ffmpeg's static binary) rather than PyAV: it is already
the project's FFmpeg (``io.video``, ``io.encode``), and its build ships every codec the
converter needs (libx264, libx265, FFV1, AAC, Opus, FLAC; checked with ``ffmpeg
-encoders``). PyAV 18.1's manylinux wheels also bundle libx264 / libx265 (checked in the
wheel's ``av.libs``), but would add a second copy of FFmpeg's libraries for what pipes
already do.

    info = probe_video(path)                    # size, exact fps, frame count, audio codec
    with FrameReader(info) as reader:           # uint8 [n, H, W, 3] chunks, in order
        for chunk in reader.chunks(8): ...

Frames are read as stored (``-noautorotate``: the rotation flag of phone videos is not
applied) and every decoded frame is kept (``-fps_mode passthrough``), so the count the
probe reports is the count the reader yields.
"""
from __future__ import annotations

import dataclasses
import re
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import imageio_ffmpeg
import numpy as np

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: Fraction          # exact frame rate (FFmpeg's filter-graph rate, e.g. 24000/1001)
    frames: int            # decoded frames (a full decode pass counts them)
    video_codec: str
    audio_codec: Optional[str]   # first audio stream's codec, None without audio

    @property
    def duration_s(self) -> float:
        return self.frames / float(self.fps)


def _tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(kept[-lines:])


def probe_video(path, name: str = "video") -> VideoInfo:
    """Size, exact frame rate, frame count and codecs of a video, after decoding all of it
    once: a missing file is a ``FileNotFoundError``; a file FFmpeg cannot open, one without
    a video stream, one whose decoding reports errors (truncated, corrupt) or one with no
    frames is a ``ValueError`` naming ``name``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no video file at {str(path)!r}")
    head = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-noautorotate", "-i", str(path),
                           "-map", "0:v:0", "-frames:v", "1", "-vf", "showinfo", "-f", "null",
                           "-"], capture_output=True, text=True, errors="replace", check=False)
    rate = re.search(r"config in time_base: \S+, frame_rate: (\d+)/(\d+)", head.stderr)
    size = re.search(r"\] n:\s*0 .*? s:(\d+)x(\d+)", head.stderr)
    vcodec = re.search(r"Stream #0:\d+\S*: Video: (\w+)", head.stderr)
    if head.returncode or not (rate and size and vcodec):
        raise ValueError(f"{name}: could not read {str(path)!r} as a video (truncated, not a "
                         f"video, no video stream or no frames): {_tail(head.stderr)}")
    acodec = re.search(r"Stream #0:\d+\S*: Audio: (\w+)", head.stderr)
    count = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-noautorotate",
                            "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
                            "-f", "null", "-progress", "pipe:1", "-nostats", "-"],
                           capture_output=True, text=True, errors="replace", check=False)
    frames = re.findall(r"^frame=(\d+)", count.stdout, flags=re.M)
    if count.returncode or count.stderr.strip():
        raise ValueError(f"{name}: {str(path)!r} does not decode cleanly (truncated or "
                         f"corrupt): {_tail(count.stderr)}")
    n = int(frames[-1]) if frames else 0
    if n == 0:
        raise ValueError(f"{name}: {str(path)!r} has no video frames")
    num, den = int(rate.group(1)), int(rate.group(2))
    if num <= 0 or den <= 0:
        raise ValueError(f"{name}: {str(path)!r} has no constant frame rate ({num}/{den})")
    return VideoInfo(str(path), int(size.group(1)), int(size.group(2)), Fraction(num, den), n,
                     vcodec.group(1), acodec.group(1) if acodec else None)


def list_videos(folder, name: str = "input") -> list[Path]:
    """The video files directly inside ``folder`` (by suffix), sorted; ValueError if none."""
    folder = Path(folder)
    found = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and
                   not p.name.startswith("."))
    if not found:
        raise ValueError(f"{name}: the folder {str(folder)!r} holds no videos (expected files "
                         f"ending in {VIDEO_SUFFIXES})")
    return found


class FrameReader:
    """The frames of a video in order, as uint8 [n, H, W, C] chunks (C = 3, or 1 with
    ``gray``), decoded by one FFmpeg process; ``skip(n)`` drops frames (decoding them)."""

    def __init__(self, info: VideoInfo, gray: bool = False):
        self.info, self.channels = info, 1 if gray else 3
        self.position = 0
        self._proc = None
        self._frame_bytes = info.width * info.height * self.channels
        self._pix_fmt = "gray" if gray else "rgb24"

    def __enter__(self):
        self._err = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-noautorotate", "-i",
             self.info.path, "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "rawvideo",
             "-pix_fmt", self._pix_fmt, "-"],
            stdout=subprocess.PIPE, stderr=self._err, bufsize=self._frame_bytes * 4)
        return self

    def __exit__(self, *exc):
        if self._proc is not None:
            self._proc.stdout.close()
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._err.close()
            self._proc = None

    def read(self, n: int) -> np.ndarray:
        """Up to ``n`` next frames (fewer at the end, [0, ...] after it)."""
        n = max(0, min(n, self.info.frames - self.position))
        data = self._proc.stdout.read(n * self._frame_bytes)
        got = len(data) // self._frame_bytes
        if got < n:
            self._err.seek(0)
            raise ValueError(f"video {self.info.path!r}: decoding stopped at frame "
                             f"{self.position + got} of {self.info.frames}: "
                             f"{_tail(self._err.read().decode(errors='replace'))}")
        self.position += n
        return np.frombuffer(data, np.uint8).reshape(n, self.info.height, self.info.width,
                                                      self.channels)

    def skip(self, n: int) -> None:
        while n > 0:
            n -= self.read(min(n, 16)).shape[0]

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        while self.position < self.info.frames:
            yield self.read(size)


def streams(path) -> list[str]:
    """The stream lines FFmpeg reports for a file (e.g. 'Video: ffv1', 'Audio: aac'),
    for checking outputs."""
    out = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-i", str(path)],
                         capture_output=True, text=True, errors="replace", check=False)
    return re.findall(r"Stream #\d+:\d+\S*: ((?:Video|Audio|Subtitle|Data): [^\n]*)",
                      out.stderr)
