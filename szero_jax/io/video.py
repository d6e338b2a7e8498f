"""Video and image files: write (atomically) and read, with clear errors."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import imageio_ffmpeg
import mediapy
import numpy as np
from PIL import Image, UnidentifiedImageError

from szero_jax.io import encode, stereo_metadata
from szero_jax.io.arrays import to_uint8
from szero_jax.io.atomic import atomic_output

mediapy.set_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())  # the pip-installed binary, no system ffmpeg

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".gif")
CHUNK = 16   # frames per encoder write (bounds the extra memory of a write)


def write_video(path, frames, fps: float = 8.0, crf: float = 18.0, config=None,
                layout: Optional[str] = None) -> Path:
    """Write frames [T, H, W, C] (float in [0, 1] or uint8, C in 1/3) as a video.

    .mp4 / .mkv go through ``io.encode.VideoWriter`` with ``config`` (an ``EncodeConfig``;
    default H.264 CRF ``crf`` yuv420p at ``fps``; StereoCrafter-Zero's save_fps is 8) and
    the stereo tags of ``layout`` (frames already packed that way; None: a single view).
    .mov / .gif / .webm are written by mediapy (H.264 / GIF). H and W must be even."""
    frames = to_uint8(frames, "frames", 4)
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"frames height and width must be even for H.264, got "
                         f"{frames.shape[1]}x{frames.shape[2]}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"path must end in one of {VIDEO_SUFFIXES}, got {str(path)!r}")
    if suffix in encode.CONTAINERS:
        config = encode.EncodeConfig(fps=fps, crf=crf) if config is None else config
        with encode.VideoWriter(path, config, layout=layout) as writer:
            for start in range(0, frames.shape[0], CHUNK):
                writer.write(frames[start:start + CHUNK])
        return Path(path)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    with atomic_output(path) as tmp:
        codec = "gif" if tmp.suffix.lower() == ".gif" else "h264"
        mediapy.write_video(tmp, frames, fps=fps, codec=codec,
                            **({"crf": crf} if codec == "h264" else {}))
    return Path(path)


def _decode_workaround(path) -> list:
    """FFmpeg 9.0.2's CLI fails on H.264 with both a frame-packing SEI and a container stereo
    tag (see io.encode.EncodeConfig.frame_packing_sei): drop SEI NAL units before decoding
    such files (SEI carry no pixels)."""
    try:
        video = stereo_metadata.probe(path)["video"] or {}
    except ValueError:
        return []        # not readable: the reader reports it
    if video.get("codec") == "h264" and video.get("stereo3d_side_data"):
        return ["-bsf:v", "filter_units=remove_types=6"]
    return []


def read_video(path) -> tuple[np.ndarray, float]:
    """Read a video: (frames float32 [T, H, W, 3] in [0, 1], fps).

    Decoded with imageio-ffmpeg's reader: mediapy 1.2.7's reader passes `-vsync`, which the
    bundled ffmpeg 9 no longer accepts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {str(path)!r} not found")
    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24",
                                            input_params=_decode_workaround(path))
        meta = next(reader)
        width, height = meta["size"]
        frames = [np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader]
    except (OSError, RuntimeError, StopIteration, ValueError) as err:
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        raise ValueError(f"could not decode video {str(path)!r} (truncated or not a video): "
                         f"{lines[-1] if lines else type(err).__name__}") from err
    if not frames:
        raise ValueError(f"video {str(path)!r} has no frames")
    return np.stack(frames).astype(np.float32) / 255.0, float(meta["fps"])


def write_image(path, image) -> Path:
    """Write an image [H, W, C] (float in [0, 1] or uint8) losslessly (.png) or as .jpg."""
    image = to_uint8(image, "image", 3)
    suffix = Path(path).suffix.lower()
    if suffix not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"path must end in .png, .jpg or .jpeg, got {str(path)!r}")
    with atomic_output(path) as tmp:
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
            tmp, format="PNG" if suffix == ".png" else "JPEG", quality=95)
    return Path(path)


def read_image(path) -> np.ndarray:
    """Read an image as float32 [H, W, 3] in [0, 1] (grey and alpha converted to RGB)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} not found")
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"could not decode image {str(path)!r} (truncated or not an image): "
                         f"{err}") from err
    return rgb.astype(np.float32) / 255.0
