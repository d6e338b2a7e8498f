"""The shared building blocks in ``szero_jax.models.layers`` against the references they replace."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from szero_jax.models.layers import GroupNorm


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
