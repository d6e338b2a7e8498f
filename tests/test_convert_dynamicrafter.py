"""DynamiCrafter converter: key map rules, full-size key coverage, tiny round trip, safety."""
import json
import os

import jax
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from convert import common
from convert.dynamicrafter import FAMILY, convert_checkpoint, convert_state, part_shapes
from convert.keymaps_dynamicrafter import (PARTS, SCHEDULE_BUFFERS, checkpoint_dropped,
                                           checkpoint_keymap, kernel, lvdm_keymap)
from szero_jax import checkpoints
from szero_jax.models import configs
from szero_jax.models.configs import DynamiCrafterConfig, DynamiCrafterUNetConfig, ResamplerConfig


def test_lvdm_keymap_rules():
    assert lvdm_keymap("input_blocks.1.0.in_layers.2.weight") == (
        "input_blocks_1_0/in_layers_2/kernel", kernel)
    assert lvdm_keymap("input_blocks.1.0.in_layers.0.weight") == (
        "input_blocks_1_0/in_layers_0/scale", "none")
    assert lvdm_keymap("middle_block.0.temopral_conv.conv2.0.weight")[0] == \
        "middle_block_0/temopral_conv/conv2_0/scale"
    assert lvdm_keymap("output_blocks.2.1.transformer_blocks.0.attn2.to_out.0.bias") == (
        "output_blocks_2_1/transformer_blocks_0/attn2/to_out/bias", "none")
    assert lvdm_keymap("init_attn.0.transformer_blocks.0.ff.net.0.proj.weight")[0] == \
        "init_attn_0/transformer_blocks_0/ff/net_0/proj/kernel"
    assert lvdm_keymap("layers.3.1.0.weight")[0] == "layers_3_1_0/scale"  # Resampler ff LayerNorm
    assert lvdm_keymap("layers.3.1.1.weight")[0] == "layers_3_1_1/kernel"
    assert lvdm_keymap("latents") == ("latents", "none")
    assert lvdm_keymap("input_blocks.1.1.transformer_blocks.0.attn2.alpha")[0].endswith("attn2/alpha")
    assert lvdm_keymap("0.weight") is None and lvdm_keymap("time_embed.0.running_mean") is None
    w = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    assert kernel(w).shape == (4, 5, 3, 2) and kernel(w)[1, 2, 0, 1] == w[1, 0, 1, 2]
    assert kernel(w[:, :, 0, 0]).shape == (3, 2)


def test_full_size_512_checkpoint_keys_all_map(fixtures_dir):
    """Every key/shape of the released 512 checkpoint maps onto a Flax param of the right
    shape (UNet and Resampler from this module, VAE and OpenCLIP composed by prefix), the
    schedule buffers are dropped, and no Flax param is left unfilled."""
    key_shapes = json.loads((fixtures_dir / "dynamicrafter" /
                             "dynamicrafter_512_key_shapes.json").read_text())
    cfg = configs.get("dynamicrafter_512")
    target = {part: part_shapes(cfg, part) for part in PARTS}
    n_flax = len(jax.tree.leaves(target))
    with_buffers = dict(key_shapes, **{b: (1000,) for b in SCHEDULE_BUFFERS})
    assert common.check_keymap(with_buffers, checkpoint_keymap(cfg), target,
                               checkpoint_dropped()) == n_flax
    ours = {k: v for k, v in key_shapes.items()
            if k.startswith(("model.diffusion_model.", "image_proj_model."))}
    assert len(ours) == 1516 + 51
    parts = ("unet", "resampler")
    assert common.check_keymap(ours, checkpoint_keymap(cfg, parts),
                               {p: target[p] for p in parts}, checkpoint_dropped(parts)) == len(ours)


def _tiny_config(d):
    unet = DynamiCrafterUNetConfig.from_torch_kwargs(json.loads((d / "unet_tiny_config.json").read_text()))
    res = ResamplerConfig.from_torch_kwargs(json.loads((d / "resampler_tiny_config.json").read_text()))
    return DynamiCrafterConfig(unet=unet, resampler=res)


def _tiny_state(d):
    state = {f"model.diffusion_model.{k}": torch.from_numpy(v)
             for k, v in load_file(str(d / "unet_tiny.safetensors")).items()}
    state.update({f"image_proj_model.{k}": torch.from_numpy(v)
                  for k, v in load_file(str(d / "resampler_tiny.safetensors")).items()})
    state.update({b: torch.zeros(1000) for b in SCHEDULE_BUFFERS})
    state["first_stage_model.encoder.conv_in.weight"] = torch.zeros(8, 3, 3, 3)  # not converted
    return state


def test_tiny_ckpt_round_trip(fixtures_dir, tmp_path):
    d = fixtures_dir / "dynamicrafter"
    cfg = _tiny_config(d)
    state = _tiny_state(d)
    torch.save({"state_dict": state, "global_step": 1}, tmp_path / "tiny.ckpt")
    params = convert_checkpoint(tmp_path / "tiny.ckpt", cfg, parts=("unet", "resampler"))
    w = state["model.diffusion_model.input_blocks.1.0.in_layers.2.weight"].numpy()
    np.testing.assert_array_equal(params["unet"]["input_blocks_1_0"]["in_layers_2"]["kernel"],
                                  w.transpose(2, 3, 1, 0))
    w = state["image_proj_model.layers.0.0.to_kv.weight"].numpy()
    np.testing.assert_array_equal(params["resampler"]["layers_0_0"]["to_kv"]["kernel"], w.T)
    out = checkpoints.save_params(tmp_path / "out", params, cfg, FAMILY)
    loaded, loaded_cfg = checkpoints.load_params(out, FAMILY)
    assert loaded_cfg == cfg
    np.testing.assert_array_equal(loaded["resampler"]["latents"], params["resampler"]["latents"])


def test_incomplete_or_foreign_keys_are_reported(fixtures_dir):
    d = fixtures_dir / "dynamicrafter"
    cfg = _tiny_config(d)
    state = {k: v.numpy() for k, v in _tiny_state(d).items()}
    del state["model.diffusion_model.out.2.bias"]
    state["model.diffusion_model.extra.weight"] = np.zeros((2, 2), np.float32)
    state["image_proj_model.latents"] = np.zeros((1, 3, 32), np.float32)
    with pytest.raises(common.ConversionError) as e:
        convert_state(state, cfg, parts=("unet", "resampler"))
    msg = str(e.value)
    assert "unet/out_2/bias" in msg and "extra.weight" in msg and "resampler/latents" in msg
    with pytest.raises(ValueError, match="parts"):
        checkpoint_keymap(cfg, ("unet", "controlnet"))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused(fixtures_dir, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.out.2.bias": torch.zeros(4)},
                "callback": _Payload(marker)}, path)
    cfg = _tiny_config(fixtures_dir / "dynamicrafter")
    with pytest.raises(ValueError, match="refused"):
        convert_checkpoint(path, cfg, parts=("unet",))
    assert not marker.exists()
    torch.load(path, weights_only=False)  # control: the payload is live when unpickled freely
    assert marker.exists()
