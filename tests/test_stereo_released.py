"""The released StereoCrafter-Zero run (``StereoCrafterZeroConfig.released()``) against
hand-written references: left queries in every attention, the text/image cross-attention
included (released ``BNAttention`` "uni"), and the preset's pipeline-level settings."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from szero_jax.models.attention import cross_view_index, cross_view_queries
from szero_jax.models.unet3d import ImageCrossAttention, TransformerBlock
from szero_jax.stereo.crafter_zero import StereoCrafterZeroConfig, build_events

DIM, HEADS, DIM_HEAD, TEXT, IMAGE = 8, 2, 4, 3, 2
CROSS = dict(image_cross_attention=True, scale_learnable=True, scale=0.7, text_len=TEXT)


def _np_attention(q, k, v, heads):
    """softmax(q k^T / sqrt(d)) v per head; q [B, N, H*D], k/v [B, M, H*D]."""
    b, n, inner = q.shape
    d = inner // heads
    split = lambda a: a.reshape(a.shape[0], a.shape[1], heads, d).transpose(0, 2, 1, 3)
    qh, kh, vh = split(q), split(k), split(v)
    logits = qh @ kh.transpose(0, 1, 3, 2) / np.sqrt(d)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return (w @ vh).transpose(0, 2, 1, 3).reshape(b, n, inner)


def _left_queries(q):
    """What BNAttention "uni" does to q, in place, before both ``sim`` and ``sim_ip``."""
    q = q.copy()
    q[q.shape[0] // 2:] = q[:q.shape[0] // 2]
    return q


def _np_cross_attention(p, x, context, share_queries):
    """lvdm CrossAttention as patched by the released regiter_attention_editor_diffusers:
    text to_k/to_v, image to_k_ip/to_v_ip, out + scale (tanh(alpha) + 1) out_ip."""
    dense = lambda name, a: a @ np.asarray(p[name]["kernel"])
    text, image = context[:, :TEXT], context[:, TEXT:]
    q = dense("to_q", x)
    if share_queries:
        q = _left_queries(q)
    out = _np_attention(q, dense("to_k", text), dense("to_v", text), HEADS)
    out_ip = _np_attention(q, dense("to_k_ip", image), dense("to_v_ip", image), HEADS)
    out = out + CROSS["scale"] * (np.tanh(float(p["alpha"])) + 1) * out_ip
    return out @ np.asarray(p["to_out"]["kernel"]) + np.asarray(p["to_out"]["bias"])


def _inputs(shared_context=True, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 5, DIM)).astype(np.float32)        # [left0, left1, right0, right1]
    ctx = rng.standard_normal((4, TEXT + IMAGE, DIM)).astype(np.float32)
    if shared_context:                                             # released: [aa, aa]
        ctx[2:] = ctx[:2]
    return x, ctx


def _init(module, x, ctx, **kw):
    params = module.init(jax.random.PRNGKey(1), x, ctx, **kw)["params"]
    if "alpha" in params:                      # a non-trivial learnable image scale
        params = dict(params, alpha=jnp.float32(0.3))
    return params


@pytest.mark.parametrize("mode", ["uni_query_all", "uni_query", "none"])
def test_image_cross_attention_matches_the_released_patch(mode):
    x, ctx = _inputs()
    attn = ImageCrossAttention(DIM, HEADS, DIM_HEAD, **CROSS)
    params = _init(attn, x, ctx)
    out = np.asarray(attn.apply({"params": params}, x, ctx, jnp.int32(cross_view_index(mode))))
    ref = _np_cross_attention(params, x, ctx, share_queries=mode == "uni_query_all")
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    if mode == "uni_query_all":    # shared context: the right's output is the left's
        np.testing.assert_allclose(out[2:], out[:2], rtol=1e-6, atol=1e-6)
    else:
        assert np.abs(out[2:] - out[:2]).max() > 1e-2
    none = attn.apply({"params": params}, x, ctx)          # cross_view None = "none"
    if mode == "none":
        np.testing.assert_allclose(out, np.asarray(none), rtol=1e-6, atol=1e-6)


def _np_layer_norm(p, x, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def _np_block(p, x, ctx, share_queries):
    """lvdm BasicTransformerBlock with BNAttention "uni" patched into attn1 and attn2."""
    lin = lambda q, a: a @ np.asarray(q["kernel"]) + (np.asarray(q["bias"]) if "bias" in q else 0)
    a1 = p["attn1"]
    h = _np_layer_norm(p["norm1"], x)
    q = lin(a1["to_q"], h)
    q = _left_queries(q) if share_queries else q
    x = lin(a1["to_out"], _np_attention(q, lin(a1["to_k"], h), lin(a1["to_v"], h), HEADS)) + x
    x = _np_cross_attention(p["attn2"], _np_layer_norm(p["norm2"], x), ctx, share_queries) + x
    h = lin(p["ff"]["net_0"]["proj"], _np_layer_norm(p["norm3"], x))
    h, gate = np.split(h, 2, axis=-1)
    gelu = np.asarray(jax.nn.gelu(jnp.asarray(gate), approximate=False))
    return lin(p["ff"]["net_2"], h * gelu) + x


def test_transformer_block_matches_the_released_patch():
    """One DynamiCrafter transformer block at a tiny size: ``uni_query_all`` = the left
    queries in the self- and the cross-attention; ``uni_query`` = in the self-attention only."""
    x, ctx = _inputs(seed=2)
    block = TransformerBlock(DIM, HEADS, DIM_HEAD, cross=CROSS)
    params = _init(block, x, ctx, cross_view=jnp.int32(0))
    params = dict(params, attn2=dict(params["attn2"], alpha=jnp.float32(0.3)))
    run = lambda mode: np.asarray(block.apply({"params": params}, x, ctx,
                                              jnp.int32(cross_view_index(mode))))
    out_all = run("uni_query_all")
    np.testing.assert_allclose(out_all, _np_block(params, x, ctx, True), rtol=1e-4, atol=1e-5)
    # uni_query shares the self-attention's queries only: the cross-attention still sees
    # the right view's own queries, so the block differs from the released patch
    out_self = run("uni_query")
    assert np.abs(out_self[2:] - out_all[2:]).max() > 1e-3
    np.testing.assert_allclose(out_self[:2], out_all[:2], rtol=1e-6, atol=1e-6)  # left untouched


def test_cross_view_queries_needs_two_views():
    with pytest.raises(ValueError, match="even batch"):
        cross_view_queries(jnp.zeros((3, 2, 4)), jnp.int32(cross_view_index("uni_query_all")))
    q = jnp.arange(8.0).reshape(2, 1, 4)
    assert cross_view_queries(q, None) is q


def test_released_preset_carries_the_released_run():
    cfg = StereoCrafterZeroConfig.released()
    assert cfg.cross_view == "uni_query_all"
    assert cfg.guidance_rescale == 0.0       # p_sample_ddim: rescale commented out
    assert cfg.dissolve_cfg is False         # forward_and_dissolve: conditional call only
    assert cfg.depth_normalisation == "none"  # DepthCrafter output used as is
    ev = build_events(cfg, 50)
    on = ev.mode != cross_view_index("none")
    assert set(np.unique(ev.mode[on])) == {cross_view_index("uni_query_all")}
    paper = StereoCrafterZeroConfig()
    assert (paper.cross_view, paper.guidance_rescale, paper.dissolve_cfg,
            paper.depth_normalisation) == ("uni_query", None, True, "percentiles")
    with pytest.raises(ValueError, match="depth_normalisation"):
        dataclasses.replace(paper, depth_normalisation="minmax").validate(50)
    with pytest.raises(ValueError, match="guidance_rescale"):
        dataclasses.replace(paper, guidance_rescale=1.5).validate(50)
