"""The public stages of a stereo video job on a ``VideoModels`` bundle.

Each stage is one jitted program (params are arguments, configs static) behind a function
that takes the bundle; the pipelines (``pipelines.video``), the footage conversion, the
benchmark and ``eval_tiny`` are built from these (``train_tiny`` trains the conditioning, so
it uses the same ``pipelines.conditioning`` functions that ``context`` is made of), so each
step is written once:

    keys = job_keys(seed)                                    # one derivation of keys
    z0 = encode(models, video01)                             # [1, T, h, w, c] x scale
    ctx = context(models, prompt, first_frame01, latent, sampling)  # DynamiCrafter's
    z = left_sample(models, ctx, x_T, plan, step_noise(keys.sample, x_T.shape, S))
    x_T = invert(models, ctx, z0, plan)                      # DDIM inversion (conversion)
    rel = model_depth(models, video01, keys.depth, depth_cfg)    # DepthCrafter + dissolve
    ctx = with_right_condition(ctx, d_latent, stereo_cfg)   # the right view's image latent
    out = stereo_sample(models, ctx, x_T, d_latent, plan, keys.sample, events)
    video01 = decode(models, z)                              # [B, T, H, W, 3] in [0, 1]

Shapes are channels last; videos in [0, 1] at the edges of the stages (the [-1, 1] range
the networks take is internal). See DESIGN.md "Stages".
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from szero_jax.diffusion import cfg_denoiser, ddim_invert, ddim_sample, make_ddim_plan
from szero_jax.diffusion import DynamicRescale, GuidanceScales, plan_slice
from szero_jax.diffusion.euler import euler_sample, make_euler_plan
from szero_jax.diffusion.guidance import guidance
from szero_jax.diffusion.schedules import NoiseSchedule
from szero_jax.geometry import background_fill, forward_warp, warped_disparity
from szero_jax.models.clip import CLIPVisionEncoder, preprocess_image
from szero_jax.pipelines.bundles import VideoModels
from szero_jax.pipelines.conditioning import (decode_latents, depth_model_fn, encode_latents,
                                              image_tokens, prediction_type, text_embedding,
                                              vae_module, video_model_fn)
from szero_jax.pipelines.config import DISSOLVE_PLAN_STEPS, DepthConfig, SamplingConfig
from szero_jax.models.vae import sample_latent
from szero_jax.stereo import (StereoCrafterZeroConfig, dissolve_depth, stereo_cfg_denoiser,
                              stereocrafter_zero_run)

SPACING = "uniform_trailing"  # DynamiCrafter scripts/run.sh timestep_spacing


class Keys(NamedTuple):
    """The random keys of one job, all from its seed."""
    vae: jax.Array      # posterior sample of the first frame's image latent
    x_T: jax.Array      # the initial noise
    sample: jax.Array   # the samplers' step noise (left pass and stereo pass share it)
    depth: jax.Array    # the depth model's noise


def job_keys(seed: int) -> Keys:
    return Keys(*jax.random.split(jax.random.PRNGKey(seed), 4))


def step_noise(key, shape, num_steps: int) -> jax.Array:
    """The per-step DDIM noise [S, *shape] the StereoCrafter-Zero sampler draws for the
    left view from ``key`` (``normal(split(key, 3)[0])``); the left-only pass uses the same,
    so the stereo pass's left view is the left pass's video."""
    return jax.random.normal(jax.random.split(key, 3)[0], (num_steps,) + tuple(shape))


class Context(NamedTuple):
    """DynamiCrafter's conditioning of one clip (a pytree, passed into the jitted stages)."""
    cond: dict      # {"text": [1, 77 + 16 T, D] prompt + image tokens, "concat": [1, T, h, w, c]}
    uncond: dict    # the same for "" and a zero image (CFG's unconditional half)
    right: dict     # entries replacing cond's / uncond's for the right view ({}: share)
    fs: jax.Array   # int32 frame-stride condition


# ----------------------------------------------------------------------------- plans
def schedule(models: VideoModels) -> NoiseSchedule:
    c = models.config
    return NoiseSchedule.create("lvdm_linear" if c.beta_schedule == "linear"
                                else c.beta_schedule, c.timesteps, c.linear_start,
                                c.linear_end, zero_terminal_snr=c.rescale_betas_zero_snr)


