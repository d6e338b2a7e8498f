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

import dataclasses
import math
import os
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

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


# ----------------------------------------------------------------------------- implementation
# full:      the original path, bit-identical: the whole [B, heads, N, M] logits in the input
#            dtype, then float32 softmax. Kept as the reference and the "before" of
#            experiments/benchmark_memory.py.
# blockwise: online softmax over key blocks (Rabe & Staats 2021, "Self-attention does not
#            need O(n^2) memory"; FlashAttention's recurrence), with queries and batch rows in
#            chunks too, so that one block's float32 logits stay under ``block_bytes``. Small
#            inputs are one block: the full computation with float32 logits. Pure JAX.
# xla:       ``jax.nn.dot_product_attention(implementation="xla")`` (materialises the logits).
# cudnn:     ``jax.nn.dot_product_attention(implementation="cudnn")``: cuDNN's fused
#            flash-attention kernel (GPU only; bfloat16/float16, head size <= 128, no mask).
# auto:      cudnn on a GPU where it applies, blockwise otherwise.
IMPLEMENTATIONS = ("auto", "full", "blockwise", "xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class AttentionSettings:
    """How ``multihead_attention`` and ``FeedForward`` compute. Read when a function is
    traced: set it with ``attention_settings(...)`` (a context) or
    ``set_attention_settings(...)`` (process-wide); both are part of ``jax.jit``'s cache key,
    so a change re-traces. The environment variable ``SZERO_ATTENTION`` sets the default
    implementation (the tests run every network on each path with it)."""

    implementation: str = "auto"
    query_chunk: int = 1024  # longest query block of the blockwise path
    key_chunk: int = 1024  # longest key block of the blockwise path
    block_bytes: int = 64 << 20  # blockwise: float32 logits of one block (rows x heads)
    # FeedForward: token chunks whose GEGLU intermediates (3 x inner per token, counted in
    # float32) fit this; 0 runs all tokens at once (the original).
    ff_block_bytes: int = 128 << 20

    def __post_init__(self):
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got "
                             f"{self.implementation!r}")
        for name in ("query_chunk", "key_chunk", "block_bytes"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if int(self.ff_block_bytes) < 0:
            raise ValueError(f"ff_block_bytes must be >= 0, got {self.ff_block_bytes}")


# The settings of the code before blockwise attention and chunked feed-forward (the "before"
# column of experiments/benchmark_memory.py).
LEGACY = AttentionSettings(implementation="full", ff_block_bytes=0)

_SETTINGS = jax.make_user_context(
    AttentionSettings(implementation=os.environ.get("SZERO_ATTENTION", "auto")))


def current_attention_settings() -> AttentionSettings:
    """The settings the next traced attention uses."""
    return _SETTINGS.value


def attention_settings(settings: Optional[AttentionSettings] = None, **changes):
    """Context manager: ``with attention_settings(implementation="blockwise"): ...`` (fields
    not given keep their current values), or pass a whole ``AttentionSettings``."""
    base = current_attention_settings() if settings is None else settings
    return _SETTINGS(dataclasses.replace(base, **changes))


def set_attention_settings(settings: Optional[AttentionSettings] = None, **changes) -> None:
    """Set the process-wide default (what pipelines call once, before tracing)."""
    base = _SETTINGS.get_global() if settings is None else settings
    _SETTINGS.set_global(dataclasses.replace(base, **changes))


def _cudnn_applies(dtype, head_dim: int, has_mask: bool) -> bool:
    # cuDNN's fused attention: half precision, head size a multiple of 8 up to 128.
    return (jax.default_backend() == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
            and head_dim % 8 == 0 and head_dim <= 128 and not has_mask)


def choose_implementation(heads: int, head_dim: int, dtype, has_mask: bool = False,
                          settings: Optional[AttentionSettings] = None) -> str:
    """The path ``multihead_attention`` takes (an explicit setting wins over "auto")."""
    s = settings or current_attention_settings()
    if s.implementation != "auto":
        return s.implementation
    return "cudnn" if _cudnn_applies(dtype, head_dim, has_mask) else "blockwise"


def _split(length: int, max_chunk: int):
    """(blocks, chunk) with chunk <= ``max_chunk``: the fewest equal blocks that divide
    ``length`` exactly (up to twice the minimum count), else balanced blocks rounded up to a
    multiple of 8 with the tail padded."""
    least = -(-length // max_chunk)
    for blocks in range(least, 2 * least + 1):
        if length % blocks == 0:
            return blocks, length // blocks
    chunk = -(-(-(-length // least)) // 8) * 8
    return -(-length // chunk), chunk


def _loop_buffer(inputs, shape, dtype):
    """The buffer a chunked loop writes its results into: its own input where the shapes
    match (each chunk is read before its slot is overwritten, so XLA updates in place and
    needs no second buffer), else zeros. (A zero constant would be shared by every loop of
    that shape and each loop's private copy of it scheduled early, all live at once.)"""
    if inputs.shape == tuple(shape) and inputs.dtype == dtype:
        return inputs
    return jnp.zeros(shape, dtype)


def _batch_chunk(batch: int, bytes_per_row: int, budget: int) -> int:
    """The largest divisor of ``batch`` whose rows' block logits fit ``budget`` (at least 1)."""
    limit = max(1, budget // max(bytes_per_row, 1))
    return max(d for d in range(1, min(batch, limit) + 1) if batch % d == 0)


def _pad_axis(x, axis: int, size: int, value=0):
    if x.shape[axis] == size:
        return x
    pads = [(0, 0)] * x.ndim
    pads[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, pads, constant_values=value)


def _slice(x, start, size: int, axis: int):
    """Block of a (possibly broadcast, size-1) axis."""
    if x.shape[axis] == 1:
        return x
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis)


_MASKED = float(jnp.finfo(jnp.float32).min)  # as the full path: fully masked rows go uniform


def _full(qh, kh, vh, mask):
    """The original path (bit-identical): logits in the input dtype, softmax in float32."""
    logits = jnp.einsum("bnhd,bmhd->bhnm", qh, kh).astype(jnp.float32) / math.sqrt(qh.shape[-1])
    if mask is not None:
        logits = jnp.where(mask, logits, _MASKED)
    weights = jax.nn.softmax(logits, axis=-1).astype(vh.dtype)
    return jnp.einsum("bhnm,bmhd->bnhd", weights, vh)


def _blockwise(qh, kh, vh, mask, scale, s: AttentionSettings):
    """Online-softmax attention over key blocks, for one block of batch rows and queries at a
    time: float32 logits, running maxima and sums, output accumulated in float32. The scale
    is applied inside the exponent (a positive scale keeps the maxima): no logits-sized
    constant for XLA to materialise."""
    b, n, h, d = qh.shape
    m = kh.shape[1]
    nq, qc = _split(n, s.query_chunk)
    nk, kc = _split(m, s.key_chunk)
    bc = _batch_chunk(b, 4 * h * qc * kc, s.block_bytes)
    nb = b // bc
    qh = _pad_axis(qh, 1, nq * qc)
    kh, vh = _pad_axis(kh, 1, nk * kc), _pad_axis(vh, 1, nk * kc)
    if mask is not None:
        mask = jnp.asarray(mask, bool)
        mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
        if mask.shape[2] > 1:
            mask = _pad_axis(mask, 2, nq * qc, False)
        if mask.shape[3] > 1:
            mask = _pad_axis(mask, 3, nk * kc, False)
    key_pad = nk * kc != m

    def logits_of(q, k, ib, iq, ik):
        lg = jnp.einsum("bnhd,bmhd->bhnm", q, k, preferred_element_type=jnp.float32)
        if mask is not None:
            blk = _slice(_slice(_slice(mask, ib * bc, bc, 0), iq * qc, qc, 2), ik * kc, kc, 3)
            lg = jnp.where(blk, lg, _MASKED)
        if key_pad:
            valid = ik * kc + jnp.arange(kc) < m
            lg = jnp.where(valid, lg, -jnp.inf)
        return lg

    def pv(p, v):
        return jnp.einsum("bhnm,bmhd->bhnd", p.astype(v.dtype), v,
                          preferred_element_type=jnp.float32)

    def block(i, out):  # ``out`` starts as the queries: block i reads its own before writing
        ib, iq = i // nq, i % nq
        q = _slice(_slice(qh if out is None else out, ib * bc, bc, 0), iq * qc, qc, 1)
        k_rows, v_rows = _slice(kh, ib * bc, bc, 0), _slice(vh, ib * bc, bc, 0)
        if nk == 1:
            lg = logits_of(q, k_rows, ib, iq, 0)
            p = jnp.exp((lg - lg.max(-1, keepdims=True)) * scale)
            res = pv(p, v_rows) / p.sum(-1)[..., None]
        else:
            def key_step(ik, carry):
                mx, tot, acc = carry
                k = jax.lax.dynamic_slice_in_dim(k_rows, ik * kc, kc, 1)
                v = jax.lax.dynamic_slice_in_dim(v_rows, ik * kc, kc, 1)
                lg = logits_of(q, k, ib, iq, ik)
                new = jnp.maximum(mx, lg.max(-1))
                p = jnp.exp((lg - new[..., None]) * scale)
                corr = jnp.exp((mx - new) * scale)
                return new, tot * corr + p.sum(-1), acc * corr[..., None] + pv(p, v)

            init = (jnp.full((bc, h, qc), _MASKED, jnp.float32),
                    jnp.zeros((bc, h, qc), jnp.float32), jnp.zeros((bc, h, qc, d), jnp.float32))
            _, tot, acc = jax.lax.fori_loop(0, nk, key_step, init)
            res = acc / tot[..., None]
        res = res.astype(vh.dtype).transpose(0, 2, 1, 3)  # [bc, qc, h, d]
        if nb * nq == 1:
            return res
        return jax.lax.dynamic_update_slice(out, res, (ib * bc, iq * qc, 0, 0))

    if nb * nq == 1:
        return block(0, None)[:, :n]
    out = jax.lax.fori_loop(0, nb * nq, block, _loop_buffer(qh, qh.shape, vh.dtype))
    return out[:, :n]


def _dot_product(qh, kh, vh, mask, scale, implementation: str):
    if mask is not None:
        mask = jnp.asarray(mask, bool)
        mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    return jax.nn.dot_product_attention(qh, kh, vh, mask=mask, scale=scale,
                                        implementation=implementation)


def multihead_attention(q, k, v, heads: int, mask=None):
    """Scaled dot-product attention. q [B, N, H*D], k/v [B, M, H*D] -> [B, N, H*D].

    ``mask`` (optional) broadcasts to [B, heads, N, M]; True = attend. Softmax in float32.
    The path (see ``IMPLEMENTATIONS``) comes from ``current_attention_settings()``.
    """
    b, n, inner = q.shape
    if inner % heads:
        raise ValueError(f"heads ({heads}) must divide the query width {inner}")
    d = inner // heads
    m = k.shape[1]
    qh = q.reshape(b, n, heads, d)
    kh = k.reshape(b, m, heads, d)
    vh = v.reshape(b, m, heads, d)
    scale = 1.0 / math.sqrt(d)
    s = current_attention_settings()
    impl = choose_implementation(heads, d, q.dtype, mask is not None, s)
    if impl == "full":
        out = _full(qh, kh, vh, mask)
    elif impl == "blockwise":
        out = _blockwise(qh, kh, vh, mask, scale, s)
    else:
        out = _dot_product(qh, kh, vh, mask, scale, impl)
    return out.reshape(b, n, inner)


def _halves(x):
    b = x.shape[0] // 2
    return x[:b], x[b:]


def _join_views(x):
    """[2b, n, c] view-major -> [b, 2n, c]: each pair's left then right tokens in one row."""
    left, right = _halves(x)
    return jnp.concatenate([left, right], axis=1)


def _split_views(y):
    """Inverse of ``_join_views``."""
    n = y.shape[1] // 2
    return jnp.concatenate([y[:, :n], y[:, n:]], axis=0)


def cross_view_attention(q, k, v, heads: int, mode):
    """Self-attention with a cross-view ``mode`` (int32 scalar, see ``CROSS_VIEW_MODES``).

    Where both views read the same keys (``uni``: the left's; ``bi``: both views'), the two
    views' queries are joined in one row instead of the keys being repeated for each view:
    the same arithmetic with half (``uni``) or a quarter (``bi``) of the key/value copies.
    """

    def none(q, k, v):
        return multihead_attention(q, k, v, heads)

    def uni(q, k, v):
        kl, _ = _halves(k)
        vl, _ = _halves(v)
        return _split_views(multihead_attention(_join_views(q), kl, vl, heads))

    def uni_query(q, k, v):
        ql, _ = _halves(q)
        return multihead_attention(jnp.concatenate([ql, ql]), k, v, heads)

    def bi(q, k, v):
        return _split_views(multihead_attention(_join_views(q), _join_views(k), _join_views(v),
                                                heads))

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


class DenseParams(nn.Module):
    """The ``kernel`` [in, features] and ``bias`` of an ``nn.Dense`` (same names, shapes and
    initialisers), returned instead of applied, so the arithmetic can run inside a loop."""

    features: int

    @nn.compact
    def __call__(self, in_features: int):
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (in_features, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        return kernel, bias


def dense(x, kernel, bias, dtype):
    """``nn.Dense``'s arithmetic (promote to ``dtype``, contract the last axis, add bias)."""
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=dtype)
    y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
    return y + bias.reshape((1,) * (y.ndim - 1) + (-1,))


class _GEGLUParams(nn.Module):
    """``ff.net.0`` (lvdm and diffusers ``GEGLU``): its ``proj`` to twice the inner width."""

    dim_out: int

    @nn.compact
    def __call__(self, in_features: int):
        return DenseParams(2 * self.dim_out, name="proj")(in_features)


def map_token_chunks(fn, x, rows: int):
    """``fn`` over the tokens of ``x`` [..., C] (all leading axes flattened), ``rows`` tokens
    at a time in a loop (the tail padded); ``fn`` maps [rows, C] -> [rows, C']."""
    lead, c = x.shape[:-1], x.shape[-1]
    flat = x.reshape(-1, c)
    total = flat.shape[0]
    blocks, rows = _split(total, max(int(rows), 1))
    if blocks == 1:
        out = fn(flat)
        return out.reshape(lead + out.shape[-1:])
    flat = _pad_axis(flat, 0, blocks * rows)
    width = jax.eval_shape(fn, jax.ShapeDtypeStruct((rows, c), x.dtype))

    buffer = _loop_buffer(flat, (blocks * rows,) + width.shape[1:], width.dtype)
    in_place = buffer is flat

    def body(i, out):  # in place: chunk i is read from ``out`` before it is overwritten
        part = fn(jax.lax.dynamic_slice_in_dim(out if in_place else flat, i * rows, rows, 0))
        return jax.lax.dynamic_update_slice_in_dim(out, part, i * rows, 0)

    out = jax.lax.fori_loop(0, blocks, body, buffer)
    return out[:total].reshape(lead + width.shape[1:])


class FeedForward(nn.Module):
    """GEGLU feed-forward with inner width ``mult * dim`` (``ff.net.0.proj`` / ``ff.net.2``),
    run over chunks of tokens when its intermediates would pass ``ff_block_bytes``
    (``AttentionSettings``; diffusers' ``enable_forward_chunking`` does the same)."""

    dim: int
    mult: int = 4
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        inner = self.dim * self.mult
        k1, b1 = _GEGLUParams(inner, name="net_0")(x.shape[-1])
        k2, b2 = DenseParams(self.dim, name="net_2")(inner)

        def ff(t):
            h, gate = jnp.split(dense(t, k1, b1, self.dtype), 2, axis=-1)
            return dense(h * jax.nn.gelu(gate, approximate=False), k2, b2, self.dtype)

        budget = current_attention_settings().ff_block_bytes
        if not budget:
            return ff(x)
        return map_token_chunks(ff, x, budget // (4 * 3 * inner))
