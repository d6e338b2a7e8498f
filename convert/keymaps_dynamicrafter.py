"""PyTorch key -> Flax param path maps for DynamiCrafter checkpoints (pure functions).

``lvdm_keymap`` covers the video UNet and the Resampler, whose Flax modules are named after
the PyTorch ones with list indices joined by ``_``: ``input_blocks.1.0.in_layers.2.weight``
-> ``input_blocks_1_0/in_layers_2/kernel``. ``to_out.0`` (a Linear + Dropout Sequential) is
``to_out``. ``weight`` becomes ``scale`` on norms and ``kernel`` elsewhere (transposed for a
Linear, ``[O, I, *k] -> [*k, I, O]`` for a convolution, told apart by rank).

``checkpoint_keymap(parts)`` composes the per-network maps by checkpoint prefix, so a released
``.ckpt`` maps onto ``{"unet": ..., "resampler": ..., "text_encoder": ..., ...}``; the
autoencoder and OpenCLIP maps come from ``szero_jax.models.vae_keymaps`` / ``clip_keymaps``.
"""
from __future__ import annotations

import re
from typing import Callable, Optional

import numpy as np

from szero_jax.models import clip_keymaps, configs, vae_keymaps

# lvdm norms: transformer LayerNorms/GroupNorms, ResBlock and output GroupNorms, the
# TemporalConvBlock GroupNorms (convN.0), the Resampler feed-forward LayerNorm (layers.i.1.0).
_NORM = re.compile(r"norm\d*|norm_out|in_layers_0|out_layers_0|out_0|conv\d_0|layers_\d+_1_0")
_PLAIN_LEAVES = ("bias", "latents", "alpha")

# Buffers of the diffusion wrapper (lvdm ddpm3d.DDPM / LatentDiffusion): recomputed by
# szero_jax.diffusion from the config, never converted.
SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
    "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "scale_arr", "scale_factor", "logvar")
DROPPED_BUFFERS = tuple(re.compile(rf"^{name}$") for name in SCHEDULE_BUFFERS)


def kernel(w: np.ndarray) -> np.ndarray:
    """A PyTorch Linear ``[O, I]`` or conv ``[O, I, *k]`` weight in Flax layout."""
    if w.ndim == 2:
        return w.T
    if w.ndim >= 3:
        return np.transpose(w, tuple(range(2, w.ndim)) + (1, 0))
    raise ValueError(f"expected a Linear or conv weight (rank >= 2), got shape {w.shape}")


def lvdm_keymap(key: str) -> Optional[tuple[str, object]]:
    """UNet (``model.diffusion_model.`` stripped) or Resampler key -> (flax path, transform)."""
    *modules, leaf = key.split(".")
    names: list[str] = []
    for part in modules:
        if not part.isdigit():
            names.append(part)
        elif not names:
            return None
        elif not (names[-1] == "to_out" and part == "0"):
            names[-1] = f"{names[-1]}_{part}"
    if leaf == "weight" and names:
        if _NORM.fullmatch(names[-1]):
            return "/".join(names + ["scale"]), "none"
        return "/".join(names + ["kernel"]), kernel
    if leaf in _PLAIN_LEAVES:
        return "/".join(names + [leaf]), "none"
    return None


def _strip(prefix: str, fn: Callable[[str], object]):
    return lambda key: fn(key[len(prefix):])


# part -> (checkpoint prefix, factory(prefix, DynamiCrafterConfig) -> fn(full key))
PARTS: dict[str, tuple[str, Callable]] = {
    "unet": ("model.diffusion_model.", lambda p, cfg: _strip(p, lvdm_keymap)),
    "resampler": ("image_proj_model.", lambda p, cfg: _strip(p, lvdm_keymap)),
    "vae": ("first_stage_model.",
            lambda p, cfg: vae_keymaps.lvdm_keymap(configs.get(cfg.vae), p)),
    "text_encoder": ("cond_stage_model.model.",
                     lambda p, cfg: clip_keymaps.openclip_text_keymap(p)),
    "image_encoder": ("embedder.model.", lambda p, cfg: clip_keymaps.openclip_vision_keymap(p)),
}
# Keys of a converted part that its network knowingly ignores (OpenCLIP's other tower).
PART_DROPPED: dict[str, Callable[[str], tuple]] = {
    "text_encoder": clip_keymaps.openclip_text_dropped,
    "image_encoder": clip_keymaps.openclip_vision_dropped,
}


def _check_parts(parts) -> None:
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ValueError(f"parts: expected a non-empty subset of {tuple(PARTS)}, got {tuple(parts)}")


def _prefixed(part: str, result):
    if result is None:
        return None
    items = [result] if isinstance(result, tuple) else result
    return [(f"{part}/{path}", transform) for path, transform in items]


def checkpoint_keymap(config, parts=tuple(PARTS)) -> Callable[[str], object]:
    """Full-checkpoint key -> ``[(part/path, transform), ...]`` for the chosen ``parts`` of a
    release described by ``config`` (a ``DynamiCrafterConfig``)."""
    _check_parts(parts)
    fns = {}
    for part in parts:
        prefix, factory = PARTS[part]
        fns[prefix] = (part, factory(prefix, config))

    def keymap(key: str):
        for prefix, (part, fn) in fns.items():
            if key.startswith(prefix):
                return _prefixed(part, fn(key))
        return None
    return keymap


def checkpoint_dropped(parts=tuple(PARTS)) -> tuple:
    """Keys to skip knowingly: schedule buffers, the parts not converted, and keys each
    converted part's network ignores."""
    _check_parts(parts)
    dropped = list(DROPPED_BUFFERS)
    for part, (prefix, _) in PARTS.items():
        if part not in parts:
            dropped.append(prefix)
        elif part in PART_DROPPED:
            dropped.extend(PART_DROPPED[part](prefix))
    return tuple(dropped)
