"""How a player learns a stereo file's layout, and reading it back from a written file.

Three signals, written for every packed layout (``io.delivery`` / ``io.encode``):

1. **File-name markers.** Headset players guess the layout from the name. Their own
   documentation says what they look for:

   - SKYBOX (skybox.xyz, support page "Add suffix to help recognize the correct format"):
     ``3dh``, ``LR``, ``SBS``, ``HSBS``, ``Half+SBS`` for side-by-side; ``3dv``, ``TB``,
     ``OU``, ``HOU`` for top-bottom; ``180``, ``360``, ``F180`` for projections.
   - DeoVR (deovr.com/app/doc#naming): ``_SBS`` or ``_LR`` side-by-side, ``_TB`` / ``_OU``
     top-bottom; ``_180`` / ``_360`` projections.
   - Pigasus (hanginghatstudios.com Pigasus FAQ): needs ``LRF`` for full side-by-side.
   - RAD TV / Commedia / Bitmanagement (their naming pages): ``sbs`` / ``lr`` and ``tb`` /
     ``ou``; ``half`` for squeezed frames.
   - iw3 (nagadomi/nunif, ``iw3/utils.py``), the most used 2D-to-3D converter, writes
     ``_LRF_Full_SBS`` (full SBS), ``_LR`` (half SBS), ``_TBF_fulltb`` (full TB), ``_TB``
     (half TB), ``_redcyan`` (anaglyph); its README reports ``_LRF_Full_SBS`` recognised by
     Pigasus, SKYBOX and DeoVR at once.

   We use iw3's markers (reported working in all three players). HereSphere and Quest TV:
   no naming page of theirs was found, so no marker is claimed for them. No ``_180`` /
   ``_360``: those make players project the frame onto a sphere, and our frames are flat
   (rectilinear) views. Per-eye files are ``left.<ext>`` / ``right.<ext>``, not ``_L`` /
   ``_R`` (a single ``_r`` before the extension reads as cross-eyed SBS in some players).

2. **Container tags.** Matroska ``StereoMode`` (written by FFmpeg's ``-metadata:s:v
   stereo_mode=...``) and the mp4 Spherical Video V2 ``st3d`` box (stereo mode only, no
   ``sv3d`` projection), written by FFmpeg's mov muxer from the stream's stereo side data
   with ``-strict unofficial`` (FFmpeg also adds Apple's ``vexu``/``eyes`` box then).
   ``st3d`` has no anaglyph mode, so anaglyph mp4s carry none (they are 2D-watchable).

3. **The H.264 frame-packing SEI** (``x264-params frame-packing=3`` SBS, ``=4`` TB). The
   shipped x265 has no frame-packing option (``Unknown option: frame-packing``), so HEVC
   files rely on the container tags.

Reading back: ``read_stereo_metadata(path)`` reports the Matroska tag and the stream side
data as FFmpeg parses them, the ``st3d`` box from walking the mp4's boxes, and the SEI by
decoding the raw H.264 elementary stream (so the container cannot supply it).
"""
from __future__ import annotations

import dataclasses
import re
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


@dataclasses.dataclass(frozen=True)
class LayoutTags:
    marker: str                      # file-name marker (iw3's, see the module docstring)
    mkv_stereo_mode: Optional[str]   # FFmpeg's name of the Matroska StereoMode value
    st3d: Optional[int]              # Spherical Video V2 st3d: 1 top-bottom, 2 left-right
    frame_packing: Optional[int]     # H.264 frame_packing_arrangement_type: 3 SBS, 4 TB


# Matroska StereoMode (matroska.org "StereoMode"): 1 side by side (left first), 3 top-bottom
# (left first), 10 anaglyph (cyan/red). Half layouts carry the same modes: neither Matroska,
# st3d nor the SEI says "squeezed"; players infer it from the aspect ratio and the name.
TAGS = {
    "sbs": LayoutTags("_LRF_Full_SBS", "left_right", 2, 3),
    "half-sbs": LayoutTags("_LR", "left_right", 2, 3),
    "tb": LayoutTags("_TBF_fulltb", "top_bottom", 1, 4),
    "half-tb": LayoutTags("_TB", "top_bottom", 1, 4),
    "anaglyph": LayoutTags("_redcyan", "anaglyph_cyan_red", None, None),
    "anaglyph-dubois": LayoutTags("_redcyan", "anaglyph_cyan_red", None, None),
}
ST3D_MODES = {0: "mono", 1: "top_bottom", 2: "left_right", 3: "stereo_custom",
              4: "right_left"}


def tags(layout: str) -> LayoutTags:
    if layout not in TAGS:
        raise ValueError(f"layout: expected one of {tuple(TAGS)}, got {layout!r}")
    return TAGS[layout]


def layout_filename(layout: str, suffix: str, stem: Optional[str] = None) -> str:
    """'sbs', '.mp4' -> 'sbs_LRF_Full_SBS.mp4' (stem defaults to the layout's name)."""
    return f"{stem or layout}{tags(layout).marker}{suffix}"


# ----------------------------------------------------------------------------- reading back
def _ffmpeg(*args) -> subprocess.CompletedProcess:
    return subprocess.run([FFMPEG, "-hide_banner", "-nostdin", *args], capture_output=True,
                          text=True, errors="replace", check=False)


