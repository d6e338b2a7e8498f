"""Shared pieces of the PyTorch -> Flax converters: safe loading and key-by-key mapping.

Loading never unpickles arbitrary objects: `.safetensors` files are read with the
safetensors numpy API, tensor by tensor; `.ckpt/.pt/.pth/.bin` go through
`torch.load(weights_only=True, mmap=True)`, which refuses any pickle that would build
something other than tensors and plain containers.

Mapping is a stream: `convert_state_dict` takes (key, array) pairs one at a time, so a
memory-mapped PyTorch checkpoint and the growing Flax tree are never both fully in memory.
A key map is a pure function `torch_key -> None | (flax_path, transform) | [(path, transform), ...]`
where `flax_path` is "a/b/c" inside the `params` collection and `transform` names a rule
in `TRANSFORMS` or is a callable on the numpy array.
"""
from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"


class ConversionError(ValueError):
    """A state dict did not map completely onto the target params."""


# ---------------------------------------------------------------------------------------
# Loading.


class StateDict(Mapping):
    """A read-only, lazy view of a checkpoint's tensors: each value is read on access."""

    def __init__(self, keys: list[str], getter: Callable[[str], np.ndarray],
                 shapes: dict[str, tuple[int, ...]]):
        self._keys = list(keys)
        self._getter = getter
        self.shapes = shapes

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.shapes:
            raise KeyError(key)
        return self._getter(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _safetensors_raw_reader(path: Path):
    """Reads tensors numpy cannot name (bfloat16, float8) straight from the file via ml_dtypes."""
    import ml_dtypes  # pylint: disable=import-outside-toplevel  (a jax dependency)
    dtypes = {"BF16": ml_dtypes.bfloat16, "F8_E4M3": ml_dtypes.float8_e4m3fn,
              "F8_E5M2": ml_dtypes.float8_e5m2}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))

    def read(key: str) -> np.ndarray:
        info = header[key]
        if info["dtype"] not in dtypes:
            raise ValueError(f"path: {path} tensor {key!r} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        raw = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n + start, shape=(end - start,))
        return np.array(raw).view(dtypes[info["dtype"]]).reshape(info["shape"]).astype(np.float32)
    return read


def _load_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError, safe_open  # pylint: disable=import-outside-toplevel
    try:
        handle = safe_open(str(path), framework="np")
    except (SafetensorError, OSError) as e:
        raise ValueError(f"path: {path} is not a readable safetensors file: {e}") from e
    keys = list(handle.keys())
    shapes, raw_keys = {}, set()
    for k in keys:
        sl = handle.get_slice(k)
        shapes[k] = tuple(sl.get_shape())
        if sl.get_dtype() in ("BF16", "F8_E4M3", "F8_E5M2"):
            raw_keys.add(k)
    raw = _safetensors_raw_reader(path) if raw_keys else None

    def get(k: str) -> np.ndarray:
        return raw(k) if k in raw_keys else handle.get_tensor(k)
    return StateDict(keys, get, shapes)


def _unwrap(obj: Any, path: Path) -> dict:
    """Finds the flat tensor dict inside a Lightning / DeepSpeed checkpoint."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    elif isinstance(obj, Mapping) and "module" in obj and isinstance(obj["module"], Mapping):
        # DeepSpeed checkpoints (e.g. DynamiCrafter 1024) prefix every key with "_forward_module.".
        obj = {k.removeprefix("_forward_module."): v for k, v in obj["module"].items()}
    if not isinstance(obj, Mapping):
        raise ValueError(f"path: {path} holds a {type(obj).__name__}; expected a state dict")
    return dict(obj)


def _load_torch(path: Path) -> StateDict:
    import pickle  # pylint: disable=import-outside-toplevel  (for the exception type only)
    import torch  # pylint: disable=import-outside-toplevel
    try:
        try:
            obj = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # legacy (non-zip) files cannot be memory-mapped
                raise
            obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"path: refused to load {path}: it is not a weights-only checkpoint (its pickle "
            f"asks for objects beyond tensors and plain containers). {e}") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"path: {path} is not a readable PyTorch checkpoint (truncated?): "
                         f"{type(e).__name__}: {e}") from e
    state = _unwrap(obj, path)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}

    def get(k: str) -> np.ndarray:
        t = tensors[k].detach()
        if t.dtype.is_floating_point and (t.dtype == torch.bfloat16 or t.itemsize == 1):
            t = t.to(torch.float32)  # numpy has no bfloat16 / float8
        return t.numpy()
    return StateDict(list(tensors), get, {k: tuple(v.shape) for k, v in tensors.items()})


def load_state_dict(path: str | os.PathLike) -> StateDict:
    """Opens a PyTorch weight file safely and returns a lazy {key: numpy array} mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no checkpoint file at {path}")
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        return _load_safetensors(path)
    if suffix in TORCH_SUFFIXES:
        return _load_torch(path)
    raise ValueError(f"path: {path} has suffix {suffix!r}; expected {SAFETENSORS_SUFFIX} or one "
                     f"of {TORCH_SUFFIXES}")


def load_safetensors_dir(paths: Iterable[str | os.PathLike]) -> StateDict:
    """Joins several weight files (e.g. sharded diffusers weights) into one lazy mapping."""
    parts = [load_state_dict(p) for p in paths]
    owner, shapes = {}, {}
    for part in parts:
        for k in part:
            if k in owner:
                raise ValueError(f"paths: key {k!r} appears in more than one file")
            owner[k], shapes[k] = part, part.shapes[k]
    return StateDict(list(owner), lambda k: owner[k][k], shapes)


# ---------------------------------------------------------------------------------------
# Tensor layout transforms (PyTorch -> Flax, channels last).

def _linear(w):  # [out, in] -> [in, out]
    return w.T


def _conv(w):  # [O, I, *spatial] -> [*spatial, I, O]  (conv1d, conv2d, conv3d)
    return np.transpose(w, tuple(range(2, w.ndim)) + (1, 0))


def _conv1x1_to_linear(w):  # [O, I, 1, ...] -> [I, O]  (1x1 convs ported as Dense)
    if any(s != 1 for s in w.shape[2:]):
        raise ValueError(f"expected a 1x1 convolution kernel, got shape {w.shape}")
    return w.reshape(w.shape[:2]).T


def _linear_to_conv1x1(w):  # [O, I] -> [1, 1, I, O]  (Linear ported as a 1x1 conv)
    return w.T[None, None]


TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda w: w,
    "linear": _linear,
    "conv": _conv,
    "conv1x1_to_linear": _conv1x1_to_linear,
    "linear_to_conv1x1": _linear_to_conv1x1,
}


