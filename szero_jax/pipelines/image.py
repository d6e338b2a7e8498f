"""Stereo image pipelines on an ``SDModels`` bundle: StereoDiffusion's three scenarios.

* ``text_to_stereo_image``: SD samples the left image; its depth (a user map, or a
  ``depth_fn`` run on the left image, as the released code runs DPT) gives the disparity;
  the StereoDiffusion sampler re-runs the same trajectory with the pixel shift, SPSMD and
  attention sharing for the right view.
* ``image_to_stereo_image``: null-text inversion of a photo (empty prompt, guidance 7.5),
  then the StereoDiffusion sampler from the inverted latent with the per-step embeddings.
* ``depth_to_stereo_image``: SD 2 depth (UNet input = 4 latent channels + the depth map at
  latent size in [-1, 1], diffusers ``StableDiffusionDepth2ImgPipeline``) generates from
  noise; the same depth drives the shift. Both views see the left depth map.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from szero_jax.diffusion import (cfg_denoiser, ddim_sample, make_ddim_plan,
                                 stable_diffusion_schedule)
from szero_jax.geometry import disparity_from_depth, forward_warp, resize_disparity
from szero_jax.models.unet2d import UNet2DCondition
from szero_jax.pipelines.bundles import SDModels
from szero_jax.pipelines.common import (Callback, Stages, check_depth, check_frames,
                                        check_positive_int, check_prompt, check_range,
                                        check_size, tick)
from szero_jax.pipelines.conditioning import decode_latents, encode_latents, text_embedding
from szero_jax.stereo import (NullTextConfig, StereoDiffusionConfig,
                              build_stereodiffusion_events, null_text_inversion,
                              stereo_cfg_denoiser, stereodiffusion_run)

STEPS = 50                  # StereoDiffusion txt2stereoimg.py / img2stereo.py ddim_steps
TEXT_GUIDANCE = 9.0         # StereoDiffusion txt2stereoimg.py scale (REFERENCES.md)
IMAGE_GUIDANCE = 7.5        # StereoDiffusion img2stereo.py null-text inversion GUIDANCE_SCALE
MAX_DISPARITY = 0.08        # StereoDiffusion: shift 8 % of the latent width (REFERENCES.md)


class StereoImage(NamedTuple):
    left: np.ndarray        # [H, W, 3] float32 in [0, 1]
    right: np.ndarray       # [H, W, 3]
    disparity: np.ndarray   # [H, W] pixels at output size
    holes: np.ndarray       # [H, W] bool
    timings: dict


def _plan(steps, guidance):
    # SD scheduler_config.json: leading spacing, steps_offset 1, set_alpha_to_one false; eta 0
    # (StereoDiffusion samples deterministically).
    return make_ddim_plan(stable_diffusion_schedule(), steps, "leading", 0.0, steps_offset=1,
                          set_alpha_to_one=False, guidance_scale=guidance)


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
def _stereo(params, cond, uncond, x_T, disparity, plan, key, events, *, unet_cfg, dtype, pred,
            per_step):
    fn = _model_fn(unet_cfg, dtype, params, "stereo")
    denoise = stereo_cfg_denoiser(fn, cond, uncond, per_step_uncond=per_step)
    return stereodiffusion_run(denoise, x_T, disparity, plan, key, events, pred)


@functools.partial(jax.jit, static_argnames=("unet_cfg", "dtype", "pred", "config"))
def _null_text(params, z0, plan, cond, uncond, *, unet_cfg, dtype, pred, config):
    fn = _model_fn(unet_cfg, dtype, params, "inversion")
    return null_text_inversion(fn, z0, plan, cond, uncond, config, pred)


@functools.partial(jax.jit, static_argnames=("vae_cfg", "dtype"))
def _decode(params, z, *, vae_cfg, dtype):
    out = decode_latents(vae_cfg, dtype, params, z[:, None], vae_cfg.scaling_factor)[:, 0]
    return jnp.clip((out + 1.0) / 2.0, 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("vae_cfg", "dtype"))
def _encode(params, image, *, vae_cfg, dtype):
    return encode_latents(vae_cfg, dtype, params, image[:, None], vae_cfg.scaling_factor)[:, 0]


def _check_models(models):
    if not isinstance(models, SDModels):
        raise ValueError(f"models: expected an SDModels bundle, got {type(models).__name__}")


def _check(models, steps, guidance, max_disparity, stereo, depth_kind, h, w):
    check_positive_int(steps, "steps")
    check_range(guidance, "guidance", 0.0, 100.0)
    check_range(max_disparity, "max_disparity", 1e-6, 1.0)
    if depth_kind not in ("depth", "disparity"):
        raise ValueError(f"depth_kind: expected 'depth' or 'disparity', got {depth_kind!r}")
    if not isinstance(stereo, StereoDiffusionConfig):
        raise ValueError(f"stereo: expected a StereoDiffusionConfig, got {type(stereo).__name__}")
    check_size(h, w, models.vae_factor * 2 ** (len(models.unet.config.block_out_channels) - 1),
               "height/width")
    return build_stereodiffusion_events(stereo, steps)


def _texts(models, stages, prompt, negative_prompt):
    tokens = jnp.asarray(models.tokenizer([prompt, negative_prompt]))
    emb = stages.run("conditioning", _text, models.text_encoder.params, tokens,
                     text_cfg=models.text_encoder.config, dtype=models.dtype)
    return {"text": emb[:1]}, {"text": emb[1:]}


def _disparities(depth, kind, max_disparity, latent_hw):
    """depth [H, W] -> (pixels [H, W], latent pixels [1, h, w], normalised near=1 [H, W])."""
    d = jnp.asarray(depth)[None]
    px = disparity_from_depth(d, max_disparity, kind)
    norm = disparity_from_depth(d, 1.0, kind) / d.shape[-1]
    return np.asarray(px[0]), resize_disparity(px, latent_hw), norm


def _result(models, stages, out, disparity_px):
    both = jnp.concatenate([out.left, out.right], axis=0)
    img = np.asarray(stages.run("decode", _decode, models.vae.params, both,
                                vae_cfg=models.vae.config, dtype=models.dtype))
    _, holes = forward_warp(jnp.asarray(img[:1]), jnp.asarray(disparity_px)[None])
    return StereoImage(img[0], img[1], disparity_px, np.asarray(holes[0]), dict(stages.timings))


def text_to_stereo_image(models: SDModels, prompt: str, *, height: int = 512, width: int = 512,
                         depth=None, depth_fn: Optional[Callable] = None,
                         depth_kind: str = "disparity", negative_prompt: str = "",
                         steps: int = STEPS, guidance: float = TEXT_GUIDANCE, seed: int = 0,
                         stereo: StereoDiffusionConfig = StereoDiffusionConfig(),
                         max_disparity: float = MAX_DISPARITY,
                         callback: Callback = None) -> StereoImage:
    """Prompt -> stereo pair [H, W, 3]. The depth of the left image comes from ``depth``
    ([H, W], known in advance) or ``depth_fn(left [H, W, 3] in [0, 1]) -> [H, W]``; its kind
    is ``depth_kind`` ("disparity": larger is nearer, as DPT/MiDaS return; "depth")."""
    _check_models(models)
    check_prompt(prompt)
    check_prompt(negative_prompt, "negative_prompt", allow_empty=True)
    height = check_positive_int(height, "height")
    width = check_positive_int(width, "width")
    events = _check(models, steps, guidance, max_disparity, stereo, depth_kind, height, width)
    if depth is None and depth_fn is None:
        raise ValueError("depth: pass a depth map [H, W] or depth_fn(left image) -> [H, W]; "
                         "the SD bundle has no depth estimator")
    if depth is not None:
        depth = check_depth(depth, (height, width))
    if models.unet.config.in_channels != 4:
        raise ValueError(f"models: text-to-stereo needs a 4-channel SD UNet, this one takes "
                         f"{models.unet.config.in_channels} (use depth_to_stereo_image)")
    stages = Stages(callback)
    cond, uncond = _texts(models, stages, prompt, negative_prompt)
    f = models.vae_factor
    k_x, k_s = jax.random.split(jax.random.PRNGKey(seed))
    x_T = jax.random.normal(k_x, (1, height // f, width // f, models.unet.config.in_channels))
    plan = _plan(steps, guidance)
    pred = models.unet.config.prediction_type
    statics = dict(unet_cfg=models.unet.config, dtype=models.dtype, pred=pred)
    if depth is None:
        z = stages.run("left", _left, models.unet.params, cond, uncond, x_T, plan, total=steps,
                       **statics)
        left = np.asarray(stages.run("decode_left", _decode, models.vae.params, z,
                                     vae_cfg=models.vae.config, dtype=models.dtype))[0]
        depth = check_depth(depth_fn(left), (height, width), "depth_fn(left)")
    px, lat, _ = _disparities(depth, depth_kind, max_disparity, x_T.shape[1:3])
    out = stages.run("stereo", _stereo, models.unet.params, cond, uncond, x_T, lat, plan, k_s,
                     events, per_step=False, total=steps, **statics)
    return _result(models, stages, out, px)


def image_to_stereo_image(models: SDModels, image, depth, *, prompt: str = "",
                          depth_kind: str = "disparity", steps: int = STEPS,
                          guidance: float = IMAGE_GUIDANCE,
                          null_text: NullTextConfig = NullTextConfig(), seed: int = 0,
                          stereo: StereoDiffusionConfig = StereoDiffusionConfig(),
                          max_disparity: float = MAX_DISPARITY,
                          callback: Callback = None) -> StereoImage:
    """Photo [H, W, 3] in [0, 1] + its depth [H, W] -> stereo pair, by null-text inversion
    (released: empty prompt, 50 steps, guidance 7.5) and the StereoDiffusion sampler."""
    _check_models(models)
    check_prompt(prompt, allow_empty=True)
    img = check_frames(image, "image", 3)
    h, w = img.shape[:2]
    events = _check(models, steps, guidance, max_disparity, stereo, depth_kind, h, w)
    depth = check_depth(depth, (h, w))
    if not isinstance(null_text, NullTextConfig):
        raise ValueError(f"null_text: expected a NullTextConfig, got {type(null_text).__name__}")
    null_text.validate()
    if models.unet.config.in_channels != 4:
        raise ValueError("models: image-to-stereo needs a 4-channel SD UNet")
    stages = Stages(callback)
    cond, uncond = _texts(models, stages, prompt, "")
    z0 = stages.run("encode", _encode, models.vae.params, jnp.asarray(img)[None] * 2.0 - 1.0,
                    vae_cfg=models.vae.config, dtype=models.dtype)
    plan = _plan(steps, guidance)
    pred = models.unet.config.prediction_type
    statics = dict(unet_cfg=models.unet.config, dtype=models.dtype, pred=pred)
    inv = stages.run("inversion", _null_text, models.unet.params, z0, plan, cond, uncond,
                     config=null_text, total=steps * (null_text.inner_steps + 3), **statics)
    px, lat, _ = _disparities(depth, depth_kind, max_disparity, z0.shape[1:3])
    out = stages.run("stereo", _stereo, models.unet.params, cond, inv.uncond, inv.x_T, lat, plan,
                     jax.random.PRNGKey(seed), events, per_step=True, total=steps, **statics)
    return _result(models, stages, out, px)


def depth_to_stereo_image(models: SDModels, depth, prompt: str, *, depth_kind: str = "disparity",
                          negative_prompt: str = "", steps: int = STEPS,
                          guidance: float = IMAGE_GUIDANCE, seed: int = 0,
                          stereo: StereoDiffusionConfig = StereoDiffusionConfig(),
                          max_disparity: float = MAX_DISPARITY,
                          callback: Callback = None) -> StereoImage:
    """Depth [H, W] + prompt -> stereo pair with SD 2 depth (5-channel UNet). guidance 7.5:
    the depth2img pipeline's default."""
    _check_models(models)
    check_prompt(prompt)
    check_prompt(negative_prompt, "negative_prompt", allow_empty=True)
    d = np.asarray(depth)
    if d.ndim != 2:
        raise ValueError(f"depth: expected [H, W], got shape {d.shape}")
    h, w = d.shape
    events = _check(models, steps, guidance, max_disparity, stereo, depth_kind, h, w)
    depth = check_depth(d, (h, w))
    if models.unet.config.in_channels != 5:
        raise ValueError(f"models: depth-to-stereo needs an SD 2 depth UNet (5 input channels), "
                         f"this one takes {models.unet.config.in_channels}")
    stages = Stages(callback)
    cond, uncond = _texts(models, stages, prompt, negative_prompt)
    f = models.vae_factor
    px, lat, norm = _disparities(depth, depth_kind, max_disparity, (h // f, w // f))
    # depth2img: the (inverse) depth map resized to latent size, min-max to [-1, 1].
    cond_map = jax.image.resize(norm, (1, h // f, w // f), "bicubic")
    lo, hi = cond_map.min(), cond_map.max()
    cond_map = (2.0 * (cond_map - lo) / jnp.maximum(hi - lo, 1e-6) - 1.0)[..., None]
    cond, uncond = dict(cond, depth=cond_map), dict(uncond, depth=cond_map)
    k_x, k_s = jax.random.split(jax.random.PRNGKey(seed))
    x_T = jax.random.normal(k_x, (1, h // f, w // f, 4))
    out = stages.run("stereo", _stereo, models.unet.params, cond, uncond, x_T, lat,
                     _plan(steps, guidance), k_s, events, per_step=False, total=steps,
                     unet_cfg=models.unet.config, dtype=models.dtype,
                     pred=models.unet.config.prediction_type)
    return _result(models, stages, out, px)
