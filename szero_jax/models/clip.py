"""CLIP text and vision towers (OpenCLIP and Hugging Face CLIP share this one network).

Both libraries implement the same pre-LN transformer; only key names differ (see
`szero_jax.models.clip_keymaps`). Channels last: pixels are ``[B, H, W, 3]``.

- `CLIPTextEncoder(tokens)` -> ``(last_hidden, penultimate, pooled)``:
  ``last_hidden`` = ``ln_final`` after every block (HF ``last_hidden_state``);
  ``penultimate`` = ``ln_final`` after every block but the last (DynamiCrafter's
  ``FrozenOpenCLIPEmbedder(layer="penultimate")``); ``pooled`` = ``last_hidden`` at the EOS
  token, times ``text_projection`` when the config has one (OpenCLIP ``encode_text``; HF
  ``CLIPTextModel.pooler_output`` when it has none).
- `CLIPVisionEncoder(pixels)` -> ``(tokens, image_embeds)``: ``tokens`` = every token after
  the last block, without ``ln_post`` or projection (DynamiCrafter's
  ``FrozenOpenCLIPImageEmbedderV2``, 257 tokens at ViT-H/14); ``image_embeds`` =
  ``ln_post(class token)`` times the projection (HF ``CLIPVisionModelWithProjection``).
- `preprocess_image`: antialiased bicubic resize to 224 and CLIP normalisation.

Encoders see conditioning, not stereo views, so they take no ``cross_view`` argument.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from szero_jax.models.attention import Attention
from szero_jax.models.configs import CLIPTextConfig, CLIPVisionConfig
from szero_jax.models.layers import layer_norm

# OpenAI CLIP normalisation (DynamiCrafter condition.py buffers; HF CLIPImageProcessor).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _activation(name: str):
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name == "quick_gelu":
        return lambda x: x * jax.nn.sigmoid(1.702 * x)
    raise ValueError(f"activation must be 'gelu' or 'quick_gelu', got {name!r}")


class ResidualBlock(nn.Module):
    """Pre-LN block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    width: int
    heads: int
    mlp_dim: int
    activation: str
    eps: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask=None):
        ln = lambda name: layer_norm(name, self.eps, self.dtype)
        h = ln("ln_1")(x)
        x = x + Attention(self.width, self.heads, self.width // self.heads, qkv_bias=True,
                          dtype=self.dtype, name="attn")(h, mask=mask)
        h = nn.Dense(self.mlp_dim, dtype=self.dtype, name="fc1")(ln("ln_2")(x))
        h = nn.Dense(self.width, dtype=self.dtype, name="fc2")(_activation(self.activation)(h))
        return x + h


class Transformer(nn.Module):
    """``layers`` residual blocks; returns (output of the last block, of the one before)."""

    width: int
    layers: int
    heads: int
    mlp_dim: int
    activation: str
    eps: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask=None):
        if self.width % self.heads:
            raise ValueError(f"heads: {self.heads} does not divide width {self.width}")
        prev = x
        for i in range(self.layers):
            prev = x
            x = ResidualBlock(self.width, self.heads, self.mlp_dim, self.activation, self.eps,
                              self.dtype, name=f"blocks_{i}")(x, mask)
        return x, prev


def _transformer(cfg, dtype):
    return Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_dim, cfg.activation,
                       cfg.layer_norm_eps, dtype, name="transformer")


class CLIPTextEncoder(nn.Module):
    """CLIP text tower. ``tokens`` int ``[B, L]`` with ``L <= context_length``."""

    config: CLIPTextConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens):
        cfg = self.config
        if tokens.ndim != 2 or tokens.shape[1] > cfg.context_length:
            raise ValueError(f"tokens: expected [B, L<={cfg.context_length}], got {tokens.shape}")
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"tokens: expected an integer dtype, got {tokens.dtype}")
        n = tokens.shape[1]
        x = nn.Embed(cfg.vocab_size, cfg.width, dtype=self.dtype, name="token_embedding")(tokens)
        pos = self.param("positional_embedding", nn.initializers.normal(0.01),
                         (cfg.context_length, cfg.width))
        x = x + pos[:n].astype(self.dtype)
        causal = jnp.tril(jnp.ones((n, n), bool))[None, None]
        last, penultimate = _transformer(cfg, self.dtype)(x, causal)
        ln_final = layer_norm("ln_final", cfg.layer_norm_eps, self.dtype)
        last, penultimate = ln_final(last), ln_final(penultimate)
        if cfg.eos_token_id is None:  # the EOS token has the largest id (OpenCLIP, HF legacy)
            eos = jnp.argmax(tokens, axis=-1)
        else:  # first occurrence of eos_token_id (HF configs with eos_token_id != 2)
            eos = jnp.argmax(tokens == cfg.eos_token_id, axis=-1)
        pooled = jnp.take_along_axis(last, eos[:, None, None], axis=1)[:, 0]
        if cfg.projection_dim is not None:
            pooled = nn.Dense(cfg.projection_dim, use_bias=False, dtype=self.dtype,
                              name="text_projection")(pooled)
        return last, penultimate, pooled


