"""Every file of a finished stereo result, named and tagged for VR players and 3D TVs.

    files = write_stereo_outputs(out_dir, left, right, Delivery(layouts=io.LAYOUTS))
    # [{"path": "left.mp4", "role": "left", ...},
    #  {"path": "sbs_LRF_Full_SBS.mp4", "role": "sbs", "layout": "sbs",
    #   "marker": "_LRF_Full_SBS", "stereo": {"mkv_stereo_mode": None, "st3d": "left_right",
    #                                         "frame_packing_sei": None}}, ...]

Roles: ``left`` / ``right`` (per-eye files, full resolution, no marker: what
``experiments/evaluate.py`` pairs and what the MV-HEVC tools below take), and each layout of
``io.LAYOUTS`` (``sbs``, ``half-sbs``, ``tb``, ``half-tb``, ``anaglyph``,
``anaglyph-dubois``) named ``<layout><marker><ext>`` with iw3's markers
(``io.stereo_metadata``), e.g. ``sbs_LRF_Full_SBS.mp4``, ``half-sbs_LR.mp4``,
``tb_TBF_fulltb.mp4``, ``half-tb_TB.mp4``, ``anaglyph_redcyan.mp4``. Videos carry the
stereo tags (Matroska StereoMode, mp4 st3d; optional H.264 frame-packing SEI); images (a
[H, W, 3] pair) are PNGs with the same names (PNG has no stereo tag).

MV-HEVC (Apple Vision Pro spatial video) is not written: the shipped libx265 4.3 is built
without multiview (``x265-params num-views=2``: "Unknown option"), and the only MV-HEVC
encoder in this FFmpeg build is NVIDIA's ``hevc_nvenc -profile:v mv`` (needs an NVENC GPU;
data-centre GPUs such as H100 / H200 have none). Routes from the per-eye files:

- NVENC GPU, this FFmpeg (untested here): ``ffmpeg -i left.mp4 -i right.mp4
  -filter_complex "[0:v][1:v]framepack=frameseq" -c:v hevc_nvenc -profile:v mv
  -tag:v hvc1 spatial.mov`` (FFmpeg commit 5083f4ad, "avcodec/nvenc: add MV-HEVC encoding
  support": frame-sequence input from the framepack filter).
- x265 >= 4.0 built with ``ENABLE_MULTIVIEW``: ``--multiview-config`` with ``--num-views 2``
  (``--format 1`` reads a full side-by-side frame, e.g. ``sbs_LRF_Full_SBS.mp4`` decoded to
  raw YUV), then a muxer that writes Apple's ``vexu`` box (MP4Box / GPAC >= 2.4).
- macOS: AVFoundation's MV-HEVC encoder (e.g. Mike Swanson's ``spatial make`` tool) or AWS
  MediaConvert's ``multiViewSettings``, both from the left / right files.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from szero_jax.io import stereo_metadata as meta
from szero_jax.io.encode import CONTAINERS, EncodeConfig, VideoWriter
from szero_jax.io.stereo import LAYOUTS, stereo_layout
from szero_jax.io.video import write_image

EYES = ("left", "right")


@dataclasses.dataclass(frozen=True)
class Delivery:
    """Which files ``write_stereo_outputs`` writes, and how."""
    layouts: tuple = ("sbs", "anaglyph")   # a subset of io.LAYOUTS
    encode: EncodeConfig = EncodeConfig()
    container: str = ".mp4"                # ".mp4" or ".mkv" (lossless: ".mkv")
    per_eye: bool = True                   # left.<ext>, right.<ext>
    chunk: int = 16                        # frames per encoder write (bounds extra memory)

    def validate(self) -> "Delivery":
        layouts = tuple(self.layouts) if not isinstance(self.layouts, str) else (self.layouts,)
        bad = [x for x in layouts if x not in LAYOUTS]
        if bad or not (layouts or self.per_eye):
            raise ValueError(f"layouts: expected a subset of {LAYOUTS} (or per_eye), got "
                             f"{self.layouts!r}")
        if self.container not in CONTAINERS:
            raise ValueError(f"container: expected one of {CONTAINERS}, got {self.container!r}")
        if self.encode.lossless and self.container != ".mkv":
            raise ValueError(f"container: lossless (FFV1) is written to '.mkv', got "
                             f"{self.container!r}")
        if not isinstance(self.chunk, int) or self.chunk < 1:
            raise ValueError(f"chunk: expected an int >= 1, got {self.chunk!r}")
        self.encode.validate()
        return dataclasses.replace(self, layouts=tuple(dict.fromkeys(layouts)))


def output_name(role: str, suffix: str) -> str:
    """The file name of a role: 'left', '.mp4' -> 'left.mp4'; 'sbs' -> 'sbs_LRF_Full_SBS.mp4'."""
    if role in EYES:
        return f"{role}{suffix}"
    return meta.layout_filename(role, suffix)


SEI_NAMES = {3: "side by side", 4: "top and bottom"}   # FFmpeg's names, as read back


def file_record(role: str, name: str, suffix: str, config: EncodeConfig) -> dict:
    """The file's record; "stereo" holds the tags written, in ``read_stereo_metadata``'s
    terms, so a test can compare what was written with what is read back."""
    entry = {"path": name, "role": role}
    if role not in LAYOUTS:
        return entry
    tags = meta.tags(role)
    entry.update(layout=role, marker=tags.marker)
    if suffix in CONTAINERS:
        sei = tags.frame_packing if (config.frame_packing_sei and config.codec == "h264"
                                     and not config.lossless) else None
        entry["stereo"] = {
            "mkv_stereo_mode": tags.mkv_stereo_mode if suffix == ".mkv" else None,
            "st3d": meta.ST3D_MODES[tags.st3d] if suffix == ".mp4" and tags.st3d else None,
            "frame_packing_sei": SEI_NAMES.get(sei)}
    return entry


def _check_pair(left, right):
    left, right = np.asarray(left), np.asarray(right)
    if left.shape != right.shape or left.ndim not in (3, 4) or left.shape[-1] != 3:
        raise ValueError(f"left, right: expected one shape [T, H, W, 3] or [H, W, 3], got "
                         f"{left.shape} and {right.shape}")
    for name, x in (("left", left), ("right", right)):
        if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
            raise ValueError(f"{name}: expected float in [0, 1] or uint8, got dtype {x.dtype}")
        if x.dtype != np.uint8 and not np.all(np.isfinite(x)):
            raise ValueError(f"{name}: contains NaN/inf")
    h, w = left.shape[-3:-1]
    if h % 2 or w % 2:
        raise ValueError(f"left, right: height and width must be even (4:2:0 video, half "
                         f"layouts), got {h}x{w}")
    return left, right


def write_stereo_outputs(out_dir, left, right, delivery: Delivery = Delivery(),
                         audio_from=None) -> list:
    """Writes the per-eye files and ``delivery.layouts`` of a (left, right) pair into the
    existing folder ``out_dir``; returns one dict per file (path relative to ``out_dir``,
    role, layout, marker, the stereo tags written). Videos: [T, H, W, 3] pairs, float in
    [0, 1] or uint8, H and W even, encoded chunk by chunk; ``audio_from``: a source whose
    first audio stream goes into every video. Images: [H, W, 3] pairs -> PNG. Everything is
    checked before the first file is written; each file appears only when complete."""
    delivery = delivery.validate()
    left, right = _check_pair(left, right)
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"out_dir: no folder at {str(out_dir)!r}")
    video = left.ndim == 4
    suffix = delivery.container if video else ".png"
    roles = (EYES if delivery.per_eye else ()) + delivery.layouts
    files = []
    for role in roles:
        name = output_name(role, suffix)
        if video:
            layout = role if role in LAYOUTS else None
            with VideoWriter(out_dir / name, delivery.encode, layout=layout,
                             audio_from=audio_from) as writer:
                for start in range(0, left.shape[0], delivery.chunk):
                    sl = slice(start, start + delivery.chunk)
                    writer.write(_frames(role, left[sl], right[sl]))
        else:
            write_image(out_dir / name, _frames(role, left, right))
        files.append(file_record(role, name, suffix, delivery.encode))
    return files


def _frames(role: str, left, right):
    if role == "left":
        return left
    if role == "right":
        return right
    out = stereo_layout(left, right, role)
    return np.clip(out, 0.0, 1.0) if out.dtype != np.uint8 else out
