"""Stereo video pipelines on a ``VideoModels`` bundle (StereoCrafter-Zero).

``image_to_stereo_video``: image + prompt -> the left video (DynamiCrafter DDIM with CFG),
depth on it (DepthCrafter-style + dissolve, or a user depth), disparity at latent
resolution, the StereoCrafter-Zero sampler for both views, VAE decode of both.
``video_to_stereo_video``: existing footage -> DDIM inversion of its latents with the same
conditioning (first frame as the image), then the stereo sampler from the inverted latent.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from szero_jax.diffusion import (cfg_denoiser, ddim_invert, ddim_sample, make_ddim_plan,
                                 plan_slice)
from szero_jax.diffusion.schedules import NoiseSchedule
from szero_jax.geometry import forward_warp
from szero_jax.pipelines import depth as D
from szero_jax.pipelines.bundles import VideoModels
from szero_jax.pipelines.common import (Callback, Stages, check_depth, check_frames,
                                        check_positive_int, check_prompt, check_range,
                                        check_size)
from szero_jax.pipelines.conditioning import (decode_latents, dynamicrafter_conditioning,
                                              encode_latents, image_tokens, prediction_type,
                                              text_embedding, video_model_fn)
from szero_jax.stereo import (StereoCrafterZeroConfig, build_events, stereo_cfg_denoiser,
                              stereocrafter_zero_run)

STEPS = 50                # DynamiCrafter scripts/run.sh ddim_steps
GUIDANCE_RESCALE = 0.7    # DynamiCrafter scripts/run.sh guidance_rescale
ETA = 1.0                 # DynamiCrafter scripts/run.sh ddim_eta
SPACING = "uniform_trailing"  # DynamiCrafter scripts/run.sh timestep_spacing


class StereoVideo(NamedTuple):
    left: np.ndarray        # [T, H, W, 3] float32 in [0, 1]
    right: np.ndarray       # [T, H, W, 3]
    disparity: np.ndarray   # [T, H, W] pixels at output size (x_right = x_left - d)
    holes: np.ndarray       # [T, H, W] bool: right-view pixels no left pixel warps onto
    depth: np.ndarray       # [T, H, W] normalised relative disparity used (near = 1)
    timings: dict           # seconds per stage


def _schedule(config) -> NoiseSchedule:
    return NoiseSchedule.create("lvdm_linear" if config.beta_schedule == "linear"
                                else config.beta_schedule, config.timesteps,
                                config.linear_start, config.linear_end,
                                zero_terminal_snr=config.rescale_betas_zero_snr)


def _plan(models: VideoModels, steps, eta, guidance, guidance_rescale, dynamic_rescale=None):
    c = models.config
    dyn = c.use_dynamic_rescale if dynamic_rescale is None else dynamic_rescale
    return make_ddim_plan(_schedule(c), steps, SPACING, eta, guidance_scale=guidance,
                          guidance_rescale=guidance_rescale, dynamic_rescale=dyn,
                          base_scale=c.base_scale)


def _statics(models: VideoModels):
    return dict(unet_cfg=models.unet.config, dtype=models.dtype)


@functools.partial(jax.jit, static_argnames=("unet_cfg", "dtype", "pred"))
def _left_sample(params, cond, uncond, x_T, plan, noise, fs, *, unet_cfg, dtype, pred):
    model_fn = video_model_fn(unet_cfg, dtype, params, fs, "left")
    return ddim_sample(cfg_denoiser(model_fn, cond, uncond), x_T, plan, noise, pred)[0]


@functools.partial(jax.jit, static_argnames=("unet_cfg", "dtype", "pred"))
def _stereo_sample(params, cond, uncond, right, x_T, disparity, plan, key, events, fs, *,
                   unet_cfg, dtype, pred):
    model_fn = video_model_fn(unet_cfg, dtype, params, fs, "stereo")
    denoise = stereo_cfg_denoiser(model_fn, cond, uncond, right=right)
    return stereocrafter_zero_run(denoise, x_T, disparity, plan, key, events, pred)


@functools.partial(jax.jit, static_argnames=("unet_cfg", "dtype", "pred"))
def _invert(params, cond, z0, plan, fs, *, unet_cfg, dtype, pred):
    model_fn = video_model_fn(unet_cfg, dtype, params, fs, "invert")
    return ddim_invert(lambda x, t, p: model_fn(x, t, cond), z0, plan, pred)[0]


@functools.partial(jax.jit, static_argnames=("vae_cfg", "dtype", "scale"))
def _decode(params, z, *, vae_cfg, dtype, scale):
    return jnp.clip((decode_latents(vae_cfg, dtype, params, z, scale) + 1.0) / 2.0, 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("vae_cfg", "dtype", "scale"))
def _encode(params, video, *, vae_cfg, dtype, scale):
    return encode_latents(vae_cfg, dtype, params, video, scale)


@functools.partial(jax.jit, static_argnames=("config", "text_cfg", "vision_cfg", "dtype",
                                             "num_frames"))
def _video_conditioning(params, tokens, first_frame, z0, *, config, text_cfg, vision_cfg, dtype,
                        num_frames):
    """Conditional context of an existing video (inversion at guidance 1 needs only cond):
    the first frame's image tokens and its latent concatenated to every frame."""
    txt = text_embedding(text_cfg, dtype, params["text"], tokens)
    img = image_tokens(vision_cfg, config.resampler, dtype, params["vision"],
                       params["resampler"], first_frame).astype(jnp.float32)
    concat = jnp.repeat(z0[:, :1], num_frames, axis=1)
    cond = {"text": jnp.concatenate([txt[:1], img], axis=1), "concat": concat}
    uncond = {"text": jnp.concatenate([txt[1:], image_tokens(
        vision_cfg, config.resampler, dtype, params["vision"], params["resampler"],
        jnp.zeros_like(first_frame)).astype(jnp.float32)], axis=1), "concat": concat}
    return cond, uncond


