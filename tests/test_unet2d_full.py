"""Full-size SD UNets: every diffusers key maps onto a Flax param of the right shape.

The diffusers models are built on the meta device from their ``unet/config.json`` values,
written out here by hand (no hub), and checked against the registered Flax configs.
"""
import jax
import jax.numpy as jnp
import pytest
import torch
from diffusers import UNet2DConditionModel

from convert.common import check_keymap
from szero_jax.models import configs
from szero_jax.models.unet2d import UNet2DCondition
from szero_jax.models.unet_keymap import diffusers_unet_key

_SD = dict(  # keys shared by every SD unet/config.json
    act_fn="silu", block_out_channels=[320, 640, 1280, 1280], center_input_sample=False,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, layers_per_block=2, mid_block_scale_factor=1,
    norm_eps=1e-05, norm_num_groups=32, out_channels=4,
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3)
_SD2 = dict(_SD, attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024,
            use_linear_projection=True)
CONFIG_JSON = {
    "sd15_unet": dict(_SD, attention_head_dim=8, cross_attention_dim=768, in_channels=4, sample_size=64),
    "sd21_base_unet": dict(_SD2, in_channels=4, sample_size=64),
    "sd21_unet": dict(_SD2, in_channels=4, sample_size=96, upcast_attention=True),
    "sd2_depth_unet": dict(_SD2, in_channels=5, sample_size=64),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIG_JSON))
def test_full_size_keys_map(name):
    with torch.device("meta"):
        model = UNet2DConditionModel(**CONFIG_JSON[name])
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    cfg, js = configs.get(name), CONFIG_JSON[name]
    heads = js["attention_head_dim"]  # diffusers reads it as the head count
    assert cfg.heads == (tuple(heads) if isinstance(heads, list) else (heads,) * 4)
    assert (cfg.in_channels, cfg.cross_attention_dim, cfg.use_linear_projection, cfg.sample_size) == (
        js["in_channels"], js["cross_attention_dim"], js.get("use_linear_projection", False),
        js["sample_size"])
    x = jax.ShapeDtypeStruct((1, 16, 16, cfg.in_channels), jnp.float32)
    ctx = jax.ShapeDtypeStruct((1, 77, cfg.cross_attention_dim), jnp.float32)
    target = jax.eval_shape(UNet2DCondition(cfg).init, jax.random.PRNGKey(0), x, jnp.zeros(1), ctx)
    assert check_keymap(shapes, diffusers_unet_key, target) == len(shapes)  # raises on any gap
