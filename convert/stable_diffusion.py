"""Convert a Stable Diffusion diffusers folder (SD 1.5, SD 2.1 base / 768-v, SD 2 depth).

    python -m convert.stable_diffusion --checkpoint stable-diffusion-2-1 --output_dir ckpt/sd21 \
        [--dtype bfloat16] [--variant fp16]

Reads ``unet/``, ``vae/``, ``text_encoder/`` (``config.json`` + safetensors, sharded
safetensors or a weights-only ``.bin``) and writes one `szero_jax.checkpoints` checkpoint per
network: ``<output_dir>/unet`` (family ``unet2d``), ``/vae`` (``vae``), ``/text_encoder``
(``clip_text``), plus ``<output_dir>/tokenizer/`` copied from the folder so the pipelines
tokenize offline. The prediction type comes from ``scheduler/scheduler_config.json``. Folders
this port does not run (e.g. SD 2 depth's ``depth_estimator/``) are listed and skipped.
Every tensor must map onto a Flax param of the right shape, else the converter fails listing
every unmapped, missing or mis-shaped key (checked on shapes before any weight is read);
then each network is streamed tensor by tensor into its file.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from convert import common
from szero_jax.models import clip_keymaps
from szero_jax.models import configs as C
from szero_jax.models import vae_keymaps
from szero_jax.models.unet_keymap import diffusers_unet_key

CONVERTED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
WEIGHT_STEMS = ("diffusion_pytorch_model", "model")  # diffusers, transformers safetensors
BIN_STEMS = ("diffusion_pytorch_model", "pytorch_model")  # diffusers, transformers .bin


# ------------------------------------------------------------------------------ folder reading
def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{what}: {path} is not valid JSON: {e}") from e


def component_state(folder: Path, variant: Optional[str] = None) -> common.StateDict:
    """The weights of one diffusers component folder as a lazy, safely loaded state dict."""
    if not folder.is_dir():
        raise FileNotFoundError(f"model_dir: no component folder {folder}")
    suffix = f".{variant}" if variant else ""
    for stem in WEIGHT_STEMS:
        single = folder / f"{stem}{suffix}.safetensors"
        if single.is_file():
            return common.load_state_dict(single)
        index = folder / f"{stem}{suffix}.safetensors.index.json"
        if index.is_file():
            shards = sorted(set(read_json(index, "model_dir")["weight_map"].values()))
            return common.load_safetensors_dir(folder / s for s in shards)
    for stem in BIN_STEMS:
        binary = folder / f"{stem}{suffix}.bin"
        if binary.is_file():
            return common.load_state_dict(binary)
    raise FileNotFoundError(
        f"model_dir: {folder} holds no weights (expected {WEIGHT_STEMS[0]}{suffix}.safetensors, "
        f"{WEIGHT_STEMS[1]}{suffix}.safetensors, a sharded .safetensors.index.json or a {'/'.join(BIN_STEMS)}{suffix}.bin)")


def copy_folder(src: Path, dst: Path) -> None:
    """Copies a small folder (tokenizer files) to ``dst`` via a temporary sibling."""
    if not src.is_dir():
        raise FileNotFoundError(f"model_dir: no {src} (the pipelines need the tokenizer files)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)


def _check_options(cfg: dict, fixed: dict, known: set, what: str) -> None:
    for key, value in cfg.items():
        if key.startswith("_"):
            continue
        if key in fixed:
            ok = value in fixed[key] if isinstance(fixed[key], tuple) else value == fixed[key]
            if not ok:
                raise ValueError(f"{what}: {key}={value!r} is not supported (only {fixed[key]!r})")
        elif key not in known:
            raise ValueError(f"{what}: unknown option {key}={value!r}")


def _per_level(value, n: int, what: str) -> tuple:
    out = (value,) * n if isinstance(value, int) else tuple(value)
    if len(out) != n:
        raise ValueError(f"{what}: expected one value per level ({n}), got {value!r}")
    return out


# ------------------------------------------------------------------------------ configs
# UNet2DConditionModel options whose value this port fixes (diffusers defaults / SD values).
_UNET_FIXED = {
    "act_fn": "silu", "norm_num_groups": 32, "center_input_sample": False, "downsample_padding": 1,
    "mid_block_scale_factor": 1, "class_embed_type": None, "addition_embed_type": None,
    "time_embedding_type": "positional", "resnet_time_scale_shift": "default",
    "only_cross_attention": False, "dual_cross_attention": False,
    "mid_block_type": "UNetMidBlock2DCrossAttn", "encoder_hid_dim": None,
    "encoder_hid_dim_type": None, "num_class_embeds": None, "conv_in_kernel": 3,
    "conv_out_kernel": 3, "time_cond_proj_dim": None, "attention_type": "default",
    "reverse_transformer_layers_per_block": None, "class_embeddings_concat": False,
    "projection_class_embeddings_input_dim": None, "time_embedding_dim": None,
    "time_embedding_act_fn": None, "timestep_post_act": None, "cross_attention_norm": None,
    "addition_time_embed_dim": None, "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0, "mid_block_only_cross_attention": None, "dropout": 0.0,
    "addition_embed_type_num_heads": 64}
_UNET_KNOWN = {"in_channels", "out_channels", "block_out_channels", "layers_per_block",
               "attention_head_dim", "num_attention_heads", "cross_attention_dim",
               "down_block_types", "up_block_types", "transformer_layers_per_block",
               "use_linear_projection", "norm_eps", "flip_sin_to_cos", "freq_shift",
               "sample_size", "upcast_attention"}  # upcast: softmax is float32 here anyway


def unet2d_config_from_diffusers(cfg: dict, prediction_type: str = "epsilon") -> C.UNet2DConfig:
    """A ``UNet2DConfig`` from a diffusers ``unet/config.json`` dict (refuses other variants)."""
    _check_options(cfg, _UNET_FIXED, _UNET_KNOWN, "unet/config.json")
    n = len(cfg["block_out_channels"])
    down = tuple(cfg["down_block_types"])
    cross = tuple(t == "CrossAttnDownBlock2D" for t in down)
    mirrored = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cross))
    if any(t not in ("CrossAttnDownBlock2D", "DownBlock2D") for t in down) or \
            tuple(cfg["up_block_types"]) != mirrored:
        raise ValueError(f"unet/config.json: block types {down} / {cfg['up_block_types']} are not "
                         "supported (CrossAttnDownBlock2D/DownBlock2D, mirrored up blocks)")
    # diffusers reads attention_head_dim as the head count when num_attention_heads is unset.
    heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8)
    layers = cfg.get("transformer_layers_per_block", 1)
    if not isinstance(layers, int):
        raise ValueError(f"unet/config.json: transformer_layers_per_block must be one int, got {layers!r}")
    d = C.UNet2DConfig()
    return C.UNet2DConfig(
        in_channels=cfg.get("in_channels", d.in_channels),
        out_channels=cfg.get("out_channels", d.out_channels),
        block_out_channels=tuple(cfg["block_out_channels"]),
        layers_per_block=cfg.get("layers_per_block", d.layers_per_block),
        heads=_per_level(heads, n, "unet/config.json attention heads"),
        cross_attention_dim=cfg["cross_attention_dim"], cross_attn=cross,
        transformer_layers_per_block=layers,
        use_linear_projection=cfg.get("use_linear_projection", False),
        norm_eps=cfg.get("norm_eps", d.norm_eps),
        flip_sin_to_cos=cfg.get("flip_sin_to_cos", True), freq_shift=cfg.get("freq_shift", 0),
        sample_size=cfg.get("sample_size", d.sample_size), prediction_type=prediction_type)


def clip_text_config_from_hf(cfg: dict) -> C.CLIPTextConfig:
    """A ``CLIPTextConfig`` from a transformers ``text_encoder/config.json`` dict."""
    act = cfg.get("hidden_act", "quick_gelu")  # transformers CLIPTextConfig default
    if act not in ("gelu", "quick_gelu"):
        raise ValueError(f"text_encoder/config.json: hidden_act {act!r} is not supported")
    with_projection = any("WithProjection" in a for a in cfg.get("architectures") or ())
    eos = cfg.get("eos_token_id", 2)
    return C.CLIPTextConfig(
        vocab_size=cfg["vocab_size"], context_length=cfg["max_position_embeddings"],
        width=cfg["hidden_size"], layers=cfg["num_hidden_layers"],
        heads=cfg["num_attention_heads"], mlp_dim=cfg["intermediate_size"], activation=act,
        layer_norm_eps=cfg.get("layer_norm_eps", 1e-5),  # transformers CLIPTextConfig default
        projection_dim=cfg.get("projection_dim") if with_projection else None,
        eos_token_id=None if eos == 2 else eos)  # legacy eos 2: pool at argmax (see config)


# ------------------------------------------------------------------------------ conversion
def _shapes(module, *args):
    import jax  # pylint: disable=import-outside-toplevel
    return jax.eval_shape(module.init, jax.random.key(0), *args)["params"]


def unet2d_shapes(cfg: C.UNet2DConfig):
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from szero_jax.models.unet2d import UNet2DCondition  # pylint: disable=import-outside-toplevel
    s = 2 ** (len(cfg.block_out_channels) - 1)
    return _shapes(UNet2DCondition(cfg), jnp.zeros((1, s, s, cfg.in_channels)), jnp.zeros((1,)),
                   jnp.zeros((1, 1, cfg.cross_attention_dim)))


def vae_shapes(cfg: C.VAEConfig):
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from szero_jax.models.vae import AutoencoderKL  # pylint: disable=import-outside-toplevel
    s = 2 ** (len(cfg.block_out_channels) - 1)
    return _shapes(AutoencoderKL(cfg), jnp.zeros((1, s, s, cfg.in_channels)))


def text_shapes(cfg: C.CLIPTextConfig):
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from szero_jax.models.clip import CLIPTextEncoder  # pylint: disable=import-outside-toplevel
    return _shapes(CLIPTextEncoder(cfg), jnp.zeros((1, cfg.context_length), jnp.int32))


# Buffers some releases store that no network reads (older transformers saved position_ids).
TEXT_DROPPED = ("text_model.embeddings.position_ids", "embeddings.position_ids")


def components(model_dir: Path, variant: Optional[str] = None) -> dict[str, tuple]:
    """{name: (Job, config, family)} for unet, vae and text_encoder of a diffusers folder
    (configs read, weights opened lazily; nothing converted yet)."""
    sched = model_dir / "scheduler" / "scheduler_config.json"
    prediction = read_json(sched, "model_dir").get("prediction_type", "epsilon") if sched.is_file() \
        else "epsilon"  # DDIMScheduler default
    unet_cfg = unet2d_config_from_diffusers(read_json(model_dir / "unet" / "config.json", "model_dir"),
                                            prediction)
    vae_cfg = C.VAEConfig.from_diffusers(read_json(model_dir / "vae" / "config.json", "model_dir"))
    text_cfg = clip_text_config_from_hf(read_json(model_dir / "text_encoder" / "config.json",
                                                  "model_dir"))
    return {
        "unet": (component_job("unet", model_dir, variant, diffusers_unet_key,
                               unet2d_shapes(unet_cfg)), unet_cfg, "unet2d"),
        "vae": (component_job("vae", model_dir, variant, vae_keymaps.diffusers_keymap(vae_cfg),
                              vae_shapes(vae_cfg)), vae_cfg, "vae"),
        "text_encoder": (component_job("text_encoder", model_dir, variant,
                                       clip_keymaps.hf_text_keymap(), text_shapes(text_cfg),
                                       TEXT_DROPPED), text_cfg, "clip_text")}


def component_job(name: str, folder: Path, variant: Optional[str], keymap, target,
                  dropped=()) -> common.Job:
    """The `convert.common.Job` converting ``folder/name``'s weights."""
    return common.Job(name, component_state(folder / name, variant), keymap, target, dropped)


