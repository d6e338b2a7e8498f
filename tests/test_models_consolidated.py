"""The shared building blocks in ``szero_jax.models.layers`` against the references they replace."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from szero_jax.models.layers import GroupNorm, NearestUpConv, conv


def _random_affine(params, key):
    return jax.tree.map(lambda a: a + 0.3 * jax.random.normal(key, a.shape), params)


@pytest.mark.parametrize("shape,groups,eps,silu", [
    ((2, 9, 7, 64), 32, 1e-6, False),  # odd spatial size, 2 channels per group
    ((2, 9, 7, 64), 32, 1e-5, True),
    ((3, 5, 6, 24), 8, 1e-6, True),  # the tiny VAE's 8 groups
    ((2, 3, 4, 5, 32), 32, 1e-5, True),  # a clip: statistics over T, H, W (batch_dims=1)
])
def test_group_norm_matches_flax(shape, groups, eps, silu):
    x = 3.0 * jax.random.normal(jax.random.key(0), shape) + 1.5  # offset: tests the two-pass variance
    ref = nn.GroupNorm(num_groups=groups, epsilon=eps, use_fast_variance=False)
    params = _random_affine(ref.init(jax.random.key(1), x), jax.random.key(2))
    want = ref.apply(params, x)
    want = nn.silu(want) if silu else want
    got = GroupNorm(groups, eps, silu=silu).apply(params, x)  # same param tree
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_group_norm_per_frame_batch_dims():
    """batch_dims=2 on [B, T, H, W, C] = Flax GroupNorm on the frames folded into the batch."""
    x = jax.random.normal(jax.random.key(3), (2, 3, 6, 5, 64)) - 0.7
    ref = nn.GroupNorm(num_groups=32, epsilon=1e-5, use_fast_variance=False)
    params = _random_affine(ref.init(jax.random.key(4), x[0]), jax.random.key(5))
    want = ref.apply(params, x.reshape((6,) + x.shape[2:])).reshape(x.shape)
    got = GroupNorm(batch_dims=2).apply(params, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_group_norm_low_precision_input_float32_statistics():
    """bfloat16 input: statistics in float32, output in the module's dtype."""
    x = (jax.random.normal(jax.random.key(6), (2, 8, 8, 32)) * 4 + 100).astype(jnp.bfloat16)
    ref = nn.GroupNorm(num_groups=32, epsilon=1e-5, use_fast_variance=False)
    params = ref.init(jax.random.key(7), x.astype(jnp.float32))
    want = ref.apply(params, x.astype(jnp.float32))
    got = GroupNorm(dtype=jnp.bfloat16).apply(params, x)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), atol=2e-2)


def test_group_norm_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="not divisible"):
        GroupNorm(32).init(jax.random.key(0), jnp.zeros((1, 2, 2, 48)))


def _upsample_then_conv(x, kernel, bias):
    """Nearest 2x of x [N, H, W, C] (repeat), then the 3x3 conv with zero padding 1."""
    up = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return jax.lax.conv_general_dilated(up, kernel, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST) + bias


@pytest.mark.parametrize("shape,features", [
    ((2, 5, 7, 16), 24),  # odd, unequal sides
    ((2, 3, 4, 4, 32), 32),  # a clip [B, T, H, W, C]: frames upsampled independently
    ((1, 1, 1, 8), 8),  # one pixel: three of each parity's four taps fall on the padding
])
def test_nearest_up_conv_matches_upsample_then_conv(shape, features):
    x = jax.random.normal(jax.random.key(8), shape)
    net = NearestUpConv(features)
    params = _random_affine(net.init(jax.random.key(9), x), jax.random.key(10))
    p = params["params"]
    got = net.apply(params, x)
    flat = x.reshape((-1,) + shape[-3:])
    want = _upsample_then_conv(flat, p["kernel"], p["bias"]).reshape(got.shape)
    assert got.shape == shape[:-3] + (2 * shape[-3], 2 * shape[-2], features)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    low = NearestUpConv(features, dtype=jnp.bfloat16).apply(params, x.astype(jnp.bfloat16))
    assert low.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(low, np.float32), np.asarray(want),
                               atol=0.05 * float(np.abs(want).max()))


def test_pointwise_conv_matches_conv():
    """1x1 kernels (2-D and 3-D) run as a dot with nn.Conv's params and result."""
    for shape, kernel in (((2, 5, 6, 12), (1, 1)), ((1, 3, 4, 5, 12), (1, 1, 1))):
        x = jax.random.normal(jax.random.key(11), shape)
        ref = nn.Conv(20, kernel, padding="VALID")
        params = _random_affine(ref.init(jax.random.key(12), x), jax.random.key(13))
        got = conv(20, kernel, "c").apply(params, x)
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref.apply(params, x)),
                                   rtol=1e-5, atol=1e-5)
