"""Files in and out: videos, images, stereo layouts (SBS, top-bottom, anaglyph); atomic writes;
encoding (one EncodeConfig, a streaming VideoWriter, mux); the stereo tags VR players read
(file-name markers, Matroska StereoMode, mp4 st3d, H.264 frame-packing SEI) and reading them
back; every output of a finished result (write_stereo_outputs); report.html (io.report)."""
from szero_jax.io import report
from szero_jax.io.atomic import atomic_output
from szero_jax.io.delivery import Delivery, output_name, write_stereo_outputs
from szero_jax.io.encode import EncodeConfig, VideoWriter, mux
from szero_jax.io.stereo import (LAYOUTS, anaglyph, side_by_side, stereo_layout, top_bottom,
                                 write_stereo)
from szero_jax.io.stereo_metadata import layout_filename, read_stereo_metadata
from szero_jax.io.video import read_image, read_video, write_image, write_video

__all__ = ["Delivery", "EncodeConfig", "LAYOUTS", "VideoWriter", "anaglyph", "atomic_output",
           "layout_filename", "mux", "output_name", "read_image", "read_stereo_metadata",
           "read_video", "report", "side_by_side", "stereo_layout", "top_bottom", "write_image",
           "write_stereo", "write_stereo_outputs", "write_video"]
