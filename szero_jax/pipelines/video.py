"""Stereo video pipelines on a ``VideoModels`` bundle (StereoCrafter-Zero), built from the
public stages in ``pipelines.stages``.

``image_to_stereo_video``: image + prompt -> the left video (DynamiCrafter DDIM with CFG),
depth on it (DepthCrafter-style + dissolve, or a given depth map), disparity at latent
resolution, the StereoCrafter-Zero sampler for both views, VAE decode of both.
``video_to_stereo_video``: existing footage -> DDIM inversion of its latents with the same
conditioning (first frame as the image), then the stereo sampler from the inverted latent.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from szero_jax.geometry import forward_warp
from szero_jax.pipelines import depth as D
from szero_jax.pipelines import stages as S
from szero_jax.pipelines.bundles import VideoModels
from szero_jax.pipelines.common import (Callback, StageTimer, check_config, check_depth,
                                        check_frames, check_prompt, check_size)
from szero_jax.pipelines.composite import composite_right
from szero_jax.pipelines.config import DepthConfig, SamplingConfig
from szero_jax.stereo import StereoCrafterZeroConfig, build_events, released_disparity


class StereoVideo(NamedTuple):
    left: np.ndarray        # [T, H, W, 3] float32 in [0, 1]
    right: np.ndarray       # [T, H, W, 3]
    disparity: np.ndarray   # [T, H, W] pixels at output size (x_right = x_left - d)
    holes: np.ndarray       # [T, H, W] bool: right-view pixels no left pixel warps onto
    depth: np.ndarray       # [T, H, W] normalised relative disparity used (near = 1)
    timings: dict           # seconds per stage
    settings: dict          # the resolved configs: {"sampling", "depth", "stereo"}


class _Job(NamedTuple):
    sampling: SamplingConfig   # resolved (guidance, fs filled in)
    depth: DepthConfig         # resolved (max_disparity filled in)
    events: object             # the stereo schedule (build_events)
    source: str                # "model" or "given"
    released_depth: bool       # the released run's dissolving and depth scaling


def _check_models(models: VideoModels, h: int, w: int, name: str):
    if not isinstance(models, VideoModels):
        raise ValueError(f"models: expected a VideoModels bundle, got {type(models).__name__}")
    check_size(h, w, _multiple(models), name)


def _check_job(models, sampling, depth, stereo, depth_map, shape) -> _Job:
    """Validates the configs and the depth source before any network runs."""
    check_config(sampling, SamplingConfig, "sampling")
    check_config(depth, DepthConfig, "depth")
    check_config(stereo, StereoCrafterZeroConfig, "stereo")
    source = depth.resolve_source(depth_map)
    if source == "model" and models.depth is None:
        raise ValueError("depth_map: the models have no depth network; pass a depth map "
                         "[T, H, W]")
    events = build_events(stereo, sampling.plan_steps)      # validates the stereo settings
    if stereo.dissolve_cfg != (stereo.depth_normalisation != "none"):
        raise ValueError("stereo: dissolve_cfg and depth_normalisation go together (the paper's "
                         "True / 'percentiles', or the released False / 'none')")
    if stereo.guidance_rescale is not None:                 # the released run turns it off
        sampling = dataclasses.replace(sampling, guidance_rescale=stereo.guidance_rescale)
    if depth.max_disparity is None:
        depth = depth.__class__(**{**vars(depth), "max_disparity": models.config.max_disparity})
    if depth_map is not None:
        check_depth(depth_map, shape, "depth_map")
    return _Job(S.resolve(models, sampling), depth, events, source, not stereo.dissolve_cfg)


def _multiple(models: VideoModels) -> int:
    return models.vae_factor * 2 ** (len(models.unet.config.channel_mult) - 1)


def _disparity(models, timer, video01, depth_map, job: _Job, key):
    """(pixel disparity [T, H, W], normalised depth [T, H, W]) for the left video."""
    d = job.depth
    if job.source == "given":
        return timer.run("depth", D.user_depth_to_disparity, check_depth(
            depth_map, video01.shape[:3], "depth_map"), d)
    released = job.released_depth
    rel = timer.run("depth", S.model_depth, models, jnp.asarray(video01)[None], key, d, released,
                    total=d.evaluations)
    if released:                          # the decoded depth as is (funcs_stereo.py)
        px = released_disparity(rel[0], d.max_disparity)
        return np.asarray(px), np.asarray(px / (d.max_disparity * px.shape[-1]))
    return D.model_depth_to_disparity(rel, d)


def _finish(models, timer, latents, disparity_px, norm_depth, job, stereo) -> StereoVideo:
    both = jnp.concatenate([latents.left, latents.right], axis=0)
    video = np.asarray(timer.run("decode", S.decode, models, both))
    left, right = video[0], video[1]
    _, holes = forward_warp(jnp.asarray(left)[None], jnp.asarray(disparity_px)[None])
    if stereo.right_view == "composite":     # the left warped, the latent view in the holes
        right = np.asarray(timer.run("composite", composite_right, left, disparity_px,
                                     right).right)
    settings = {"sampling": job.sampling, "depth": job.depth, "stereo": stereo}
    return StereoVideo(left, right, disparity_px, np.asarray(holes[0]), norm_depth,
                       dict(timer.timings), settings)


def image_to_stereo_video(models: VideoModels, image, prompt: str, *,
                          sampling: SamplingConfig = SamplingConfig(),
                          depth: DepthConfig = DepthConfig(),
                          stereo: StereoCrafterZeroConfig = StereoCrafterZeroConfig(),
                          depth_map=None, callback: Callback = None) -> StereoVideo:
    """StereoCrafter-Zero: an image [H, W, 3] in [0, 1] and a prompt -> a stereo video of the
    model's clip length (the Resampler's video_length; 16 for DynamiCrafter).

    depth_map: optional [T, H, W] map of kind ``depth.kind``, blurred by ``depth.blur_sigma``
    px; without it the bundle's depth model runs on the left video. None fields of the
    configs take the checkpoint's values (guidance, frame stride, max disparity).
    ``stereo.right_view="composite"``: the right view is the decoded left video forward-
    warped by the pixel disparity, with the decoded right view only in its (dilated,
    feathered) holes (``pipelines.composite``).
    callback(stage, done, total): progress.
    """
    check_prompt(prompt)
    img = check_frames(image, "image", 3)
    h, w = img.shape[:2]
    _check_models(models, h, w, "image")
    job = _check_job(models, sampling, depth, stereo, depth_map, (models.num_frames, h, w))
    s = job.sampling
    timer = StageTimer(callback)
    keys = S.job_keys(s.seed)
    latent = timer.run("conditioning", S.image_latent, models, jnp.asarray(img)[None], keys.vae)
    ctx = timer.run("conditioning", S.context, models, prompt, jnp.asarray(img)[None], latent, s)
    plan = S.video_plan(models, s)
    t, lh, lw = models.num_frames, h // models.vae_factor, w // models.vae_factor
    x_T = jax.random.normal(keys.x_T, (1, t, lh, lw, models.unet.config.out_channels))
    noise = S.step_noise(keys.sample, x_T.shape, s.steps)
    z_left = timer.run("left", S.left_sample, models, ctx, x_T, plan, noise, total=s.steps)
    left01 = timer.run("decode_left", S.decode, models, z_left)
    disparity_px, norm = _disparity(models, timer, np.asarray(left01[0]), depth_map, job,
                                    keys.depth)
    d_lat = D.latent_disparity(disparity_px, (lh, lw))
    out = timer.run("stereo", S.stereo_sample, models, S.with_right_condition(ctx, d_lat, stereo),
                    x_T, d_lat, plan, keys.sample, job.events,
                    total=int(job.events.step.shape[0]))
    return _finish(models, timer, out, disparity_px, norm, job, stereo)


def video_to_stereo_video(models: VideoModels, video, prompt: str, *,
                          sampling: SamplingConfig = SamplingConfig.inversion(),
                          depth: DepthConfig = DepthConfig(),
                          stereo: StereoCrafterZeroConfig = StereoCrafterZeroConfig(),
                          depth_map=None, callback: Callback = None) -> StereoVideo:
    """Convert footage [T, H, W, 3] in [0, 1] (T = the model's clip length) to stereo.

    The video's latents are DDIM-inverted with the conditional model (the prompt, the first
    frame as the image condition) and the stereo sampler runs from the inverted latent with
    the same plan, so the left output reconstructs the input. The default
    ``SamplingConfig.inversion()`` (eta 0, guidance 1, start_step 1) keeps inversion and
    sampling consistent; larger guidance drifts (see null-text inversion). Dynamic rescale
    is off (it is not invertible). Other arguments as ``image_to_stereo_video``.
    """
    check_prompt(prompt)
    vid = check_frames(video, "video", 4)
    t, h, w = vid.shape[:3]
    _check_models(models, h, w, "video")
    if t != models.num_frames:
        raise ValueError(f"video: the model takes clips of {models.num_frames} frames (its "
                         f"Resampler's video_length), got {t}")
    job = _check_job(models, sampling, depth, stereo, depth_map, (t, h, w))
    s = job.sampling
    timer = StageTimer(callback)
    keys = S.job_keys(s.seed)
    z0 = timer.run("encode", S.encode, models, jnp.asarray(vid)[None])
    ctx = timer.run("conditioning", S.context, models, prompt, jnp.asarray(vid)[None, 0],
                    z0[:, :1], s)
    plan = S.video_plan(models, s, invertible=True)
    x_T = timer.run("invert", S.invert, models, ctx, z0, plan, total=plan.num_steps)
    disparity_px, norm = _disparity(models, timer, vid, depth_map, job, keys.depth)
    d_lat = D.latent_disparity(disparity_px, z0.shape[2:4])
    # Guidance 1 without rescale is exactly the conditional output: skip the other half.
    cond_only = s.guidance == 1.0 and s.guidance_rescale == 0.0
    out = timer.run("stereo", S.stereo_sample, models, S.with_right_condition(ctx, d_lat, stereo),
                    x_T, d_lat, plan, keys.sample, job.events, cond_only,
                    total=int(job.events.step.shape[0]))
    return _finish(models, timer, out, disparity_px, norm, job, stereo)