def _right_context(cond, disparity, stereo: StereoCrafterZeroConfig) -> dict:
    """The right view's context overrides (``StereoCrafterZeroConfig.right_condition``):
    "warped" = the image latent warped by the first frame's latent disparity, holes keeping
    the left's values; "left" (released) = none, both views share the left's."""
    if stereo.right_condition == "left":
        return {}
    z = cond["concat"]
    warped, holes = forward_warp(z, jnp.broadcast_to(disparity[:, :1], disparity.shape))
    return {"concat": jnp.where(holes[..., None], z, warped)}


def _check_models(models):
    if not isinstance(models, VideoModels):
        raise ValueError(f"models: expected a VideoModels bundle, got {type(models).__name__}")


def _check_common(models, steps, eta, guidance, fs, max_disparity, convergence, dissolve_step,
                  stereo, plan_steps):
    check_positive_int(steps, "steps")
    check_range(eta, "eta", 0.0, 10.0)
    check_range(guidance, "guidance", 0.0, 100.0)
    check_positive_int(fs, "fs", 0)
    check_range(max_disparity, "max_disparity", 1e-6, 1.0)
    if convergence is not None:
        check_range(convergence, "convergence", 0.0, 1.0)
    check_positive_int(dissolve_step, "dissolve_step", 0)
    if dissolve_step > D.DISSOLVE_PLAN_STEPS:
        raise ValueError(f"dissolve_step: expected 0 (off) .. {D.DISSOLVE_PLAN_STEPS}, got "
                         f"{dissolve_step}")
    if not isinstance(stereo, StereoCrafterZeroConfig):
        raise ValueError(f"stereo: expected a StereoCrafterZeroConfig, got {type(stereo).__name__}")
    return build_events(stereo, plan_steps)        # validates the stereo settings


def _multiple(models: VideoModels) -> int:
    return models.vae_factor * 2 ** (len(models.unet.config.channel_mult) - 1)


def _disparity(models, stages, video01, depth, depth_kind, blur_sigma, max_disparity,
               convergence, dissolve_step, depth_steps, key):
    """(pixel disparity [T, H, W], normalised depth [T, H, W]) for the left video."""
    if depth is not None:
        return stages.run("depth", D.user_depth_to_disparity, depth, depth_kind, blur_sigma,
                          max_disparity, convergence)
    dm = models.depth
    plan, dplan = D.depth_plans(depth_steps)
    rel = stages.run(
        "depth", D.video_depth,
        {"unet": dm.unet.params, "vae": dm.vae.params, "vision": dm.image_encoder.params},
        jnp.asarray(video01)[None] * 2.0 - 1.0, key, plan, dplan, unet_cfg=dm.unet.config,
        vae_cfg=dm.vae.config, vision_cfg=dm.image_encoder.config, dtype=models.dtype,
        dissolve_step=dissolve_step, guidance_scale=D.DEPTH_GUIDANCE,
        total=D.depth_evaluations(depth_steps, dissolve_step))
    return D.model_depth_to_disparity(rel, max_disparity, convergence)


def _check_depth_source(models, depth, depth_kind):
    if depth is None and models.depth is None:
        raise ValueError("depth: the models have no depth network; pass a depth map [T, H, W]")
    if depth_kind not in ("depth", "disparity"):
        raise ValueError(f"depth_kind: expected 'depth' or 'disparity', got {depth_kind!r}")


