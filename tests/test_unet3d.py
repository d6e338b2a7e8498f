"""DynamiCrafter video UNet: parity with the original lvdm network and cross-view wiring."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from convert.common import convert_to_tree
from convert.keymaps_dynamicrafter import lvdm_keymap
from szero_jax.models.attention import cross_view_index
from szero_jax.models.configs import DynamiCrafterUNetConfig
from szero_jax.models.unet3d import SpatialTransformer, TemporalTransformer, UNet3D, _fold_context
from tests.helpers.fixtures import fixture_dir


@pytest.fixture(scope="module")
def tiny():
    d = fixture_dir("dynamicrafter")
    cfg = DynamiCrafterUNetConfig.from_torch_kwargs(json.loads((d / "unet_tiny_config.json").read_text()))
    io = dict(np.load(d / "unet_tiny_io.npz"))
    model = UNet3D(cfg)
    x = io["x"].transpose(0, 2, 3, 4, 1)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x, io["timesteps"], io["context"], io["fs"])
    params = convert_to_tree(load_file(str(d / "unet_tiny.safetensors")).items(), lvdm_keymap, shapes)
    return model, {"params": params}, io


def test_tiny_parity_with_lvdm(tiny):
    model, params, io = tiny
    out = jax.jit(model.apply)(params, io["x"].transpose(0, 2, 3, 4, 1), io["timesteps"],
                               io["context"], io["fs"])
    out = np.asarray(out).transpose(0, 4, 1, 2, 3)
    scale = np.abs(io["out"]).max()
    assert out.shape == io["out"].shape
    assert np.abs(out - io["out"]).max() <= 1e-4 * scale


@pytest.mark.slow
def test_cross_view_keeps_view_major_order(tiny):
    """Stereo batch [L0, L1, R0, R1]: with "uni" the left half must equal the left views run
    alone (they attend to themselves), the right half must differ from its own solo run; with
    "none" every row equals its solo run; cross_view=None equals mode "none"."""
    model, params, io = tiny
    rng = np.random.default_rng(0)
    t, b = 2, 2
    x = rng.standard_normal((2 * b, t, 8, 8, 8)).astype(np.float32)
    ctx = rng.standard_normal((2 * b, 77 + 16 * t, 48)).astype(np.float32)
    ts = np.array([10, 500, 10, 500])
    fs = np.full((2 * b,), 10)
    apply = jax.jit(model.apply)
    solo = np.asarray(apply(params, x, ts, ctx, fs))
    none = np.asarray(apply(params, x, ts, ctx, fs, jnp.int32(cross_view_index("none"))))
    uni = np.asarray(apply(params, x, ts, ctx, fs, jnp.int32(cross_view_index("uni"))))
    scale = np.abs(solo).max()
    np.testing.assert_allclose(none, solo, atol=1e-5 * scale)
    np.testing.assert_allclose(uni[:b], solo[:b], atol=1e-5 * scale)
    assert np.abs(uni[b:] - solo[b:]).max() > 1e-2 * scale


def test_context_fold_per_frame_tokens():
    """77 text tokens are repeated per frame; image tokens are split 16 per frame, b-major."""
    cfg = DynamiCrafterUNetConfig(context_dim=3)
    b, t = 2, 3
    ctx = np.arange(b * (77 + 16 * t) * 3, dtype=np.float32).reshape(b, 77 + 16 * t, 3)
    out = np.asarray(_fold_context(jnp.asarray(ctx), t, cfg))
    assert out.shape == (b * t, 77 + 16, 3)
    for i in range(b):
        for f in range(t):
            np.testing.assert_array_equal(out[i * t + f, :77], ctx[i, :77])
            np.testing.assert_array_equal(out[i * t + f, 77:], ctx[i, 77 + 16 * f:77 + 16 * (f + 1)])
    other = np.ones((b, 10, 3), np.float32)  # any other length: shared by all frames
    np.testing.assert_array_equal(np.asarray(_fold_context(jnp.asarray(other), t, cfg)),
                                  np.repeat(other, t, axis=0))


@pytest.mark.parametrize("kind", ["spatial", "temporal"])
def test_transformer_cross_view_is_view_major(kind):
    """Stereo batch [L0, L1, R0, R1] of videos: under "uni" the left half equals the left
    views run alone and the right half changes; "none" equals no cross-view at all."""
    rng = np.random.default_rng(1)
    b, t, c = 2, 3, 32
    x = jnp.asarray(rng.standard_normal((2 * b, t, 4, 4, c)), jnp.float32)
    ctx = jnp.asarray(rng.standard_normal((2 * b * t, 77 + 16, 8)), jnp.float32)
    if kind == "spatial":
        cross = dict(image_cross_attention=True, scale_learnable=False, scale=1.0, text_len=77)
        module = SpatialTransformer(heads=2, dim_head=16, depth=1, use_linear=True, cross=cross)
        run = jax.jit(lambda p, v, cv=None: module.apply(p, v, ctx[:v.shape[0] * t], cv))
    else:
        module = TemporalTransformer(heads=2, dim_head=16, depth=1, use_linear=True)
        run = jax.jit(lambda p, v, cv=None: module.apply(p, v, cv))
    params = jax.tree.map(lambda a: a + 0.2 * jnp.asarray(rng.standard_normal(a.shape), a.dtype),
                          module.init(jax.random.key(0), x, ctx, None) if kind == "spatial"
                          else module.init(jax.random.key(0), x))
    solo = np.asarray(run(params, x))
    none = np.asarray(run(params, x, jnp.int32(cross_view_index("none"))))
    uni = np.asarray(run(params, x, jnp.int32(cross_view_index("uni"))))
    left_alone = np.asarray(run(params, x[:b]))
    scale = np.abs(solo).max()
    np.testing.assert_allclose(none, solo, atol=1e-5 * scale)
    np.testing.assert_allclose(uni[:b], left_alone, atol=1e-5 * scale)
    assert np.abs(uni[b:] - solo[b:]).max() > 1e-2 * scale


def test_bad_input_raises(tiny):
    model, params, io = tiny
    with pytest.raises(ValueError, match="x must be"):
        model.apply(params, io["x"], io["timesteps"], io["context"], io["fs"])
