"""Convert an OpenCLIP checkpoint (ViT-H-14 by default) into text and vision checkpoints.

    python -m convert.openclip --checkpoint open_clip_pytorch_model.bin --output_dir out/openclip \
        [--dtype bfloat16]

Writes ``<output_dir>/text`` and ``<output_dir>/vision`` (`szero_jax.checkpoints` format,
families ``clip_text`` / ``clip_vision``) and ``<output_dir>/tokenizer/`` holding OpenCLIP's
``bpe_simple_vocab_16e6.txt.gz``, copied from the installed ``open_clip`` package (or from
``--bpe_vocab``) so `szero_jax.models.tokenizer.CLIPBPETokenizer.from_openclip_vocab` runs
offline. Loading is safe (safetensors, or ``torch.load(weights_only=True)``); every key must map
or be knowingly dropped (``logit_scale``), else the converter lists the problems and fails
before reading any weight; the towers are then streamed tensor by tensor into their files.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from convert import common
from szero_jax.models import clip_keymaps as km
from szero_jax.models import configs

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"


def configs_from_openclip_json(cfg: dict) -> tuple[configs.CLIPTextConfig, configs.CLIPVisionConfig]:
    """Tower configs from an open_clip model config (``model_configs/<name>.json`` layout)."""
    try:
        tc, vc, embed = cfg["text_cfg"], cfg["vision_cfg"], cfg["embed_dim"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"model_config: expected embed_dim, text_cfg and vision_cfg, got {cfg!r}") from e
    act = "quick_gelu" if cfg.get("quick_gelu", False) else "gelu"  # open_clip CLIP(quick_gelu=False)
    for name, sub in (("text_cfg", tc), ("vision_cfg", vc)):
        unsupported = {k for k in sub if k not in _KNOWN[name]}
        if unsupported:
            raise ValueError(f"model_config: {name} options {sorted(unsupported)} are not supported")
    text = configs.CLIPTextConfig(
        vocab_size=tc.get("vocab_size", 49408),  # open_clip CLIPTextCfg default
        context_length=tc.get("context_length", 77),  # open_clip CLIPTextCfg default
        width=tc.get("width", 512),  # open_clip CLIPTextCfg default
        layers=tc.get("layers", 12),  # open_clip CLIPTextCfg default
        heads=tc.get("heads", 8),  # open_clip CLIPTextCfg default
        mlp_dim=int(tc.get("mlp_ratio", 4.0) * tc.get("width", 512)),  # CLIPTextCfg mlp_ratio 4.0
        activation=act, projection_dim=embed)
    width = vc.get("width", 768)  # open_clip CLIPVisionCfg default
    vision = configs.CLIPVisionConfig(
        image_size=vc.get("image_size", 224),  # open_clip CLIPVisionCfg default
        patch_size=vc.get("patch_size", 16),  # open_clip CLIPVisionCfg default
        width=width, layers=vc.get("layers", 12),  # open_clip CLIPVisionCfg default
        heads=width // vc.get("head_width", 64),  # open_clip CLIPVisionCfg head_width 64
        mlp_dim=int(vc.get("mlp_ratio", 4.0) * width),  # CLIPVisionCfg mlp_ratio 4.0
        activation=act, projection_dim=embed)
    return text, vision


# Options that do not change the network this port implements (others are refused).
_KNOWN = {"text_cfg": {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"},
          "vision_cfg": {"image_size", "layers", "width", "head_width", "patch_size",
                         "mlp_ratio"}}


def _shapes(module, *example):
    import jax  # pylint: disable=import-outside-toplevel
    return jax.eval_shape(module.init, jax.random.key(0), *example)


def jobs(state: common.StateDict, text_cfg, vision_cfg) -> list[common.Job]:
    """The text and the vision tower as `convert.common.Job`s (split by the ``visual.`` prefix)."""
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from szero_jax.models import clip  # pylint: disable=import-outside-toplevel
    s = vision_cfg.image_size
    text_target = _shapes(clip.CLIPTextEncoder(text_cfg),
                          jnp.zeros((1, text_cfg.context_length), jnp.int32))
    vision_target = _shapes(clip.CLIPVisionEncoder(vision_cfg), jnp.zeros((1, s, s, 3)))
    return [common.Job("text", state, km.openclip_text_keymap(), text_target,
                       km.openclip_text_dropped(), select=lambda k: not k.startswith("visual.")),
            common.Job("vision", state, km.openclip_vision_keymap(), vision_target,
                       select=lambda k: k.startswith("visual."))]


def convert(state: common.StateDict, text_cfg, vision_cfg) -> tuple[dict, dict]:
    """(text params, vision params) from an OpenCLIP state dict, in memory (`run` streams)."""
    text, vision = jobs(state, text_cfg, vision_cfg)
    common.check_jobs((text, vision))   # both towers' problems together
    return tuple(common.convert_to_tree(((k, state[k]) for k in j.keys()), j.keymap, j.target,
                                        j.dropped) for j in (text, vision))


def default_bpe_vocab() -> Path | None:
    """The BPE vocabulary shipped inside the installed ``open_clip`` package, if any."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / BPE_FILE
    return path if path.is_file() else None


def find_bpe_vocab(bpe_vocab: str | None = None) -> Path:
    """``bpe_vocab``, else the installed open_clip's; FileNotFoundError naming the fix."""
    bpe = Path(bpe_vocab) if bpe_vocab else default_bpe_vocab()
    if bpe is None or not bpe.is_file():
        raise FileNotFoundError(
            f"bpe_vocab: no {BPE_FILE} found ({bpe or 'open_clip is not installed'}); pass "
            "--bpe_vocab or `pip install --no-deps open_clip_torch`")
    return bpe


def copy_bpe_vocab(bpe: Path, output_dir: Path) -> Path:
    """Copies the vocabulary to ``output_dir/tokenizer/`` (via a temporary name)."""
    tok_dir = Path(output_dir) / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    tmp = tok_dir / f".{BPE_FILE}.tmp"
    shutil.copyfile(bpe, tmp)
    return tmp.rename(tok_dir / BPE_FILE)


def run(checkpoint: str, output_dir: str, model_config: str | None = None,
        bpe_vocab: str | None = None, dtype: str = "float32", overwrite: bool = False) -> list[Path]:
    """Converts ``checkpoint`` into ``output_dir/{text,vision,tokenizer}``; returns the two
    checkpoints. ``dtype``: float32 or bfloat16, the dtype the params are stored in."""
    np_dtype = common.output_dtype(dtype)
    if model_config:
        path = Path(model_config)
        if not path.is_file():
            raise FileNotFoundError(f"model_config: no open_clip model config at {path}")
        text_cfg, vision_cfg = configs_from_openclip_json(json.loads(path.read_text()))
    else:
        text_cfg = configs.get("openclip_vit_h14_text")
        vision_cfg = configs.get("openclip_vit_h14_vision")
    bpe = find_bpe_vocab(bpe_vocab)
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"output_dir: {out} is not empty; pass --overwrite to replace it")
    text, vision = jobs(common.load_state_dict(checkpoint), text_cfg, vision_cfg)
    common.check_jobs((text, vision))
    written = [common.write_checkpoint(out / "text", [text], text_cfg, "clip_text", np_dtype,
                                       overwrite),
               common.write_checkpoint(out / "vision", [vision], vision_cfg, "clip_vision",
                                       np_dtype, overwrite)]
    copy_bpe_vocab(bpe, out)
    return written


if __name__ == "__main__":
    from experiments import convert as launcher  # pylint: disable=import-outside-toplevel
    launcher.run_as("openclip")