def write_components(parts: dict[str, tuple], output_dir: Path, dtype: Any,
                     overwrite: bool) -> list[Path]:
    """Checks every component on shapes (all problems listed together), then streams each
    into ``output_dir/<name>``."""
    common.check_jobs([job for job, _, _ in parts.values()])
    return [common.write_checkpoint(output_dir / name, [job], cfg, family, dtype, overwrite)
            for name, (job, cfg, family) in parts.items()]


def skipped_folders(model_dir: Path, converted=CONVERTED) -> list[str]:
    return sorted(p.name for p in model_dir.iterdir() if p.is_dir() and p.name not in converted)


def run(checkpoint: str, output_dir: str, variant: Optional[str] = None, dtype: str = "float32",
        overwrite: bool = False) -> list[Path]:
    """Converts the diffusers folder ``checkpoint`` into ``output_dir``; returns the written
    unet/vae/text_encoder checkpoints (the tokenizer is copied beside them).

    (``checkpoint`` is the folder, so `experiments/convert.py --checkpoint` can dispatch here.)
    """
    model_dir, out = Path(checkpoint), Path(output_dir)
    np_dtype = common.output_dtype(dtype)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model_dir: no diffusers folder at {model_dir}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"output_dir: {out} is not empty; pass --overwrite to replace it")
    if not (model_dir / "tokenizer").is_dir():
        raise FileNotFoundError(f"model_dir: no {model_dir / 'tokenizer'} (the pipelines need "
                                "the tokenizer files)")
    written = write_components(components(model_dir, variant), out, np_dtype, overwrite)
    copy_folder(model_dir / "tokenizer", out / "tokenizer")
    skipped = skipped_folders(model_dir)
    if skipped:
        print(f"skipped {skipped} (not run by this port)")
    return written


if __name__ == "__main__":
    from experiments import convert as launcher  # pylint: disable=import-outside-toplevel
    launcher.run_as("stable_diffusion")
