"""KL autoencoders, channels last: one network for lvdm `ae_modules` (DynamiCrafter) and
diffusers `AutoencoderKL` (Stable Diffusion), and SVD-xt's `AutoencoderKLTemporalDecoder`.

Images are [B, H, W, C] in [-1, 1]; latents [B, h, w, latent_channels] with h = H / 2^(L-1).
`encode` returns the moments (mean, logvar) of the diagonal Gaussian posterior, logvar
clamped to [-30, 20] as both originals do. The networks do not scale latents: callers
multiply by `config.scaling_factor` (0.18215 for SD 1.x/2.x, DynamiCrafter and SVD-xt)
after encoding and divide before decoding. The VAE is per frame, so it takes no
cross-view mode: stereo views are just more rows of the batch.

Video helpers fold frames into the batch ([B, T, H, W, C] -> [B*T, H, W, C]) and run the
network on `chunk` frames at a time (`lax.map`; by default as many as fit `CHUNK_BYTES`),
bounding activation memory; `decode_video(..., tiles=DecodeTiles())` also decodes each frame
in overlapping spatial tiles, blended, for high resolutions.

Param names follow lvdm's: `down_{level}_block_{i}`, `up_{level}_block_{i}` (level 0 is the
full resolution), `mid_block_1`, `mid_attn_1`, `mid_block_2`; see `vae_keymaps`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from szero_jax.models.attention import multihead_attention
from szero_jax.models.configs import TemporalVAEConfig, VAEConfig
from szero_jax.models.layers import GroupNorm, Upsample, conv

LOGVAR_RANGE = (-30.0, 20.0)  # lvdm / diffusers DiagonalGaussianDistribution clamp
NORM_EPS = 1e-6  # lvdm ae_modules.Normalize; diffusers Encoder/Decoder resnet eps
TEMPORAL_NORM_EPS = 1e-5  # diffusers MidBlock/UpBlockTemporalDecoder temporal_eps


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice plus a 1x1 shortcut when the width changes."""

    out_channels: int
    groups: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = conv(self.out_channels, (3, 3), "conv1", dtype=self.dtype)(
            GroupNorm(self.groups, NORM_EPS, silu=True, dtype=self.dtype, name="norm1")(x))
        h = conv(self.out_channels, (3, 3), "conv2", dtype=self.dtype)(
            GroupNorm(self.groups, NORM_EPS, silu=True, dtype=self.dtype, name="norm2")(h))
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, (1, 1), "shortcut", dtype=self.dtype)(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual (lvdm AttnBlock)."""

    groups: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, hh, ww, c = x.shape
        h = GroupNorm(self.groups, NORM_EPS, dtype=self.dtype, name="norm")(x).reshape(b, hh * ww, c)
        q, k, v = (nn.Dense(c, dtype=self.dtype, name=n)(h) for n in ("q", "k", "v"))
        h = multihead_attention(q, k, v, heads=1)
        return x + nn.Dense(c, dtype=self.dtype, name="proj_out")(h).reshape(x.shape)


class Downsample(nn.Module):
    """Pad right/bottom by one, then a stride-2 3x3 conv (lvdm / diffusers)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        return nn.Conv(x.shape[-1], (3, 3), strides=2, padding=((0, 1), (0, 1)), dtype=self.dtype,
                       name="conv")(x)


def _mid_block(h, groups: int, attention: bool, dtype):
    """``mid_block_1``, ``mid_attn_1`` (if ``attention``), ``mid_block_2`` of the calling
    ``Encoder``/``Decoder`` (called from its ``nn.compact`` ``__call__``)."""
    h = ResnetBlock(h.shape[-1], groups, dtype, name="mid_block_1")(h)
    if attention:
        h = AttnBlock(groups, dtype, name="mid_attn_1")(h)
    return ResnetBlock(h.shape[-1], groups, dtype, name="mid_block_2")(h)


class Encoder(nn.Module):
    """Image [N, H, W, C] -> raw moments [N, h, w, 2 * latent_channels]."""

    block_out_channels: tuple
    layers_per_block: int
    latent_channels: int
    groups: int = 32
    mid_attention: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        g, dt = self.groups, self.dtype
        h = conv(self.block_out_channels[0], (3, 3), "conv_in", dtype=dt)(x)
        last = len(self.block_out_channels) - 1
        for level, ch in enumerate(self.block_out_channels):
            for i in range(self.layers_per_block):
                h = ResnetBlock(ch, g, dt, name=f"down_{level}_block_{i}")(h)
            if level != last:
                h = Downsample(dt, name=f"down_{level}_downsample")(h)
        h = _mid_block(h, g, self.mid_attention, dt)
        h = GroupNorm(g, NORM_EPS, silu=True, dtype=dt, name="norm_out")(h)
        return conv(2 * self.latent_channels, (3, 3), "conv_out", dtype=dt)(h)


class Decoder(nn.Module):
    """Latent [N, h, w, latent_channels] -> image [N, H, W, out_channels]."""

    block_out_channels: tuple
    layers_per_block: int
    out_channels: int
    groups: int = 32
    mid_attention: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z):
        g, dt = self.groups, self.dtype
        h = conv(self.block_out_channels[-1], (3, 3), "conv_in", dtype=dt)(z)
        h = _mid_block(h, g, self.mid_attention, dt)
        for level in reversed(range(len(self.block_out_channels))):
            for i in range(self.layers_per_block + 1):
                h = ResnetBlock(self.block_out_channels[level], g, dt,
                                name=f"up_{level}_block_{i}")(h)
            if level != 0:
                h = Upsample(h.shape[-1], dt, name=f"up_{level}_upsample")(h)
        h = GroupNorm(g, NORM_EPS, silu=True, dtype=dt, name="norm_out")(h)
        return conv(self.out_channels, (3, 3), "conv_out", dtype=dt)(h)


