"""PyTorch key -> Flax param path maps for `szero_jax.models.clip` (pure functions).

Two sources, one network:
- OpenCLIP (``open_clip.CLIP``; DynamiCrafter's ``cond_stage_model.model.`` and
  ``embedder.model.``): attention packs q/k/v into ``attn.in_proj_weight [3W, W]``, which is
  split into ``to_q``/``to_k``/``to_v``; ``text_projection`` and ``visual.proj`` are stored
  ``[in, out]`` already.
- Hugging Face ``CLIPTextModel`` / ``CLIPTextModelWithProjection`` (``text_model.``) and
  ``CLIPVisionModelWithProjection`` (``vision_model.``, ``visual_projection``).

Each ``*_keymap(prefix)`` returns ``fn(torch_key) -> None | (path, transform) | [...]`` in the
form `convert.common.convert_state_dict` takes; ``*_dropped(prefix)`` lists the keys of the
same checkpoint that the tower knowingly ignores (the other tower, ``logit_scale``).
"""
from __future__ import annotations

import re

_LN = {"weight": "scale", "bias": "bias"}
_LINEAR = {"weight": ("kernel", "linear"), "bias": ("bias", "none")}


def _split(i: int):
    """Transform taking the i-th third (q, k, v) of a packed in_proj tensor on axis 0."""
    def take(w):
        n = w.shape[0]
        if n % 3:
            raise ValueError(f"packed in_proj has {n} rows, not a multiple of 3")
        part = w[i * n // 3:(i + 1) * n // 3]
        return part.T if part.ndim == 2 else part
    return take


def _block(i: str, name: str, leaf: str):
    """A residual block parameter: block index, sub-module name (Flax), torch leaf."""
    base = f"transformer/blocks_{i}"
    if name in ("ln_1", "ln_2"):
        return f"{base}/{name}/{_LN[leaf]}", "none"
    if name == "in_proj":
        kind = "kernel" if leaf == "weight" else "bias"
        return [(f"{base}/attn/{q}/{kind}", _split(j)) for j, q in enumerate(("to_q", "to_k", "to_v"))]
    flax = {"q": "attn/to_q", "k": "attn/to_k", "v": "attn/to_v", "out": "attn/to_out",
            "fc1": "fc1", "fc2": "fc2"}[name]
    kind, rule = _LINEAR[leaf]
    return f"{base}/{flax}/{kind}", rule


_OC_BLOCK = re.compile(
    r"transformer\.resblocks\.(\d+)\.(ln_1|ln_2|attn\.in_proj|attn\.out_proj|mlp\.c_fc|mlp\.c_proj)"
    r"(?:\.|_)(weight|bias)$")
_OC_NAMES = {"ln_1": "ln_1", "ln_2": "ln_2", "attn.in_proj": "in_proj", "attn.out_proj": "out",
             "mlp.c_fc": "fc1", "mlp.c_proj": "fc2"}
_HF_BLOCK = re.compile(
    r"encoder\.layers\.(\d+)\.(layer_norm1|layer_norm2|self_attn\.q_proj|self_attn\.k_proj|"
    r"self_attn\.v_proj|self_attn\.out_proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$")
_HF_NAMES = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.q_proj": "q",
             "self_attn.k_proj": "k", "self_attn.v_proj": "v", "self_attn.out_proj": "out",
             "mlp.fc1": "fc1", "mlp.fc2": "fc2"}


def _make(prefix: str, table: dict, block_re: re.Pattern, names: dict):
    def keymap(key: str):
        if not key.startswith(prefix):
            return None
        rel = key[len(prefix):]
        if rel in table:
            return table[rel]
        m = block_re.fullmatch(rel)
        if m is None:
            return None
        i, name, leaf = m.groups()
        if name == "attn.in_proj":  # in_proj_weight / in_proj_bias
            return _block(i, "in_proj", leaf)
        return _block(i, names[name], leaf)
    return keymap


def _ln(torch_name: str, flax_name: str) -> dict:
    return {f"{torch_name}.weight": (f"{flax_name}/scale", "none"),
            f"{torch_name}.bias": (f"{flax_name}/bias", "none")}


# --------------------------------------------------------------------------------- OpenCLIP
def openclip_text_keymap(prefix: str = ""):
    """OpenCLIP text tower (``prefix`` e.g. ``"cond_stage_model.model."``)."""
    table = {"token_embedding.weight": ("token_embedding/embedding", "none"),
             "positional_embedding": ("positional_embedding", "none"),
             "text_projection": ("text_projection/kernel", "none"),
             **_ln("ln_final", "ln_final")}
    return _make(prefix, table, _OC_BLOCK, _OC_NAMES)


def openclip_text_dropped(prefix: str = ""):
    """Keys the text tower ignores: the visual tower and ``logit_scale`` (and its bias)."""
    return (re.compile(rf"^{re.escape(prefix)}(visual\.|logit_scale$|logit_bias$)"),)


def openclip_vision_keymap(prefix: str = ""):
    """OpenCLIP vision tower: keys ``{prefix}visual.*`` (``prefix`` e.g. ``"embedder.model."``)."""
    table = {"conv1.weight": ("patch_embed/kernel", "conv"),
             "class_embedding": ("class_embedding", "none"),
             "positional_embedding": ("positional_embedding", "none"),
             "proj": ("proj/kernel", "none"),
             **_ln("ln_pre", "ln_pre"), **_ln("ln_post", "ln_post")}
    return _make(prefix + "visual.", table, _OC_BLOCK, _OC_NAMES)


def openclip_vision_dropped(prefix: str = ""):
    """Keys the vision tower ignores: everything outside ``visual.`` (text parts, logit_scale)."""
    return (re.compile(rf"^{re.escape(prefix)}(?!visual\.)"),)


# --------------------------------------------------------------------------------- Hugging Face
def hf_text_keymap(prefix: str = ""):
    """``CLIPTextModel`` / ``CLIPTextModelWithProjection`` state dicts.

    Released files (e.g. SD ``text_encoder/model.safetensors``) and ``...WithProjection`` name
    the tower ``text_model.*``; transformers 5's ``CLIPTextModel`` drops that level. Both map.
    """
    table = {"embeddings.token_embedding.weight": ("token_embedding/embedding", "none"),
             "embeddings.position_embedding.weight": ("positional_embedding", "none"),
             **_ln("final_layer_norm", "ln_final")}
    top = {"text_projection.weight": ("text_projection/kernel", "linear")}
    return _hf(prefix, "text_model.", top, _make("", table, _HF_BLOCK, _HF_NAMES))


def hf_vision_keymap(prefix: str = ""):
    """``CLIPVisionModel`` / ``CLIPVisionModelWithProjection`` state dicts (``vision_model.*``
    optional as for the text tower, plus ``visual_projection``)."""
    table = {"embeddings.class_embedding": ("class_embedding", "none"),
             "embeddings.patch_embedding.weight": ("patch_embed/kernel", "conv"),
             "embeddings.position_embedding.weight": ("positional_embedding", "none"),
             **_ln("pre_layrnorm", "ln_pre"), **_ln("post_layernorm", "ln_post")}
    top = {"visual_projection.weight": ("proj/kernel", "linear")}
    return _hf(prefix, "vision_model.", top, _make("", table, _HF_BLOCK, _HF_NAMES))


def _hf(prefix: str, tower: str, top: dict, inner):
    def keymap(key: str):
        if not key.startswith(prefix):
            return None
        rel = key[len(prefix):]
        return top[rel] if rel in top else inner(rel.removeprefix(tower))
    return keymap
