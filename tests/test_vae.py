"""szero_jax.models.vae: parity with lvdm (fixtures) and diffusers (random tiny models)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from convert import common
from szero_jax.models import configs, vae, vae_keymaps


def _nhwc(x):
    return jnp.asarray(np.asarray(x).transpose(0, 2, 3, 1))


def _nchw(x):
    return np.asarray(x).transpose(0, 3, 1, 2)


def _assert_close(got, want, rel=1e-4):
    scale = float(np.abs(want).max())
    err = float(np.abs(got - want).max())
    assert err <= rel * scale, f"max abs error {err:.3g} > {rel} x output scale {scale:.3g}"


def _randomise(module, seed=0):
    """Every parameter N(0, 0.2^2), so zero-initialised layers cannot hide wiring."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return module.eval()


def _convert(module, keymap, model, *init_args):
    target = jax.eval_shape(lambda k: model.init(k, *init_args), jax.random.key(0))
    items = ((k, v.detach().numpy()) for k, v in module.state_dict().items())
    return {"params": common.convert_to_tree(items, keymap, target)}


def test_lvdm_autoencoder_matches_fixture(fixtures_dir):
    d = fixtures_dir / "dynamicrafter"
    import json
    dd = json.loads((d / "ae_tiny_config.json").read_text())
    # The fixture holds Encoder/Decoder only (no quant convs).
    cfg = configs.VAEConfig(**{**vars(configs.VAEConfig.from_lvdm(dd, dd["z_channels"])),
                               "use_quant_conv": False, "use_post_quant_conv": False})
    model = vae.AutoencoderKL(cfg)
    target = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    sd = common.load_state_dict(d / "ae_tiny.safetensors")
    params = {"params": common.convert_to_tree(sd.items(), vae_keymaps.lvdm_keymap(cfg), target)}
    io = np.load(d / "ae_tiny_io.npz")
    @jax.jit  # one compile for both calls
    def run(params, image, z):
        return (model.apply(params, image, method="encode"),
                model.apply(params, z, method="decode"))
    (mean, logvar), decoded = run(params, _nhwc(io["image"]), _nhwc(io["z"]))
    _assert_close(_nchw(jnp.concatenate([mean, logvar], -1)), io["moments"])
    _assert_close(_nchw(decoded), io["decoded"])


_TINY_KL = dict(block_out_channels=[32, 64], layers_per_block=1, latent_channels=4,
                norm_num_groups=32, down_block_types=["DownEncoderBlock2D"] * 2,
                up_block_types=["UpDecoderBlock2D"] * 2)


def test_diffusers_autoencoder_kl_parity():
    from diffusers import AutoencoderKL
    torch_vae = _randomise(AutoencoderKL(**_TINY_KL))
    cfg = configs.VAEConfig.from_diffusers(dict(torch_vae.config))
    model = vae.AutoencoderKL(cfg)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    params = _convert(torch_vae, vae_keymaps.diffusers_keymap(cfg), model, _nhwc(x))
    with torch.no_grad():
        dist = torch_vae.encode(torch.from_numpy(x)).latent_dist
        dec = torch_vae.decode(dist.mean).sample.numpy()
    @jax.jit
    def run(params, x):
        mean, logvar = model.apply(params, x, method="encode")
        return mean, logvar, model.apply(params, mean, method="decode")
    mean, logvar, decoded = run(params, _nhwc(x))
    _assert_close(_nchw(mean), dist.mean.numpy())
    _assert_close(_nchw(logvar), dist.logvar.numpy())
    _assert_close(_nchw(decoded), dec)


def test_temporal_decoder_parity_and_chunked_video():
    from diffusers import AutoencoderKLTemporalDecoder
    torch_vae = _randomise(AutoencoderKLTemporalDecoder(
        block_out_channels=[32, 64], layers_per_block=2, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2), seed=1)
    cfg = configs.TemporalVAEConfig.from_diffusers(dict(torch_vae.config))
    model = vae.AutoencoderKLTemporalDecoder(cfg)
    frames = 3
    x = np.random.default_rng(1).uniform(-1, 1, (2 * frames, 3, 16, 16)).astype(np.float32)
    params = _convert(torch_vae, vae_keymaps.temporal_keymap(cfg), model, _nhwc(x), frames)
    z = np.random.default_rng(2).normal(size=(2 * frames, 4, 8, 8)).astype(np.float32)
    with torch.no_grad():
        dist = torch_vae.encode(torch.from_numpy(x)).latent_dist
        dec = torch_vae.decode(torch.from_numpy(z), num_frames=frames).sample.numpy()
        dec_chunk2 = torch.cat([torch_vae.decode(torch.from_numpy(z[s:s + n]), num_frames=n)
                                .sample for s, n in ((0, 2), (2, 1))]).numpy()  # video 0
    @jax.jit
    def run(params, x, z):
        # Video helper: [B, T, h, w, c] decoded 2 frames at a time, as the SVD pipeline does.
        chunked = vae.decode_video(model, params, z.reshape(2, frames, 8, 8, 4), chunk=2)
        return (model.apply(params, x, method="encode"),
                model.apply(params, z, frames, method="decode"), chunked)
    (mean, logvar), got, chunked = run(params, _nhwc(x), _nhwc(z))
    _assert_close(_nchw(mean), dist.mean.numpy())
    _assert_close(_nchw(logvar), dist.logvar.numpy())
    _assert_close(_nchw(got), dec)
    _assert_close(_nchw(chunked[0]), dec_chunk2[:frames])
    with pytest.raises(ValueError, match="num_frames"):
        jax.eval_shape(lambda p, z: model.apply(p, z, frames, method="decode"), params,
                       _nhwc(z)[:5])


def test_video_helpers_are_per_frame():
    cfg = configs.VAEConfig(block_out_channels=(32,), layers_per_block=1)  # one level: fast
    model = vae.AutoencoderKL(cfg)
    rng = np.random.default_rng(3)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    params = jax.tree.map(lambda s: rng.normal(0, 0.2, s.shape).astype(np.float32), shapes)
    video = jnp.asarray(rng.uniform(-1, 1, (2, 3, 8, 8, 3)).astype(np.float32))
    @jax.jit
    def run(params, video):
        mean, logvar = vae.encode_video(model, params, video, chunk=4)  # 6 frames: one padded
        out = vae.decode_video(model, params, mean, chunk=5)
        m_ref, lv_ref = model.apply(params, video.reshape(6, 8, 8, 3), method="encode")
        return mean, logvar, out, m_ref, lv_ref, model.apply(params, m_ref, method="decode")
    mean, logvar, out, m_ref, lv_ref, ref = run(params, video)
    assert mean.shape == (2, 3, 8, 8, 4)
    _assert_close(np.asarray(mean).reshape(6, 8, 8, 4), np.asarray(m_ref))
    _assert_close(np.asarray(logvar).reshape(6, 8, 8, 4), np.asarray(lv_ref))
    _assert_close(np.asarray(out).reshape(6, 8, 8, 3), np.asarray(ref))
    with pytest.raises(ValueError, match="video"):
        jax.eval_shape(lambda p, v: vae.encode_video(model, p, v), params, video[0])
    z = vae.sample_latent(jax.random.key(2), mean, jnp.full_like(mean, -60.0))
    np.testing.assert_allclose(z, mean, atol=1e-12)  # logvar -60: posterior ~ a point
