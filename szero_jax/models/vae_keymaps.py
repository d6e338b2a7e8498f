"""PyTorch key -> Flax param path maps for `szero_jax.models.vae`.

Three sources, one Flax layout:
  lvdm_keymap       lvdm `ae_modules` / ldm names (DynamiCrafter `first_stage_model.`, SD
                    original single-file checkpoints): down.{l}.block.{i}, mid.attn_1.q, ...
  diffusers_keymap  diffusers `AutoencoderKL`: down_blocks.{l}.resnets.{i}, to_q, ...
                    (also the pre-0.14 attention names query/key/value/proj_attn)
  temporal_keymap   diffusers `AutoencoderKLTemporalDecoder` (SVD-xt `vae/`)
Each returns a function `torch_key -> (flax_path, transform) | None` for
`convert.common.convert_state_dict`; paths are inside the `params` collection.
"""
from __future__ import annotations

import re
from typing import Callable, Optional

import numpy as np

from szero_jax.models.configs import TemporalVAEConfig, VAEConfig

_NORMS = {"norm", "norm1", "norm2", "norm_out"}
_DENSE = {"q", "k", "v", "proj_out"}
_RESNET_PARTS = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
                 "nin_shortcut": "shortcut", "conv_shortcut": "shortcut"}
_ATTN_PARTS = {"norm": "norm", "q": "q", "k": "k", "v": "v", "proj_out": "proj_out",
               "group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v",
               "to_out.0": "proj_out", "query": "q", "key": "k", "value": "v",
               "proj_attn": "proj_out"}


def _dense(w: np.ndarray) -> np.ndarray:
    """Linear [O, I] or 1x1 conv [O, I, 1, 1] -> Dense kernel [I, O]."""
    if w.ndim == 4 and w.shape[2:] == (1, 1):
        return w[:, :, 0, 0].T
    if w.ndim == 2:
        return w.T
    raise ValueError(f"expected a linear or 1x1 conv weight, got shape {w.shape}")


def _conv(w: np.ndarray) -> np.ndarray:
    """[O, I, *k] -> [*k, I, O]."""
    return np.transpose(w, tuple(range(2, w.ndim)) + (1, 0))


def _leaf(module_path: str, param: str) -> Optional[tuple[str, object]]:
    """The Flax leaf and transform of `param` ('weight' / 'bias' / 'mix_factor')."""
    last = module_path.rsplit("/", 1)[-1]
    if param == "bias":
        return f"{module_path}/bias", "none"
    if param != "weight":
        return None
    if last in _NORMS:
        return f"{module_path}/scale", "none"
    if last in _DENSE:
        return f"{module_path}/kernel", _dense
    return f"{module_path}/kernel", _conv


def _split(key: str) -> tuple[str, str]:
    module, _, param = key.rpartition(".")
    return module, param


def lvdm_keymap(config: VAEConfig, prefix: str = "") -> Callable[[str], Optional[tuple]]:
    """lvdm / ldm names, e.g. `first_stage_model.encoder.down.0.block.1.conv1.weight`."""
    del config  # lvdm names carry their level index directly

    def fn(key: str):
        if not key.startswith(prefix):
            return None
        module, param = _split(key[len(prefix):])
        if module in ("quant_conv", "post_quant_conv"):
            return _leaf(module, param)
        m = re.fullmatch(r"(encoder|decoder)\.(.+)", module)
        if not m:
            return None
        side, rest = m.groups()
        if rest in ("conv_in", "conv_out", "norm_out"):
            return _leaf(f"{side}/{rest}", param)
        m = re.fullmatch(r"(down|up)\.(\d+)\.block\.(\d+)\.(\w+)", rest)
        if m and _RESNET_PARTS.get(m[4]) and (m[1] == "down") == (side == "encoder"):
            return _leaf(f"{side}/{m[1]}_{m[2]}_block_{m[3]}/{_RESNET_PARTS[m[4]]}", param)
        m = re.fullmatch(r"(down|up)\.(\d+)\.(downsample|upsample)\.conv", rest)
        if m and (m[1] == "down") == (m[3] == "downsample") == (side == "encoder"):
            return _leaf(f"{side}/{m[1]}_{m[2]}_{m[3]}/conv", param)
        m = re.fullmatch(r"mid\.(block_[12])\.(\w+)", rest)
        if m and _RESNET_PARTS.get(m[2]):
            return _leaf(f"{side}/mid_{m[1]}/{_RESNET_PARTS[m[2]]}", param)
        m = re.fullmatch(r"mid\.attn_1\.(\w+)", rest)
        if m and m[1] in ("norm", "q", "k", "v", "proj_out"):
            return _leaf(f"{side}/mid_attn_1/{m[1]}", param)
        return None
    return fn


