"""Parity of the Flax SD UNet with diffusers ``UNet2DConditionModel`` (tiny, random weights)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from convert.common import convert_to_tree
from szero_jax.models.attention import cross_view_index
from szero_jax.models.configs import UNet2DConfig
from szero_jax.models.unet2d import UNet2DCondition
from szero_jax.models.unet_keymap import diffusers_unet_key

# SD 2 depth-like: 5 input channels; the conv/linear projection variants share the Flax params.
TINY = dict(in_channels=5, block_out_channels=(32, 64), layers_per_block=1, heads=(2, 4),
            cross_attention_dim=24, cross_attn=(True, False))


def torch_unet(cfg: UNet2DConfig, seed=0):
    """The diffusers twin of ``cfg``, every parameter ~ N(0, 0.2^2) (zero-init layers too)."""
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.cross_attn)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.cross_attn))
    torch.manual_seed(seed)
    model = UNet2DConditionModel(
        sample_size=cfg.sample_size, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
        down_block_types=down, up_block_types=up, block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block, attention_head_dim=cfg.heads,
        cross_attention_dim=cfg.cross_attention_dim, use_linear_projection=cfg.use_linear_projection,
        norm_eps=cfg.norm_eps, flip_sin_to_cos=cfg.flip_sin_to_cos, freq_shift=cfg.freq_shift)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model.eval()


def run_torch(model, x, t, ctx):
    with torch.no_grad():
        out = model(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(t), torch.from_numpy(ctx))
    return out.sample.permute(0, 2, 3, 1).numpy()


def convert(model, cfg, x, ctx):
    target = jax.eval_shape(lambda: UNet2DCondition(cfg).init(
        jax.random.PRNGKey(0), x, jnp.zeros(x.shape[0]), ctx))
    items = ((k, v.numpy()) for k, v in model.state_dict().items())
    return {"params": jax.tree.map(jnp.asarray, convert_to_tree(items, diffusers_unet_key, target))}


def inputs(cfg, size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, *size, cfg.in_channels)).astype(np.float32)
    ctx = rng.standard_normal((2, 5, cfg.cross_attention_dim)).astype(np.float32)
    return x, np.array([3.0, 811.0], np.float32), ctx


def assert_close(out, ref):
    assert out.shape == ref.shape
    err, scale = np.abs(out - ref).max(), np.abs(ref).max()
    assert err <= 1e-4 * scale, (err, scale)


def check_parity(cfg, size, variants, cross_view=None):
    """Flax vs diffusers for each projection variant; returns the last (params, inputs, apply)."""
    x, t, ctx = inputs(cfg, size)
    apply = jax.jit(UNet2DCondition(cfg).apply)
    for linear in variants:
        model = torch_unet(dataclasses.replace(cfg, use_linear_projection=linear))
        params = convert(model, cfg, x, ctx)
        assert_close(np.asarray(apply(params, x, t, ctx, cross_view=cross_view)), run_torch(model, x, t, ctx))
    return params, (x, t, ctx), apply


def test_unet2d_matches_diffusers_and_takes_cross_view():
    # One compile (cross_view traced): mode "none" is plain self-attention, checked against
    # diffusers; 9x14 is not a multiple of 2, so the up path resizes to the skip connection.
    none = jnp.int32(cross_view_index("none"))
    params, (x, t, ctx), apply = check_parity(UNet2DConfig(**TINY), (9, 14), (False, True), none)
    base = np.asarray(apply(params, x, t, ctx, cross_view=none))
    uni = np.asarray(apply(params, x, t, ctx, cross_view=jnp.int32(cross_view_index("uni"))))
    # "uni": the left view (row 0) keeps its own keys/values; the right view reads the left's.
    np.testing.assert_allclose(uni[0], base[0], atol=1e-5)
    assert np.abs(uni[1] - base[1]).max() > 1e-3 * np.abs(base[1]).max()  # >> float noise


@pytest.mark.slow
def test_unet2d_matches_diffusers_three_levels():
    cfg = UNet2DConfig(block_out_channels=(32, 32, 64), layers_per_block=2, heads=(2, 2, 4),
                       cross_attention_dim=24, cross_attn=(True, True, False))
    check_parity(cfg, (16, 16), variants=(False, True))  # cross_view=None: no switch compiled


def test_bad_input_names_argument():
    net = UNet2DCondition(UNet2DConfig(**TINY))
    with pytest.raises(ValueError, match="x must be"):
        net.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 4)), jnp.zeros(1), jnp.zeros((1, 2, 24)))
    with pytest.raises(ValueError, match="context must be"):
        net.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 5)), jnp.zeros(1), jnp.zeros((1, 2, 7)))


@pytest.mark.parametrize("key, path", [
    ("conv_in.weight", "conv_in/kernel"),
    ("time_embedding.linear_1.bias", "time_embedding/linear_1/bias"),
    ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0.weight",
     "down_blocks_1_attentions_0/transformer_blocks_0/attn1/to_out/kernel"),
    ("up_blocks.2.attentions.1.transformer_blocks.0.ff.net.0.proj.weight",
     "up_blocks_2_attentions_1/transformer_blocks_0/ff/net_0/proj/kernel"),
    ("mid_block.resnets.1.norm2.weight", "mid_block_resnets_1/norm2/scale"),
    ("down_blocks.0.attentions.0.time_mixer.mix_factor", "down_blocks_0_attentions_0/time_mixer/mix_factor"),
    ("conv_norm_out.weight", "conv_norm_out/scale"),
])
def test_keymap_paths(key, path):
    assert diffusers_unet_key(key)[0] == path


def test_keymap_transforms_and_errors():
    conv1x1 = np.arange(6, dtype=np.float32).reshape(3, 2, 1, 1)
    np.testing.assert_array_equal(diffusers_unet_key("mid_block.attentions.0.proj_in.weight")[1](conv1x1),
                                  conv1x1[:, :, 0, 0].T)
    for bad in ("weight", "0.conv.weight", "a.to_out.1.weight", "conv_in.running_mean"):
        with pytest.raises(ValueError):
            diffusers_unet_key(bad)
