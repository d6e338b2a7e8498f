"""VAE memory helpers: frame chunks, spatially tiled decoding (its seam error against untiled
decoding, measured on the shipped tiny VAE), and the temporal decoder's clips."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from szero_jax import tiny
from szero_jax.metrics.image import psnr
from szero_jax.models import configs, vae
from szero_jax.world.render import make_scene


def _nearest(factor):
    return lambda z: jnp.repeat(jnp.repeat(z, factor, axis=1), factor, axis=2)


@pytest.mark.parametrize("shape,tiles", [((2, 23, 37, 3), vae.DecodeTiles(8, 3)),
                                         ((1, 16, 16, 2), vae.DecodeTiles(16, 4)),
                                         ((1, 9, 40, 1), vae.DecodeTiles(12, 0))])
def test_tile_blending_is_exact_for_a_local_decoder(shape, tiles):
    """A decoder with no spatial context (nearest upsampling) must come out of the tiling and
    blending unchanged: the ramps of overlapping tiles sum to one everywhere."""
    z = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)
    got = vae.decode_tiled(_nearest(4), z, tiles, 4)
    np.testing.assert_allclose(np.asarray(got), np.asarray(_nearest(4)(z)), atol=1e-6)


def test_tiled_decode_against_untiled_on_the_tiny_vae():
    """Seam error of tiled decoding, shipped tiny VAE (4x), a held-out world frame at 160x256
    (latent 40x64): tiles of at most 32 latent pixels overlapping by >= 8 (32 px at 4x; an 8x
    VAE's default 16 is StereoCrafter's 128 px) come out as 2x3 tiles of 24x27 and stay
    >= 30 dB from the untiled decode (measured 31.8 dB; held-out seeds 1000002 / train seed 5:
    27.9 / 33.2 dB), while the reconstruction of the input is as good as untiled (17.3 vs
    17.1 dB; 22.6 vs 22.8, 24.3 vs 24.3). Tiles larger than the latent decode untiled, exactly.
    """
    params, cfg = tiny.load_tiny_family(["vae"])["vae"]
    net = vae.AutoencoderKL(cfg)
    frame = make_scene(1000001, 160, 256, 1).left[None]
    mean, _ = vae.encode_video(net, params, jnp.asarray(frame * 2 - 1))
    untiled = np.asarray(vae.decode_video(net, params, mean))
    tiled = np.asarray(vae.decode_video(net, params, mean, tiles=vae.DecodeTiles(32, 8)))
    whole = np.asarray(vae.decode_video(net, params, mean, tiles=vae.DecodeTiles(64, 8)))
    np.testing.assert_array_equal(whole, untiled)
    to01 = lambda a: (a + 1) / 2
    assert float(psnr(to01(tiled), to01(untiled)).mean()) >= 30.0
    rec_untiled = float(psnr(to01(untiled), frame).mean())
    rec_tiled = float(psnr(to01(tiled), frame).mean())
    assert rec_tiled >= rec_untiled - 0.5


def test_auto_chunk_and_chunked_decode_match():
    cfg = configs.get("dynamicrafter_vae")
    assert vae.auto_chunk(cfg, 576, 1024) == 1  # ~1.8 GB a frame
    assert vae.auto_chunk(cfg, 320, 512) == 2
    assert vae.auto_chunk(cfg, 512, 512) == 1
    small = configs.VAEConfig(block_out_channels=(32,), layers_per_block=1)
    model = vae.AutoencoderKL(small)
    rng = np.random.default_rng(1)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    params = jax.tree.map(lambda s: rng.normal(0, 0.2, s.shape).astype(np.float32), shapes)
    z = jnp.asarray(rng.standard_normal((2, 5, 8, 8, 4)), jnp.float32)
    ref = np.asarray(vae.decode_video(model, params, z, chunk=10))
    for chunk in (None, 1, 3, 4):
        got = np.asarray(jax.jit(lambda p, z: vae.decode_video(model, p, z, chunk=chunk))(
            params, z))
        np.testing.assert_allclose(got, ref, atol=1e-5 * np.abs(ref).max())


def test_temporal_decoder_clips_one_at_a_time():
    """5 frames in clips of 2: two equal clips (one lax.map) and a last clip of 1, each the
    decoder run on that clip alone; tiled clips stay close to untiled."""
    cfg = configs.TemporalVAEConfig(block_out_channels=(32, 32), norm_num_groups=8)
    model = vae.AutoencoderKLTemporalDecoder(cfg)
    rng = np.random.default_rng(2)
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((2, 16, 16, 3)), 2),
                            jax.random.key(0))
    params = jax.tree.map(lambda s: rng.normal(0, 0.2, s.shape).astype(np.float32), shapes)
    z = jnp.asarray(rng.standard_normal((1, 5, 8, 8, 4)), jnp.float32)
    got = np.asarray(jax.jit(lambda p, z: vae.decode_video(model, p, z, chunk=2))(params, z))
    parts = [model.apply(params, z[0, s:s + n], n, method="decode") for s, n in
             ((0, 2), (2, 2), (4, 1))]
    want = np.concatenate([np.asarray(p) for p in parts])[None]
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())
    tiled = np.asarray(vae.decode_video(model, params, z, chunk=2,
                                        tiles=vae.DecodeTiles(6, 2)))
    assert tiled.shape == got.shape


def test_bad_tiles_and_chunks_raise():
    with pytest.raises(ValueError, match="overlap"):
        vae.DecodeTiles(8, 8)
    with pytest.raises(ValueError, match="size"):
        vae.DecodeTiles(0, 0)
    small = configs.VAEConfig(block_out_channels=(32,), layers_per_block=1)
    model = vae.AutoencoderKL(small)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="chunk"):
        jax.eval_shape(lambda p: vae.decode_video(model, p, jnp.zeros((1, 2, 8, 8, 4)),
                                                  chunk=0), shapes)
