"""Stereo image pipelines on an ``SDModels`` bundle: StereoDiffusion's three scenarios.

* ``text_to_stereo_image``: SD samples the left image; its depth (a user map, or a
  ``depth_fn`` run on the left image, as the released code runs DPT) gives the disparity;
  the StereoDiffusion sampler re-runs the same trajectory with the pixel shift, SPSMD and
  attention sharing for the right view.
* ``image_to_stereo_image``: null-text inversion of a photo (empty prompt, guidance 7.5),
  then the StereoDiffusion sampler from the inverted latent with the per-step embeddings.
  ``right="composite"`` (default) returns the photo itself as the left view and the
  composite right view (``pipelines.composite``: the photo warped by the pixel disparity
  where visible, the method's right view in the holes); ``right="latent"`` the method's own
  pair (the null-text reconstruction and its right view), as the released code writes.
* ``depth_to_stereo_image``: SD 2 depth (UNet input = 4 latent channels + the depth map at
  latent size in [-1, 1], diffusers ``StableDiffusionDepth2ImgPipeline``) generates from
  noise; the same depth drives the shift. Both views see the left depth map.

The pipelines are built from this module's jitted stages, public so that callers can share
the costly ones (the benchmark inverts each image once for all its rows): ``check_job`` (the
validated configs and statics), ``sd_plan``, ``sd_texts``, ``sd_encode``, ``sd_decode``; the
inversion and sampler stages ``_sd_null_text`` / ``_sd_stereo`` take their jit statics as
keywords (the benchmark calls them too).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from szero_jax.diffusion import (GuidanceScales, cfg_denoiser, ddim_sample, make_ddim_plan,
                                 stable_diffusion_schedule)
from szero_jax.geometry import (disparity_from_depth, forward_warp, minmax_signed,
                                resize_disparity)
from szero_jax.models.unet2d import UNet2DCondition
from szero_jax.pipelines.bundles import SDModels
from szero_jax.pipelines.common import (Callback, StageTimer, check_config, check_depth,
                                        check_frames, check_positive_int, check_prompt,
                                        check_size, tick)
from szero_jax.pipelines.composite import CompositeConfig, composite_right
from szero_jax.pipelines.config import DepthConfig, SamplingConfig
from szero_jax.pipelines.conditioning import decode_latents, encode_latents, text_embedding
from szero_jax.pipelines.footage import RIGHT_MODES
from szero_jax.stereo import (StereoDiffusionConfig, build_stereodiffusion_events,
                              null_text_inversion, stereo_cfg_denoiser, stereodiffusion_run)

# SamplingConfig.guidance None means the mode's scale:
GUIDANCE = {"text": 9.0,    # StereoDiffusion txt2stereoimg.py scale
            "image": 7.5,   # StereoDiffusion img2stereo.py null-text inversion GUIDANCE_SCALE
            "depth": 7.5}   # diffusers StableDiffusionDepth2ImgPipeline guidance_scale


class StereoImage(NamedTuple):
    left: np.ndarray        # [H, W, 3] float32 in [0, 1]
    right: np.ndarray       # [H, W, 3]
    disparity: np.ndarray   # [H, W] pixels at output size
    holes: np.ndarray       # [H, W] bool
    timings: dict           # seconds per stage
    settings: dict          # the resolved configs: {"sampling", "depth"}; image mode also
                            # "right" (the RIGHT_MODES value) and "composite" (its config)


def sd_plan(sampling: SamplingConfig):
    # SD scheduler_config.json: leading spacing, steps_offset 1, set_alpha_to_one false; eta 0
    # (StereoDiffusion samples deterministically).
    return make_ddim_plan(stable_diffusion_schedule(), sampling.steps, "leading", 0.0,
                          steps_offset=1, set_alpha_to_one=False,
                          guidance=GuidanceScales(sampling.guidance, sampling.guidance_rescale))


def _model_fn(unet_cfg, dtype, params, stage):
    """``model_fn(x, t, ctx, cross_view=None)``; ``ctx["depth"]`` (SD 2 depth) is concatenated
    on channels."""
    module = UNet2DCondition(unet_cfg, dtype)

    def model_fn(x, t, ctx, cross_view=None):
        tick(stage, t)
        inp = x if "depth" not in ctx else jnp.concatenate([x, ctx["depth"].astype(x.dtype)], -1)
        return module.apply({"params": params}, inp, t, ctx["text"],
                            cross_view=cross_view).astype(x.dtype)

    return model_fn


@functools.partial(jax.jit, static_argnames=("text_cfg", "dtype"))
def _text(params, tokens, *, text_cfg, dtype):
    # SD 1.x/2.x: CLIPTextModel last_hidden_state (final layer norm); SD 2's converted config
    # already drops the last block (penultimate of OpenCLIP).
    return text_embedding(text_cfg, dtype, params, tokens, layer="last")


@functools.partial(jax.jit, static_argnames=("unet_cfg", "dtype", "pred"))
def _left(params, cond, uncond, x_T, plan, *, unet_cfg, dtype, pred):
    fn = _model_fn(unet_cfg, dtype, params, "left")
    return ddim_sample(cfg_denoiser(fn, cond, uncond), x_T, plan, None, pred)[0]


@functools.partial(jax.jit, static_argnames=("unet_cfg", "dtype", "pred", "per_step"))
def _sd_stereo(params, cond, uncond, x_T, disparity, plan, key, events, *, unet_cfg, dtype,
              pred, per_step):
    fn = _model_fn(unet_cfg, dtype, params, "stereo")
    denoise = stereo_cfg_denoiser(fn, cond, uncond, per_step_uncond=per_step)
    return stereodiffusion_run(denoise, x_T, disparity, plan, key, events, pred)


@functools.partial(jax.jit, static_argnames=("unet_cfg", "dtype", "pred", "config"))
def _sd_null_text(params, z0, plan, cond, uncond, *, unet_cfg, dtype, pred, config):
    fn = _model_fn(unet_cfg, dtype, params, "inversion")
    return null_text_inversion(fn, z0, plan, cond, uncond, config, pred)


@functools.partial(jax.jit, static_argnames=("vae_cfg", "dtype"))
def sd_decode(params, z, *, vae_cfg, dtype):
    out = decode_latents(vae_cfg, dtype, params, z[:, None], vae_cfg.scaling_factor)[:, 0]
    return jnp.clip((out + 1.0) / 2.0, 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("vae_cfg", "dtype"))
def sd_encode(params, image, *, vae_cfg, dtype):
    return encode_latents(vae_cfg, dtype, params, image[:, None], vae_cfg.scaling_factor)[:, 0]


def _start_latent(models, key, shape, plan):
    """x_T: N(0, I) (SD), or with ``unet.config.latent_mean`` the forward marginal at the first
    step, N(sqrt(ab) mean, (1 - ab) I) (the signal leak, UNet2DConfig.latent_mean)."""
    x = jax.random.normal(key, shape)
    mean = models.unet.config.latent_mean
    if mean is None:
        return x
    a = plan.alpha_bar[0]
    return jnp.sqrt(a) * jnp.asarray(mean, x.dtype) + jnp.sqrt(1.0 - a) * x


class Job(NamedTuple):
    sampling: SamplingConfig   # resolved (the mode's guidance filled in)
    depth: DepthConfig
    events: object             # the StereoDiffusion schedule
    statics: dict              # static arguments of the jitted stages


def check_job(models, mode, sampling, depth, stereo, size, in_channels) -> Job:
    if not isinstance(models, SDModels):
        raise ValueError(f"models: expected an SDModels bundle, got {type(models).__name__}")
    check_config(sampling, SamplingConfig, "sampling")
    check_config(depth, DepthConfig, "depth")
    check_config(stereo, StereoDiffusionConfig, "stereo")
    if sampling.eta != 0.0 or sampling.start_step != 0:
        raise ValueError(f"sampling: StereoDiffusion samples deterministically from the first "
                         f"step; expected eta 0 and start_step 0, got eta {sampling.eta}, "
                         f"start_step {sampling.start_step} (use SamplingConfig.stereo_image())")
    if depth.max_disparity is None:
        raise ValueError("depth.max_disparity: expected a fraction of the width (StereoDiffusion "
                         "0.08, DepthConfig.stereo_image())")
    check_size(*size, models.vae_factor * 2 ** (len(models.unet.config.block_out_channels) - 1),
               "height/width")
    if models.unet.config.in_channels != in_channels:
        need = "an SD 2 depth UNet (5 input channels)" if in_channels == 5 else \
            f"a 4-channel SD UNet (use depth_to_stereo_image for a depth UNet)"
        raise ValueError(f"models: {mode}-to-stereo needs {need}, this one takes "
                         f"{models.unet.config.in_channels}")
    events = build_stereodiffusion_events(stereo, sampling.steps)
    guidance = GUIDANCE[mode] if sampling.guidance is None else sampling.guidance
    statics = dict(unet_cfg=models.unet.config, dtype=models.dtype,
                   pred=models.unet.config.prediction_type)
    return Job(dataclasses.replace(sampling, guidance=guidance), depth, events, statics)


def sd_texts(models, timer, prompt, negative_prompt):
    tokens = jnp.asarray(models.tokenizer([prompt, negative_prompt]))
    emb = timer.run("conditioning", _text, models.text_encoder.params, tokens,
                    text_cfg=models.text_encoder.config, dtype=models.dtype)
    return {"text": emb[:1]}, {"text": emb[1:]}


def _disparities(depth_map, depth: DepthConfig, latent_hw):
    """depth [H, W] -> (pixels [H, W], latent pixels [1, h, w])."""
    px = disparity_from_depth(jnp.asarray(depth_map)[None], depth.max_disparity, depth.kind)
    return np.asarray(px[0]), resize_disparity(px, latent_hw)


def sd_depth_condition(depth_map, kind: str, latent_hw) -> jax.Array:
    """SD 2 depth's extra UNet input from depth maps [B, H, W] -> [B, h, w, 1]: the inverse
    depth (``kind`` as ``disparity_from_depth``; near = 1) resized to latent size (bicubic)
    and min-max to [-1, 1] per map (diffusers ``StableDiffusionDepth2ImgPipeline``). The
    tiny SD depth model was trained on exactly this map of the world's disparities."""
    d = jnp.asarray(depth_map, jnp.float32)
    near = disparity_from_depth(d, 1.0, kind)  # scale-free after the min-max below
    small = jax.image.resize(near, (d.shape[0],) + tuple(latent_hw), "bicubic")
    return minmax_signed(small, axes=(-2, -1))[..., None]


