"""DynamiCrafter's video UNet (lvdm ``openaimodel3d.UNetModel``) in Flax, channels last.

``UNet3D(config).apply(params, x [B, T, H, W, Cin], timesteps [B], context [B, L, D], fs [B])``
-> ``[B, T, H, W, Cout]``. ``context`` is 77 text tokens followed by 16 image tokens per
frame (``L = 77 + 16 T``); any other length is shared by all frames, as in the original.

Frames are folded into the batch axis b-major (``(b t)``), so a view-major stereo batch
stays view-major inside every attention layer; ``cross_view`` reaches every self-attention
(spatial ``attn1``, both self-attentions of the temporal transformers) and the text/image
cross-attention (``attn2``, whose queries only ``uni_query_all`` changes), not ``init_attn``.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from szero_jax.models.attention import (Attention, FeedForward, cross_view_queries,
                                        multihead_attention)
from szero_jax.models.configs import DynamiCrafterUNetConfig
from szero_jax.models.layers import (Downsample, GroupNorm, ResBlock, Upsample, conv,
                                     layer_norm, timestep_embedding)

_TRANSFORMER_NORM_EPS = 1e-6  # lvdm attention.SpatialTransformer/TemporalTransformer GroupNorm


def _clip_attention(q, k, v, heads: int):
    """Cross-attention of per-frame queries q [(B F), N, C] (frames b-major) to keys/values
    of either the same rows or one row per clip [B, M, C] (tokens shared by its frames): the
    clip's frames are then one query row, so the shared keys are never repeated per frame."""
    rows, n, c = q.shape
    if k.shape[0] == rows:
        return multihead_attention(q, k, v, heads)
    if rows % k.shape[0]:
        raise ValueError(f"context rows ({k.shape[0]}) must divide the query rows ({rows})")
    clips = k.shape[0]
    out = multihead_attention(q.reshape(clips, rows // clips * n, c), k, v, heads)
    return out.reshape(rows, n, c)


class ImageCrossAttention(nn.Module):
    """lvdm ``CrossAttention`` used as ``attn2``: text tokens through ``to_k``/``to_v`` and,
    when ``image_cross_attention``, the tokens after ``text_len`` through ``to_k_ip``/``to_v_ip``;
    the two results are summed with weight ``scale`` (times ``tanh(alpha) + 1`` if learnable).
    ``context``: [rows, L, D] tokens per query row, or a ``(text, image)`` pair whose entries
    have one row per query row or one per clip (``_split_context``).
    ``cross_view``: ``uni_query_all`` gives the right view the left's queries in both."""

    query_dim: int
    heads: int
    dim_head: int
    image_cross_attention: bool
    scale_learnable: bool
    scale: float
    text_len: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context, cross_view=None):
        inner = self.heads * self.dim_head
        dense = lambda name: nn.Dense(inner, use_bias=False, dtype=self.dtype, name=name)
        if isinstance(context, tuple):
            text, image = context
        else:
            text, image = context[:, :self.text_len], context[:, self.text_len:]
        q = cross_view_queries(dense("to_q")(x), cross_view)
        out = _clip_attention(q, dense("to_k")(text), dense("to_v")(text), self.heads)
        if self.image_cross_attention:
            out_ip = _clip_attention(q, dense("to_k_ip")(image), dense("to_v_ip")(image),
                                     self.heads)
            weight = self.scale
            if self.scale_learnable:
                alpha = self.param("alpha", nn.initializers.zeros, (), jnp.float32)
                weight = weight * (jnp.tanh(alpha) + 1)
            out = out + weight * out_ip
        return nn.Dense(self.query_dim, dtype=self.dtype, name="to_out")(out)


class TransformerBlock(nn.Module):
    """lvdm ``BasicTransformerBlock``: attn1 (self), attn2 (cross to ``context``, or a second
    self-attention when ``context`` is None, as in the temporal transformers), GEGLU ff."""

    dim: int
    heads: int
    dim_head: int
    cross: Optional[dict] = None  # ImageCrossAttention fields when attn2 is a cross-attention
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context=None, cross_view=None):
        attn = lambda name: Attention(self.dim, self.heads, self.dim_head, dtype=self.dtype,
                                      name=name)
        x = attn("attn1")(layer_norm("norm1", dtype=self.dtype)(x), cross_view=cross_view) + x
        h = layer_norm("norm2", dtype=self.dtype)(x)
        if self.cross is None:
            x = attn("attn2")(h, cross_view=cross_view) + x
        else:
            x = ImageCrossAttention(self.dim, self.heads, self.dim_head, dtype=self.dtype,
                                    name="attn2", **self.cross)(h, context, cross_view) + x
        return FeedForward(self.dim, dtype=self.dtype, name="ff")(
            layer_norm("norm3", dtype=self.dtype)(x)) + x


