"""DynamiCrafter Resampler: parity with lvdm's at a tiny configuration, full-size shapes."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from convert.common import convert_to_tree
from convert.keymaps_dynamicrafter import lvdm_keymap
from szero_jax.models import configs
from szero_jax.models.configs import ResamplerConfig
from szero_jax.models.resampler import Resampler


def test_tiny_parity_with_lvdm(fixtures_dir):
    d = fixtures_dir / "dynamicrafter"
    cfg = ResamplerConfig.from_torch_kwargs(json.loads((d / "resampler_tiny_config.json").read_text()))
    io = np.load(d / "resampler_tiny_io.npz")
    model = Resampler(cfg)
    shapes = jax.eval_shape(model.init, jax.random.key(0), io["x"])
    params = convert_to_tree(load_file(str(d / "resampler_tiny.safetensors")).items(),
                             lvdm_keymap, shapes)
    out = np.asarray(model.apply({"params": params}, io["x"]))
    assert out.shape == io["out"].shape == (1, 64, 48)
    assert np.abs(out - io["out"]).max() <= 1e-4 * np.abs(io["out"]).max()


def test_full_size_output_shape():
    cfg = configs.get("dynamicrafter_512").resampler
    out = jax.eval_shape(lambda x: Resampler(cfg).init_with_output(jax.random.key(0), x)[0],
                         jnp.zeros((2, 257, 1280)))
    assert out.shape == (2, 16 * 16, 1024)


def test_bad_input_raises():
    cfg = ResamplerConfig(dim=8, depth=1, dim_head=4, heads=2, num_queries=2, embedding_dim=6,
                          output_dim=8, video_length=None)
    with pytest.raises(ValueError, match="x must be"):
        Resampler(cfg).init(jax.random.key(0), jnp.zeros((1, 5, 7)))