def kernel_transform(torch_key: str, ndim: int) -> str:
    """Default rule for a `.weight` by its rank: 2 -> linear, >= 3 -> conv, else as is."""
    if torch_key.endswith(".weight") and ndim == 2:
        return "linear"
    if torch_key.endswith(".weight") and ndim >= 3:
        return "conv"
    return "none"


# ---------------------------------------------------------------------------------------
# Trees.

def flatten(tree: Mapping, sep: str = "/") -> dict[str, Any]:
    """{'a': {'b': x}} -> {'a/b': x}."""
    out = {}

    def walk(node, prefix):
        for k, v in node.items():
            p = f"{prefix}{sep}{k}" if prefix else str(k)
            if isinstance(v, Mapping):
                walk(v, p)
            else:
                out[p] = v
    walk(tree, "")
    return out


def unflatten(flat: Mapping[str, Any], sep: str = "/") -> dict:
    """{'a/b': x} -> {'a': {'b': x}}; raises on a path that is both a leaf and a node."""
    root: dict = {}
    for path, value in flat.items():
        parts = path.split(sep)
        node = root
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"flat: path {path!r} passes through a leaf at {p!r}")
        if parts[-1] in node:
            raise ValueError(f"flat: path {path!r} given twice or also used as a node")
        node[parts[-1]] = value
    return root


def target_shapes(params_or_shapes: Any) -> dict[str, tuple[int, ...]]:
    """Flat {path: shape} of a params tree, a `jax.eval_shape` result or a flat shape dict.

    A top-level {'params': ...} wrapper (what `Module.init` returns) is removed.
    """
    tree = params_or_shapes
    if isinstance(tree, Mapping) and set(tree) == {"params"}:
        tree = tree["params"]
    flat = flatten(tree) if any(isinstance(v, Mapping) for v in tree.values()) else dict(tree)
    return {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in flat.items()}


# ---------------------------------------------------------------------------------------
# Mapping.