def _result(models, timer, out, disparity_px, job) -> StereoImage:
    both = jnp.concatenate([out.left, out.right], axis=0)
    img = np.asarray(timer.run("decode", sd_decode, models.vae.params, both,
                               vae_cfg=models.vae.config, dtype=models.dtype))
    _, holes = forward_warp(jnp.asarray(img[:1]), jnp.asarray(disparity_px)[None])
    return StereoImage(img[0], img[1], disparity_px, np.asarray(holes[0]), dict(timer.timings),
                       {"sampling": job.sampling, "depth": job.depth})


def text_to_stereo_image(models: SDModels, prompt: str, *, size: tuple = (512, 512),
                         sampling: SamplingConfig = SamplingConfig.stereo_image(),
                         depth: DepthConfig = DepthConfig.stereo_image(),
                         stereo: StereoDiffusionConfig = StereoDiffusionConfig(),
                         depth_map=None, callback: Callback = None) -> StereoImage:
    """Prompt -> stereo pair [H, W, 3] of ``size`` (H, W). The depth of the left image is
    ``depth_map``: an array [H, W] known in advance, or a function of the left image
    ([H, W, 3] in [0, 1]) -> [H, W], as the released code runs DPT on it; its kind is
    ``depth.kind`` ("disparity": larger is nearer, as DPT/MiDaS return; "depth")."""
    check_prompt(prompt)
    check_prompt(sampling.negative_prompt, "negative_prompt", allow_empty=True)
    if not (isinstance(size, (tuple, list)) and len(size) == 2):
        raise ValueError(f"size: expected (height, width), got {size!r}")
    height, width = (check_positive_int(v, n) for v, n in zip(size, ("height", "width")))
    job = check_job(models, "text", sampling, depth, stereo, (height, width), 4)
    if depth_map is None:
        raise ValueError("depth_map: pass a depth map [H, W] or a function of the left image "
                         "-> [H, W]; the SD bundle has no depth estimator")
    if not callable(depth_map):
        depth_map = check_depth(depth_map, (height, width), "depth_map")
    timer = StageTimer(callback)
    cond, uncond = sd_texts(models, timer, prompt, sampling.negative_prompt)
    f = models.vae_factor
    k_x, k_s = jax.random.split(jax.random.PRNGKey(sampling.seed))
    plan = sd_plan(job.sampling)
    x_T = _start_latent(models, k_x, (1, height // f, width // f, models.unet.config.in_channels),
                        plan)
    if callable(depth_map):
        z = timer.run("left", _left, models.unet.params, cond, uncond, x_T, plan,
                      total=sampling.steps, **job.statics)
        left = np.asarray(timer.run("decode_left", sd_decode, models.vae.params, z,
                                    vae_cfg=models.vae.config, dtype=models.dtype))[0]
        depth_map = check_depth(depth_map(left), (height, width), "depth_map(left)")
    px, lat = _disparities(depth_map, depth, x_T.shape[1:3])
    out = timer.run("stereo", _sd_stereo, models.unet.params, cond, uncond, x_T, lat, plan, k_s,
                    job.events, per_step=False, total=sampling.steps, **job.statics)
    return _result(models, timer, out, px, job)


def image_to_stereo_image(models: SDModels, image, depth_map, *,
                          sampling: SamplingConfig = SamplingConfig.stereo_image(),
                          depth: DepthConfig = DepthConfig.stereo_image(),
                          stereo: StereoDiffusionConfig = StereoDiffusionConfig(),
                          right: str = "composite",
                          callback: Callback = None) -> StereoImage:
    """Photo [H, W, 3] in [0, 1] + its depth [H, W] -> stereo pair, by null-text inversion
    (``stereo.null_text``; released: empty prompt, 50 steps, guidance 7.5) and the
    StereoDiffusion sampler.

    ``right``: "composite" (default) = left is the photo, exactly; right is the photo warped
    by the pixel disparity where visible and the method's right view in the holes
    (``CompositeConfig()``: the blend). Why the default: someone converting their own photo
    expects to get that photo back as one eye, and the latent round trip (VAE + inversion)
    changes every pixel of it (the tiny SD's null-text reconstruction of held-out world
    frames: ~19.4 dB, MODEL_CARD.md); the footage converter
    defaults to the same (``FootageConfig.right``). "latent" = the method's own output: the
    null-text reconstruction as left and its StereoDiffusion right view (the paper's)."""
    if right not in RIGHT_MODES:
        raise ValueError(f"right: expected one of {RIGHT_MODES}, got {right!r}")
    composite = CompositeConfig()   # the footage converter's blend (pipelines.composite)
    img = check_frames(image, "image", 3)
    h, w = img.shape[:2]
    job = check_job(models, "image", sampling, depth, stereo, (h, w), 4)
    prompt = stereo.null_text.prompt   # check_job validated stereo (null_text included)
    check_prompt(prompt, "stereo.null_text.prompt", allow_empty=True)
    depth_map = check_depth(depth_map, (h, w), "depth_map")
    timer = StageTimer(callback)
    cond, uncond = sd_texts(models, timer, prompt, "")
    z0 = timer.run("encode", sd_encode, models.vae.params, jnp.asarray(img)[None] * 2.0 - 1.0,
                   vae_cfg=models.vae.config, dtype=models.dtype)
    plan = sd_plan(job.sampling)
    inv = timer.run("inversion", _sd_null_text, models.unet.params, z0, plan, cond, uncond,
                    config=stereo.null_text,
                    total=sampling.steps * (stereo.null_text.inner_steps + 3), **job.statics)
    px, lat = _disparities(depth_map, depth, z0.shape[1:3])
    out = timer.run("stereo", _sd_stereo, models.unet.params, cond, inv.uncond, inv.x_T, lat, plan,
                    jax.random.PRNGKey(sampling.seed), job.events, per_step=True,
                    total=sampling.steps, **job.statics)
    res = _result(models, timer, out, px, job)
    settings = dict(res.settings, right=right, composite=composite)
    if right == "latent":
        return res._replace(settings=settings)
    comp = timer.run("composite", composite_right, img, px, res.right, composite)
    return res._replace(left=img, right=np.asarray(comp.right), holes=np.asarray(comp.holes),
                        timings=dict(timer.timings), settings=settings)


def depth_to_stereo_image(models: SDModels, depth_map, prompt: str, *,
                          sampling: SamplingConfig = SamplingConfig.stereo_image(),
                          depth: DepthConfig = DepthConfig.stereo_image(),
                          stereo: StereoDiffusionConfig = StereoDiffusionConfig(),
                          callback: Callback = None) -> StereoImage:
    """Depth [H, W] + prompt -> stereo pair with SD 2 depth (5-channel UNet)."""
    check_prompt(prompt)
    check_prompt(sampling.negative_prompt, "negative_prompt", allow_empty=True)
    d = np.asarray(depth_map)
    if d.ndim != 2:
        raise ValueError(f"depth_map: expected [H, W], got shape {d.shape}")
    h, w = d.shape
    job = check_job(models, "depth", sampling, depth, stereo, (h, w), 5)
    depth_map = check_depth(d, (h, w), "depth_map")
    timer = StageTimer(callback)
    cond, uncond = sd_texts(models, timer, prompt, sampling.negative_prompt)
    f = models.vae_factor
    px, lat = _disparities(depth_map, depth, (h // f, w // f))
    cond_map = sd_depth_condition(depth_map[None], depth.kind, (h // f, w // f))
    cond, uncond = dict(cond, depth=cond_map), dict(uncond, depth=cond_map)
    k_x, k_s = jax.random.split(jax.random.PRNGKey(sampling.seed))
    plan = sd_plan(job.sampling)
    x_T = _start_latent(models, k_x, (1, h // f, w // f, 4), plan)
    out = timer.run("stereo", _sd_stereo, models.unet.params, cond, uncond, x_T, lat,
                    plan, k_s, job.events, per_step=False,
                    total=sampling.steps, **job.statics)
    return _result(models, timer, out, px, job)
