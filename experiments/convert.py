"""Convert released PyTorch weights into szero_jax checkpoints: one launcher for every family,
dispatching to the converters in ``convert/``.

    python -m experiments.convert --family dynamicrafter --checkpoint model_512.ckpt \
        --config dynamicrafter_512 --output_dir ckpt/dynamicrafter_512
    python -m experiments.convert --family openclip --checkpoint open_clip_pytorch_model.bin \
        --output_dir ckpt/openclip
    python -m experiments.convert --family stable_diffusion --checkpoint sd15_folder_or_file \
        --output_dir ckpt/sd15
    python -m experiments.convert --family depthcrafter --checkpoint depthcrafter_unet \
        --output_dir ckpt/depthcrafter
    python -m experiments.convert --flagfile convert.flags

Loading is weights-only (safetensors, or ``torch.load(weights_only=True)``); a converter
fails listing every unmapped, missing or mis-shaped key. Outputs are written to a temporary
name and renamed, so an interrupted conversion leaves nothing behind.
"""
from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

from absl import app, flags

from experiments import common_flags

FAMILIES = ("dynamicrafter", "depthcrafter", "stable_diffusion", "openclip")

flags.DEFINE_enum("family", None, FAMILIES,
                  "Source family: which converter in convert/ runs (required, no default)")
common_flags.declare(__name__, "checkpoint", "output_dir", "dtype")
flags.DEFINE_string("config", None,
                    "Model config: a registered name (szero_jax.models.configs, e.g. "
                    "dynamicrafter_512) or a JSON file (a checkpoint's config.json); unset (default): "
                    "the converter's own (dynamicrafter_512 for dynamicrafter)")
flags.DEFINE_string("model_config", None,
                    "openclip: open_clip model config JSON; unset (default): ViT-H-14")
flags.DEFINE_string("bpe_vocab", None,
                    "openclip: bpe_simple_vocab_16e6.txt.gz; unset (default): the installed "
                    "open_clip's")
flags.DEFINE_list("parts", None,
                  "dynamicrafter: parts to convert; unset (default): all of unet, resampler, vae, "
                  "text_encoder, image_encoder")
flags.DEFINE_string("svd_dir", None,
                    "depthcrafter: the SVD-xt diffusers folder holding vae/ and image_encoder/; "
                    "unset (default): look beside the UNet")
flags.DEFINE_bool("overwrite", False, "Replace an existing output")

FLAGS = flags.FLAGS


def _load_config(value):
    """A config from a registered name or a JSON file written by szero_jax.checkpoints."""
    from szero_jax import checkpoints  # pylint: disable=import-outside-toplevel
    from szero_jax.models import configs  # pylint: disable=import-outside-toplevel
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
        return checkpoints._decode(meta.get("config", meta) if isinstance(meta, dict) else meta)  # pylint: disable=protected-access
    try:
        return configs.get(value)
    except (KeyError, ValueError) as e:
        raise ValueError(f"--config: {value!r} is neither a registered config nor a JSON file "
                         f"({e})") from e


def _numpy_dtype(name: str):
    import numpy as np  # pylint: disable=import-outside-toplevel
    if name == "bfloat16":
        import ml_dtypes  # pylint: disable=import-outside-toplevel
        return ml_dtypes.bfloat16
    return np.float32


def _convert_dynamicrafter(checkpoint, output_dir, config=None, parts=None, dtype="float32",
                           overwrite=False, **_):
    import jax  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    from convert import dynamicrafter as dc  # pylint: disable=import-outside-toplevel
    from szero_jax import checkpoints  # pylint: disable=import-outside-toplevel
    from szero_jax.models.configs import DynamiCrafterConfig  # pylint: disable=import-outside-toplevel
    cfg = _load_config(config or "dynamicrafter_512")
    if not isinstance(cfg, DynamiCrafterConfig):
        raise ValueError(f"--config: {config!r} is a {type(cfg).__name__}, expected a "
                         "DynamiCrafter configuration")
    parts = tuple(parts) if parts else tuple(dc.PARTS)
    unknown = [p for p in parts if p not in dc.PARTS]
    if unknown:
        raise ValueError(f"--parts: unknown {unknown}; expected a subset of {list(dc.PARTS)}")
    out = Path(output_dir)
    if out.exists() and not overwrite:
        raise ValueError(f"--output_dir: {out} already exists; pass --overwrite to replace it")
    params = dc.convert_checkpoint(checkpoint, cfg, parts, _numpy_dtype(dtype))
    checkpoints.save_params(out.resolve(), params, cfg, dc.FAMILY, overwrite=overwrite)
    n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    return [out], f"{', '.join(params)} ({n / 1e6:.2f} M params)"


def _convert_generic(family, **kwargs):
    """Any convert/<family>.py exposing run(...) or convert(...) on paths: the launcher passes
    the arguments its signature names."""
    try:
        module = importlib.import_module(f"convert.{family}")
    except ModuleNotFoundError as e:
        if e.name != f"convert.{family}":
            raise
        raise ValueError(f"--family: the {family} converter (convert/{family}.py) is not "
                         "available in this checkout") from e
    fn = getattr(module, "run", None)
    if fn is None:
        raise ValueError(f"--family: convert/{family}.py has no run() entry point")
    params = inspect.signature(fn).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    args = {k: v for k, v in kwargs.items() if v is not None and (accepts_any or k in params)}
    out = fn(**args)
    return [Path(out) if out is not None else Path(kwargs["output_dir"])], ""


def run(family: str, checkpoint: str, output_dir: str, **options):
    """Dispatches to the family's converter; returns (written paths, summary)."""
    if family not in FAMILIES:
        raise ValueError(f"--family: expected one of {FAMILIES}, got {family!r}")
    if not checkpoint or checkpoint == common_flags.TINY:
        raise ValueError("--checkpoint: the source weights file is required")
    if not output_dir:
        raise ValueError("--output_dir: the checkpoint directory to write is required")
    if not Path(checkpoint).exists():
        raise FileNotFoundError(f"--checkpoint: no file or folder at {checkpoint}")
    if family == "dynamicrafter":
        return _convert_dynamicrafter(checkpoint, output_dir, **options)
    if family == "openclip":
        options.pop("parts", None)
        options.pop("config", None)
        options.pop("dtype", None)
    return _convert_generic(family, checkpoint=checkpoint, output_dir=output_dir, **options)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.family is None:
        raise app.UsageError(f"--family is required: one of {FAMILIES}")
    written, summary = run(FLAGS.family, FLAGS.checkpoint, FLAGS.output_dir,
                           config=FLAGS.config, model_config=FLAGS.model_config,
                           bpe_vocab=FLAGS.bpe_vocab, parts=FLAGS.parts, dtype=FLAGS.dtype,
                           svd_dir=FLAGS.svd_dir, overwrite=FLAGS.overwrite)
    for p in written:
        print(f"wrote {p}" + (f": {summary}" if summary else ""))


if __name__ == "__main__":
    # No defaults: the source (--checkpoint) and the folder to write are required.
    common_flags.set_defaults(checkpoint="", output_dir="")
    app.run(main)
