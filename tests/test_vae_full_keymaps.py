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


def _random_torch(cls, config, seed):
    torch.manual_seed(seed)
    module = cls(**{k: v for k, v in config.items() if not k.startswith("_")}).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.05)  # small enough that 20+ residual blocks stay in range
    return module


def assert_close(got, want, rel=1e-4):
    import numpy as np
    got = np.asarray(got).transpose(0, 3, 1, 2)
    err, scale = float(np.abs(got - want).max()), float(np.abs(want).max())
    assert err <= rel * scale, f"max abs error {err:.3g} > {rel} x scale {scale:.3g}"


@pytest.mark.slow
def test_full_size_sd_vae_parity():
    import numpy as np
    from diffusers import AutoencoderKL
    tv = _random_torch(AutoencoderKL, SD15_VAE, 0)
    cfg = configs.get("sd15_vae")
    model = vae.AutoencoderKL(cfg)
    items = ((k, v.numpy()) for k, v in tv.state_dict().items())
    params = {"params": common.convert_to_tree(items, vae_keymaps.diffusers_keymap(cfg),
                                               _target(model))}
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        dist = tv.encode(torch.from_numpy(x)).latent_dist
        dec = tv.decode(dist.mean).sample.numpy()
    run = jax.jit(lambda p, x: (lambda m: (m, model.apply(p, m[0], method="decode")))(
        model.apply(p, x, method="encode")))
    (mean, logvar), out = run(params, jnp.asarray(x.transpose(0, 2, 3, 1)))
    assert_close(mean, dist.mean.numpy())
    assert_close(logvar, dist.logvar.numpy())
    assert_close(out, dec)


@pytest.mark.slow
def test_full_size_svd_xt_vae_parity():
    import numpy as np
    from diffusers import AutoencoderKLTemporalDecoder
    tv = _random_torch(AutoencoderKLTemporalDecoder, SVD_XT_VAE, 1)
    cfg = configs.get("svd_xt_vae")
    model = vae.AutoencoderKLTemporalDecoder(cfg)
    items = ((k, v.numpy()) for k, v in tv.state_dict().items())
    params = {"params": common.convert_to_tree(items, vae_keymaps.temporal_keymap(cfg),
                                               _target(model, 1))}
    z = np.random.default_rng(1).normal(size=(4, 4, 8, 8)).astype(np.float32)
    with torch.no_grad():
        dec = tv.decode(torch.from_numpy(z), num_frames=4).sample.numpy()
    out = jax.jit(lambda p, z: model.apply(p, z, 4, method="decode"))(
        params, jnp.asarray(z.transpose(0, 2, 3, 1)))
    assert_close(out, dec)
