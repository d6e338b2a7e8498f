"""Convert released PyTorch weights into szero_jax checkpoints: one launcher for every family,
dispatching to the converters in ``convert/``.

    python -m experiments.convert --family dynamicrafter --checkpoint model_512.ckpt \
        --config dynamicrafter_512 --output_dir ckpt/dynamicrafter_512 [--dtype bfloat16]
    python -m experiments.convert --family depthcrafter --checkpoint DepthCrafter/ \
        --svd_dir stable-video-diffusion-img2vid-xt/ --output_dir ckpt/dynamicrafter_512
    python -m experiments.convert --family stable_diffusion --checkpoint stable-diffusion-2-1/ \
        --output_dir ckpt/sd21
    python -m experiments.convert --family openclip --checkpoint open_clip_pytorch_model.bin \
        --output_dir ckpt/openclip
    python -m experiments.convert --flagfile convert.flags

``python -m convert.<family> ...`` is the same launcher with ``--family`` preset. Loading is
weights-only (safetensors, or ``torch.load(weights_only=True)``); a converter checks every
key on shapes first and fails listing every unmapped, missing or mis-shaped one, then
streams tensor by tensor into the output (memory: a few hundred MB plus the largest tensor,
whatever the checkpoint's size; see README "Converting the released checkpoints"). Each
output checkpoint is written to a temporary name and renamed, so an interrupted
conversion leaves nothing behind.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from absl import app, flags

from experiments import common_flags

FAMILIES = ("dynamicrafter", "depthcrafter", "stable_diffusion", "openclip")
# The options each family's converter takes besides --dtype and --overwrite.
FAMILY_OPTIONS = {"dynamicrafter": ("config", "parts", "bpe_vocab"),
                  "depthcrafter": ("svd_dir", "variant"),
                  "stable_diffusion": ("variant",),
                  "openclip": ("model_config", "bpe_vocab")}
OPTIONS = ("config", "parts", "svd_dir", "variant", "model_config", "bpe_vocab")

flags.DEFINE_enum("family", None, FAMILIES,
                  "Source family: which converter in convert/ runs (required, no default)")
common_flags.declare(__name__, "checkpoint", "output_dir", "dtype")
flags.DEFINE_string("config", None,
                    "dynamicrafter: model config, a registered name (szero_jax.models.configs, "
                    "e.g. dynamicrafter_512) or a JSON file (a checkpoint's config.json); unset "
                    "(default): dynamicrafter_512")
flags.DEFINE_list("parts", None,
                  "dynamicrafter: parts to convert; unset (default): all of unet, resampler, vae, "
                  "text_encoder, image_encoder")
flags.DEFINE_string("svd_dir", None,
                    "depthcrafter: the SVD-xt diffusers folder holding vae/ and image_encoder/; "
                    "unset (default): look beside the UNet")
flags.DEFINE_string("variant", None,
                    "depthcrafter / stable_diffusion: weight file variant, e.g. fp16; unset "
                    "(default): the plain files")
flags.DEFINE_string("model_config", None,
                    "openclip: open_clip model config JSON; unset (default): ViT-H-14")
flags.DEFINE_string("bpe_vocab", None,
                    "openclip / dynamicrafter: OpenCLIP's bpe_simple_vocab_16e6.txt.gz, copied "
                    "to <output_dir>/tokenizer/; unset (default): the installed open_clip's")
flags.DEFINE_bool("overwrite", False, "Replace an existing output (default False)")

FLAGS = flags.FLAGS


def summarize(paths) -> str:
    """'unet, resampler (1462.52 M params, 2.93 GB)' from the written checkpoints' headers."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    from szero_jax import checkpoints, tensorfile  # pylint: disable=import-outside-toplevel
    names, n, nbytes = [], 0, 0
    for path in map(Path, paths):
        tf = tensorfile.TensorFile(path / checkpoints.PARAMS_FILE)
        if checkpoints.load_config(path)[1] == "dynamicrafter":   # one file, several parts
            names += list(dict.fromkeys(k.split(checkpoints.SEP)[0] for k in tf))
        else:
            names.append(path.name)
        n += sum(int(np.prod(tf.info[k]["shape"])) for k in tf)
        nbytes += sum(tf.nbytes(k) for k in tf)
    return f"{', '.join(names)} ({n / 1e6:.2f} M params, {nbytes / 1e9:.2f} GB)"


def run(family: str, checkpoint: str, output_dir: str, dtype: str = "float32",
        overwrite: bool = False, **options):
    """Dispatches to ``convert/<family>.py``'s ``run``; returns (written checkpoints, summary).

    ``options``: the family's own (FAMILY_OPTIONS); one given to a family that does not
    take it is an error, not silently ignored.
    """
    if family not in FAMILIES:
        raise ValueError(f"--family: expected one of {FAMILIES}, got {family!r}")
    if not checkpoint or checkpoint == common_flags.TINY:
        raise ValueError("--checkpoint: the source weights file or folder is required")
    if not output_dir:
        raise ValueError("--output_dir: the checkpoint directory to write is required")
    if dtype not in common_flags.DTYPES:
        raise ValueError(f"--dtype: expected one of {common_flags.DTYPES}, got {dtype!r}")
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise ValueError(f"options: unknown {unknown}; expected some of {OPTIONS}")
    foreign = sorted(set(given) - set(FAMILY_OPTIONS[family]))
    if foreign:
        raise ValueError(f"--{foreign[0]}: not an option of --family {family} (it takes "
                         f"{', '.join('--' + o for o in FAMILY_OPTIONS[family])})")
    if not Path(checkpoint).exists():
        raise FileNotFoundError(f"--checkpoint: no file or folder at {checkpoint}")
    module = importlib.import_module(f"convert.{family}")
    written = module.run(checkpoint, output_dir, dtype=dtype, overwrite=overwrite, **given)
    return [Path(p) for p in written], summarize(written)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.family is None:
        raise app.UsageError(f"--family is required: one of {FAMILIES}")
    if not FLAGS.checkpoint or not FLAGS.output_dir:
        raise app.UsageError("--checkpoint and --output_dir are required")
    written, summary = run(FLAGS.family, FLAGS.checkpoint, FLAGS.output_dir, FLAGS.dtype,
                           FLAGS.overwrite, **{k: FLAGS[k].value for k in OPTIONS})
    print(f"wrote {', '.join(str(p) for p in written)}: {summary}")


def run_as(family: str) -> None:
    """The entry point of ``python -m convert.<family>``: this launcher, --family preset."""
    common_flags.declare("__main__", "checkpoint", "output_dir", "dtype", "overwrite",
                         *FAMILY_OPTIONS[family])
    common_flags.set_defaults(family=family, checkpoint="", output_dir="")
    app.run(main)


if __name__ == "__main__":
    # No defaults: the source (--checkpoint) and the folder to write are required.
    common_flags.set_defaults(checkpoint="", output_dir="")
    app.run(main)
