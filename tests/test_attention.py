"""multihead_attention's paths (full, blockwise, xla) against each other, every cross-view
mode on every path, the settings context, and the token-chunked FeedForward."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from szero_jax.models import attention as A

# Blocks small enough that every loop of the blockwise path runs: several query, key and
# batch blocks, a padded query tail and padded keys (block sizes not dividing the lengths).
SMALL = dict(implementation="blockwise", query_chunk=16, key_chunk=12, block_bytes=4 * 16 * 16 * 2)
PATHS = {"full": dict(implementation="full"), "blockwise": dict(implementation="blockwise"),
         "blockwise_small": SMALL, "xla": dict(implementation="xla")}


def _qkv(rng, b, n, m, inner, scale=1.0):
    q = rng.standard_normal((b, n, inner)).astype(np.float32)
    k = (scale * rng.standard_normal((b, m, inner))).astype(np.float32)
    v = rng.standard_normal((b, m, inner)).astype(np.float32)
    return q, k, v


def _reference(q, k, v, heads, mask=None):
    """Plain numpy softmax attention in float64."""
    b, n, inner = q.shape
    d = inner // heads
    qh, kh, vh = (a.reshape(a.shape[0], a.shape[1], heads, d).astype(np.float64) for a in (q, k, v))
    logits = np.einsum("bnhd,bmhd->bhnm", qh, kh) / np.sqrt(d)
    if mask is not None:
        logits = np.where(mask, logits, np.finfo(np.float32).min)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return np.einsum("bhnm,bmhd->bnhd", w, vh).reshape(b, n, inner)


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("shape", [(2, 37, 53, 3, 8), (4, 64, 64, 2, 16), (1, 5, 130, 1, 4)])
def test_paths_match_float64_reference(path, shape):
    b, n, m, heads, d = shape
    rng = np.random.default_rng(sum(shape))
    q, k, v = _qkv(rng, b, n, m, heads * d, scale=3.0)
    with A.attention_settings(**PATHS[path]):
        out = np.asarray(jax.jit(lambda *a: A.multihead_attention(*a, heads))(q, k, v))
    ref = _reference(q, k, v, heads)
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("path", sorted(PATHS))
def test_masks_on_every_path(path):
    """Per-row masks, a broadcast causal mask, and a fully masked row (uniform weights, as
    the original path gives) all agree with the float64 reference."""
    rng = np.random.default_rng(7)
    b, n, m, heads = 2, 29, 41, 2
    q, k, v = _qkv(rng, b, n, m, heads * 8)
    per_row = rng.random((b, 1, n, m)) > 0.4
    per_row[1, 0, 3] = False  # a row with nothing to attend to
    causal = np.tril(np.ones((n, m), bool))
    for mask in (per_row, causal):
        with A.attention_settings(**PATHS[path]):
            out = np.asarray(jax.jit(lambda *a: A.multihead_attention(*a, heads, mask))(q, k, v))
        ref = _reference(q, k, v, heads, mask)
        assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()


def _old_cross_view(q, k, v, heads, mode):
    """The cross-view modes as first written (keys repeated for each view), on the full path."""
    b = q.shape[0] // 2
    ql, kl, kr, vl, vr = q[:b], k[:b], k[b:], v[:b], v[b:]
    cat = lambda *a: jnp.concatenate(a)
    mha = lambda q_, k_, v_: A.multihead_attention(q_, k_, v_, heads)
    name = A.CROSS_VIEW_MODES[mode]
    if name == "none":
        return mha(q, k, v)
    if name == "uni":
        return mha(q, cat(kl, kl), cat(vl, vl))
    if name in ("uni_query", "uni_query_all"):
        return mha(cat(ql, ql), k, v)
    if name == "bi":
        kb, vb = jnp.concatenate([kl, kr], 1), jnp.concatenate([vl, vr], 1)
        return mha(q, cat(kb, kb), cat(vb, vb))
    return mha(q, cat(kr, kl), cat(vr, vl))  # swap


@pytest.mark.parametrize("path", sorted(PATHS))
def test_every_cross_view_mode_on_every_path(path):
    rng = np.random.default_rng(3)
    heads = 2
    q, k, v = _qkv(rng, 4, 33, 33, heads * 8, scale=2.0)
    run = jax.jit(lambda q, k, v, mode: A.cross_view_attention(q, k, v, heads, mode))
    for mode in range(len(A.CROSS_VIEW_MODES)):
        with A.attention_settings(implementation="full"):
            ref = np.asarray(_old_cross_view(q, k, v, heads, mode))
        with A.attention_settings(**PATHS[path]):
            out = np.asarray(run(q, k, v, jnp.int32(mode)))
        err = np.abs(out - ref).max() / np.abs(ref).max()
        assert err <= 1e-5, (A.CROSS_VIEW_MODES[mode], err)


def test_full_path_is_the_original_bitwise():
    """``full`` (LEGACY) keeps the original arithmetic exactly, also in bfloat16."""
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(a, jnp.bfloat16) for a in _qkv(rng, 2, 20, 24, 2 * 40))
    d = 40
    qh, kh, vh = (a.reshape(a.shape[0], a.shape[1], 2, d) for a in (q, k, v))
    logits = jnp.einsum("bnhd,bmhd->bhnm", qh, kh).astype(jnp.float32) / np.sqrt(d)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    ref = jnp.einsum("bhnm,bmhd->bnhd", weights, vh).reshape(q.shape)
    with A.attention_settings(A.LEGACY):
        out = A.multihead_attention(q, k, v, 2)
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(ref, np.float32))


def test_blockwise_bfloat16_error_is_bfloat16_sized():
    """bfloat16 inputs: float32 logits and sums keep the error at the output's rounding."""
    rng = np.random.default_rng(1)
    q, k, v = _qkv(rng, 2, 300, 300, 4 * 16, scale=2.0)
    ref = _reference(q, k, v, 4)
    with A.attention_settings(**SMALL):
        out = A.multihead_attention(*(jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)), 4)
    assert out.dtype == jnp.bfloat16
    err = np.abs(np.asarray(out, np.float32) - ref).max() / np.abs(ref).max()
    assert err < 2e-2  # inputs rounded to bfloat16 (8 bits): ~0.4 % each