def _clamped_moments(moments):
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)


class AutoencoderKL(nn.Module):
    """The KL autoencoder. `apply(params, x, method="encode")` -> (mean, logvar);
    `apply(params, z, method="decode")` -> image; `__call__` encodes and decodes the mean."""

    config: VAEConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.encoder = Encoder(c.block_out_channels, c.layers_per_block, c.latent_channels,
                               c.norm_num_groups, c.mid_block_add_attention, self.dtype)
        self.decoder = Decoder(c.decoder_channels, c.layers_per_block, c.out_channels,
                               c.norm_num_groups, c.mid_block_add_attention, self.dtype)
        if c.use_quant_conv:
            # setup(): named by the attribute, hence name None
            self.quant_conv = conv(2 * c.latent_channels, (1, 1), None, dtype=self.dtype)
        if c.use_post_quant_conv:
            self.post_quant_conv = conv(c.latent_channels, (1, 1), None, dtype=self.dtype)

    def encode(self, x):
        moments = self.encoder(x)
        if self.config.use_quant_conv:
            moments = self.quant_conv(moments)
        return _clamped_moments(moments)

    def decode(self, z):
        if self.config.use_post_quant_conv:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def __call__(self, x):
        return self.decode(self.encode(x)[0])


class TemporalResBlock(nn.Module):
    """Residual block of (3, 1, 1) convolutions over [B, T, H, W, C] (diffusers)."""

    groups: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        h = GroupNorm(self.groups, TEMPORAL_NORM_EPS, silu=True, dtype=self.dtype, name="norm1")(x)
        h = conv(c, (3, 1, 1), "conv1", dtype=self.dtype)(h)
        h = GroupNorm(self.groups, TEMPORAL_NORM_EPS, silu=True, dtype=self.dtype, name="norm2")(h)
        h = conv(c, (3, 1, 1), "conv2", dtype=self.dtype)(h)
        return x + h


class SpatioTemporalResBlock(nn.Module):
    """Spatial ResnetBlock per frame, then a temporal block, mixed by a learned factor:
    out = (1 - s) * spatial + s * temporal, s = sigmoid(mix_factor) (diffusers AlphaBlender,
    merge_strategy "learned", switch_spatial_to_temporal_mix)."""

    out_channels: int
    groups: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, num_frames: int):
        h = ResnetBlock(self.out_channels, self.groups, self.dtype, name="spatial")(x)
        video = h.reshape((-1, num_frames) + h.shape[1:])
        t = TemporalResBlock(self.groups, self.dtype, name="temporal")(video).reshape(h.shape)
        mix = self.param("mix_factor", nn.initializers.zeros, (1,))  # diffusers merge_factor 0.0
        s = jax.nn.sigmoid(mix).astype(h.dtype)
        return (1.0 - s) * h + s * t


