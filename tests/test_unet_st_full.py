"""Full-size DepthCrafter UNet (SVD-xt layout): every diffusers key maps onto a Flax param.

The diffusers model is built on the meta device from DepthCrafter's ``unet/config.json``
values, written out here by hand (no hub), and checked against the registered Flax config.
"""
import jax
import jax.numpy as jnp
import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel

from convert.common import check_keymap
from szero_jax.models import configs
from convert.standins import DEPTHCRAFTER_UNET
from szero_jax.models.unet_keymap import diffusers_unet_key
from szero_jax.models.unet_st import UNetSpatioTemporal

CONFIG_JSON = DEPTHCRAFTER_UNET  # tencent/DepthCrafter unet/config.json (= SVD-xt's)


@pytest.mark.slow
def test_full_size_keys_map():
    with torch.device("meta"):
        model = UNetSpatioTemporalConditionModel(**CONFIG_JSON)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    cfg = configs.get("depthcrafter_unet")
    assert cfg.heads == tuple(CONFIG_JSON["num_attention_heads"])
    assert cfg.num_time_ids * cfg.addition_time_embed_dim == CONFIG_JSON["projection_class_embeddings_input_dim"]
    x = jax.ShapeDtypeStruct((1, 2, 16, 16, cfg.in_channels), jnp.float32)
    ctx = jax.ShapeDtypeStruct((1, 2, cfg.cross_attention_dim), jnp.float32)
    target = jax.eval_shape(UNetSpatioTemporal(cfg).init, jax.random.PRNGKey(0), x, jnp.zeros(1), ctx)
    assert check_keymap(shapes, diffusers_unet_key, target) == len(shapes)  # raises on any gap
