"""Stereo layouts of a (left, right) pair: side-by-side, top-bottom, anaglyph."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from szero_jax.io.video import write_image, write_video

# Dubois least-squares red-cyan matrices (E. Dubois, "A projection method to generate anaglyph
# stereo images", ICASSP 2001; values from his web page), rows = output R, G, B.
DUBOIS_LEFT = np.array([[0.437, 0.449, 0.164],
                        [-0.062, -0.062, -0.024],
                        [-0.048, -0.050, -0.017]], np.float32)
DUBOIS_RIGHT = np.array([[-0.011, -0.032, -0.007],
                         [0.377, 0.761, 0.009],
                         [-0.026, -0.093, 1.234]], np.float32)

LAYOUTS = ("sbs", "half-sbs", "tb", "half-tb", "anaglyph", "anaglyph-dubois")


def _pair(left, right):
    left, right = np.asarray(left), np.asarray(right)
    if left.shape != right.shape or left.ndim < 3:
        raise ValueError(f"left and right must have one shape [..., H, W, C], got {left.shape} "
                         f"and {right.shape}")
    return left, right


def _halve(x, axis: int):
    """Average adjacent pairs along `axis` (even length required)."""
    if x.shape[axis] % 2:
        raise ValueError(f"half-resolution layouts need an even size along axis {axis}, got "
                         f"{x.shape[axis]}")
    a = np.take(x, np.arange(0, x.shape[axis], 2), axis=axis).astype(np.float32)
    b = np.take(x, np.arange(1, x.shape[axis], 2), axis=axis).astype(np.float32)
    out = (a + b) / 2
    return np.round(out).astype(np.uint8) if x.dtype == np.uint8 else out.astype(x.dtype)


def side_by_side(left, right, half: bool = False):
    """[..., H, W, C] pair -> [..., H, 2W, C] (left on the left); half: each view squeezed to
    W/2 so the frame keeps width W (half-SBS, as 3D TVs expect)."""
    left, right = _pair(left, right)
    if half:
        left, right = _halve(left, -2), _halve(right, -2)
    return np.concatenate([left, right], axis=-2)


def top_bottom(left, right, half: bool = False):
    """[..., H, W, C] pair -> [..., 2H, W, C] (left on top); half keeps height H."""
    left, right = _pair(left, right)
    if half:
        left, right = _halve(left, -3), _halve(right, -3)
    return np.concatenate([left, right], axis=-3)


def anaglyph(left, right, method: str = "red_cyan"):
    """Red-cyan anaglyph of an RGB pair [..., H, W, 3] in [0, 1] (float out).

    "red_cyan": red from the left view, green and blue from the right (red lens on the left
    eye). "dubois": Dubois' least-squares matrices (less retinal rivalry). "release":
    StereoCrafter-Zero's overlay (scripts/gradio/i2v_test.py): red = the right view's green
    channel, green and blue from the left, to compare with its published videos."""
    left, right = _pair(left, right)
    if left.shape[-1] != 3:
        raise ValueError(f"anaglyph needs RGB views (C=3), got C={left.shape[-1]}")
    scale = 255.0 if left.dtype == np.uint8 else 1.0
    left, right = left.astype(np.float32) / scale, right.astype(np.float32) / scale
    if method == "red_cyan":
        out = np.concatenate([left[..., :1], right[..., 1:]], axis=-1)
    elif method == "dubois":
        out = np.clip(left @ DUBOIS_LEFT.T + right @ DUBOIS_RIGHT.T, 0.0, 1.0)
    elif method == "release":
        out = np.concatenate([right[..., 1:2], left[..., 1:]], axis=-1)
    else:
        raise ValueError(f"method must be 'red_cyan', 'dubois' or 'release', got {method!r}")
    return out


def stereo_layout(left, right, layout: str):
    """One of LAYOUTS for a pair of frames [..., H, W, 3]."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout.startswith("anaglyph"):
        return anaglyph(left, right, "dubois" if layout.endswith("dubois") else "red_cyan")
    fn = side_by_side if layout.endswith("sbs") else top_bottom
    return fn(left, right, half=layout.startswith("half"))


def write_stereo(path, left, right, layout: str = "sbs", fps: float = 8.0,
                 config=None) -> Path:
    """Write a stereo video ([T, H, W, 3] pair, path .mp4 / .mkv / ...) or image ([H, W, 3],
    .png / .jpg) in the given layout; videos carry the layout's stereo tags (Matroska
    StereoMode, mp4 st3d, H.264 frame-packing SEI; ``io.stereo_metadata``). ``config``: an
    ``io.EncodeConfig`` (default H.264 CRF 18 at ``fps``)."""
    frame = stereo_layout(left, right, layout)
    if frame.ndim == 4:
        return write_video(path, frame, fps=fps, config=config, layout=layout)
    if frame.ndim == 3:
        return write_image(path, frame)
    raise ValueError(f"left and right must be [T, H, W, 3] or [H, W, 3], got {left.shape}")
