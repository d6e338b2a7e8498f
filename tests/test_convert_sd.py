"""convert/stable_diffusion.py on a tiny diffusers folder written inside the test."""
import json
import pickle

import jax
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

from convert import common
from convert import stable_diffusion as sd
from szero_jax import checkpoints
from szero_jax.models.configs import UNet2DConfig
from tests.test_unet2d import TINY, torch_unet


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd")
    unet = torch_unet(UNet2DConfig(**TINY))
    unet.save_pretrained(root / "unet")
    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(32,), down_block_types=("DownEncoderBlock2D",),
                  up_block_types=("UpDecoderBlock2D",), layers_per_block=1,
                  norm_num_groups=32).save_pretrained(root / "vae")
    CLIPTextModel(CLIPTextConfig(vocab_size=50, hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=2,
                                 max_position_embeddings=12)).save_pretrained(root / "text_encoder")
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "vocab.json").write_text(json.dumps({"a</w>": 0}))
    (root / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "v_prediction"}))
    (root / "depth_estimator").mkdir()
    return root, unet


def test_converts_every_component(sd_folder, tmp_path):
    root, unet = sd_folder
    out = tmp_path / "out"
    assert sd.run(str(root), str(out)) == [out / "unet", out / "vae", out / "text_encoder"]
    params, cfg = checkpoints.load_params(out / "unet", "unet2d")
    assert cfg == UNet2DConfig(**TINY, prediction_type="v_prediction")
    state = unet.state_dict()
    assert len(jax.tree.leaves(params)) == len(state)
    w = state["down_blocks.0.attentions.0.proj_in.weight"].numpy()  # 1x1 conv -> Dense
    np.testing.assert_array_equal(params["down_blocks_0_attentions_0"]["proj_in"]["kernel"], w[:, :, 0, 0].T)
    w = state["conv_in.weight"].numpy()
    np.testing.assert_array_equal(params["conv_in"]["kernel"], w.transpose(2, 3, 1, 0))
    vae, _ = checkpoints.load_params(out / "vae", "vae")
    assert len(jax.tree.leaves(vae)) == len(load_file(root / "vae" / "diffusion_pytorch_model.safetensors"))
    text, text_cfg = checkpoints.load_params(out / "text_encoder", "clip_text")
    assert (text_cfg.width, text_cfg.layers, text_cfg.projection_dim) == (32, 2, None)
    assert (out / "tokenizer" / "merges.txt").read_text() == "#version: 0.2\n"
    assert sd.skipped_folders(root) == ["depth_estimator"]


def test_missing_tensor_is_listed(sd_folder, tmp_path):
    root, _ = sd_folder
    bad = tmp_path / "bad"
    for name in ("vae", "text_encoder", "tokenizer", "scheduler"):
        (bad / name).mkdir(parents=True)
        for f in (root / name).iterdir():
            (bad / name / f.name).write_bytes(f.read_bytes())
    (bad / "unet").mkdir()
    (bad / "unet" / "config.json").write_bytes((root / "unet" / "config.json").read_bytes())
    tensors = load_file(root / "unet" / "diffusion_pytorch_model.safetensors")
    del tensors["mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight"]
    save_file(tensors, bad / "unet" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(common.ConversionError,
                       match="mid_block_attentions_0/transformer_blocks_0/attn1/to_q/kernel"):
        sd.run(str(bad), str(tmp_path / "out"))


def test_refuses_pickled_code(sd_folder, tmp_path):
    root, _ = sd_folder
    bad = tmp_path / "evil"
    for name in ("unet", "vae", "scheduler", "tokenizer"):
        (bad / name).mkdir(parents=True)
        for f in (root / name).iterdir():
            (bad / name / f.name).write_bytes(f.read_bytes())
    (bad / "text_encoder").mkdir()
    (bad / "text_encoder" / "config.json").write_bytes((root / "text_encoder" / "config.json").read_bytes())

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    (bad / "text_encoder" / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Evil()}))
    with pytest.raises(ValueError, match="refused"):
        sd.run(str(bad), str(tmp_path / "out"))


def test_unet_config_options_are_checked():
    good = dict(block_out_channels=[32, 64], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=24,
                attention_head_dim=[2, 4])
    assert sd.unet2d_config_from_diffusers(good).heads == (2, 4)
    with pytest.raises(ValueError, match="class_embed_type"):
        sd.unet2d_config_from_diffusers({**good, "class_embed_type": "timestep"})
    with pytest.raises(ValueError, match="block types"):
        sd.unet2d_config_from_diffusers({**good, "up_block_types": ["UpBlock2D", "UpBlock2D"]})
