"""SVD spatio-temporal UNet (diffusers ``UNetSpatioTemporalConditionModel``) as DepthCrafter
runs it (``depthcrafter/unet.py``), in Flax Linen, channels last.

DepthCrafter's forward differs from SVD's in one place: ``encoder_hidden_states`` carries one
CLIP image token per frame (``[B, T, D]`` -> ``[B*T, 1, D]``) instead of one token repeated
over the frames. The image-only indicator is always zero, so every ``AlphaBlender`` mixes with
``sigmoid(mix_factor)``. Frames are folded into the batch b-major (``[B*T, ...]``), so a
view-major batch stays view-major for the cross-view modes, which reach the spatial and the
temporal self-attention (``attn1``).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from szero_jax.models.attention import FeedForward
from szero_jax.models.configs import UNetSTConfig
from szero_jax.models.layers import GroupNorm, conv, layer_norm, timestep_embedding
from szero_jax.models.unet2d import (BasicTransformerBlock, Downsample2D, ResnetBlock2D,
                                     TimestepEmbedding, Upsample2D, attention_layers)


class AlphaBlender(nn.Module):
    """``learned_with_images`` blend with a zero image-only indicator: a x + (1 - a) y."""

    @nn.compact
    def __call__(self, x_spatial, x_temporal):
        # AlphaBlender(alpha=0.5) in diffusers SpatioTemporalResBlock/TransformerSpatioTemporalModel.
        a = jax.nn.sigmoid(self.param("mix_factor", nn.initializers.constant(0.5), (1,)))
        a = a.astype(x_spatial.dtype)
        return a * x_spatial + (1.0 - a) * x_temporal


class TemporalResnetBlock(nn.Module):
    """ResNet block with (3, 1, 1) convolutions over x [B, T, H, W, C], temb [B, T, E]."""

    eps: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, temb):
        c = x.shape[-1]
        h = GroupNorm(epsilon=self.eps, silu=True, dtype=self.dtype, name="norm1")(x)
        h = conv(c, (3, 1, 1), "conv1", dtype=self.dtype)(h)
        h = h + nn.Dense(c, dtype=self.dtype, name="time_emb_proj")(nn.silu(temb))[:, :, None, None]
        h = GroupNorm(epsilon=self.eps, silu=True, dtype=self.dtype, name="norm2")(h)
        h = conv(c, (3, 1, 1), "conv2", dtype=self.dtype)(h)
        return x + h


class SpatioTemporalResBlock(nn.Module):
    """Spatial ResNet on the frames, temporal ResNet across them, blended. x [B*T, H, W, C]."""

    out_channels: int
    eps: float
    num_frames: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, temb):
        h = ResnetBlock2D(self.out_channels, self.eps, self.dtype, name="spatial_res_block")(x, temb)
        bt, hgt, wid, c = h.shape
        t = self.num_frames
        h5 = h.reshape(bt // t, t, hgt, wid, c)
        ht = TemporalResnetBlock(self.eps, self.dtype, name="temporal_res_block")(
            h5, temb.reshape(bt // t, t, -1))
        return AlphaBlender(name="time_mixer")(h5, ht).reshape(bt, hgt, wid, c)


class TemporalBasicTransformerBlock(nn.Module):
    """Attention across frames at each position. x [B*T, S, C] -> [B*T, S, C]."""

    dim: int
    heads: int
    dim_head: int
    context_dim: int
    num_frames: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, time_context, cross_view=None):
        bt, s, c = x.shape
        t = self.num_frames
        x = x.reshape(bt // t, t, s, c).transpose(0, 2, 1, 3).reshape(-1, t, c)
        x = x + FeedForward(self.dim, dtype=self.dtype, name="ff_in")(
            layer_norm("norm_in", dtype=self.dtype)(x))
        x = attention_layers(self, x, time_context, cross_view)
        return x.reshape(bt // t, s, t, c).transpose(0, 2, 1, 3).reshape(bt, s, c)


class TransformerSpatioTemporal(nn.Module):
    """diffusers ``TransformerSpatioTemporalModel``. x [B*T, H, W, C], context [B*T, N, D]."""

    heads: int
    context_dim: int
    num_frames: int
    depth: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context, cross_view=None):
        bt, hgt, wid, c = x.shape
        t, b = self.num_frames, bt // self.num_frames
        dim_head = c // self.heads
        # Temporal cross-attention sees the first frame's context at every position.
        ctx0 = context.reshape(b, t, *context.shape[1:])[:, 0]
        time_context = jnp.broadcast_to(ctx0[:, None], (b, hgt * wid) + ctx0.shape[1:])
        time_context = time_context.reshape(b * hgt * wid, *ctx0.shape[1:])
        frame_ids = jnp.tile(jnp.arange(t), b)
        frame_emb = TimestepEmbedding(4 * c, c, dtype=self.dtype, name="time_pos_embed")(
            timestep_embedding(frame_ids, c).astype(self.dtype))[:, None]

        h = GroupNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x).reshape(bt, hgt * wid, c)
        h = nn.Dense(c, dtype=self.dtype, name="proj_in")(h)
        mixer = AlphaBlender(name="time_mixer")
        for i in range(self.depth):
            h = BasicTransformerBlock(c, self.heads, dim_head, self.context_dim, dtype=self.dtype,
                                      name=f"transformer_blocks_{i}")(h, context, cross_view)
            ht = TemporalBasicTransformerBlock(
                c, self.heads, dim_head, self.context_dim, t, dtype=self.dtype,
                name=f"temporal_transformer_blocks_{i}")(h + frame_emb, time_context, cross_view)
            h = mixer(h, ht)
        h = nn.Dense(c, dtype=self.dtype, name="proj_out")(h)
        return x + h.reshape(bt, hgt, wid, c)


class UNetSpatioTemporal(nn.Module):
    """DepthCrafter UNet.

    ``__call__(x [B,T,H,W,C], timesteps [B] or scalar, context [B,T,D], added_time_ids=None,
    cross_view=None) -> [B,T,H,W,out_channels]``. ``context`` holds one CLIP image embedding
    per frame; ``added_time_ids [B, 3]`` defaults to the config's (fps, motion bucket, noise
    augmentation).
    """

    config: UNetSTConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, timesteps, context, added_time_ids=None, cross_view=None):
        cfg = self.config
        if x.ndim != 5 or x.shape[-1] != cfg.in_channels:
            raise ValueError(f"x must be [B, T, H, W, {cfg.in_channels}], got {x.shape}")
        b, t, hgt, wid, _ = x.shape
        if context.shape != (b, t, cfg.cross_attention_dim):
            raise ValueError(f"context must be [B, T, D] = {(b, t, cfg.cross_attention_dim)} "
                             f"(one image token per frame), got {context.shape}")
        if added_time_ids is None:
            added_time_ids = jnp.tile(jnp.asarray(
                [[cfg.fps, cfg.motion_bucket_id, cfg.noise_aug_strength]], jnp.float32), (b, 1))
        if added_time_ids.shape != (b, cfg.num_time_ids):
            raise ValueError(f"added_time_ids must be [{b}, {cfg.num_time_ids}], got {added_time_ids.shape}")
        ch = cfg.block_out_channels
        levels = len(ch)
        tsteps = jnp.broadcast_to(jnp.asarray(timesteps), (b,))
        emb = TimestepEmbedding(4 * ch[0], dtype=self.dtype, name="time_embedding")(
            timestep_embedding(tsteps, ch[0]).astype(self.dtype))
        ids = timestep_embedding(added_time_ids.reshape(-1), cfg.addition_time_embed_dim)
        emb = emb + TimestepEmbedding(4 * ch[0], dtype=self.dtype, name="add_embedding")(
            ids.reshape(b, -1).astype(self.dtype))
        emb = jnp.repeat(emb, t, axis=0)
        context = context.reshape(b * t, 1, -1).astype(self.dtype)

        def res(i, eps, name):
            return SpatioTemporalResBlock(ch[i], eps, t, self.dtype, name=name)

        def transformer(i, name):
            return TransformerSpatioTemporal(cfg.heads[i], cfg.cross_attention_dim, t,
                                             cfg.transformer_layers_per_block, self.dtype, name=name)

        h = conv(ch[0], (3, 3), "conv_in", dtype=self.dtype)(x.reshape(b * t, hgt, wid, -1).astype(self.dtype))
        skips = [h]
        for i in range(levels):
            # CrossAttnDownBlockSpatioTemporal builds its resnets with eps 1e-6,
            # DownBlockSpatioTemporal with 1e-5 (diffusers unet_3d_blocks.py).
            eps = 1e-6 if cfg.cross_attn[i] else 1e-5
            for j in range(cfg.layers_per_block):
                h = res(i, eps, f"down_blocks_{i}_resnets_{j}")(h, emb)
                if cfg.cross_attn[i]:
                    h = transformer(i, f"down_blocks_{i}_attentions_{j}")(h, context, cross_view)
                skips.append(h)
            if i < levels - 1:
                h = Downsample2D(ch[i], self.dtype, name=f"down_blocks_{i}_downsamplers_0")(h)
                skips.append(h)

        # UNetMidBlockSpatioTemporal: eps 1e-5 (diffusers unet_3d_blocks.py).
        h = res(levels - 1, 1e-5, "mid_block_resnets_0")(h, emb)
        h = transformer(levels - 1, "mid_block_attentions_0")(h, context, cross_view)
        h = res(levels - 1, 1e-5, "mid_block_resnets_1")(h, emb)

        for u in range(levels):
            i = levels - 1 - u
            for j in range(cfg.layers_per_block + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                # Up blocks keep their resnet_eps default 1e-6 (diffusers get_up_block).
                h = res(i, 1e-6, f"up_blocks_{u}_resnets_{j}")(h, emb)
                if cfg.cross_attn[i]:
                    h = transformer(i, f"up_blocks_{u}_attentions_{j}")(h, context, cross_view)
            if i > 0:
                h = Upsample2D(ch[i], self.dtype, name=f"up_blocks_{u}_upsamplers_0")(h, skips[-1].shape[1:3])

        h = GroupNorm(epsilon=1e-5, silu=True, dtype=self.dtype, name="conv_norm_out")(h)
        h = conv(cfg.out_channels, (3, 3), "conv_out", dtype=self.dtype)(h)
        return h.reshape(b, t, hgt, wid, -1)
