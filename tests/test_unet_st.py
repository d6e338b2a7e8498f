"""Parity of the Flax DepthCrafter UNet with diffusers ``UNetSpatioTemporalConditionModel``."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel

from convert.common import convert_to_tree
from szero_jax.models.attention import cross_view_index
from szero_jax.models.configs import UNetSTConfig
from szero_jax.models.unet_keymap import diffusers_unet_key
from szero_jax.models.unet_st import TemporalBasicTransformerBlock, UNetSpatioTemporal

TINY = UNetSTConfig(block_out_channels=(32, 64), layers_per_block=1, heads=(2, 4),
                    cross_attention_dim=24, cross_attn=(True, False), addition_time_embed_dim=8)


def torch_unet(cfg: UNetSTConfig, seed=0):
    """The diffusers twin of ``cfg``, every parameter ~ N(0, 0.2^2) (zero-init layers too)."""
    down = tuple("CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal"
                 for a in cfg.cross_attn)
    up = tuple("CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal"
               for a in reversed(cfg.cross_attn))
    torch.manual_seed(seed)
    model = UNetSpatioTemporalConditionModel(
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, down_block_types=down,
        up_block_types=up, block_out_channels=cfg.block_out_channels,
        addition_time_embed_dim=cfg.addition_time_embed_dim,
        projection_class_embeddings_input_dim=cfg.num_time_ids * cfg.addition_time_embed_dim,
        layers_per_block=cfg.layers_per_block, cross_attention_dim=cfg.cross_attention_dim,
        num_attention_heads=cfg.heads)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model.eval()


@torch.no_grad()
def depthcrafter_forward(m, sample, t, ctx, time_ids):
    """DepthCrafter's forward (depthcrafter/unet.py): as diffusers', but ``ctx [B, T, D]``
    gives frame ``i`` its own token (``[B*T, 1, D]``) instead of repeating one over frames."""
    b, f = sample.shape[:2]
    emb = m.time_embedding(m.time_proj(t.expand(b)))
    emb = emb + m.add_embedding(m.add_time_proj(time_ids.flatten()).reshape(b, -1))
    emb = emb.repeat_interleave(f, dim=0)
    ctx = ctx.flatten(0, 1).unsqueeze(1)
    indicator = torch.zeros(b, f)
    h = m.conv_in(sample.flatten(0, 1))
    skips = (h,)
    for blk in m.down_blocks:
        extra = dict(encoder_hidden_states=ctx) if getattr(blk, "has_cross_attention", False) else {}
        h, res = blk(hidden_states=h, temb=emb, image_only_indicator=indicator, **extra)
        skips += res
    h = m.mid_block(hidden_states=h, temb=emb, encoder_hidden_states=ctx, image_only_indicator=indicator)
    for blk in m.up_blocks:
        n = len(blk.resnets)
        res, skips = skips[-n:], skips[:-n]
        extra = dict(encoder_hidden_states=ctx) if getattr(blk, "has_cross_attention", False) else {}
        h = blk(hidden_states=h, res_hidden_states_tuple=res, temb=emb, image_only_indicator=indicator, **extra)
    h = m.conv_out(m.conv_act(m.conv_norm_out(h)))
    return h.reshape(b, f, *h.shape[1:])


def inputs(cfg, b=2, f=3, size=(8, 8), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, f, *size, cfg.in_channels)).astype(np.float32)
    ctx = rng.standard_normal((b, f, cfg.cross_attention_dim)).astype(np.float32)
    return x, np.array([0.3, -1.2], np.float32)[:b], ctx


def convert(model, cfg, x, ctx):
    target = jax.eval_shape(lambda: UNetSpatioTemporal(cfg).init(
        jax.random.PRNGKey(0), x, jnp.zeros(x.shape[0]), ctx))
    items = ((k, v.numpy()) for k, v in model.state_dict().items())
    return {"params": jax.tree.map(jnp.asarray, convert_to_tree(items, diffusers_unet_key, target))}


def assert_close(out, ref):
    assert out.shape == ref.shape
    err, scale = np.abs(out - ref).max(), np.abs(ref).max()
    assert err <= 1e-4 * scale, (err, scale)


def torch_ref(model, x, t, ctx, per_frame=True):
    """DepthCrafter's forward (per-frame tokens) or, with ``ctx[:, :1]``, the stock one."""
    ids = torch.tensor([[7.0, 127.0, 0.02]] * x.shape[0])  # depth_crafter_ppl.py time ids
    sample = torch.from_numpy(x).permute(0, 1, 4, 2, 3)
    tt, cc = torch.from_numpy(t[:1]), torch.from_numpy(ctx)
    with torch.no_grad():
        out = depthcrafter_forward(model, sample, tt, cc, ids) if per_frame else \
            model(sample, tt, cc[:, :1], ids).sample
    return out.permute(0, 1, 3, 4, 2).numpy()


