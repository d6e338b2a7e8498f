"""Video encoding through FFmpeg: one frozen config, one streaming writer, one muxer.

    cfg = EncodeConfig(codec="h264", crf=18, pix_fmt="yuv420p", fps=Fraction(30000, 1001))
    with VideoWriter("out/sbs_LRF_Full_SBS.mp4", cfg, layout="sbs", audio_from=src) as w:
        for chunk in chunks:            # [n, H, W, 3] (or [H, W, 3]) uint8 / float in [0, 1]
            w.write(chunk)
    mux("out/sbs.mp4", ["seg0.mkv", "seg1.mkv"], layout="sbs", audio_from=src)

``VideoWriter`` encodes the video into a hidden Matroska file beside the target, then
``mux`` copies it (no re-encode) into the target with the stereo tags of ``layout``
(Matroska StereoMode; the mp4 ``st3d`` box) and the first audio stream of ``audio_from``
(a path, or any object with a ``.path`` such as ``io.stream.VideoInfo``), copied as it is
where the container can carry it (mp4: AAC, MP3, AC-3, E-AC-3, Opus, FLAC, ALAC), else
re-encoded to AAC. The target appears only when complete (written under a temporary name,
renamed at the end); on any error nothing is left. Segments written by ``VideoWriter`` to
``.mkv`` names can be joined by ``mux`` (FFmpeg's concat demuxer, stream copy).

Why the FFmpeg command line (imageio-ffmpeg's static build, already the project's FFmpeg)
and not PyAV: both ship libx264, libx265 and FFV1 (PyAV 18.1's manylinux wheel bundles
libx264.so.165 / libx265.so.216; checked with ``av.codec.Codec(name, "w")``), but PyAV's
streams expose only metadata and a display matrix, no stereo side data, so it cannot make
the mov muxer write ``st3d``; the CLI can (stream copy from Matroska carries StereoMode as
stereo side data, and ``-strict unofficial`` lets the mov muxer write it). It would also
add a second copy of FFmpeg's libraries.

Encoder settings: H.264 (libx264) or HEVC (libx265, tagged ``hvc1`` in mp4 for Apple
players) at a CRF, yuv420p by default (what every player decodes) or yuv420p10le (fed
16-bit RGB, so float frames keep 10 bits); BT.709 matrix and tags (players assume it for
HD); ``lossless``: FFV1 level 3 on planar RGB in .mkv (bit-exact 8-bit frames). Frame sizes
must be even for the 4:2:0 formats (checked at the first frame, ValueError). MV-HEVC: see
``io.delivery``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import tempfile
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from szero_jax.io import stereo_metadata as meta
from szero_jax.io.atomic import atomic_output, check_output_path

FFMPEG = meta.FFMPEG
CODECS = {"h264": "libx264", "h265": "libx265"}
PIX_FMTS = ("yuv420p", "yuv420p10le")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
           "slower", "veryslow", "placebo")
CONTAINERS = (".mp4", ".mkv")
MP4_AUDIO = ("aac", "mp3", "ac3", "eac3", "opus", "flac", "alac")
# No random container ids (Matroska's SegmentUID) or version strings: the same frames give
# the same bytes (resumed and multi-device footage outputs are compared file for file).
BITEXACT = ("-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact")


def _fraction(value, name: str) -> Fraction:
    """A frame rate as an exact fraction (floats: to 1/1001000, so 29.97 stays 2997/100)."""
    message = f"{name}: expected a frame rate > 0 (a number or 'num/den'), got {value!r}"
    if isinstance(value, bool):
        raise ValueError(message)
    try:
        frac = (Fraction(value).limit_denominator(1001000) if isinstance(value, float)
                else Fraction(value))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as err:
        raise ValueError(message) from err
    if frac <= 0:
        raise ValueError(message)
    return frac


@dataclasses.dataclass(frozen=True)
class EncodeConfig:
    """Encoder settings of every video the project writes."""
    codec: str = "h264"          # "h264" (libx264) or "h265" (libx265)
    crf: float = 18.0            # x264's "visually lossless" level (x264 --fullhelp / wiki)
    pix_fmt: str = "yuv420p"     # 4:2:0 8-bit plays everywhere; "yuv420p10le" = 10-bit
    fps: Union[float, Fraction, str] = 8.0   # StereoCrafter-Zero's save_fps
    lossless: bool = False       # FFV1 (level 3, planar RGB) in .mkv; codec/crf unused
    preset: str = "medium"       # x264 / x265 default preset
    # H.264 frame-packing SEI for SBS / TB layouts (3D TVs switch on it). Off by default:
    # the FFmpeg 9.0.2 command line (this project's reader too) cannot decode H.264 that
    # carries both the SEI and a container stereo tag ("Task finished with error code: -17
    # (File exists)" at the filter input); FFmpeg 8.0's libraries (PyAV 18.1) decode it.
    # io.read_video strips the SEI while reading such files, so they stay readable here.
    frame_packing_sei: bool = False

    def validate(self) -> "EncodeConfig":
        if self.codec not in CODECS:
            raise ValueError(f"codec: expected one of {tuple(CODECS)}, got {self.codec!r}")
        if isinstance(self.crf, bool) or not isinstance(self.crf, (int, float)) or \
                not 0 <= self.crf <= 51:
            raise ValueError(f"crf: expected a number in [0, 51] (x264 / x265 range), got "
                             f"{self.crf!r}")
        if self.pix_fmt not in PIX_FMTS:
            raise ValueError(f"pix_fmt: expected one of {PIX_FMTS}, got {self.pix_fmt!r}")
        if self.lossless and self.pix_fmt != "yuv420p":
            raise ValueError(f"pix_fmt: lossless writes 8-bit RGB (FFV1 gbrp); leave pix_fmt "
                             f"at 'yuv420p' with lossless, got {self.pix_fmt!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset: expected one of {PRESETS}, got {self.preset!r}")
        _fraction(self.fps, "fps")
        return self

    @property
    def rate(self) -> Fraction:
        return _fraction(self.fps, "fps")

    @property
    def ten_bit(self) -> bool:
        return self.pix_fmt.endswith("10le")

    def video_args(self, layout: Optional[str]) -> list:
        """FFmpeg output options of the video stream."""
        if self.lossless:
            return ["-c:v", "ffv1", "-level", "3", "-g", "1", "-pix_fmt", "gbrp"]
        # the RGB -> YUV conversion happens in this scale filter (format= right after it),
        # so the matrix used is the BT.709 the tags declare
        convert = f"scale=out_color_matrix=bt709:out_range=tv,format={self.pix_fmt}"
        args = ["-c:v", CODECS[self.codec], "-preset", self.preset, "-crf", f"{self.crf:g}",
                "-vf", convert, "-pix_fmt", self.pix_fmt,
                "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
                "-color_range", "tv"]
        packing = None if layout is None else meta.tags(layout).frame_packing
        if self.codec == "h264" and self.frame_packing_sei and packing is not None:
            args += ["-x264-params", f"frame-packing={packing}"]
        if self.codec == "h265":
            args += ["-x265-params", "log-level=error"]
        return args


def _tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(kept[-lines:])


def _source_path(audio_from) -> Optional[Path]:
    if audio_from is None:
        return None
    path = Path(getattr(audio_from, "path", audio_from))
    if not path.is_file():
        raise FileNotFoundError(f"audio_from: no file at {str(path)!r}")
    return path


def _check_target(path, lossless: bool) -> Path:
    path = check_output_path(path)
    suffix = path.suffix.lower()
    if suffix not in CONTAINERS:
        raise ValueError(f"path: expected a name ending in {CONTAINERS}, got {str(path)!r}")
    if lossless and suffix != ".mkv":
        raise ValueError(f"path: lossless (FFV1) is written to .mkv, got {str(path)!r}")
    return path


def mux(path, segments: Sequence, layout: Optional[str] = None, audio_from=None,
        durations: Optional[Sequence] = None) -> Path:
    """Join encoded video ``segments`` (same codec and size, in order; stream copy) into
    ``path`` (.mp4 or .mkv) with ``layout``'s stereo tags (None: none added) and the first
    audio stream of ``audio_from`` (None, or a source without audio: no audio). Written
    atomically; returns ``path``.

    ``durations``: each segment's exact length in seconds (frames / fps, e.g. a Fraction).
    Without them FFmpeg's concat demuxer offsets each segment by the duration its Matroska
    file reports, rounded to 1 ms: the video then drifts from the audio by ~0.6 ms per
    segment (measured at 24 fps), a frame every ~70 segments."""
    path = _check_target(path, lossless=False)
    segments = [Path(s) for s in segments]
    if not segments:
        raise ValueError("segments: expected at least one encoded video file")
    for seg in segments:
        if not seg.is_file():
            raise FileNotFoundError(f"segments: no file at {str(seg)!r}")
    if durations is not None:
        durations = _durations(durations, len(segments))
    tags = None if layout is None else meta.tags(layout)
    audio = _source_path(audio_from)
    audio_codec = None if audio is None else meta.probe(audio)["audio_codec"]
    mp4 = path.suffix.lower() == ".mp4"
    audio_in = ["-i", str(audio)] if audio_codec else []
    video = ["-map", "0:v:0", "-c:v", "copy"]
    if tags is not None and tags.mkv_stereo_mode:
        video += ["-metadata:s:v:0", f"stereo_mode={tags.mkv_stereo_mode}"]
    with atomic_output(path) as tmp, tempfile.TemporaryDirectory(dir=path.parent,
                                                                prefix=".mux-") as work:
        inputs = _input_args(segments, Path(work), durations)
        if not mp4:
            _run(inputs + audio_in + video + _audio_args(audio_codec, ".mkv"), tmp)
            return path
        # Matroska first: its StereoMode becomes stereo side data on stream copy, from which
        # the mov muxer writes st3d (only with -strict unofficial).
        stage = Path(work) / "video.mkv"
        _run(inputs + video + ["-an"], stage)
        final = ["-i", str(stage), *audio_in, "-map", "0:v:0", "-c:v", "copy",
                 *_audio_args(audio_codec, ".mp4"), "-movflags", "+faststart"]
        if tags is not None and tags.st3d is not None:
            final += ["-strict", "unofficial"]
        if meta.probe(stage)["video"]["codec"] == "hevc":
            final += ["-tag:v", "hvc1"]          # Apple players need hvc1, not hev1
        _run(final, tmp)
    return path


def _durations(values, count: int) -> list:
    message = f"durations: expected {count} segment lengths > 0 (seconds, one per segment)"
    try:
        out = [Fraction(d) for d in values]
    except (TypeError, ValueError, OverflowError, ZeroDivisionError) as err:
        raise ValueError(f"{message}: {err}") from err
    if len(out) != count or any(d <= 0 for d in out):
        raise ValueError(f"{message}, got {len(out)} with minimum "
                         f"{float(min(out)) if out else None}")
    return out


def _input_args(segments, work: Path, durations=None) -> list:
    if len(segments) == 1:
        return ["-i", str(segments[0])]
    lines = ["file '" + str(s.resolve()).replace("'", r"'\''") + "'\n" for s in segments]
    if durations is not None:
        # microseconds (the demuxer's unit) between the rounded exact segment ends, so the
        # rounding never accumulates
        ends, total = [0], Fraction(0)
        for d in durations:
            total += d
            ends.append(round(total * 1_000_000))
        lines = [f"{line}duration {(b - a) // 10**6}.{(b - a) % 10**6:06d}\n"
                 for line, a, b in zip(lines, ends, ends[1:])]
    listing = work / "segments.txt"
    listing.write_text("".join(lines))
    return ["-f", "concat", "-safe", "0", "-i", str(listing)]


def _audio_args(codec: Optional[str], suffix: str) -> list:
    """Map the audio input (index 1); copied where the container carries the codec."""
    if codec is None:
        return ["-an"]
    copy = suffix != ".mp4" or codec in MP4_AUDIO
    return ["-map", "1:a:0", "-c:a", "copy" if copy else "aac"]


def _run(args: list, out: Path) -> None:
    done = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-y", *args,
                           *BITEXACT, str(out)], capture_output=True, text=True, errors="replace",
                          check=False)
    if done.returncode:
        with contextlib.suppress(FileNotFoundError):
            os.remove(out)
        raise OSError(f"ffmpeg failed writing {str(out)!r}: {_tail(done.stderr)}")


class VideoWriter:
    """Streaming encoder: frames in, one finished file out (see the module docstring).

    ``path``: .mp4 or .mkv (lossless: .mkv). ``layout``: one of ``io.LAYOUTS`` (the frames
    are already packed that way) for its stereo tags and H.264 frame-packing SEI, or None
    (a single view). ``audio_from``: source whose first audio stream is passed through.
    ``write(frames)``: [n, H, W, C] or [H, W, C], uint8 or float in [0, 1], C in (1, 3); the
    first call fixes H and W (even for 4:2:0). Bad arguments raise ValueError before any
    encoding; an error inside the ``with`` block kills the encoder and leaves no file."""

    def __init__(self, path, config: EncodeConfig = EncodeConfig(),
                 layout: Optional[str] = None, audio_from=None):
        self.config = config.validate()
        self.path = _check_target(path, config.lossless)
        if layout is not None:
            meta.tags(layout)
        self.layout, self.audio = layout, _source_path(audio_from)
        self.size = None
        self.frames = 0
        self._proc = None
        self._video = self.path.with_name(f".{self.path.stem}.{uuid.uuid4().hex[:12]}.video.mkv")

    def __enter__(self):
        return self

    def _start(self, height: int, width: int) -> None:
        if not self.config.lossless and (height % 2 or width % 2):
            raise ValueError(f"frames: height and width must be even for {self.config.pix_fmt} "
                             f"(4:2:0 chroma), got {height}x{width}")
        self.size = (height, width)
        in_fmt = "rgb48le" if self.config.ten_bit else "rgb24"
        tags = None if self.layout is None else meta.tags(self.layout)
        stereo = ["-metadata:s:v:0", f"stereo_mode={tags.mkv_stereo_mode}"] if (
            tags is not None and tags.mkv_stereo_mode) else []
        cmd = [FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-y", "-f", "rawvideo",
               "-pix_fmt", in_fmt, "-s", f"{width}x{height}", "-r", str(self.config.rate),
               "-i", "-", "-an", *self.config.video_args(self.layout), *stereo, *BITEXACT,
               str(self._video)]
        self._err = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=self._err)

    def _pixels(self, frames) -> np.ndarray:
        x = np.asarray(frames)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3) or min(x.shape) == 0:
            raise ValueError(f"frames: expected [n, H, W, C] or [H, W, C] with C in (1, 3), got "
                             f"shape {x.shape}")
        if x.dtype == np.uint8:
            out = x.astype(np.uint16) * 257 if self.config.ten_bit else x
        elif np.issubdtype(x.dtype, np.floating):
            if not np.all(np.isfinite(x)):
                raise ValueError("frames: contains NaN/inf")
            lo, hi = float(x.min()), float(x.max())
            if lo < -1e-3 or hi > 1 + 1e-3:
                raise ValueError(f"frames: expected values in [0, 1], got [{lo:.4g}, {hi:.4g}]")
            scale = 65535.0 if self.config.ten_bit else 255.0
            out = np.round(np.clip(x, 0.0, 1.0) * scale).astype(
                np.uint16 if self.config.ten_bit else np.uint8)
        else:
            raise ValueError(f"frames: expected uint8 or float in [0, 1], got dtype {x.dtype}")
        if out.shape[-1] == 1:
            out = np.repeat(out, 3, axis=-1)
        return np.ascontiguousarray(out.astype("<u2") if self.config.ten_bit else out)

    def write(self, frames) -> None:
        x = self._pixels(frames)
        if self._proc is None:
            self._start(x.shape[1], x.shape[2])
        if x.shape[1:3] != self.size:
            raise ValueError(f"frames: expected frames of {self.size[0]}x{self.size[1]} (the "
                             f"first chunk's size), got {x.shape[1]}x{x.shape[2]}")
        try:
            self._proc.stdin.write(x.tobytes())
        except BrokenPipeError as err:
            raise OSError(f"encoding {str(self.path)!r} failed: {self._stderr()}") from err
        self.frames += x.shape[0]

    def _stderr(self) -> str:
        self._err.seek(0)
        return _tail(self._err.read().decode(errors="replace"))

    def __exit__(self, exc_type, *exc):
        try:
            if self._proc is not None:
                with contextlib.suppress(BrokenPipeError):
                    self._proc.stdin.close()
                if exc_type is not None:
                    self._proc.kill()
                code = self._proc.wait()
                message = self._stderr()
                self._err.close()
                if exc_type is None and code:
                    raise OSError(f"encoding {str(self.path)!r} failed (ffmpeg exit {code}): "
                                  f"{message}")
            if exc_type is None:
                if not self.frames:
                    raise ValueError(f"frames: no frames were written to {str(self.path)!r}")
                mux(self.path, [self._video], self.layout, self.audio)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._video)
