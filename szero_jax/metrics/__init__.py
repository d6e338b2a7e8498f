"""Quality and consistency metrics for stereo images and videos."""
from szero_jax.metrics.block_match import (BlockMatch, BlockMatchConfig, BlockMatchError,
                                           block_match_disparity, block_match_error)
from szero_jax.metrics.image import hole_ghost, psnr, ssim
from szero_jax.metrics.learned import clip_f, lpips, met3r
from szero_jax.metrics.stereo import left_right_consistency, temporal_flicker, vertical_disparity

__all__ = ["BlockMatch", "BlockMatchConfig", "BlockMatchError", "block_match_disparity",
           "block_match_error", "clip_f", "hole_ghost", "left_right_consistency", "lpips",
           "met3r", "psnr", "ssim", "temporal_flicker", "vertical_disparity"]