def test_settings_are_part_of_the_jit_key_and_validated():
    seen = []

    def f(q):
        seen.append(A.current_attention_settings().implementation)
        return A.multihead_attention(q, q, q, 2)

    g, q = jax.jit(f), jnp.ones((2, 8, 8))
    g(q)
    with A.attention_settings(implementation="full"):
        g(q)
    g(q)
    assert seen == [A.current_attention_settings().implementation, "full"]
    with pytest.raises(ValueError, match="implementation"):
        A.AttentionSettings(implementation="flash")
    with pytest.raises(ValueError, match="key_chunk"):
        A.AttentionSettings(key_chunk=0)
    with pytest.raises(ValueError, match="heads"):
        A.multihead_attention(jnp.ones((1, 4, 6)), jnp.ones((1, 4, 6)), jnp.ones((1, 4, 6)), 4)


def test_auto_choice():
    auto = A.AttentionSettings()
    expected = "cudnn" if jax.default_backend() == "gpu" else "blockwise"
    assert A.choose_implementation(8, 64, jnp.bfloat16, settings=auto) == expected
    assert A.choose_implementation(8, 64, jnp.float32, settings=auto) == "blockwise"
    assert A.choose_implementation(1, 512, jnp.bfloat16, settings=auto) == "blockwise"  # VAE head
    assert A.choose_implementation(8, 64, jnp.bfloat16, True, settings=auto) == "blockwise"
    assert A.choose_implementation(8, 64, jnp.bfloat16, settings=A.LEGACY) == "full"


@pytest.mark.parametrize("split", [(1000, 1024), (2560, 1024), (9216, 1024), (1021, 100)])
def test_split_covers_the_length(split):
    length, most = split
    blocks, chunk = A._split(length, most)
    assert chunk <= most and blocks * chunk >= length and (blocks - 1) * chunk < length


class _ReferenceFF(nn.Module):
    """The feed-forward as first written (nn.Dense modules, same parameter names)."""

    dim: int

    @nn.compact
    def __call__(self, x):
        class GEGLU(nn.Module):
            dim_out: int

            @nn.compact
            def __call__(self, x):
                h, gate = jnp.split(nn.Dense(self.dim_out * 2, name="proj")(x), 2, axis=-1)
                return h * jax.nn.gelu(gate, approximate=False)

        return nn.Dense(self.dim, name="net_2")(GEGLU(4 * self.dim, name="net_0")(x))


def test_feedforward_chunks_match_the_original():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((3, 37, 16)), jnp.float32)
    ff = A.FeedForward(16)
    params = ff.init(jax.random.key(0), x)
    ref_params = _ReferenceFF(16).init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ref_params)
    params = jax.tree.map(lambda a: a + 0.1 * jnp.asarray(rng.standard_normal(a.shape), a.dtype),
                          params)
    ref = np.asarray(_ReferenceFF(16).apply(params, x))
    with A.attention_settings(ff_block_bytes=0):
        whole = np.asarray(ff.apply(params, x))
    with A.attention_settings(ff_block_bytes=4 * 3 * 64 * 10):  # 10 tokens a chunk: padded tail
        chunked = np.asarray(jax.jit(ff.apply)(params, x))
    np.testing.assert_array_equal(whole, ref)
    np.testing.assert_allclose(chunked, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
