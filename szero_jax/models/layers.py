"""Building blocks shared by the networks: torch-compatible norms, convolutions, timestep
embedding, residual blocks, down/upsampling. Channels last; leading axes are batch-like.

Module and parameter names follow the lvdm/openai ``ResBlock`` spelling so that the key maps
stay a renaming (``in_layers.2`` -> ``in_layers_2``).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype


def timestep_embedding(timesteps, dim: int, max_period: float = 10000.0,
                       flip_sin_to_cos: bool = True, downscale_freq_shift: float = 0.0):
    """Sinusoidal embedding [N] -> [N, dim], float32.

    Defaults match lvdm/openai ``timestep_embedding`` (cos first, frequencies over ``half``);
    diffusers' ``get_timestep_embedding`` is the same with its ``flip_sin_to_cos`` and
    ``downscale_freq_shift`` arguments.
    """
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32)
    freqs = jnp.exp(exponent / (half - downscale_freq_shift))
    args = jnp.asarray(timesteps, jnp.float32)[:, None] * freqs[None]
    sin, cos = jnp.sin(args), jnp.cos(args)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def group_norm(x, scale, bias, num_groups: int, epsilon: float, batch_dims: int = 1,
               silu: bool = False):
    """``torch.nn.GroupNorm`` (then SiLU if ``silu``) of channels-last ``x``, in float32.

    The first ``batch_dims`` axes are independent samples; statistics run over every other
    axis and the channels of a group (contiguous channels, as in PyTorch), with a two-pass
    variance. Channel sums over space come first and groups are summed from those: on CPU
    several times faster than reducing a ``[..., G, C/G]`` view (Flax ``nn.GroupNorm``).
    For float32 ``x`` each group's mean and inverse deviation are spread back to its channels
    by a small matmul with a 0/1 matrix (exact: one product by 1 plus zeros). XLA cannot fuse
    a matmul into the normalising pass, which then only reads per-channel vectors; the
    broadcast it fused there instead made it recompute the group index and the rsqrt per
    element (XLA:CPU: the pass ran 2.2x slower; the norms of SVD-xt's temporal decoder cost
    ~3x torch's). Non-finite statistics of one group then spread to the sample's other
    channels. Lower-precision ``x`` keeps the broadcast, so that every matmul of a bfloat16
    run takes bfloat16 operands (its target is an accelerator, where XLA fuses it well).
    """
    shape, c = x.shape, x.shape[-1]
    if c % num_groups:
        raise ValueError(f"GroupNorm: {c} channels not divisible by {num_groups} groups")
    n, cg = math.prod(shape[:batch_dims]), c // num_groups
    xf = x.astype(jnp.float32).reshape(n, -1, c)
    count = xf.shape[1] * cg
    spread = np.repeat(np.eye(num_groups, dtype=np.float32), cg, axis=1)  # [G, C]

    def per_channel(g):  # [n, G] -> [n, 1, C], each group's value on its channels
        if x.dtype != jnp.float32:
            return jnp.broadcast_to(g[:, :, None], (n, num_groups, cg)).reshape(n, 1, c)
        return jnp.matmul(g, spread, precision=jax.lax.Precision.HIGHEST)[:, None]

    def group_mean(channel_sums):  # [n, C] sums -> [n, G] means of the groups
        return channel_sums.reshape(n, num_groups, cg).sum(-1) / count

    d = xf - per_channel(group_mean(xf.sum(1)))
    inv = per_channel(jax.lax.rsqrt(group_mean((d * d).sum(1)) + epsilon))
    y = d * (inv * scale) + bias
    if silu:
        y = nn.silu(y)
    return y.reshape(shape)


class GroupNorm(nn.Module):
    """``torch.nn.GroupNorm`` on channels-last data (see ``group_norm``); ``silu`` fuses the
    SiLU that follows most norms. For a video ``[B, T, H, W, C]``, ``batch_dims=2``
    normalises each frame (lvdm's per-frame ``(b t)`` norms, the UNets' folded frames) and
    ``batch_dims=1`` the whole clip (lvdm's ``b c t h w`` norms, diffusers' temporal blocks).
    Params: ``scale``, ``bias`` (float32), as Flax ``nn.GroupNorm``'s.
    """

    num_groups: int = 32  # lvdm basics.normalization and the transformers' norms
    epsilon: float = 1e-5  # torch.nn.GroupNorm default
    batch_dims: int = 1
    silu: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        return group_norm(x, scale, bias, self.num_groups, self.epsilon, self.batch_dims,
                          self.silu).astype(self.dtype)


def layer_norm(name: str, epsilon: float = 1e-5, dtype=jnp.float32):
    """``torch.nn.LayerNorm`` (eps 1e-5, torch default; two-pass variance)."""
    return nn.LayerNorm(epsilon=epsilon, use_fast_variance=False, dtype=dtype, name=name)


class TimeConv(nn.Module):
    """``nn.Conv`` with a ``(k, 1, 1)`` kernel on ``[B, T, H, W, C]`` (same ``kernel`` /
    ``bias`` params), run as the equivalent 2-D ``(k, 1)`` convolution of ``[B, T, H*W, C]``:
    XLA:CPU's 3-D convolution is ~5x slower than the same 2-D one (measured on a
    [1, 4, 128, 128, 64] clip: 72 vs 13 ms), which made the temporal layers (SVD-xt's
    temporal decoder, the UNets' temporal convolutions) slower than PyTorch."""

    features: int
    size: int
    padding: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        if x.ndim != 5:
            raise ValueError(f"TimeConv needs x [B, T, H, W, C], got shape {x.shape}")
        b, t, h, w, c = x.shape
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (self.size, 1, 1, c, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = jax.lax.conv_general_dilated(
            x.reshape(b, t, h * w, c), kernel.reshape(self.size, 1, c, self.features), (1, 1),
            [(self.padding, self.padding), (0, 0)], dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y.reshape(b, t, h, w, self.features) + bias


class PointwiseConv(nn.Module):
    """``nn.Conv`` with an all-ones kernel shape (stride 1, no padding), same ``kernel`` /
    ``bias`` params, as a matmul over the channels: XLA:CPU ran the 1x1 convolution ~1.3x
    slower than the same dot (a [4, 128, 128, 128] -> 64 shortcut: 9.2 vs 7.0 ms CPU)."""

    features: int
    ndim: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (1,) * self.ndim + (c, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        return jnp.einsum("...c,cf->...f", x, kernel.reshape(c, self.features)) + bias


def conv(features: int, kernel, name: str, stride: int = 1, padding: int | None = None,
         dtype=jnp.float32):
    """A PyTorch-style convolution: symmetric zero padding ``kernel // 2`` unless given.
    Temporal ``(k, 1, 1)`` kernels (stride 1) are a ``TimeConv``, ``1x1`` ones a
    ``PointwiseConv``."""
    kernel = tuple(kernel)
    pads = [(k // 2, k // 2) if padding is None else (padding, padding) for k in kernel]
    if set(kernel) == {1} and stride == 1 and not padding:
        return PointwiseConv(features, len(kernel), dtype=dtype, name=name)
    if len(kernel) == 3 and kernel[1:] == (1, 1) and stride == 1:
        return TimeConv(features, kernel[0], pads[0][0], dtype=dtype, name=name)
    return nn.Conv(features, kernel, strides=stride, padding=pads, dtype=dtype, name=name)


class Downsample(nn.Module):
    """3x3 convolution with stride 2 on the last two spatial axes (``op``)."""

    out_channels: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        return conv(self.out_channels, (3, 3), "op", stride=2, padding=1, dtype=self.dtype)(x)


def _parity_taps(kernel, axis: int):
    """A 3-tap kernel along ``axis`` after a nearest 2x upsample, as 2-tap kernels on the
    original samples, stacked by output parity: even outputs take (k0, k1 + k2) on samples
    (i - 1, i), odd outputs (k0 + k1, k2) on (i, i + 1)."""
    t = [jax.lax.index_in_dim(kernel, i, axis) for i in range(3)]
    return jnp.stack([jnp.concatenate([t[0], t[1] + t[2]], axis),
                      jnp.concatenate([t[0] + t[1], t[2]], axis)])


class NearestUpConv(nn.Module):
    """Nearest 2x upsampling of ``[..., H, W, C]`` then a 3x3 convolution (zero padding 1),
    computed without the upsampled image: each output parity (row a, column b) is a 2x2
    convolution of the input with that parity's summed taps (``_parity_taps``), padded on
    the side its window leans to; one transpose interleaves the four. 4/9 of the direct
    FLOPs; params are the 3x3 conv's (``kernel`` [3, 3, C, F], ``bias``). On XLA:CPU
    1.8-2.1x faster than upsampling then convolving (the upsample convolutions were ~20 %
    of SVD-xt's temporal decoder); results equal to float rounding (a parity's taps are
    summed before the product). Interleaving by transpose rather than nested stacks keeps
    XLA from materialising the parts twice (VAE decode temporary memory: nested stacks
    +18 %, this -15 % against upsample-then-conv, float32, benchmark_memory)."""

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        *lead, h, w, c = x.shape
        f = self.features
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, c, f), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (f,), jnp.float32)
        # [b, a, 2, 2, C, F], summed in float32 whatever the dtype
        k = _parity_taps(_parity_taps(kernel.astype(jnp.float32), 0), 2)
        x, k, bias = promote_dtype(x, k, bias, dtype=self.dtype)
        x = x.reshape(-1, h, w, c)
        n = x.shape[0]

        def parity(a, b):  # even outputs see samples (i - 1, i), odd ones (i, i + 1)
            return jax.lax.conv_general_dilated(
                x, k[b, a], (1, 1), ((1 - a, a), (1 - b, b)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"))

        y = jnp.stack([parity(a, b) for a in range(2) for b in range(2)])  # [(a, b), N, h, w, F]
        y = y.reshape(2, 2, n, h, w, f).transpose(2, 3, 0, 4, 1, 5) + bias  # [N, h, a, w, b, F]
        return y.reshape(*lead, 2 * h, 2 * w, f)


class Upsample(nn.Module):
    """Nearest 2x upsampling of the two spatial axes before ``[..., H, W, C]``, then a 3x3
    conv (``conv``), as one ``NearestUpConv``."""

    out_channels: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        return NearestUpConv(self.out_channels, dtype=self.dtype, name="conv")(x)


class TemporalConvBlock(nn.Module):
    """lvdm ``TemporalConvBlock`` (from ModelScope): four (GroupNorm, SiLU, Conv3d) stages
    along time plus identity, on ``[B, T, H, W, C]``. The norms see the whole clip."""

    channels: int
    spatial_aware: bool = False  # openaimodel3d tempspatial_aware default
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        th = (3, 3, 1) if self.spatial_aware else (3, 1, 1)
        tw = (3, 1, 3) if self.spatial_aware else (3, 1, 1)
        h = x
        for i, kernel in enumerate((th, tw, th, tw), start=1):
            conv_index = 2 if i == 1 else 3  # conv1 has no Dropout in its Sequential
            h = GroupNorm(batch_dims=1, silu=True, dtype=self.dtype, name=f"conv{i}_0")(h)
            h = conv(self.channels, kernel, f"conv{i}_{conv_index}", dtype=self.dtype)(h)
        return x + h


class ResBlock(nn.Module):
    """openai/lvdm ``ResBlock`` without scale-shift norm or up/down: x [..., H, W, C] with
    leading axes ``[B, *rest]``, emb [B, E] (broadcast over ``rest``).

    With ``temporal_conv`` the input must be a video ``[B, T, H, W, C]`` and a
    ``TemporalConvBlock`` (named ``temopral_conv``, the original's spelling) follows.
    """

    out_channels: int
    use_conv_skip: bool = False
    temporal_conv: bool = False
    tempspatial_aware: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, emb):
        bd = x.ndim - 3  # batch-like axes (each frame normalised on its own)
        h = GroupNorm(batch_dims=bd, silu=True, dtype=self.dtype, name="in_layers_0")(x)
        h = conv(self.out_channels, (3, 3), "in_layers_2", dtype=self.dtype)(h)
        e = nn.Dense(self.out_channels, dtype=self.dtype, name="emb_layers_1")(nn.silu(emb))
        h = h + e.reshape(e.shape[:1] + (1,) * (h.ndim - 2) + e.shape[1:])
        h = GroupNorm(batch_dims=bd, silu=True, dtype=self.dtype, name="out_layers_0")(h)
        h = conv(self.out_channels, (3, 3), "out_layers_3", dtype=self.dtype)(h)
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, (3, 3) if self.use_conv_skip else (1, 1),
                     "skip_connection", dtype=self.dtype)(x)
        h = x + h
        if self.temporal_conv:
            if h.ndim != 5:
                raise ValueError(f"temporal_conv needs x [B, T, H, W, C], got shape {x.shape}")
            h = TemporalConvBlock(self.out_channels, self.tempspatial_aware, dtype=self.dtype,
                                  name="temopral_conv")(h)
        return h
