"""DynamiCrafter's image projector (lvdm ``encoders.resampler.Resampler``, a Perceiver
resampler): CLIP image tokens ``[B, N, embedding_dim]`` -> ``[B, num_queries * T, output_dim]``
(16 query tokens per frame at the released configs)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from szero_jax.models.attention import multihead_attention
from szero_jax.models.configs import ResamplerConfig
from szero_jax.models.layers import layer_norm


class PerceiverAttention(nn.Module):
    """Latents attend to ``concat(x, latents)``; ``to_kv`` holds keys then values."""

    dim: int
    dim_head: int
    heads: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, latents):
        inner = self.dim_head * self.heads
        x = layer_norm("norm1", dtype=self.dtype)(x)
        latents = layer_norm("norm2", dtype=self.dtype)(latents)
        q = nn.Dense(inner, use_bias=False, dtype=self.dtype, name="to_q")(latents)
        kv = nn.Dense(2 * inner, use_bias=False, dtype=self.dtype, name="to_kv")(
            jnp.concatenate([x, latents], axis=1))
        k, v = jnp.split(kv, 2, axis=-1)
        out = multihead_attention(q, k, v, self.heads)
        return nn.Dense(self.dim, use_bias=False, dtype=self.dtype, name="to_out")(out)


class Resampler(nn.Module):
    """Params: ``latents`` [1, Q, dim], ``proj_in``, ``proj_out``, ``norm_out``, and per layer
    ``layers_{i}_0`` (PerceiverAttention) and ``layers_{i}_1_{0,1,3}`` (LayerNorm, Linear,
    Linear of the feed-forward ``Sequential``)."""

    config: ResamplerConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        if x.ndim != 3 or x.shape[-1] != cfg.embedding_dim:
            raise ValueError(f"x must be [B, N, {cfg.embedding_dim}], got shape {x.shape}")
        n = cfg.num_queries * (cfg.video_length or 1)
        latents = self.param("latents", nn.initializers.normal(cfg.dim ** -0.5), (1, n, cfg.dim),
                             jnp.float32)
        latents = jnp.broadcast_to(latents.astype(self.dtype), (x.shape[0], n, cfg.dim))
        x = nn.Dense(cfg.dim, dtype=self.dtype, name="proj_in")(x.astype(self.dtype))
        for i in range(cfg.depth):
            latents = PerceiverAttention(cfg.dim, cfg.dim_head, cfg.heads, dtype=self.dtype,
                                         name=f"layers_{i}_0")(x, latents) + latents
            h = layer_norm(f"layers_{i}_1_0", dtype=self.dtype)(latents)
            h = nn.Dense(cfg.dim * cfg.ff_mult, use_bias=False, dtype=self.dtype,
                         name=f"layers_{i}_1_1")(h)
            h = nn.Dense(cfg.dim, use_bias=False, dtype=self.dtype,
                         name=f"layers_{i}_1_3")(jax.nn.gelu(h, approximate=False))
            latents = h + latents
        latents = nn.Dense(cfg.output_dim, dtype=self.dtype, name="proj_out")(latents)
        return layer_norm("norm_out", dtype=self.dtype)(latents)
