"""Noise schedules, DDIM / Euler steps and the ``lax.scan`` samplers (see ddim.py for the
order of operations of a guided DynamiCrafter step)."""
from szero_jax.diffusion.ddim import (DDIMPlan, GuidanceScales, cfg_denoiser, ddim_body,
                                      ddim_invert, ddim_invert_step, ddim_sample, ddim_step,
                                      draw_noise, make_ddim_plan, plan_at, plan_slice)
from szero_jax.diffusion.euler import (SVD_SIGMA_MAX, SVD_SIGMA_MIN, EulerPlan, KarrasSigmas,
                                       dissolve_alpha_bar, dissolve_index, euler_model_input,
                                       euler_sample, euler_step, euler_x0, make_euler_plan)
from szero_jax.diffusion.guidance import (PREDICTION_TYPES, guidance, predict_x0_eps,
                                          rescale_guided)
from szero_jax.diffusion.schedules import (BETA_SCHEDULES, SPACINGS, DynamicRescale,
                                           NoiseSchedule, ddim_timesteps, dynamic_rescale_table,
                                           dynamicrafter_schedule, make_betas,
                                           rescale_zero_terminal_snr,
                                           stable_diffusion_schedule)
