"""End-to-end jobs on model bundles: image/video -> stereo video (StereoCrafter-Zero) and
text/image/depth -> stereo image (StereoDiffusion). They return data (views, disparity,
holes, per-stage timings); progress goes to an optional ``callback(stage, done, total)``."""
from szero_jax.pipelines.bundles import (DepthModels, Net, SDModels, VideoModels,
                                         load_sd_models, load_video_models, random_sd_models,
                                         random_video_models)
from szero_jax.pipelines.video import StereoVideo, image_to_stereo_video, video_to_stereo_video
from szero_jax.pipelines.image import (StereoImage, depth_to_stereo_image, image_to_stereo_image,
                                       text_to_stereo_image)