def resolve(models: VideoModels, sampling: SamplingConfig) -> SamplingConfig:
    """``sampling`` with the checkpoint's guidance and frame stride where it says None."""
    return sampling.__class__(**{**vars(sampling),
                                 "guidance": (models.config.guidance if sampling.guidance is None
                                              else sampling.guidance),
                                 "fs": (models.unet.config.default_fs if sampling.fs is None
                                        else sampling.fs)})


def video_plan(models: VideoModels, sampling: SamplingConfig, invertible: bool = False):
    """The DDIM plan of a resolved ``sampling``, cut at its ``start_step``. ``invertible``:
    dynamic rescale off (it cannot be inverted), as for footage conversion."""
    c = models.config
    rescale = (DynamicRescale(base_scale=c.base_scale)
               if c.use_dynamic_rescale and not invertible else None)
    plan = make_ddim_plan(schedule(models), sampling.steps, SPACING, sampling.eta,
                          guidance=GuidanceScales(sampling.guidance, sampling.guidance_rescale),
                          dynamic_rescale=rescale)
    return plan_slice(plan, sampling.start_step, sampling.steps) if sampling.start_step else plan


def _statics(models: VideoModels):
    return dict(unet_cfg=models.unet.config, dtype=models.dtype,
                pred=prediction_type(models.config))


def _vae_statics(models: VideoModels):
    return dict(vae_cfg=models.vae.config, dtype=models.dtype, scale=models.config.scale_factor)


# ----------------------------------------------------------------------------- VAE
def _signed(video01):
    # [0, 1] -> [-1, 1] outside the jitted stages, so their programs (and float rounding)
    # are the same whichever caller scaled.
    return jnp.asarray(video01) * 2.0 - 1.0


@functools.partial(jax.jit, static_argnames=("vae_cfg", "dtype", "scale"))
def _encode(params, video, *, vae_cfg, dtype, scale):
    return encode_latents(vae_cfg, dtype, params, video, scale)


@functools.partial(jax.jit, static_argnames=("vae_cfg", "dtype", "scale"))
def _decode(params, z, *, vae_cfg, dtype, scale):
    return jnp.clip((decode_latents(vae_cfg, dtype, params, z, scale) + 1.0) / 2.0, 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("vae_cfg", "dtype", "scale"))
def _image_latent(params, image01, key, *, vae_cfg, dtype, scale):
    mean, logvar = vae_module(vae_cfg, dtype).apply({"params": params}, image01 * 2.0 - 1.0,
                                                    method="encode")
    z = sample_latent(key, mean.astype(jnp.float32), logvar.astype(jnp.float32))
    return (z * scale)[:, None]


def encode(models: VideoModels, video01) -> jax.Array:
    """Video [B, T, H, W, 3] in [0, 1] -> latents [B, T, h, w, c] (posterior mean x scale)."""
    return _encode(models.vae.params, _signed(video01), **_vae_statics(models))


def decode(models: VideoModels, z) -> jax.Array:
    """Latents [B, T, h, w, c] -> video [B, T, H, W, 3] in [0, 1]."""
    return _decode(models.vae.params, z, **_vae_statics(models))


def image_latent(models: VideoModels, image01, key) -> jax.Array:
    """The image condition of image-to-video: a posterior sample of ``image01`` [1, H, W, 3]
    (``lvdm`` ``get_first_stage_encoding``), [1, 1, h, w, c] x scale."""
    return _image_latent(models.vae.params, jnp.asarray(image01), key, **_vae_statics(models))


# ----------------------------------------------------------------------------- context
@functools.partial(jax.jit, static_argnames=("config", "text_cfg", "vision_cfg", "dtype",
                                             "num_frames"))
def _context(params, tokens, image01, latent, fs, *, config, text_cfg, vision_cfg, dtype,
             num_frames):
    txt = text_embedding(text_cfg, dtype, params["text"], tokens)
    image = image01 * 2.0 - 1.0
    both = jnp.concatenate([image, jnp.zeros_like(image)], axis=0)
    img = image_tokens(vision_cfg, config.resampler, dtype, params["vision"],
                       params["resampler"], both).astype(jnp.float32)
    ctx = jnp.concatenate([txt, img], axis=1)
    concat = jnp.repeat(latent, num_frames, axis=1)
    return Context({"text": ctx[:1], "concat": concat}, {"text": ctx[1:], "concat": concat},
                   {}, fs)


