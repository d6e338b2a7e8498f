"""Video and image files: write (atomically) and read, with clear errors."""
from __future__ import annotations

from pathlib import Path

import imageio_ffmpeg
import mediapy
import numpy as np
from PIL import Image, UnidentifiedImageError

from szero_jax.io.arrays import to_uint8
from szero_jax.io.atomic import atomic_output

mediapy.set_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())  # the pip-installed binary, no system ffmpeg

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".gif")


def write_video(path, frames, fps: float = 8.0, crf: float = 18.0) -> Path:
    """Write frames [T, H, W, C] (float in [0, 1] or uint8, C in 1/3) as an H.264 video.

    fps default 8: StereoCrafter-Zero's save_fps. H and W must be even (yuv420p)."""
    frames = to_uint8(frames, "frames", 4)
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"frames height and width must be even for H.264, got "
                         f"{frames.shape[1]}x{frames.shape[2]}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if Path(path).suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"path must end in one of {VIDEO_SUFFIXES}, got {str(path)!r}")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    with atomic_output(path) as tmp:
        codec = "gif" if tmp.suffix.lower() == ".gif" else "h264"
        mediapy.write_video(tmp, frames, fps=fps, codec=codec,
                            **({"crf": crf} if codec == "h264" else {}))
    return Path(path)


def read_video(path) -> tuple[np.ndarray, float]:
    """Read a video: (frames float32 [T, H, W, 3] in [0, 1], fps).

    Decoded with imageio-ffmpeg's reader: mediapy 1.2.7's reader passes `-vsync`, which the
    bundled ffmpeg 9 no longer accepts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {str(path)!r} not found")
    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
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