class TemporalDecoder(nn.Module):
    """diffusers `TemporalDecoder`: latent [B*T, h, w, C] -> frames [B*T, H, W, out]."""

    block_out_channels: tuple
    layers_per_block: int
    out_channels: int
    groups: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z, num_frames: int):
        g, dt = self.groups, self.dtype
        h = conv(self.block_out_channels[-1], (3, 3), "conv_in", dtype=dt)(z)
        h = SpatioTemporalResBlock(h.shape[-1], g, dt, name="mid_block_1")(h, num_frames)
        h = AttnBlock(g, dt, name="mid_attn_1")(h)
        h = SpatioTemporalResBlock(h.shape[-1], g, dt, name="mid_block_2")(h, num_frames)
        for level in reversed(range(len(self.block_out_channels))):
            for i in range(self.layers_per_block + 1):
                h = SpatioTemporalResBlock(self.block_out_channels[level], g, dt,
                                           name=f"up_{level}_block_{i}")(h, num_frames)
            if level != 0:
                h = Upsample(h.shape[-1], dt, name=f"up_{level}_upsample")(h)
        h = GroupNorm(g, NORM_EPS, silu=True, dtype=dt, name="norm_out")(h)
        h = conv(self.out_channels, (3, 3), "conv_out", dtype=dt)(h)
        video = h.reshape((-1, num_frames) + h.shape[1:])
        video = conv(self.out_channels, (3, 1, 1), "time_conv_out", dtype=dt)(video)
        return video.reshape(h.shape)


class AutoencoderKLTemporalDecoder(nn.Module):
    """SVD-xt's VAE: the per-frame encoder and a decoder that mixes `num_frames` frames.

    `apply(params, x, method="encode")` -> (mean, logvar);
    `apply(params, z, num_frames, method="decode")` with z [B*num_frames, h, w, C], frames
    of one video consecutive (diffusers layout)."""

    config: TemporalVAEConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.encoder = Encoder(c.block_out_channels, c.layers_per_block, c.latent_channels,
                               c.norm_num_groups, True, self.dtype)
        self.quant_conv = conv(2 * c.latent_channels, (1, 1), None, dtype=self.dtype)
        self.decoder = TemporalDecoder(c.block_out_channels, c.layers_per_block,
                                       c.out_channels, c.norm_num_groups, self.dtype)

    def encode(self, x):
        return _clamped_moments(self.quant_conv(self.encoder(x)))

    def decode(self, z, num_frames: int):
        if z.shape[0] % num_frames:
            raise ValueError(f"z: leading size {z.shape[0]} is not a multiple of "
                             f"num_frames={num_frames}")
        return self.decoder(z, num_frames)

    def __call__(self, x, num_frames: int):
        return self.decode(self.encode(x)[0], num_frames)


def sample_latent(key, mean, logvar):
    """A draw from the posterior: mean + exp(logvar / 2) * eps (lvdm `encode_first_stage`)."""
    return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)


# Per-frame temporary memory of a decode, measured: ~6 float32 copies of the full-resolution
# first-level activation (576x1024, 128 channels: 1.81 GB f32 / 1.51 GB bf16 per frame on
# XLA:CPU, experiments/benchmark_memory.py; 1.55 / 1.42 GB since layers.NearestUpConv, so
# the estimate is now ~20 % conservative).
_BYTES_PER_PIXEL_CHANNEL = 6 * 4
CHUNK_BYTES = 1 << 30  # chunk=None: as many frames per chunk as fit this estimate


@dataclasses.dataclass(frozen=True)
class DecodeTiles:
    """Spatially tiled decoding: the fewest latent tiles of at most ``size`` x ``size`` that
    overlap by at least ``overlap`` latent pixels (shrunk to equal sizes, spread evenly),
    blended with linear ramps across each overlap. Tiles see only
    their own region (the mid-block attention and GroupNorm statistics become per tile), so
    the result departs slightly from untiled decoding (measured in tests/test_vae_memory.py)."""

    size: int = 64  # latent pixels: 512 px tiles for an 8x VAE
    overlap: int = 16  # 128 px for an 8x VAE: StereoCrafter's tile overlap (issue 13)

    def __post_init__(self):
        if self.size <= 0 or not 0 <= self.overlap < self.size:
            raise ValueError(f"DecodeTiles: need size > 0 and 0 <= overlap < size, got "
                             f"size={self.size}, overlap={self.overlap}")