def context(models: VideoModels, prompt: str, image01, latent, sampling: SamplingConfig
            ) -> Context:
    """DynamiCrafter's conditioning (``scripts/evaluation/inference.py``
    ``image_guided_synthesis``): text = CLIP penultimate layer of the prompt; image = the
    Resampler's tokens of every CLIP vision token of ``image01`` [1, H, W, 3] (the first
    frame); unconditional = ``sampling.negative_prompt`` (released: "", ``uncond_type:
    empty_seq``) and a zero image; ``latent`` [1, 1, h, w, c] (the first frame's latent)
    concatenated to every frame; ``sampling.fs`` (resolved) the frame stride."""
    m = models
    tokens = jnp.asarray(m.tokenizer([prompt, sampling.negative_prompt]))
    params = {"text": m.text_encoder.params, "vision": m.image_encoder.params,
              "resampler": m.resampler.params}
    return _context(params, tokens, jnp.asarray(image01), latent, jnp.int32(sampling.fs),
                    config=m.config, text_cfg=m.text_encoder.config,
                    vision_cfg=m.image_encoder.config, dtype=m.dtype, num_frames=m.num_frames)


def with_right_condition(ctx: Context, disparity, stereo: StereoCrafterZeroConfig) -> Context:
    """The right view's overrides (``StereoCrafterZeroConfig.right_condition``): "warped" =
    the image latent forward-warped by the first frame's latent disparity [1, T, h, w], holes
    keeping the left's values; "warped_background": holes stretched from their far side
    (``geometry.background_fill``); "left" (released) = none, both views share the left's."""
    if stereo.right_condition == "left":
        return ctx._replace(right={})
    z = ctx.cond["concat"]
    d0 = jnp.broadcast_to(disparity[:, :1], disparity.shape)
    warped, holes = forward_warp(z, d0)
    if stereo.right_condition == "warped_background":
        return ctx._replace(right={"concat": background_fill(warped, holes, warped_disparity(d0))})
    return ctx._replace(right={"concat": jnp.where(holes[..., None], z, warped)})


# ----------------------------------------------------------------------------- sampling
@functools.partial(jax.jit, static_argnames=("unet_cfg", "dtype", "pred"))
def _left_sample(params, ctx, x_T, plan, noise, *, unet_cfg, dtype, pred):
    model_fn = video_model_fn(unet_cfg, dtype, params, ctx.fs, "left")
    return ddim_sample(cfg_denoiser(model_fn, ctx.cond, ctx.uncond), x_T, plan, noise, pred)[0]


@functools.partial(jax.jit, static_argnames=("unet_cfg", "dtype", "pred"))
def _invert(params, ctx, z0, plan, *, unet_cfg, dtype, pred):
    model_fn = video_model_fn(unet_cfg, dtype, params, ctx.fs, "invert")
    return ddim_invert(lambda x, t, p: model_fn(x, t, ctx.cond), z0, plan, pred)[0]


@functools.partial(jax.jit, static_argnames=("unet_cfg", "dtype", "pred", "cond_only"))
def _stereo_sample(params, ctx, x_T, disparity, plan, key, events, *, unet_cfg, dtype, pred,
                   cond_only):
    model_fn = video_model_fn(unet_cfg, dtype, params, ctx.fs, "stereo")
    denoise = stereo_cfg_denoiser(model_fn, ctx.cond, ctx.uncond, right=ctx.right,
                                  cond_only=cond_only)
    return stereocrafter_zero_run(denoise, x_T, disparity, plan, key, events, pred)


def left_sample(models: VideoModels, ctx: Context, x_T, plan, noise) -> jax.Array:
    """DDIM with CFG from ``x_T`` [1, T, h, w, c] -> the left view's latents."""
    return _left_sample(models.unet.params, ctx, x_T, plan, noise, **_statics(models))


def invert(models: VideoModels, ctx: Context, z0, plan) -> jax.Array:
    """DDIM inversion of ``z0`` with the conditional model -> the latent at the plan's start."""
    return _invert(models.unet.params, ctx, z0, plan, **_statics(models))


