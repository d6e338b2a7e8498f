"""Multi-head attention shared by every network, with the stereo cross-view modes.

Views are stacked on the batch axis, view-major: a batch of ``2 * b`` rows holds the left
views in rows ``[0, b)`` and the right views in rows ``[b, 2b)``. Anything else that is
batched (classifier-free guidance halves, prompts, frames folded into the batch by a video
network) lives *inside* each half, in the same order for both views, so row ``i`` of the
left half is the partner of row ``i`` of the right half.

The mode is data, not structure: an int32 scalar chosen per diffusion step by the samplers,
dispatched with ``lax.switch`` (XLA executes only the taken branch).
"""
from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

# none:      each view attends to itself.
# uni:       the right view attends to the left view's keys/values (StereoDiffusion, Alg. 1;
#            its released "uni" lets both views read the left K/V, which is the same thing).
# uni_query: the right view uses the left view's queries (released StereoCrafter-Zero
#            `BNAttention` "uni").
# bi:        both views attend to the keys/values of both (StereoDiffusion "bi").
# swap:      the views exchange keys/values (released StereoCrafter-Zero `BNAttention` "bi").
# uni_query_all: uni_query in self-attention and also in the text/image cross-attention of
#            the networks that take it (DynamiCrafter's ``attn2``, ``cross_view_queries``):
#            released `BNAttention` "uni" as it runs, its in-place edit of q reaches ``sim``
#            and ``sim_ip``. (The paper, Sec. 4.1, keeps cross-attention apart.)
CROSS_VIEW_MODES = ("none", "uni", "uni_query", "bi", "swap", "uni_query_all")


def cross_view_index(mode: str) -> int:
    """The int code of a named cross-view mode (what the samplers put in their step arrays)."""
    if mode not in CROSS_VIEW_MODES:
        raise ValueError(f"cross_view mode must be one of {CROSS_VIEW_MODES}, got {mode!r}")
    return CROSS_VIEW_MODES.index(mode)


def multihead_attention(q, k, v, heads: int, mask=None):
    """Scaled dot-product attention. q [B, N, H*D], k/v [B, M, H*D] -> [B, N, H*D].

    ``mask`` (optional) broadcasts to [B, heads, N, M]; True = attend. Softmax in float32.
    """
    b, n, inner = q.shape
    d = inner // heads
    qh = q.reshape(b, n, heads, d)
    kh = k.reshape(b, k.shape[1], heads, d)
    vh = v.reshape(b, v.shape[1], heads, d)
    logits = jnp.einsum("bnhd,bmhd->bhnm", qh, kh).astype(jnp.float32) / math.sqrt(d)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhnm,bmhd->bnhd", weights, vh).reshape(b, n, inner)


def _halves(x):
    b = x.shape[0] // 2
    return x[:b], x[b:]


def cross_view_attention(q, k, v, heads: int, mode):
    """Self-attention with a cross-view ``mode`` (int32 scalar, see ``CROSS_VIEW_MODES``)."""

    def none(q, k, v):
        return multihead_attention(q, k, v, heads)

    def uni(q, k, v):
        kl, _ = _halves(k)
        vl, _ = _halves(v)
        return multihead_attention(q, jnp.concatenate([kl, kl]), jnp.concatenate([vl, vl]), heads)

    def uni_query(q, k, v):
        ql, _ = _halves(q)
        return multihead_attention(jnp.concatenate([ql, ql]), k, v, heads)

    def bi(q, k, v):
        kl, kr = _halves(k)
        vl, vr = _halves(v)
        kb = jnp.concatenate([kl, kr], axis=1)
        vb = jnp.concatenate([vl, vr], axis=1)
        return multihead_attention(q, jnp.concatenate([kb, kb]), jnp.concatenate([vb, vb]), heads)

    def swap(q, k, v):
        kl, kr = _halves(k)
        vl, vr = _halves(v)
        return multihead_attention(q, jnp.concatenate([kr, kl]), jnp.concatenate([vr, vl]), heads)

    if q.shape[0] % 2:
        raise ValueError(
            f"cross-view attention needs the two views stacked on the batch axis (an even "
            f"batch), got batch {q.shape[0]}")
    branches = [none, uni, uni_query, bi, swap, uni_query]   # order of CROSS_VIEW_MODES
    return jax.lax.switch(jnp.asarray(mode, jnp.int32), branches, q, k, v)


def cross_view_queries(q, mode):
    """The queries of a cross-attention (to a context) under a cross-view ``mode`` (int32
    scalar or None): with ``uni_query_all`` the right view's rows take the left view's, so
    with a shared context its output equals the left's; unchanged under every other mode."""
    if mode is None:
        return q
    if q.shape[0] % 2:
        raise ValueError(f"cross-view queries need the two views stacked on the batch axis "
                         f"(an even batch), got batch {q.shape[0]}")
    ql, _ = _halves(q)
    share = jnp.asarray(mode, jnp.int32) == CROSS_VIEW_MODES.index("uni_query_all")
    return jnp.where(share, jnp.concatenate([ql, ql]), q)


class Attention(nn.Module):
    """Attention with PyTorch-style ``to_q``/``to_k``/``to_v``/``to_out`` projections.

    Self-attention when ``context`` is None; then ``cross_view`` (int32 scalar or None)
    selects a cross-view mode. Cross-attention (a context is given) ignores ``cross_view``:
    both papers share only self-attention.
    """

    query_dim: int
    heads: int
    dim_head: int
    context_dim: Optional[int] = None
    out_bias: bool = True
    qkv_bias: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context=None, cross_view=None, mask=None):
        inner = self.heads * self.dim_head
        dense = lambda name, bias=self.qkv_bias: nn.Dense(
            inner, use_bias=bias, dtype=self.dtype, name=name)
        src = x if context is None else context
        q, k, v = dense("to_q")(x), dense("to_k")(src), dense("to_v")(src)
        if context is None and cross_view is not None and mask is None:
            out = cross_view_attention(q, k, v, self.heads, cross_view)
        else:
            out = multihead_attention(q, k, v, self.heads, mask)
        return nn.Dense(self.query_dim, use_bias=self.out_bias, dtype=self.dtype, name="to_out")(out)


class GEGLU(nn.Module):
    """GELU-gated linear unit (``ff.net.0.proj`` in lvdm and diffusers)."""

    dim_out: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h, gate = jnp.split(nn.Dense(self.dim_out * 2, dtype=self.dtype, name="proj")(x), 2, axis=-1)
        return h * jax.nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
    """GEGLU feed-forward with inner width ``mult * dim`` (``ff.net.0`` / ``ff.net.2``)."""

    dim: int
    mult: int = 4
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = GEGLU(self.dim * self.mult, dtype=self.dtype, name="net_0")(x)
        return nn.Dense(self.dim, dtype=self.dtype, name="net_2")(h)