def test_unet_st_matches_diffusers_and_takes_cross_view():
    # One compile (cross_view traced; mode "none" is plain self-attention).
    model = torch_unet(TINY)
    x, t, ctx = inputs(TINY)
    params = convert(model, TINY, x, ctx)
    apply = jax.jit(UNetSpatioTemporal(TINY).apply)
    run = lambda c, mode="none": np.asarray(
        apply(params, x, t[0], c, cross_view=jnp.int32(cross_view_index(mode))))
    none = run(ctx)  # default time ids (7, 127, 0.02)
    assert_close(none, torch_ref(model, x, t, ctx))
    # One token repeated over the frames: the stock diffusers (SVD) forward.
    assert_close(run(np.repeat(ctx[:, :1], x.shape[1], axis=1)), torch_ref(model, x, t, ctx, False))
    uni = run(ctx, "uni")
    np.testing.assert_allclose(uni[0], none[0], atol=1e-5)  # the left view is untouched
    assert np.abs(uni[1] - none[1]).max() > 1e-3 * np.abs(none[1]).max()


@pytest.mark.slow
def test_unet_st_plain_path_and_time_ids():
    cfg = dataclasses.replace(TINY, layers_per_block=2)
    model = torch_unet(cfg, seed=1)
    x, t, ctx = inputs(cfg, f=4, size=(16, 8), seed=1)
    params = convert(model, cfg, x, ctx)
    apply = jax.jit(UNetSpatioTemporal(cfg).apply)
    assert_close(np.asarray(apply(params, x, t[0], ctx)), torch_ref(model, x, t, ctx))
    ids = np.array([[6.0, 100.0, 0.1], [3.0, 20.0, 0.0]], np.float32)
    out = np.asarray(apply(params, x, t[0], ctx, jnp.asarray(ids)))
    with torch.no_grad():
        ref = depthcrafter_forward(model, torch.from_numpy(x).permute(0, 1, 4, 2, 3),
                                   torch.from_numpy(t[:1]), torch.from_numpy(ctx), torch.from_numpy(ids))
    assert_close(out, ref.permute(0, 1, 3, 4, 2).numpy())


def test_temporal_self_attention_takes_cross_view():
    blk = TemporalBasicTransformerBlock(dim=8, heads=2, dim_head=4, context_dim=6, num_frames=3)
    rng = np.random.default_rng(0)
    h = rng.standard_normal((2 * 3, 5, 8), np.float32)  # 2 views x 3 frames, 5 positions
    tctx = rng.standard_normal((2 * 5, 1, 6), np.float32)
    params = jax.jit(blk.init)(jax.random.PRNGKey(2), h, tctx)
    apply = jax.jit(blk.apply)
    none = apply(params, h, tctx, jnp.int32(cross_view_index("none")))
    uq = apply(params, h, tctx, jnp.int32(cross_view_index("uni_query")))
    np.testing.assert_allclose(uq[:3], none[:3], atol=1e-6)  # left view's frames unchanged
    assert float(jnp.abs(uq[3:] - none[3:]).max()) > 1e-2


def test_bad_input_names_argument():
    net = UNetSpatioTemporal(TINY)
    x = jnp.zeros((1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="context must be"):
        net.init(jax.random.PRNGKey(0), x, jnp.zeros(1), jnp.zeros((1, 1, 24)))
    with pytest.raises(ValueError, match="added_time_ids must be"):
        net.init(jax.random.PRNGKey(0), x, jnp.zeros(1), jnp.zeros((1, 2, 24)), jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="x must be"):
        net.init(jax.random.PRNGKey(0), x[..., :4], jnp.zeros(1), jnp.zeros((1, 2, 24)))