def _finish(models, stages, params_vae, latents, disparity_px, norm_depth):
    c = models.config
    both = jnp.concatenate([latents.left, latents.right], axis=0)
    video = np.asarray(stages.run("decode", _decode, params_vae, both, vae_cfg=models.vae.config,
                                  dtype=models.dtype, scale=c.scale_factor))
    left, right = video[0], video[1]
    _, holes = forward_warp(jnp.asarray(left)[None], jnp.asarray(disparity_px)[None])
    return StereoVideo(left, right, disparity_px, np.asarray(holes[0]), norm_depth,
                       dict(stages.timings))


def image_to_stereo_video(models: VideoModels, image, prompt: str, *,
                          num_frames: Optional[int] = None, steps: int = STEPS,
                          guidance: Optional[float] = None, guidance_rescale: float = GUIDANCE_RESCALE,
                          eta: float = ETA, fs: Optional[int] = None, seed: int = 0,
                          depth=None, depth_kind: str = "depth", blur_sigma: float = 4.0,
                          stereo: StereoCrafterZeroConfig = StereoCrafterZeroConfig(),
                          max_disparity: Optional[float] = None,
                          convergence: Optional[float] = None,
                          dissolve_step: int = D.DISSOLVE_STEP, depth_steps: int = D.DEPTH_STEPS,
                          callback: Callback = None) -> StereoVideo:
    """StereoCrafter-Zero: an image [H, W, 3] in [0, 1] and a prompt -> a stereo video.

    num_frames: the model's clip length (the Resampler's video_length; 16 for DynamiCrafter).
    fs: frame-stride condition (default: the UNet config's, 24 at 512). depth: optional
    [T, H, W] map of kind ``depth_kind`` ("depth": larger is farther; "disparity": larger is
    nearer), blurred by ``blur_sigma`` px (0 = off); without it the bundle's depth model
    runs on the left video (``depth_steps`` Euler steps, then dissolved at
    ``dissolve_step``, 0 = off). max_disparity: near-to-far span as a fraction of the width
    (default: the checkpoint config's, 0.08 = StereoCrafter-Zero's scale 8);
    convergence: None = far plane at zero disparity. guidance: CFG scale (default: the
    checkpoint config's, 7.5 for DynamiCrafter). callback(stage, done, total): progress.
    """
    _check_models(models)
    check_prompt(prompt)
    img = check_frames(image, "image", 3)
    h, w = img.shape[:2]
    check_size(h, w, _multiple(models), "image")
    t = models.num_frames if num_frames is None else check_positive_int(num_frames, "num_frames")
    if t != models.num_frames:
        raise ValueError(f"num_frames: the model generates {models.num_frames} frames (its "
                         f"Resampler's video_length), got {t}")
    fs = models.unet.config.default_fs if fs is None else fs
    guidance = models.config.guidance if guidance is None else guidance
    max_disparity = models.config.max_disparity if max_disparity is None else max_disparity
    _check_depth_source(models, depth, depth_kind)
    events = _check_common(models, steps, eta, guidance, fs, max_disparity, convergence,
                           dissolve_step, stereo, steps)
    if depth is not None:
        depth = check_depth(depth, (t, h, w))

    stages = Stages(callback)
    c = models.config
    k_vae, k_xt, k_sample, k_depth = jax.random.split(jax.random.PRNGKey(seed), 4)
    tokens = jnp.asarray(models.tokenizer([prompt, ""]))
    cond, uncond = stages.run(
        "conditioning", dynamicrafter_conditioning,
        {"text": models.text_encoder.params, "vision": models.image_encoder.params,
         "resampler": models.resampler.params, "vae": models.vae.params},
        tokens, jnp.asarray(img)[None] * 2.0 - 1.0, k_vae, config=c,
        text_cfg=models.text_encoder.config, vision_cfg=models.image_encoder.config,
        vae_cfg=models.vae.config, dtype=models.dtype, num_frames=t)
    plan = _plan(models, steps, eta, guidance, guidance_rescale)
    lh, lw = h // models.vae_factor, w // models.vae_factor
    x_T = jax.random.normal(k_xt, (1, t, lh, lw, models.unet.config.out_channels))
    # The stereo sampler draws its step noise as normal(split(key, 3)[0], [S, *x_T.shape]);
    # the left pass uses the same, so the depth is estimated on the final left video.
    noise = jax.random.normal(jax.random.split(k_sample, 3)[0], (steps,) + x_T.shape)
    pred = prediction_type(c)
    z_left = stages.run("left", _left_sample, models.unet.params, cond, uncond, x_T, plan,
                        noise, jnp.int32(fs), pred=pred, total=steps, **_statics(models))
    left01 = stages.run("decode_left", _decode, models.vae.params, z_left,
                        vae_cfg=models.vae.config, dtype=models.dtype, scale=c.scale_factor)
    disparity_px, norm = _disparity(models, stages, np.asarray(left01[0]), depth, depth_kind,
                                    blur_sigma, max_disparity, convergence, dissolve_step,
                                    depth_steps, k_depth)
    d_lat = D.latent_disparity(disparity_px, (lh, lw))
    out = stages.run("stereo", _stereo_sample, models.unet.params, cond, uncond,
                     _right_context(cond, d_lat, stereo), x_T, d_lat,
                     plan, k_sample, events, jnp.int32(fs), pred=pred,
                     total=int(events.step.shape[0]), **_statics(models))
    return _finish(models, stages, models.vae.params, out, disparity_px, norm)