class CLIPVisionEncoder(nn.Module):
    """CLIP vision tower (ViT). ``pixels`` ``[B, S, S, 3]`` already preprocessed."""

    config: CLIPVisionConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, pixels):
        cfg = self.config
        s = cfg.image_size
        if pixels.ndim != 4 or pixels.shape[1:] != (s, s, 3):
            raise ValueError(f"pixels: expected [B, {s}, {s}, 3] (channels last, preprocessed), "
                             f"got {pixels.shape}")
        p = cfg.patch_size
        x = nn.Conv(cfg.width, (p, p), strides=(p, p), padding="VALID", use_bias=False,
                    dtype=self.dtype, name="patch_embed")(pixels)
        b = x.shape[0]
        x = x.reshape(b, -1, cfg.width)
        cls = self.param("class_embedding", nn.initializers.normal(0.01), (cfg.width,))
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, cfg.width)), x], 1)
        pos = self.param("positional_embedding", nn.initializers.normal(0.01),
                         ((s // p) ** 2 + 1, cfg.width))
        x = x + pos.astype(self.dtype)
        ln = lambda name: layer_norm(name, cfg.layer_norm_eps, self.dtype)
        tokens, _ = _transformer(cfg, self.dtype)(ln("ln_pre")(x))
        embeds = ln("ln_post")(tokens[:, 0])
        if cfg.projection_dim is not None:
            embeds = nn.Dense(cfg.projection_dim, use_bias=False, dtype=self.dtype,
                              name="proj")(embeds)
        return tokens, embeds


def _gaussian_blur_matrix(n: int, sigma: float, ks: int) -> np.ndarray:
    """[n, n] matrix of a 1-D Gaussian blur with reflect padding (kornia gaussian_blur2d)."""
    x = np.arange(ks, dtype=np.float64) - ks // 2
    k = np.exp(-(x ** 2) / (2.0 * sigma ** 2))
    k /= k.sum()
    m = np.zeros((n, n))
    for i in range(n):
        for j, w in zip(range(i - ks // 2, i + ks // 2 + 1), k):
            j = -j if j < 0 else (2 * (n - 1) - j if j > n - 1 else j)  # reflect, edge excluded
            m[i, j] += w
    return m


def _bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] bicubic interpolation, align_corners=True, a=-0.75, clamped edges (torch)."""
    a = -0.75

    def cubic(t):
        t = abs(t)
        if t <= 1:
            return ((a + 2) * t - (a + 3)) * t * t + 1
        if t < 2:
            return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
        return 0.0

    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = i * scale
        i0 = math.floor(src)
        t = src - i0
        for off in range(-1, 3):
            m[i, min(max(i0 + off, 0), n_in - 1)] += cubic(off - t)
    return m


def _resize_matrix(n_in: int, n_out: int, antialias: bool) -> np.ndarray:
    m = _bicubic_matrix(n_in, n_out)
    if antialias and n_in > n_out:  # blur only when downscaling, sigma/size as kornia.resize
        sigma = max((n_in / n_out - 1.0) / 2.0, 0.001)
        ks = int(max(2.0 * 2 * sigma, 3))
        ks += 1 - ks % 2
        m = m @ _gaussian_blur_matrix(n_in, sigma, ks)
    return m


def preprocess_image(images, size: int = 224, antialias: bool = True,
                     mean=CLIP_MEAN, std=CLIP_STD):
    """CLIP input from images ``[B, H, W, 3]`` in [-1, 1] -> ``[B, size, size, 3]``.

    Gaussian antialias blur + bicubic resize (align_corners=True), then ``(x + 1) / 2`` and
    per-channel ``(x - mean) / std``: DynamiCrafter's ``FrozenOpenCLIPImageEmbedderV2.preprocess``
    (kornia resize, antialias=True) and DepthCrafter's ``_resize_with_antialiasing`` + CLIP
    feature extractor. The default size 224 is ViT-H/14's and ViT-L/14's input size.
    """
    images = jnp.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: expected [B, H, W, 3] in [-1, 1], got {images.shape}")
    if size < 1:
        raise ValueError(f"size: expected a positive int, got {size}")
    h, w = images.shape[1:3]
    mh = jnp.asarray(_resize_matrix(h, size, antialias), jnp.float32)
    mw = jnp.asarray(_resize_matrix(w, size, antialias), jnp.float32)
    hp = jax.lax.Precision.HIGHEST
    x = jnp.einsum("ih,bhwc,jw->bijc", mh, images.astype(jnp.float32), mw, precision=hp)
    x = (x + 1.0) / 2.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