def _tiles_1d(length: int, size: int, overlap: int):
    """(tile length, starts): the fewest tiles of at most ``size`` covering ``length`` with at
    least ``overlap`` shared between neighbours, shrunk to equal lengths spread evenly (so no
    tile is decoded mostly twice)."""
    if length <= size:
        return length, [0]
    count = -(-(length - overlap) // (size - overlap))
    tile = -(-(length + (count - 1) * overlap) // count)
    starts = [round(i * (length - tile) / (count - 1)) for i in range(count)]
    return tile, starts


def _ramp(length: int, lo_overlap: int, hi_overlap: int):
    """1-D blend weights of a tile: linear up over ``lo_overlap``, down over ``hi_overlap``."""
    w = np.ones(length, np.float32)
    if lo_overlap:
        w[:lo_overlap] = (np.arange(lo_overlap) + 0.5) / lo_overlap
    if hi_overlap:
        w[length - hi_overlap:] = np.minimum(w[length - hi_overlap:],
                                             (np.arange(hi_overlap)[::-1] + 0.5) / hi_overlap)
    return w


def decode_tiled(decode_fn, z, tiles: DecodeTiles, factor: int):
    """``decode_fn`` (latents [N, h, w, c] -> pixels [N, factor h, factor w, C]) over
    overlapping latent tiles of z [N, h, w, c] (one tile at a time, ``lax.map``), blended."""
    n, h, w, _ = z.shape
    (th, ys), (tw, xs) = (_tiles_1d(h, tiles.size, tiles.overlap),
                          _tiles_1d(w, tiles.size, tiles.overlap))
    if len(ys) == len(xs) == 1:
        return decode_fn(z)
    boxes = [(y, x) for y in ys for x in xs]
    parts = jnp.stack([z[:, y:y + th, x:x + tw] for y, x in boxes])
    out = jax.lax.map(decode_fn, parts)  # [tiles, N, factor th, factor tw, C]
    acc = jnp.zeros((n, factor * h, factor * w, out.shape[-1]), jnp.float32)
    norm = np.zeros((factor * h, factor * w), np.float32)
    for i, (y, x) in enumerate(boxes):
        # Overlaps with the neighbouring tiles (rounding may make them differ by a pixel):
        # ramps run over the pixels actually shared.
        up = ys.index(y)
        left = xs.index(x)
        oy0 = (ys[up - 1] + th - y) if up else 0
        oy1 = (y + th - ys[up + 1]) if up + 1 < len(ys) else 0
        ox0 = (xs[left - 1] + tw - x) if left else 0
        ox1 = (x + tw - xs[left + 1]) if left + 1 < len(xs) else 0
        wgt = np.outer(_ramp(factor * th, factor * oy0, factor * oy1),
                       _ramp(factor * tw, factor * ox0, factor * ox1))
        sl = (slice(factor * y, factor * (y + th)), slice(factor * x, factor * (x + tw)))
        acc = acc.at[:, sl[0], sl[1]].add(out[i].astype(jnp.float32) * wgt[None, :, :, None])
        norm[sl] += wgt
    return (acc / norm[None, :, :, None]).astype(out.dtype)


def _map_chunks(fn, x, chunk: int):
    """fn over x's leading axis in chunks of at most ``chunk`` rows (equal chunks that divide
    the rows where possible, else the last one zero-padded), one chunk at a time."""
    n = x.shape[0]
    if chunk <= 0:
        raise ValueError(f"chunk: expected a positive number of frames, got {chunk}")
    blocks = -(-n // min(chunk, n))
    size = next((n // k for k in range(blocks, 2 * blocks + 1) if n % k == 0), -(-n // blocks))
    pad = -n % size
    xp = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    if xp.shape[0] == size:
        return fn(xp)
    out = jax.lax.map(fn, xp.reshape((-1, size) + x.shape[1:]))
    return jax.tree.map(lambda o: o.reshape((-1,) + o.shape[2:])[:n], out)


def _check_video(name, v, channels):
    if v.ndim != 5 or v.shape[-1] != channels:
        raise ValueError(f"{name}: expected [B, T, H, W, {channels}], got shape {v.shape}")


def _factor(config) -> int:
    return 2 ** (len(config.block_out_channels) - 1)


def auto_chunk(config, height: int, width: int) -> int:
    """Frames per chunk whose encode/decode at ``height`` x ``width`` pixels (of one frame or
    tile) fits ``CHUNK_BYTES`` by the estimate above (at least 1)."""
    per_frame = _BYTES_PER_PIXEL_CHANNEL * height * width * config.block_out_channels[0]
    return max(1, CHUNK_BYTES // per_frame)


def encode_video(model: nn.Module, params, video, chunk: int | None = None):
    """Per-frame encoding of video [B, T, H, W, C] -> (mean, logvar) [B, T, h, w, c], ``chunk``
    frames at a time (None: ``auto_chunk``)."""
    _check_video("video", video, model.config.in_channels)
    b, t, hh, ww = video.shape[:4]
    chunk = auto_chunk(model.config, hh, ww) if chunk is None else chunk
    mean, logvar = _map_chunks(lambda x: model.apply(params, x, method="encode"),
                               video.reshape((b * t,) + video.shape[2:]), chunk)
    return (mean.reshape((b, t) + mean.shape[1:]), logvar.reshape((b, t) + logvar.shape[1:]))


TEMPORAL_CHUNK = 16  # temporal decoder's default clip length (was this helper's default)


def decode_video(model: nn.Module, params, z, chunk: int | None = None,
                 tiles: DecodeTiles | None = None):
    """Decodes latents [B, T, h, w, c] -> video [B, T, H, W, C].

    For ``AutoencoderKL`` frames are independent and ``chunk`` (None: ``auto_chunk``) only
    bounds memory. For the temporal decoder each video is decoded ``chunk`` frames at a time
    as one clip (None: ``TEMPORAL_CHUNK``), as the diffusers SVD pipeline does with
    ``decode_chunk_size`` (the result depends on ``chunk``); equal clips run one at a time
    (``lax.map``), a shorter last clip after them. ``tiles``: decode each frame (clip) in
    overlapping spatial tiles (``DecodeTiles``), for high resolutions.
    """
    _check_video("z", z, model.config.latent_channels)
    b, t, h, w = z.shape[:4]
    f = _factor(model.config)
    tiled = (lambda fn: (lambda x: decode_tiled(fn, x, tiles, f))) if tiles else (lambda fn: fn)
    if isinstance(model, AutoencoderKLTemporalDecoder):
        chunk = TEMPORAL_CHUNK if chunk is None else chunk
        if chunk <= 0:
            raise ValueError(f"chunk: expected a positive number of frames, got {chunk}")
        chunk = min(chunk, t)

        def clip_decode(n):
            # x [b, n, h, w, c] -> [b, n, H, W, C]; tiles see all of a clip's frames.
            run = tiled(lambda y: model.apply(params, y, n, method="decode"))
            return lambda x: run(x.reshape((b * n,) + x.shape[2:])).reshape(
                (b, n, f * h, f * w, -1))

        full, rest = divmod(t, chunk)
        clips = z[:, :full * chunk].reshape((b, full, chunk) + z.shape[2:]).swapaxes(0, 1)
        out = jax.lax.map(clip_decode(chunk), clips) if full > 1 else clip_decode(chunk)(
            clips[0])[None]
        out = out.swapaxes(0, 1).reshape((b, full * chunk) + out.shape[3:])
        if rest:
            out = jnp.concatenate([out, clip_decode(rest)(z[:, full * chunk:])], axis=1)
        return out
    th, tw = (_tiles_1d(h, tiles.size, tiles.overlap)[0],
              _tiles_1d(w, tiles.size, tiles.overlap)[0]) if tiles else (h, w)
    chunk = auto_chunk(model.config, f * th, f * tw) if chunk is None else chunk
    out = _map_chunks(tiled(lambda x: model.apply(params, x, method="decode")),
                      z.reshape((b * t,) + z.shape[2:]), chunk)
    return out.reshape((b, t) + out.shape[1:])
