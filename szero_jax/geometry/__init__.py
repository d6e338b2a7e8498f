"""Geometry of the stereo pair: disparity, forward/backward warps, hole and border masks."""
from szero_jax.geometry.disparity import disparity_from_depth, minmax_signed, resize_disparity
from szero_jax.geometry.masks import border_mask, dilate_holes
from szero_jax.geometry.warp import (background_fill, backward_warp, forward_warp, occlusion_mask,
                                    warped_disparity)

__all__ = ["background_fill", "backward_warp", "border_mask", "dilate_holes", "disparity_from_depth",
           "forward_warp", "minmax_signed", "occlusion_mask", "resize_disparity",
           "warped_disparity"]