def _is_dropped(key: str, dropped: Iterable[str | re.Pattern]) -> bool:
    for d in dropped:
        if isinstance(d, re.Pattern):
            if d.search(key):
                return True
        elif key.startswith(d):
            return True
    return False


def _format_problems(problems: dict[str, list[str]], limit: int = 200) -> str:
    lines = []
    for kind, items in problems.items():
        if items:
            lines.append(f"{len(items)} {kind}:")
            lines += [f"  {s}" for s in items[:limit]]
            if len(items) > limit:
                lines.append(f"  ... and {len(items) - limit} more")
    return "\n".join(lines)


def convert_state_dict(
    state_items: Iterable[tuple[str, np.ndarray]],
    keymap_fn: Callable[[str], Any],
    target: Any,
    dropped: Iterable[str | re.Pattern] = (),
    dtype: Any = np.float32,
    copy: bool = True,
) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (flax_path, array) for every PyTorch tensor, then checks completeness.

    state_items: (torch_key, array) pairs, e.g. `load_state_dict(p).items()` (lazy).
    keymap_fn:   torch_key -> None (unmapped) | (path, transform) | list of those.
    target:      the params the arrays must fill (see `target_shapes`).
    dropped:     key prefixes (str) or compiled regexes of keys to skip knowingly.
    copy:        False yields views as the transforms leave them (shape checks only).
    After the last pair, raises one `ConversionError` listing every unmapped torch key,
    every target path left unfilled or filled twice, and every shape mismatch.
    """
    shapes = target_shapes(target)
    dropped = tuple(dropped)
    filled: set[str] = set()
    problems: dict[str, list[str]] = {"unmapped PyTorch keys": [], "mis-shaped keys": [],
                                      "Flax params filled twice": [],
                                      "mapped to unknown Flax params": [],
                                      "Flax params missing": []}
    for key, value in state_items:
        if _is_dropped(key, dropped):
            continue
        targets = keymap_fn(key)
        if targets is None:
            problems["unmapped PyTorch keys"].append(f"{key} {tuple(np.shape(value))}")
            continue
        if isinstance(targets, tuple):
            targets = [targets]
        value = np.asarray(value)
        for path, transform in targets:
            fn = TRANSFORMS[transform] if isinstance(transform, str) else transform
            try:
                arr = fn(value)
            except ValueError as e:
                problems["mis-shaped keys"].append(f"{key} -> {path}: {e}")
                continue
            if path not in shapes:
                problems["mapped to unknown Flax params"].append(f"{key} -> {path}")
                continue
            if path in filled:
                problems["Flax params filled twice"].append(f"{path} (again from {key})")
                continue
            if tuple(arr.shape) != shapes[path]:
                problems["mis-shaped keys"].append(
                    f"{key} {tuple(value.shape)} -> {path}: got {tuple(arr.shape)} after "
                    f"{transform if isinstance(transform, str) else 'transform'}, "
                    f"expected {shapes[path]}")
                continue
            filled.add(path)
            if copy:
                if np.issubdtype(arr.dtype, np.floating) and dtype is not None:
                    arr = arr.astype(dtype)
                arr = np.ascontiguousarray(arr)
            yield path, arr
    problems["Flax params missing"] = [f"{p} {shapes[p]}" for p in shapes if p not in filled]
    if any(problems.values()):
        raise ConversionError("state dict does not map onto the Flax params:\n"
                              + _format_problems(problems))


def check_keymap(key_shapes: Mapping[str, Iterable[int]], keymap_fn: Callable[[str], Any],
                 target: Any, dropped: Iterable[str | re.Pattern] = ()) -> int:
    """Runs `convert_state_dict` on shapes only (uninitialised, untouched stand-in arrays).

    key_shapes: {torch_key: shape}, e.g. from a meta-device model or a key/shape listing.
    Returns the number of Flax params filled; raises `ConversionError` like the real run.
    """
    items = ((k, np.empty(tuple(s), np.float32)) for k, s in key_shapes.items())
    return sum(1 for _ in convert_state_dict(items, keymap_fn, target, dropped, copy=False))


def convert_to_tree(state_items: Iterable[tuple[str, np.ndarray]], keymap_fn, target,
                    dropped=(), dtype=np.float32) -> dict:
    """`convert_state_dict` collected into the nested params dict (without a 'params' key)."""
    return unflatten(dict(convert_state_dict(state_items, keymap_fn, target, dropped, dtype)))
