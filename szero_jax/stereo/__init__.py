"""StereoCrafter-Zero and StereoDiffusion on top of ``szero_jax.diffusion``: the stereo
samplers (one jitted ``lax.scan`` each), dissolved depth, and null-text inversion."""
from szero_jax.stereo.common import StereoDenoiseFn, join_views, split_views
from szero_jax.stereo.crafter_zero import (StereoCrafterZeroConfig, StereoEvents, StereoOutput,
                                          build_events, num_evaluations, pad_events,
                                          released_refine_schedule,
                                          restart_and_refine_evaluations, schedule_buckets,
                                          stereocrafter_zero_run, stereocrafter_zero_sample)
from szero_jax.stereo.denoisers import stereo_cfg_denoiser
from szero_jax.stereo.dissolve import (blur_depth, dissolve_depth, propagate_disparity,
                                      released_disparity)
from szero_jax.stereo.inversion import (NullTextConfig, NullTextResult, ddim_inversion,
                                        null_text_inversion)
from szero_jax.stereo.stereodiffusion import (StereoDiffusionConfig, StereoDiffusionEvents,
                                              StereoDiffusionOutput,
                                              build_stereodiffusion_events, stereodiffusion_run,
                                              stereodiffusion_sample)
