"""Stable Diffusion ``UNet2DConditionModel`` (diffusers) in Flax Linen, channels last.

Covers SD 1.5, SD 2.1 (base and 768-v) and SD 2 depth. Submodule names follow the diffusers
state-dict with ``name.i`` written ``name_i`` (see ``unet2d_keymap``), so conversion is a key
rename plus a transpose. ``cross_view`` reaches every self-attention (``attn1``) only.

The blocks here (ResNet, resampling, transformer) are shared with the SVD spatio-temporal
UNet in ``unet_st``; norms, convolutions and the timestep embedding come from ``layers``.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from szero_jax.models.attention import Attention, FeedForward
from szero_jax.models.configs import UNet2DConfig
from szero_jax.models.layers import GroupNorm, conv, layer_norm, timestep_embedding


class TimestepEmbedding(nn.Module):
    """``linear_1 -> SiLU -> linear_2``."""

    dim: int
    out_dim: Optional[int] = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.dim, dtype=self.dtype, name="linear_1")(x)
        return nn.Dense(self.out_dim or self.dim, dtype=self.dtype, name="linear_2")(nn.silu(x))


class ResnetBlock2D(nn.Module):
    """diffusers ``ResnetBlock2D`` (default time-embedding norm). x [N, H, W, C], temb [N, E]."""

    out_channels: int
    eps: float = 1e-5
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, temb):
        h = conv(self.out_channels, (3, 3), "conv1", dtype=self.dtype)(
            GroupNorm(epsilon=self.eps, silu=True, dtype=self.dtype, name="norm1")(x))
        h = h + nn.Dense(self.out_channels, dtype=self.dtype, name="time_emb_proj")(
            nn.silu(temb))[:, None, None, :]
        h = conv(self.out_channels, (3, 3), "conv2", dtype=self.dtype)(
            GroupNorm(epsilon=self.eps, silu=True, dtype=self.dtype, name="norm2")(h))
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, (1, 1), "conv_shortcut", dtype=self.dtype)(x)
        return x + h


class Downsample2D(nn.Module):
    """3x3 conv, stride 2, padding 1."""

    channels: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        return conv(self.channels, (3, 3), "conv", stride=2, dtype=self.dtype)(x)


def resize_nearest(x, size):
    """torch ``interpolate(mode="nearest")`` of x [N, H, W, C] to ``size`` (H', W')."""
    (h, w), (ho, wo) = x.shape[1:3], size
    rows = (jnp.arange(ho) * h) // ho
    cols = (jnp.arange(wo) * w) // wo
    return x[:, rows][:, :, cols]


class Upsample2D(nn.Module):
    """Nearest upsampling (x2, or to the skip connection's size) then a 3x3 conv."""

    channels: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, size=None):
        size = size or (2 * x.shape[1], 2 * x.shape[2])
        return conv(self.channels, (3, 3), "conv", dtype=self.dtype)(resize_nearest(x, size))


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention (``attn1``), cross-attention (``attn2``), GEGLU ``ff``."""

    dim: int
    heads: int
    dim_head: int
    context_dim: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context, cross_view=None):
        return attention_layers(self, x, context, cross_view)


def attention_layers(block, x, context, cross_view):
    """The layers of a diffusers transformer block, as submodules of ``block`` (which has
    ``dim``, ``heads``, ``dim_head``, ``context_dim``, ``dtype``): ``norm1``/``attn1``
    self-attention, ``norm2``/``attn2`` cross-attention to ``context``, ``norm3``/``ff``.
    Called from the ``nn.compact`` ``__call__`` of ``BasicTransformerBlock`` and of unet_st's
    ``TemporalBasicTransformerBlock``."""
    attn = lambda name, ctx_dim=None: Attention(block.dim, block.heads, block.dim_head, ctx_dim,
                                                dtype=block.dtype, name=name)
    norm = lambda name: layer_norm(name, dtype=block.dtype)
    x = x + attn("attn1")(norm("norm1")(x), cross_view=cross_view)
    x = x + attn("attn2", block.context_dim)(norm("norm2")(x), context)
    return x + FeedForward(block.dim, dtype=block.dtype, name="ff")(norm("norm3")(x))


class Transformer2D(nn.Module):
    """diffusers ``Transformer2DModel`` on x [N, H, W, C].

    ``proj_in``/``proj_out`` are Dense layers: a 1x1 conv (SD 1.x) and a linear projection
    (SD 2.x) are the same map in channels-last; the key map squeezes the conv kernels.
    """

    heads: int
    dim_head: int
    context_dim: int
    depth: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context, cross_view=None):
        n, hgt, wid, c = x.shape
        inner = self.heads * self.dim_head
        h = GroupNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x).reshape(n, hgt * wid, c)
        h = nn.Dense(inner, dtype=self.dtype, name="proj_in")(h)
        for i in range(self.depth):
            h = BasicTransformerBlock(inner, self.heads, self.dim_head, self.context_dim,
                                      dtype=self.dtype, name=f"transformer_blocks_{i}")(h, context, cross_view)
        h = nn.Dense(c, dtype=self.dtype, name="proj_out")(h)
        return x + h.reshape(n, hgt, wid, c)


class UNet2DCondition(nn.Module):
    """SD UNet: ``__call__(x [B,H,W,C], timesteps [B], context [B,N,D], cross_view=None)``.

    Returns the model output (epsilon or v, per the checkpoint) ``[B, H, W, out_channels]``.
    """

    config: UNet2DConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, timesteps, context, cross_view=None):
        cfg = self.config
        if x.ndim != 4 or x.shape[-1] != cfg.in_channels:
            raise ValueError(f"x must be [B, H, W, {cfg.in_channels}], got {x.shape}")
        if context.ndim != 3 or context.shape[0] != x.shape[0] or context.shape[-1] != cfg.cross_attention_dim:
            raise ValueError(
                f"context must be [{x.shape[0]}, N, {cfg.cross_attention_dim}], got {context.shape}")
        b = x.shape[0]
        t = jnp.broadcast_to(jnp.asarray(timesteps), (b,))
        ch = cfg.block_out_channels
        levels = len(ch)
        temb = TimestepEmbedding(4 * ch[0], dtype=self.dtype, name="time_embedding")(
            timestep_embedding(t, ch[0], flip_sin_to_cos=cfg.flip_sin_to_cos,
                               downscale_freq_shift=cfg.freq_shift).astype(self.dtype))
        context = context.astype(self.dtype)

        def transformer(i, name):
            heads = cfg.heads[i]
            return Transformer2D(heads, ch[i] // heads, cfg.cross_attention_dim,
                                 cfg.transformer_layers_per_block, dtype=self.dtype, name=name)

        h = conv(ch[0], (3, 3), "conv_in", dtype=self.dtype)(x.astype(self.dtype))
        skips = [h]
        for i in range(levels):
            for j in range(cfg.layers_per_block):
                h = ResnetBlock2D(ch[i], cfg.norm_eps, self.dtype, name=f"down_blocks_{i}_resnets_{j}")(h, temb)
                if cfg.cross_attn[i]:
                    h = transformer(i, f"down_blocks_{i}_attentions_{j}")(h, context, cross_view)
                skips.append(h)
            if i < levels - 1:
                h = Downsample2D(ch[i], self.dtype, name=f"down_blocks_{i}_downsamplers_0")(h)
                skips.append(h)

        h = ResnetBlock2D(ch[-1], cfg.norm_eps, self.dtype, name="mid_block_resnets_0")(h, temb)
        h = transformer(levels - 1, "mid_block_attentions_0")(h, context, cross_view)
        h = ResnetBlock2D(ch[-1], cfg.norm_eps, self.dtype, name="mid_block_resnets_1")(h, temb)

        for u in range(levels):
            i = levels - 1 - u
            for j in range(cfg.layers_per_block + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = ResnetBlock2D(ch[i], cfg.norm_eps, self.dtype, name=f"up_blocks_{u}_resnets_{j}")(h, temb)
                if cfg.cross_attn[i]:
                    h = transformer(i, f"up_blocks_{u}_attentions_{j}")(h, context, cross_view)
            if i > 0:
                h = Upsample2D(ch[i], self.dtype, name=f"up_blocks_{u}_upsamplers_0")(h, skips[-1].shape[1:3])

        h = GroupNorm(epsilon=cfg.norm_eps, silu=True, dtype=self.dtype, name="conv_norm_out")(h)
        return conv(cfg.out_channels, (3, 3), "conv_out", dtype=self.dtype)(h)
