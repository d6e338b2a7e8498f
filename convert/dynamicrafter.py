"""Convert a released DynamiCrafter checkpoint (``.ckpt``/``.pt`` or ``.safetensors``) to a
szero_jax checkpoint: one params file holding ``{"unet", "resampler", "vae", "text_encoder",
"image_encoder"}`` plus the ``DynamiCrafterConfig`` as JSON (family ``"dynamicrafter"``), and
``tokenizer/`` with OpenCLIP's BPE vocabulary (the text encoder's tokenizer).

    python -m convert.dynamicrafter --checkpoint model_512.ckpt --output_dir ckpt/dc512 \
        --config dynamicrafter_512 [--dtype bfloat16] [--parts unet,resampler]

(the same as ``python -m experiments.convert --family dynamicrafter ...``). Loading is
weights-only (a pickle that asks for anything but tensors is refused). Every checkpoint key
must map onto a Flax param of the right shape or be knowingly dropped (the diffusion
wrapper's schedule buffers, OpenCLIP's unused towers, and the parts left out with
``--parts``); this is checked on shapes before any weight is read. Then the parts are
converted one after the other, tensor by tensor, from the memory-mapped file straight into
the output file, so memory stays at a few hundred MB whatever the checkpoint's size.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from convert import common
from convert.keymaps_dynamicrafter import (DROPPED_BUFFERS, PARTS, checkpoint_dropped,
                                           checkpoint_keymap)
from szero_jax.models import configs
from szero_jax.models.clip import CLIPTextEncoder, CLIPVisionEncoder
from szero_jax.models.configs import DynamiCrafterConfig
from szero_jax.models.resampler import Resampler
from szero_jax.models.unet3d import UNet3D
from szero_jax.models.vae import AutoencoderKL

FAMILY = "dynamicrafter"
DEFAULT_CONFIG = "dynamicrafter_512"


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


def check_parts(parts) -> tuple:
    parts = tuple(parts) if parts else tuple(PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown or len(set(parts)) != len(parts):
        raise ValueError(f"--parts: expected distinct names from {list(PARTS)}, got {list(parts)}")
    return parts


def resolve_config(value: Optional[str]) -> DynamiCrafterConfig:
    """A registered config name (default dynamicrafter_512), a config JSON file, or a
    converted checkpoint folder (its config.json)."""
    from szero_jax import checkpoints  # pylint: disable=import-outside-toplevel
    value = value or DEFAULT_CONFIG
    path = Path(value)
    if path.suffix == ".json" or path.is_file() or path.is_dir():
        if path.is_dir():
            path = path / checkpoints.CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"--config: no config file at {path}")
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"--config: {path} is not valid JSON: {e}") from e
        cfg = checkpoints._decode(meta.get("config", meta) if isinstance(meta, dict) else meta)  # pylint: disable=protected-access
    else:
        try:
            cfg = configs.get(value)
        except (KeyError, ValueError) as e:
            raise ValueError(f"--config: {value!r} is neither a registered config nor a JSON "
                             f"file ({e})") from e
    if not isinstance(cfg, DynamiCrafterConfig):
        raise ValueError(f"--config: {value!r} is a {type(cfg).__name__}, expected a "
                         "DynamiCrafter configuration")
    return cfg


def jobs(state: common.StateDict, config: DynamiCrafterConfig, parts=tuple(PARTS)) -> list:
    """One `convert.common.Job` per part, selecting its keys by checkpoint prefix."""
    out = []
    for part in check_parts(parts):
        prefix = PARTS[part][0]
        out.append(common.Job(part, state, checkpoint_keymap(config, (part,)),
                              {part: part_shapes(config, part)}, checkpoint_dropped((part,)),
                              select=lambda k, p=prefix: k.startswith(p)))
    return out


def ignored(parts) -> tuple:
    """Keys no part reads, knowingly: schedule buffers and the parts left out."""
    return DROPPED_BUFFERS + tuple(PARTS[p][0] for p in PARTS if p not in parts)


def convert_state(state, config: DynamiCrafterConfig, parts=tuple(PARTS), dtype=np.float32):
    """Maps a {torch key: array} mapping (lazy is fine) onto ``{part: params}`` in memory
    (small checkpoints and tests; `run` streams to disk instead).

    Raises ``convert.common.ConversionError`` listing every unmapped, missing or mis-shaped key.
    """
    target = {part: part_shapes(config, part) for part in parts}
    return common.convert_to_tree(state.items(), checkpoint_keymap(config, parts), target,
                                  checkpoint_dropped(parts), dtype)


def convert_checkpoint(path, config: DynamiCrafterConfig, parts=tuple(PARTS), dtype=np.float32):
    """Loads ``path`` safely (``convert.common.load_state_dict``) and converts it in memory."""
    return convert_state(common.load_state_dict(path), config, parts, dtype)


def run(checkpoint: str, output_dir: str, config: Optional[str] = None, parts=None,
        bpe_vocab: Optional[str] = None, dtype: str = "float32", overwrite: bool = False
        ) -> list[Path]:
    """Converts ``checkpoint`` into the checkpoint directory ``output_dir``; returns [it].

    ``config``: see `resolve_config`; ``parts``: subset of PARTS (default all); ``dtype``:
    float32 or bfloat16, the dtype the params are stored in. With the text encoder, OpenCLIP's
    BPE vocabulary (``bpe_vocab``, default the installed open_clip's) is copied to
    ``output_dir/tokenizer/``, so `szero_jax.pipelines.load_video_models` tokenizes offline.
    """
    from convert import openclip  # pylint: disable=import-outside-toplevel
    cfg, parts, np_dtype = resolve_config(config), check_parts(parts), common.output_dtype(dtype)
    out = Path(output_dir)
    if out.exists() and not overwrite:
        raise ValueError(f"--output_dir: {out} already exists; pass --overwrite to replace it")
    bpe = openclip.find_bpe_vocab(bpe_vocab) if "text_encoder" in parts else None
    state = common.load_state_dict(checkpoint)
    todo = jobs(state, cfg, parts)
    common.check_jobs(todo, ignored(parts))
    common.write_checkpoint(out.resolve(), todo, cfg, FAMILY, np_dtype, overwrite,
                            extra=(lambda d: openclip.copy_bpe_vocab(bpe, d)) if bpe else None)
    return [out]


if __name__ == "__main__":
    from experiments import convert as launcher  # pylint: disable=import-outside-toplevel
    launcher.run_as(FAMILY)
