"""Full-size VAE key maps: every released key maps onto a Flax param of the right shape
(`jax.eval_shape`, no weights; diffusers models built on the PyTorch meta device)."""
import json

import jax
import jax.numpy as jnp
import pytest
import torch

from convert import common
from szero_jax.models import configs, vae, vae_keymaps

# Hand-written from sd-v1-5 vae/config.json (SD 2.x differs only in sample_size 768).
SD15_VAE = {"_class_name": "AutoencoderKL", "act_fn": "silu",
            "block_out_channels": [128, 256, 512, 512],
            "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3,
            "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
            "out_channels": 3, "sample_size": 512,
            "up_block_types": ["UpDecoderBlock2D"] * 4}
# Hand-written from stable-video-diffusion-img2vid-xt vae/config.json.
SVD_XT_VAE = {"_class_name": "AutoencoderKLTemporalDecoder",
              "block_out_channels": [128, 256, 512, 512],
              "down_block_types": ["DownEncoderBlock2D"] * 4, "force_upcast": True,
              "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
              "out_channels": 3, "sample_size": 768, "scaling_factor": 0.18215}
# Old diffusers attention names, still found in some saved VAEs.
_OLD_ATTN = {"group_norm": "group_norm", "to_q": "query", "to_k": "key", "to_v": "value",
             "to_out.0": "proj_attn"}


def _target(model, *args):
    return jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 64, 64, 3)), *args),
                          jax.random.key(0))


def _meta_shapes(cls, config):
    with torch.device("meta"):
        module = cls(**{k: v for k, v in config.items() if not k.startswith("_")})
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_dynamicrafter_first_stage_maps_completely(fixtures_dir):
    shapes = json.loads((fixtures_dir / "dynamicrafter" /
                         "dynamicrafter_512_key_shapes.json").read_text())
    ae = {k: v for k, v in shapes.items() if k.startswith("first_stage_model.")}
    assert len(ae) == 248
    cfg = configs.get("dynamicrafter_vae")
    keymap = vae_keymaps.lvdm_keymap(cfg, prefix="first_stage_model.")
    n = common.check_keymap(ae, keymap, _target(vae.AutoencoderKL(cfg)))
    assert n == len(ae)
    # Keys of the other networks are not claimed by the VAE map.
    assert all(keymap(k) is None for k in shapes if not k.startswith("first_stage_model."))


@pytest.mark.parametrize("old_names", [False, True])
def test_sd_vae_maps_completely(old_names):
    from diffusers import AutoencoderKL
    cfg = configs.VAEConfig.from_diffusers(SD15_VAE)
    assert cfg == configs.get("sd15_vae") == configs.get("sd2_vae")
    shapes = _meta_shapes(AutoencoderKL, SD15_VAE)
    if old_names:
        shapes = {k.replace(".attentions.0.", ".attentions.0.@") : v for k, v in shapes.items()}
        for new, old in _OLD_ATTN.items():
            shapes = {k.replace("@" + new + ".", old + "."): v for k, v in shapes.items()}
        assert any(".query." in k for k in shapes) and not any("@" in k for k in shapes)
    n = common.check_keymap(shapes, vae_keymaps.diffusers_keymap(cfg),
                            _target(vae.AutoencoderKL(cfg)))
    assert n == len(shapes) == 248


def test_svd_xt_vae_maps_completely():
    from diffusers import AutoencoderKLTemporalDecoder
    cfg = configs.TemporalVAEConfig.from_diffusers(SVD_XT_VAE)
    assert cfg == configs.get("svd_xt_vae")
    shapes = _meta_shapes(AutoencoderKLTemporalDecoder, SVD_XT_VAE)
    model = vae.AutoencoderKLTemporalDecoder(cfg)
    n = common.check_keymap(shapes, vae_keymaps.temporal_keymap(cfg), _target(model, 1))
    assert n == len(shapes)


def test_mis_shaped_config_is_reported():
    """A map onto the wrong size fails listing the keys (here: 3 levels instead of 4)."""
    from diffusers import AutoencoderKL
    shapes = _meta_shapes(AutoencoderKL, SD15_VAE)
    cfg = configs.VAEConfig(block_out_channels=(128, 256, 512))
    with pytest.raises(common.ConversionError, match="unmapped|unknown Flax params"):
        common.check_keymap(shapes, vae_keymaps.diffusers_keymap(cfg),
                            _target(vae.AutoencoderKL(cfg)))
