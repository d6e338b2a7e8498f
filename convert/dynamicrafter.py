"""Convert a released DynamiCrafter checkpoint (``.ckpt``/``.pt`` or ``.safetensors``) to a
szero_jax checkpoint: one orbax params tree ``{"unet", "resampler", "vae", "text_encoder",
"image_encoder"}`` plus the ``DynamiCrafterConfig`` as JSON (family ``"dynamicrafter"``).

    python -m convert.dynamicrafter --ckpt model_512.ckpt --output_dir ckpt/dc512 \
        --config dynamicrafter_512

Loading is weights-only (a pickle that asks for anything but tensors is refused); tensors
are read one at a time from the memory-mapped file. Every checkpoint key must map onto a
Flax param of the right shape or be knowingly dropped (the diffusion wrapper's schedule
buffers, OpenCLIP's unused towers, and the parts left out with ``--parts``).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from convert import common
from convert.keymaps_dynamicrafter import PARTS, checkpoint_dropped, checkpoint_keymap
from szero_jax.models import configs
from szero_jax.models.clip import CLIPTextEncoder, CLIPVisionEncoder
from szero_jax.models.configs import DynamiCrafterConfig
from szero_jax.models.resampler import Resampler
from szero_jax.models.unet3d import UNet3D
from szero_jax.models.vae import AutoencoderKL

FAMILY = "dynamicrafter"


def _init_shapes(module, *args):
    return jax.eval_shape(module.init, jax.random.key(0), *args)["params"]


def part_shapes(config: DynamiCrafterConfig, part: str):
    """The Flax params (shapes only, via ``jax.eval_shape``) of one part of a release."""
    if part == "unet":
        u = config.unet
        s = 2 ** (len(u.channel_mult) - 1)
        ctx = jnp.zeros((1, u.text_context_len + u.image_tokens_per_frame, u.context_dim))
        return _init_shapes(UNet3D(u), jnp.zeros((1, 1, s, s, u.in_channels)), jnp.zeros((1,)),
                            ctx, jnp.zeros((1,)))
    if part == "resampler":
        return _init_shapes(Resampler(config.resampler),
                            jnp.zeros((1, 1, config.resampler.embedding_dim)))
    if part == "vae":
        v = configs.get(config.vae)
        s = 2 ** (len(v.block_out_channels) - 1)
        return _init_shapes(AutoencoderKL(v), jnp.zeros((1, s, s, v.in_channels)))
    if part == "text_encoder":
        t = configs.get(config.text_encoder)
        return _init_shapes(CLIPTextEncoder(t), jnp.zeros((1, t.context_length), jnp.int32))
    if part == "image_encoder":
        v = configs.get(config.image_encoder)
        return _init_shapes(CLIPVisionEncoder(v), jnp.zeros((1, v.image_size, v.image_size, 3)))
    raise ValueError(f"part: expected one of {tuple(PARTS)}, got {part!r}")


def convert_state(state, config: DynamiCrafterConfig, parts=tuple(PARTS), dtype=np.float32):
    """Maps a {torch key: array} mapping (lazy is fine) onto ``{part: params}``.

    Raises ``convert.common.ConversionError`` listing every unmapped, missing or mis-shaped key.
    """
    target = {part: part_shapes(config, part) for part in parts}
    return common.convert_to_tree(state.items(), checkpoint_keymap(config, parts), target,
                                  checkpoint_dropped(parts), dtype)


def convert_checkpoint(path, config: DynamiCrafterConfig, parts=tuple(PARTS), dtype=np.float32):
    """Loads ``path`` safely (``convert.common.load_state_dict``) and converts it."""
    return convert_state(common.load_state_dict(path), config, parts, dtype)


def main(argv):
    del argv
    from absl import flags  # pylint: disable=import-outside-toplevel
    from szero_jax import checkpoints  # pylint: disable=import-outside-toplevel
    f = flags.FLAGS
    config = configs.get(f.config)
    if not isinstance(config, DynamiCrafterConfig):
        raise ValueError(f"config: {f.config!r} is not a DynamiCrafter configuration")
    params = convert_checkpoint(f.ckpt, config, tuple(f.parts))
    out = checkpoints.save_params(os.path.abspath(f.output_dir), params, config, FAMILY,
                                  overwrite=f.overwrite)
    n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    print(f"wrote {out}: {', '.join(params)} ({n / 1e6:.1f} M params)")


if __name__ == "__main__":
    from absl import app, flags  # pylint: disable=import-outside-toplevel
    flags.DEFINE_string("ckpt", None, "DynamiCrafter .ckpt/.pt/.safetensors file", required=True)
    flags.DEFINE_string("output_dir", None, "checkpoint directory to write", required=True)
    flags.DEFINE_string("config", "dynamicrafter_512",
                        "registered config: dynamicrafter_256 / _512 / _1024")
    flags.DEFINE_list("parts", list(PARTS), f"parts to convert (others are dropped): {list(PARTS)}")
    flags.DEFINE_bool("overwrite", False, "replace an existing output_dir")
    app.run(main)