def _diffusers_common(side: str, rest: str, param: str, levels: int, temporal: bool):
    """Encoder/decoder names shared by AutoencoderKL and the temporal VAE."""
    if rest in ("conv_in", "conv_out"):
        return _leaf(f"{side}/{rest}", param)
    if rest == "conv_norm_out":
        return _leaf(f"{side}/norm_out", param)
    m = re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest)
    if m and m[1] in _ATTN_PARTS:
        return _leaf(f"{side}/mid_attn_1/{_ATTN_PARTS[m[1]]}", param)
    if side == "encoder":
        m = re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)", rest)
        if m and m[3] in _RESNET_PARTS:
            return _leaf(f"encoder/down_{m[1]}_block_{m[2]}/{_RESNET_PARTS[m[3]]}", param)
        m = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", rest)
        if m:
            return _leaf(f"encoder/down_{m[1]}_downsample/conv", param)
        m = re.fullmatch(r"mid_block\.resnets\.([01])\.(\w+)", rest)
        if m and m[2] in _RESNET_PARTS:
            return _leaf(f"encoder/mid_block_{int(m[1]) + 1}/{_RESNET_PARTS[m[2]]}", param)
        return None
    m = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv", rest)
    if m:
        return _leaf(f"decoder/up_{levels - 1 - int(m[1])}_upsample/conv", param)
    m = re.fullmatch(r"(?:mid_block|up_blocks\.(\d+))\.resnets\.(\d+)\.(.+)", rest)
    if not m:
        return None
    if m[1] is None:
        if m[2] not in ("0", "1"):
            return None
        block = f"decoder/mid_block_{int(m[2]) + 1}"
    else:
        block = f"decoder/up_{levels - 1 - int(m[1])}_block_{m[2]}"
    sub = m[3]
    if not temporal:
        return _leaf(f"{block}/{_RESNET_PARTS[sub]}", param) if sub in _RESNET_PARTS else None
    if sub == "time_mixer" and param == "mix_factor":
        return f"{block}/mix_factor", "none"
    m = re.fullmatch(r"(spatial|temporal)_res_block\.(\w+)", sub)
    if m and m[2] in _RESNET_PARTS and (m[1] == "spatial" or _RESNET_PARTS[m[2]] != "shortcut"):
        return _leaf(f"{block}/{m[1]}/{_RESNET_PARTS[m[2]]}", param)
    return None


def diffusers_keymap(config: VAEConfig, prefix: str = "") -> Callable[[str], Optional[tuple]]:
    """diffusers `AutoencoderKL` names, e.g. `decoder.up_blocks.0.resnets.2.conv1.weight`."""
    levels = len(config.block_out_channels)

    def fn(key: str):
        if not key.startswith(prefix):
            return None
        module, param = _split(key[len(prefix):])
        if module in ("quant_conv", "post_quant_conv"):
            return _leaf(module, param)
        side, _, rest = module.partition(".")
        if side not in ("encoder", "decoder"):
            return None
        return _diffusers_common(side, rest, param, levels, temporal=False)
    return fn


def temporal_keymap(config: TemporalVAEConfig,
                    prefix: str = "") -> Callable[[str], Optional[tuple]]:
    """diffusers `AutoencoderKLTemporalDecoder` names (SVD-xt `vae/`)."""
    levels = len(config.block_out_channels)

    def fn(key: str):
        if not key.startswith(prefix):
            return None
        module, param = _split(key[len(prefix):])
        if module == "quant_conv":
            return _leaf(module, param)
        if module == "decoder.time_conv_out":
            return (f"decoder/time_conv_out/{'kernel' if param == 'weight' else 'bias'}",
                    _conv if param == "weight" else "none")
        side, _, rest = module.partition(".")
        if side not in ("encoder", "decoder"):
            return None
        return _diffusers_common(side, rest, param, levels, temporal=side == "decoder")
    return fn
