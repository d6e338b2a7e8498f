"""Files in and out: videos, images, stereo layouts (SBS, top-bottom, anaglyph); atomic writes."""
from szero_jax.io.atomic import atomic_output
from szero_jax.io.stereo import (LAYOUTS, anaglyph, side_by_side, stereo_layout, top_bottom,
                                 write_stereo)
from szero_jax.io.video import read_image, read_video, write_image, write_video

__all__ = ["LAYOUTS", "anaglyph", "atomic_output", "read_image", "read_video", "side_by_side",
           "stereo_layout", "top_bottom", "write_image", "write_stereo", "write_video"]
