"""convert/depthcrafter.py on tiny DepthCrafter / SVD-xt folders written inside the test."""
import jax
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLTemporalDecoder
from safetensors.torch import load_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from convert import depthcrafter as dc
from szero_jax import checkpoints
from szero_jax.models.configs import UNetSTConfig
from tests.test_unet_st import TINY, torch_unet


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("dc")
    unet = torch_unet(TINY)
    unet.save_pretrained(root / "DepthCrafter" / "unet")
    torch.manual_seed(0)
    AutoencoderKLTemporalDecoder(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                                 layers_per_block=2).save_pretrained(root / "svd" / "vae")
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=28, patch_size=14, projection_dim=24, hidden_act="gelu")).save_pretrained(
            root / "svd" / "image_encoder")
    return root, unet


def test_converts_unet_vae_and_image_encoder(folders, tmp_path):
    root, unet = folders
    out = tmp_path / "out"
    written = dc.run(str(root / "DepthCrafter"), str(out), svd_dir=str(root / "svd"))
    assert written == [out / "depth_unet", out / "depth_vae", out / "depth_image_encoder"]
    params, cfg = checkpoints.load_params(out / "depth_unet", "unet_st")
    assert cfg == TINY
    state = unet.state_dict()
    assert len(jax.tree.leaves(params)) == len(state)
    w = state["down_blocks.0.resnets.0.temporal_res_block.conv1.weight"].numpy()  # Conv3d (3,1,1)
    np.testing.assert_array_equal(
        params["down_blocks_0_resnets_0"]["temporal_res_block"]["conv1"]["kernel"], w.transpose(2, 3, 4, 1, 0))
    np.testing.assert_array_equal(params["down_blocks_0_attentions_0"]["time_mixer"]["mix_factor"],
                                  state["down_blocks.0.attentions.0.time_mixer.mix_factor"].numpy())
    vae, _ = checkpoints.load_params(out / "depth_vae", "temporal_vae")
    assert len(jax.tree.leaves(vae)) == len(load_file(root / "svd" / "vae" / "diffusion_pytorch_model.safetensors"))
    vis, vis_cfg = checkpoints.load_params(out / "depth_image_encoder", "clip_vision")
    assert (vis_cfg.width, vis_cfg.projection_dim, vis_cfg.activation) == (32, 24, "gelu")
    with pytest.raises(ValueError, match="already has"):
        dc.run(str(root / "DepthCrafter"), str(out), svd_dir=str(root / "svd"))


def test_unet_config_from_diffusers():
    assert dc.unet_st_config_from_diffusers({}) == UNetSTConfig()  # diffusers defaults = SVD-xt
    with pytest.raises(ValueError, match="unknown option"):
        dc.unet_st_config_from_diffusers({"time_cond_proj_dim": 4})
    with pytest.raises(FileNotFoundError, match="svd_dir"):
        dc.run(".", "/tmp/unused_out", svd_dir="/nonexistent")