class SpatialTransformer(nn.Module):
    """Per-frame transformer on ``[B, T, H, W, C]``; context ``[(B T), L, D]`` or a
    ``(text, image)`` pair (see ``ImageCrossAttention``)."""

    heads: int
    dim_head: int
    depth: int
    use_linear: bool
    cross: dict
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context, cross_view=None):
        b, t, hh, ww, c = x.shape
        inner = self.heads * self.dim_head
        h = GroupNorm(epsilon=_TRANSFORMER_NORM_EPS, batch_dims=2, dtype=self.dtype, name="norm")(x)
        proj = (lambda f, n: nn.Dense(f, dtype=self.dtype, name=n)) if self.use_linear else (
            lambda f, n: conv(f, (1, 1), n, dtype=self.dtype))
        h = proj(inner, "proj_in")(h).reshape(b * t, hh * ww, inner)
        for i in range(self.depth):
            h = TransformerBlock(inner, self.heads, self.dim_head, cross=self.cross,
                                 dtype=self.dtype, name=f"transformer_blocks_{i}")(
                h, context, cross_view)
        h = proj(c, "proj_out")(h.reshape(b, t, hh, ww, inner))
        return h + x


class TemporalTransformer(nn.Module):
    """Self-attention along time at every pixel of ``[B, T, H, W, C]`` (its norm sees the
    whole clip). Sequences are folded ``(b h w)``: view-major order is kept."""

    heads: int
    dim_head: int
    depth: int
    use_linear: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, cross_view=None):
        b, t, hh, ww, c = x.shape
        inner = self.heads * self.dim_head
        h = GroupNorm(epsilon=_TRANSFORMER_NORM_EPS, batch_dims=1, dtype=self.dtype, name="norm")(x)
        h = h.transpose(0, 2, 3, 1, 4).reshape(b * hh * ww, t, c)
        proj = (lambda f, n: nn.Dense(f, dtype=self.dtype, name=n)) if self.use_linear else (
            lambda f, n: conv(f, (1,), n, dtype=self.dtype))  # Conv1d, kernel 1
        h = proj(inner, "proj_in")(h)
        for i in range(self.depth):
            h = TransformerBlock(inner, self.heads, self.dim_head, dtype=self.dtype,
                                 name=f"transformer_blocks_{i}")(h, cross_view=cross_view)
        h = proj(c, "proj_out")(h)
        return h.reshape(b, hh, ww, t, c).transpose(0, 3, 1, 2, 4) + x


def _split_context(context, frames: int, cfg: DynamiCrafterUNetConfig):
    """[B, L, D] -> (text [B, 77, D], image): the text is shared by a clip's frames; the image
    tokens are split 16 per frame [(B T), 16, D] when ``L = 77 + 16 T``, else shared [B, L-77, D].
    Nothing is repeated per frame (``ImageCrossAttention`` attends a clip's frames at once)."""
    b, length, d = context.shape
    n_text, n_img = cfg.text_context_len, cfg.image_tokens_per_frame
    text, image = context[:, :n_text], context[:, n_text:]
    if length == n_text + frames * n_img:
        image = image.reshape(b * frames, n_img, d)
    return text, image


def _fold_context(context, frames: int, cfg: DynamiCrafterUNetConfig):
    """[B, L, D] -> [(B T), L', D]: the original's layout, text repeated per frame, image
    tokens split per frame (the UNet itself uses ``_split_context``)."""
    per_frame = lambda a: a if a.shape[0] == context.shape[0] * frames else jnp.repeat(
        a, frames, axis=0)
    return jnp.concatenate([per_frame(a) for a in _split_context(context, frames, cfg)], axis=1)