def stereo_sample(models: VideoModels, ctx: Context, x_T, disparity, plan, key, events,
                  cond_only: bool = False):
    """The StereoCrafter-Zero sampler (``stereo.stereocrafter_zero_run``) on ``[left;
    right]`` with latent ``disparity`` [1, T, h, w] -> ``StereoOutput``. ``cond_only``:
    skip CFG's unconditional half (exact at guidance 1 without rescale)."""
    return _stereo_sample(models.unet.params, ctx, x_T, disparity, plan, key, events,
                          cond_only=cond_only, **_statics(models))


# ----------------------------------------------------------------------------- depth
@functools.partial(jax.jit, static_argnames=("unet_cfg", "vae_cfg", "vision_cfg", "dtype",
                                             "dissolve_step", "guidance_scale", "released"))
def _model_depth(params, video, key, plan, dissolve_plan, *, unet_cfg, vae_cfg, vision_cfg,
                 dtype, dissolve_step, guidance_scale, released):
    b, t = video.shape[:2]
    frames = video.reshape((b * t,) + video.shape[2:])
    _, embeds = CLIPVisionEncoder(vision_cfg, dtype).apply(
        {"params": params["vision"]}, preprocess_image(frames, vision_cfg.image_size))
    embeds = embeds.astype(jnp.float32).reshape(b, t, -1)
    k_aug, k_noise = jax.random.split(key)
    aug = video + unet_cfg.noise_aug_strength * jax.random.normal(k_aug, video.shape)
    latents = encode_latents(vae_cfg, dtype, params["vae"], aug, 1.0)
    cond = {"latents": latents, "embeds": embeds}
    uncond = jax.tree.map(jnp.zeros_like, cond)
    model_fn = depth_model_fn(unet_cfg, dtype, params["unet"], "depth")

    def guided(x, tt, _=None):
        out = model_fn(jnp.concatenate([x, x]), jnp.concatenate([tt, tt]),
                       jax.tree.map(lambda c, u: jnp.concatenate([c, u]), cond, uncond))
        return guidance(out[:b], out[b:], guidance_scale)

    x_T = jax.random.normal(k_noise, latents.shape[:-1] + (unet_cfg.out_channels,))
    z, _ = euler_sample(guided, x_T * plan.init_noise_sigma, plan, "v_prediction")
    if dissolve_step > 0:
        # released: the dissolving call is the conditional UNet alone (depthcrafter.py)
        cond_only = lambda x, tt, _=None: model_fn(x, tt, cond)
        z = dissolve_depth(cond_only if released else guided, z, dissolve_plan, dissolve_step,
                           "v_prediction")
    img = decode_latents(vae_cfg, dtype, params["vae"], z, vae_cfg.scaling_factor)
    return img if released else jnp.mean(img, axis=-1)


def model_depth(models: VideoModels, video01, key, depth: DepthConfig,
                released: bool = False) -> jax.Array:
    """The bundle's depth network on ``video01`` [B, T, H, W, 3] -> relative disparity
    [B, T, H, W] (near = large), dissolved at ``depth.dissolve_step`` (0 = DepthCrafter's own).
    ``released`` (``StereoCrafterZeroConfig.released()``'s ``dissolve_cfg=False``,
    ``depth_normalisation="none"``): the dissolving call is unguided and the decoded video
    [B, T, H, W, 3] in [-1, 1] is returned for ``stereo.released_disparity``.

    DepthCrafter (``depth_crafter_ppl.py``): one CLIP image embedding per frame; noise
    augmentation of the frames (the config's ``noise_aug_strength``) before the VAE
    (posterior mode, *unscaled*); Euler (EDM, Karras, v-prediction) on the depth latent
    concatenated with the video latents; CFG at ``depth.guidance`` against zero latents and
    embeddings; decoded after dividing by the VAE's scale; output = the channel mean.
    Dissolving (StereoCrafter-Zero Eq. 5) is one more guided evaluation on a 50-step plan."""
    dm = models.depth
    params = {"unet": dm.unet.params, "vae": dm.vae.params, "vision": dm.image_encoder.params}
    return _model_depth(params, _signed(video01), key, make_euler_plan(num_steps=depth.steps),
                        make_euler_plan(num_steps=DISSOLVE_PLAN_STEPS),
                        unet_cfg=dm.unet.config, vae_cfg=dm.vae.config,
                        vision_cfg=dm.image_encoder.config, dtype=models.dtype,
                        dissolve_step=depth.dissolve_step, guidance_scale=depth.guidance,
                        released=released)
