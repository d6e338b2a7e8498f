"""The networks as the samplers call them: text and image embeddings, VAE encode / decode
of videos, and the UNet closures (``model_fn(x, t, ctx, cross_view)``). The conditioning
context built from these is ``pipelines.stages.context``."""
from __future__ import annotations


import jax.numpy as jnp

from szero_jax.models.clip import CLIPTextEncoder, CLIPVisionEncoder, preprocess_image
from szero_jax.models.configs import DynamiCrafterConfig, UNetSTConfig, VAEConfig
from szero_jax.models.resampler import Resampler
from szero_jax.models.unet3d import UNet3D
from szero_jax.models.unet_st import UNetSpatioTemporal
from szero_jax.models.vae import AutoencoderKL, AutoencoderKLTemporalDecoder, decode_video
from szero_jax.models.vae import encode_video, sample_latent
from szero_jax.pipelines.common import tick


def prediction_type(config: DynamiCrafterConfig) -> str:
    return {"v": "v_prediction", "eps": "epsilon", "x0": "sample"}[config.parameterization]


def vae_module(config, dtype):
    cls = AutoencoderKL if isinstance(config, VAEConfig) else AutoencoderKLTemporalDecoder
    return cls(config, dtype=dtype)


def text_embedding(text_cfg, dtype, params, tokens, layer: str = "penultimate"):
    last, pen, _ = CLIPTextEncoder(text_cfg, dtype).apply({"params": params}, tokens)
    return (pen if layer == "penultimate" else last).astype(jnp.float32)


def image_tokens(vision_cfg, resampler_cfg, dtype, vision_params, resampler_params, images):
    """images [B, H, W, 3] in [-1, 1] -> Resampler tokens [B, 16 T, D]."""
    pixels = preprocess_image(images, vision_cfg.image_size)
    tokens, _ = CLIPVisionEncoder(vision_cfg, dtype).apply({"params": vision_params}, pixels)
    return Resampler(resampler_cfg, dtype).apply({"params": resampler_params}, tokens)


def video_model_fn(unet_cfg, dtype, params, fs, stage: str):
    """``model_fn(x, t, ctx, cross_view=None)`` of the DynamiCrafter UNet: ``x`` gets
    ``ctx["concat"]`` on channels (noisy latent first, lvdm ``hybrid``), ``ctx["text"]`` is
    the cross-attention context, ``fs`` the frame-stride condition."""
    module = UNet3D(unet_cfg, dtype)

    def model_fn(x, t, ctx, cross_view=None):
        tick(stage, t)
        inp = jnp.concatenate([x, ctx["concat"].astype(x.dtype)], axis=-1)
        out = module.apply({"params": params}, inp, t, ctx["text"], fs=fs, cross_view=cross_view)
        return out.astype(x.dtype)

    return model_fn


def encode_latents(vae_cfg, dtype, params, video, scale: float, key=None):
    """video [B, T, H, W, 3] in [-1, 1] -> latents x scale (posterior mean, or a sample)."""
    mean, logvar = encode_video(vae_module(vae_cfg, dtype), {"params": params}, video)
    mean, logvar = mean.astype(jnp.float32), logvar.astype(jnp.float32)
    return (mean if key is None else sample_latent(key, mean, logvar)) * scale


def decode_latents(vae_cfg, dtype, params, z, scale: float):
    """latents [B, T, h, w, c] / scale -> video [B, T, H, W, C] in [-1, 1] (unclipped)."""
    return decode_video(vae_module(vae_cfg, dtype), {"params": params}, z / scale).astype(
        jnp.float32)


def depth_model_fn(unet_cfg: UNetSTConfig, dtype, params, stage: str):
    """``model_fn(x_in, t, ctx)`` of a DepthCrafter UNet: ``ctx = {"latents", "embeds"}``."""
    module = UNetSpatioTemporal(unet_cfg, dtype)

    def model_fn(x, t, ctx):
        tick(stage, t)
        inp = jnp.concatenate([x, ctx["latents"].astype(x.dtype)], axis=-1)
        return module.apply({"params": params}, inp, t, ctx["embeds"]).astype(x.dtype)

    return model_fn