def probe(path) -> dict:
    """What ``ffmpeg -i`` reports: container, first video stream (codec, pix_fmt, size, fps,
    tags, side data), first audio stream's codec and the duration. ValueError when FFmpeg
    cannot read the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no file at {str(path)!r}")
    text = _ffmpeg("-i", str(path)).stderr
    head = re.search(r"Input #0, ([^,]+(?:,[^ ]+)*), from", text)
    if not head:
        raise ValueError(f"path: FFmpeg cannot read {str(path)!r}: {text.strip()[-300:]}")
    info = {"container": head.group(1), "video": None, "audio_codec": None, "duration_s": None}
    dur = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    if dur:
        h, m, s = dur.groups()
        info["duration_s"] = int(h) * 3600 + int(m) * 60 + float(s)
    # split the dump into per-stream blocks (a block runs to the next "Stream #" line)
    blocks = re.split(r"\n(?=\s*Stream #)", text)
    for block in blocks[1:]:
        line = block.strip().splitlines()[0]
        if ": Video: " in line and info["video"] is None:
            v = re.search(r"Video: (\w+)[^,]*, (\w+)", line)
            size = re.search(r", (\d+)x(\d+)", line)
            fps = re.search(r", ([\d.]+) fps", line)
            info["video"] = {
                "codec": v.group(1) if v else None, "pix_fmt": v.group(2) if v else None,
                "width": int(size.group(1)) if size else None,
                "height": int(size.group(2)) if size else None,
                "fps": float(fps.group(1)) if fps else None,
                "stereo_mode_tag": _tag(block, "stereo_mode"),
                "stereo3d_side_data": _side_stereo(block)}
        elif ": Audio: " in line and info["audio_codec"] is None:
            a = re.search(r"Audio: (\w+)", line)
            info["audio_codec"] = a.group(1) if a else None
    return info


def _tag(block: str, key: str) -> Optional[str]:
    m = re.search(rf"^\s+{key}\s+: (.+)$", block, flags=re.M)
    return m.group(1).strip() if m else None


def _side_stereo(block: str) -> Optional[str]:
    m = re.search(r"Stereo 3D: ([^,\n]+)", block)
    return m.group(1).strip() if m else None


def mp4_st3d(path) -> Optional[int]:
    """The stereo_mode byte of the first ``st3d`` box inside a sample entry of an mp4, or
    None without one. Walks moov/trak/mdia/minf/stbl/stsd/<sample entry> by box sizes."""
    data = Path(path).read_bytes()
    containers = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}
    sample_entries = {b"avc1", b"avc3", b"hvc1", b"hev1", b"mp4v", b"av01", b"vp09"}

    def walk(start, end):
        pos = start
        while pos + 8 <= end:
            size, kind = struct.unpack(">I4s", data[pos:pos + 8])
            header = 8
            if size == 1:
                size, header = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
            elif size == 0:
                size = end - pos
            if size < header or pos + size > end:
                return None                       # not a well-formed box: stop here
            body = pos + header
            if kind in containers:
                found = walk(body, pos + size)
            elif kind == b"stsd":                 # full box + entry count, then entries
                found = walk(body + 8, pos + size)
            elif kind in sample_entries:          # 78-byte visual sample entry header
                found = walk(body + 78, pos + size)
            elif kind == b"st3d":                 # full box header, then stereo_mode
                found = data[body + 4] if size >= header + 5 else None
            else:
                found = None
            if found is not None:
                return found
            pos += size
        return None

    return walk(0, len(data))


def h264_frame_packing(path) -> Optional[str]:
    """The frame-packing arrangement an H.264 stream's SEI declares ('side by side', 'top
    and bottom'), or None: the video is copied out as a raw Annex B stream (no container
    tags left) and its first frame decoded with FFmpeg's showinfo filter."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "video.h264"
        copy = _ffmpeg("-v", "error", "-i", str(path), "-map", "0:v:0", "-c:v", "copy",
                       "-bsf:v", "h264_mp4toannexb", "-frames:v", "2", "-f", "h264", str(raw))
        if copy.returncode or not raw.is_file():
            return None
        shown = _ffmpeg("-f", "h264", "-i", str(raw), "-frames:v", "1", "-vf", "showinfo",
                        "-f", "null", "-").stderr
    m = re.search(r"side data - Stereo 3D: type - ([^,\n]+)", shown)
    return m.group(1).strip() if m else None


def read_stereo_metadata(path) -> dict:
    """Everything a player could read about a file's stereo layout:
    {"container", "video_codec", "width", "height", "fps", "audio_codec", "duration_s",
     "mkv_stereo_mode" (Matroska tag), "stereo3d_side_data" (FFmpeg's parse of the
     container), "st3d" (mp4 box: 'left_right' / 'top_bottom' / ... or None),
     "frame_packing_sei" (H.264 only)}."""
    info = probe(path)
    video = info["video"] or {}
    st3d = mp4_st3d(path) if "mp4" in info["container"] else None
    return {"container": info["container"], "video_codec": video.get("codec"),
            "pix_fmt": video.get("pix_fmt"), "width": video.get("width"),
            "height": video.get("height"), "fps": video.get("fps"),
            "audio_codec": info["audio_codec"], "duration_s": info["duration_s"],
            "mkv_stereo_mode": video.get("stereo_mode_tag") if "matroska" in info["container"]
            else None,
            "stereo3d_side_data": video.get("stereo3d_side_data"),
            "st3d": None if st3d is None else ST3D_MODES.get(st3d, f"unknown ({st3d})"),
            "frame_packing_sei": h264_frame_packing(path) if video.get("codec") == "h264"
            else None}