def video_to_stereo_video(models: VideoModels, video, prompt: str, *, steps: int = STEPS,
                          guidance: float = 1.0, start_step: int = 1, fs: Optional[int] = None,
                          seed: int = 0, depth=None, depth_kind: str = "depth",
                          blur_sigma: float = 4.0,
                          stereo: StereoCrafterZeroConfig = StereoCrafterZeroConfig(),
                          max_disparity: Optional[float] = None,
                          convergence: Optional[float] = None,
                          dissolve_step: int = D.DISSOLVE_STEP, depth_steps: int = D.DEPTH_STEPS,
                          callback: Callback = None) -> StereoVideo:
    """Convert footage [T, H, W, 3] in [0, 1] (T = the model's clip length) to stereo.

    The video's latents are DDIM-inverted with the conditional model (the prompt, the first
    frame as the image condition) and the stereo sampler runs deterministically (eta 0) from
    the inverted latent, so the left output reconstructs the input. guidance 1 (default) keeps
    inversion and sampling consistent; larger values drift (see null-text inversion).
    start_step: plan steps skipped at the noisy end (1 skips t = 999, where the zero-terminal
    -SNR schedule leaves no signal to invert); the stereo config's steps count from there.
    Dynamic rescale is off (it is not invertible). Other arguments as image_to_stereo_video.
    """
    _check_models(models)
    check_prompt(prompt)
    vid = check_frames(video, "video", 4)
    t, h, w = vid.shape[:3]
    check_size(h, w, _multiple(models), "video")
    if t != models.num_frames:
        raise ValueError(f"video: the model takes clips of {models.num_frames} frames (its "
                         f"Resampler's video_length), got {t}")
    steps = check_positive_int(steps, "steps", 2)
    if not isinstance(start_step, (int, np.integer)) or not 0 <= start_step < steps - 1:
        raise ValueError(f"start_step: expected an int in [0, {steps - 1}), got {start_step!r}")
    fs = models.unet.config.default_fs if fs is None else fs
    max_disparity = models.config.max_disparity if max_disparity is None else max_disparity
    _check_depth_source(models, depth, depth_kind)
    events = _check_common(models, steps, 0.0, guidance, fs, max_disparity, convergence,
                           dissolve_step, stereo, steps - start_step)
    if depth is not None:
        depth = check_depth(depth, (t, h, w))

    stages = Stages(callback)
    c = models.config
    k_sample, k_depth = jax.random.split(jax.random.PRNGKey(seed))
    video_m11 = jnp.asarray(vid)[None] * 2.0 - 1.0
    z0 = stages.run("encode", _encode, models.vae.params, video_m11, vae_cfg=models.vae.config,
                    dtype=models.dtype, scale=c.scale_factor)
    tokens = jnp.asarray(models.tokenizer([prompt, ""]))
    cond, uncond = stages.run(
        "conditioning", _video_conditioning,
        {"text": models.text_encoder.params, "vision": models.image_encoder.params,
         "resampler": models.resampler.params}, tokens, video_m11[:, 0], z0, config=c,
        text_cfg=models.text_encoder.config, vision_cfg=models.image_encoder.config,
        dtype=models.dtype, num_frames=t)
    plan = plan_slice(_plan(models, steps, 0.0, guidance, 0.0, dynamic_rescale=False),
                      start_step, steps)
    pred = prediction_type(c)
    x_T = stages.run("invert", _invert, models.unet.params, cond, z0, plan, jnp.int32(fs),
                     pred=pred, total=plan.num_steps, **_statics(models))
    disparity_px, norm = _disparity(models, stages, vid, depth, depth_kind, blur_sigma,
                                    max_disparity, convergence, dissolve_step, depth_steps,
                                    k_depth)
    d_lat = D.latent_disparity(disparity_px, z0.shape[2:4])
    out = stages.run("stereo", _stereo_sample, models.unet.params, cond, uncond,
                     _right_context(cond, d_lat, stereo), x_T, d_lat,
                     plan, k_sample, events, jnp.int32(fs), pred=pred,
                     total=int(events.step.shape[0]), **_statics(models))
    return _finish(models, stages, models.vae.params, out, disparity_px, norm)