class UNet3D(nn.Module):
    """DynamiCrafter ``UNetModel``. Params are named after the PyTorch modules with indices
    joined by ``_`` (``input_blocks.1.1`` -> ``input_blocks_1_1``)."""

    config: DynamiCrafterUNetConfig
    dtype: jnp.dtype = jnp.float32

    def _layer_specs(self):
        """The original's block layout: (name, kind, kwargs) lists for input/middle/output."""
        cfg = self.config
        mc, hc = cfg.model_channels, cfg.num_head_channels
        cross = dict(image_cross_attention=cfg.image_cross_attention,
                     scale_learnable=cfg.image_cross_attention_scale_learnable,
                     scale=cfg.image_cross_attention_scale, text_len=cfg.text_context_len)
        res = lambda out: ("res", dict(out_channels=out, temporal_conv=cfg.temporal_conv,
                                       tempspatial_aware=cfg.tempspatial_aware))

        def attn_layers(ch):
            heads = ch // hc
            layers = [("spatial", dict(heads=heads, dim_head=hc, depth=cfg.transformer_depth,
                                       use_linear=cfg.use_linear, cross=cross))]
            if cfg.temporal_attention:
                layers.append(("temporal", dict(heads=heads, dim_head=hc,
                                                depth=cfg.transformer_depth,
                                                use_linear=cfg.use_linear)))
            return layers

        inputs, chans, ch, ds = [[("conv_in", dict(out_channels=mc))]], [mc], mc, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                ch = mult * mc
                layers = [res(ch)] + (attn_layers(ch) if ds in cfg.attention_resolutions else [])
                inputs.append(layers)
                chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                inputs.append([("down", dict(out_channels=ch))])
                chans.append(ch)
                ds *= 2
        middle = [res(ch)] + attn_layers(ch) + [res(ch)]
        outputs = []
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                chans.pop()
                ch = mc * mult
                layers = [res(ch)] + (attn_layers(ch) if ds in cfg.attention_resolutions else [])
                if level and i == cfg.num_res_blocks:
                    layers.append(("up", dict(out_channels=ch)))
                    ds //= 2
                outputs.append(layers)
        return inputs, middle, outputs

    def _make(self, kind, kwargs, name):
        dt = dict(dtype=self.dtype, name=name)
        if kind == "res":
            return ResBlock(**kwargs, **dt)
        if kind == "spatial":
            return SpatialTransformer(**kwargs, **dt)
        if kind == "temporal":
            return TemporalTransformer(**kwargs, **dt)
        if kind == "down":
            return Downsample(kwargs["out_channels"], **dt)
        if kind == "up":
            return Upsample(kwargs["out_channels"], **dt)
        return conv(kwargs["out_channels"], (3, 3), name, dtype=self.dtype)  # conv_in

    def _run(self, layers, prefix, h, emb, context, cross_view):
        for j, (kind, kwargs) in enumerate(layers):
            module = self._make(kind, kwargs, f"{prefix}_{j}")
            if kind == "res":
                h = module(h, emb)
            elif kind == "spatial":
                h = module(h, context, cross_view)
            elif kind == "temporal":
                h = module(h, cross_view)
            else:
                h = module(h)
        return h

    @nn.compact
    def __call__(self, x, timesteps, context, fs=None, cross_view=None):
        cfg = self.config
        if x.ndim != 5 or x.shape[-1] != cfg.in_channels:
            raise ValueError(f"x must be [B, T, H, W, {cfg.in_channels}], got shape {x.shape}")
        b, t = x.shape[:2]
        if context.ndim != 3 or context.shape[0] != b or context.shape[-1] != cfg.context_dim:
            raise ValueError(f"context must be [{b}, L, {cfg.context_dim}], got {context.shape}")
        timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (b,))
        mc, ed = cfg.model_channels, 4 * cfg.model_channels

        def mlp(inp, name):
            h = nn.Dense(ed, dtype=self.dtype, name=f"{name}_0")(inp)
            return nn.Dense(ed, dtype=self.dtype, name=f"{name}_2")(nn.silu(h))

        emb = mlp(timestep_embedding(timesteps, mc).astype(self.dtype), "time_embed")
        if cfg.fs_condition:
            fs = jnp.full((b,), cfg.default_fs) if fs is None else jnp.broadcast_to(
                jnp.asarray(fs), (b,))
            emb = emb + mlp(timestep_embedding(fs, mc).astype(self.dtype), "fps_embedding")
        context = _split_context(context.astype(self.dtype), t, cfg)

        inputs, middle, outputs = self._layer_specs()
        h, hs = x.astype(self.dtype), []
        for i, layers in enumerate(inputs):
            h = self._run(layers, f"input_blocks_{i}", h, emb, context, cross_view)
            if i == 0 and cfg.addition_attention:
                h = TemporalTransformer(cfg.init_attn_heads, cfg.num_head_channels,
                                        cfg.transformer_depth, use_linear=False,  # init_attn: Conv1d
                                        dtype=self.dtype, name="init_attn_0")(h)
            hs.append(h)
        h = self._run(middle, "middle_block", h, emb, context, cross_view)
        for i, layers in enumerate(outputs):
            h = jnp.concatenate([h, hs.pop()], axis=-1)
            h = self._run(layers, f"output_blocks_{i}", h, emb, context, cross_view)
        h = GroupNorm(batch_dims=2, silu=True, dtype=self.dtype, name="out_0")(h)
        return conv(cfg.out_channels, (3, 3), "out_2", dtype=self.dtype)(h).astype(x.dtype)
