"""Classical right-view baselines and the masked scores of the stereo benchmark.

Every baseline forward-warps the left view by a given disparity (``szero_jax.geometry``'s
z-buffered splat, the same kernel the diffusion methods use on latents) and differs only in
how the disoccluded holes are filled:

* ``leave_blank``: holes stay black (StereoDiffusion Tab. 1 "Leave blank");
* ``stretch``: each hole pixel takes the nearest valid pixel of its row on the *background*
  side (the neighbour with the smaller warped disparity; at the frame edge the only one)
  (StereoDiffusion Tab. 1 "Stretch", i.e. edge fill);
* ``telea``: OpenCV's Telea fast-marching inpainting of the holes (radius 3 px), per frame.

Scores (``score_view``): PSNR / SSIM / LPIPS of the produced right view against the true one
on all pixels, and on a mask of disoccluded pixels: PSNR of the pooled squared error over the
masked pixels of the clip, the mean of the SSIM map (skimage, Gaussian sigma 1.5, the
setting of ``szero_jax.metrics.ssim``) over the masked pixels, and the LPIPS of the
composite that takes the prediction inside the mask and the truth outside (so only the
errors in the holes count, seen in their context).
"""
from __future__ import annotations

import functools

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from skimage.metrics import structural_similarity

from szero_jax.geometry import background_fill, forward_warp
from szero_jax.metrics import lpips, psnr, ssim

TELEA_RADIUS = 3  # px; OpenCV's examples use 3


@jax.jit
def _warp(left, disparity):
    """left [T, H, W, 3], disparity [T, H, W] -> (warped, holes, warped disparity)."""
    stacked = jnp.concatenate([left, disparity[..., None]], axis=-1)
    warped, holes = forward_warp(stacked[None], disparity[None])
    return warped[0, ..., :3], holes[0], warped[0, ..., 3]


def warp_left(left, disparity):
    """Forward-warp the left view: (warped [T, H, W, 3] with zeros in holes, holes [T, H, W]
    bool, the winning source's disparity at each right pixel [T, H, W])."""
    left = np.asarray(left, np.float32)
    disparity = np.asarray(disparity, np.float32)
    if left.ndim != 4 or disparity.shape != left.shape[:-1]:
        raise ValueError(f"left [T, H, W, 3] and disparity [T, H, W] expected, got {left.shape} "
                         f"and {disparity.shape}")
    w, h, d = _warp(jnp.asarray(left), jnp.asarray(disparity))
    return np.asarray(w), np.asarray(h), np.asarray(d)


def leave_blank(left, disparity):
    warped, _, _ = warp_left(left, disparity)
    return warped


def stretch_fill(warped, holes, warped_disparity):
    """Fill holes [..., H, W] of warped [..., H, W, C] from the background-side neighbour
    (``szero_jax.geometry.background_fill``, the samplers' option too)."""
    return np.asarray(background_fill(warped, holes, warped_disparity), np.float32)


def stretch(left, disparity):
    warped, holes, wd = warp_left(left, disparity)
    return stretch_fill(warped, holes, wd)


def telea_fill(warped, holes, radius: int = TELEA_RADIUS):
    out = []
    for img, mask in zip(warped, holes):
        u8 = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
        filled = cv2.inpaint(u8, mask.astype(np.uint8), radius, cv2.INPAINT_TELEA)
        out.append(np.where(mask[..., None], filled.astype(np.float32) / 255.0, img))
    return np.stack(out).astype(np.float32)


def telea(left, disparity, radius: int = TELEA_RADIUS):
    warped, holes, _ = warp_left(left, disparity)
    return telea_fill(warped, holes, radius)


BASELINES = {"leave_blank": leave_blank, "stretch": stretch, "telea": telea}


# ----------------------------------------------------------------------------------- scores
def _ssim_map(x, y):
    _, s = structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, channel_axis=-1, data_range=1.0,
                                 full=True)
    return s.mean(axis=-1)


def score_view(pred, truth, mask=None, use_lpips: bool = True) -> dict:
    """Scores of a right view pred [T, H, W, 3] against truth (both in [0, 1]); mask [T, H, W]
    bool of the disoccluded pixels (optional). Means over frames; hole scores pool the clip."""
    pred = np.clip(np.asarray(pred, np.float32), 0.0, 1.0)
    truth = np.asarray(truth, np.float32)
    if pred.shape != truth.shape or pred.ndim != 4:
        raise ValueError(f"pred and truth must share one [T, H, W, 3] shape, got {pred.shape} "
                         f"and {truth.shape}")
    out = {"psnr": float(np.mean(np.asarray(psnr(pred, truth)))),
           "ssim": float(np.mean(np.asarray(ssim(pred, truth))))}
    if use_lpips:
        out["lpips"] = float(np.mean(np.asarray(lpips(pred, truth))))
    if mask is not None:
        mask = np.asarray(mask, bool)
        n = int(mask.sum())
        out["hole_fraction"] = float(mask.mean())
        if n:
            mse = float(np.sum(((pred - truth) ** 2)[mask]) / (n * 3))
            out["hole_psnr"] = float(10.0 * np.log10(1.0 / max(mse, 1e-12)))
            maps = np.stack([_ssim_map(p, t) for p, t in zip(pred, truth)])
            out["hole_ssim"] = float(maps[mask].mean())
            if use_lpips:
                comp = np.where(mask[..., None], pred, truth)
                out["hole_lpips"] = float(np.mean(np.asarray(lpips(comp, truth))))
    return out
