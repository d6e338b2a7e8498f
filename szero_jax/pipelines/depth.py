"""Disparity for the stereo video pipelines: a given depth map with the blurred-depth
fallback (StereoCrafter-Zero Sec. 4.3), or the depth model's relative disparity
(``stages.model_depth``), to pixels; and its latent-resolution copy."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from szero_jax.geometry import disparity_from_depth, resize_disparity
from szero_jax.pipelines.config import DepthConfig
from szero_jax.stereo import blur_depth


def user_depth_to_disparity(depth_map: np.ndarray, config: DepthConfig):
    """A given map [T, H, W] of kind ``config.kind`` -> (pixel disparity [T, H, W],
    normalised map for display, near = 1); ``disparity_px`` maps are taken as pixels."""
    d = jnp.asarray(depth_map)[None]
    if config.blur_sigma > 0:                # the paper's heuristic-filter fallback (Sec. 4.3)
        d = blur_depth(d, config.blur_sigma)
    if config.kind == "disparity_px":        # pixels already: used as they are
        disp = np.asarray(d[0], np.float32)
        return disp, disp / max(float(np.abs(disp).max()), 1e-6)
    disp = disparity_from_depth(d, config.max_disparity, config.kind, config.convergence)
    norm = disparity_from_depth(d, 1.0, config.kind) / d.shape[-1]
    return np.asarray(disp[0]), np.asarray(norm[0])


def model_depth_to_disparity(rel_disparity, config: DepthConfig):
    """The depth model's relative disparity [1, T, H, W] -> (pixels, normalised)."""
    disp = disparity_from_depth(rel_disparity, config.max_disparity, "disparity",
                                config.convergence)
    norm = disparity_from_depth(rel_disparity, 1.0, "disparity") / rel_disparity.shape[-1]
    return np.asarray(disp[0]), np.asarray(norm[0])


def latent_disparity(disparity_px: np.ndarray, latent_hw) -> jnp.ndarray:
    """[T, H, W] pixels -> [1, T, h, w] latent pixels (bilinear, values scaled by w / W)."""
    return resize_disparity(jnp.asarray(disparity_px)[None], tuple(latent_hw))
