"""Shared pieces of the PyTorch -> Flax converters: safe loading, key-by-key mapping, and
conversion streamed into a checkpoint.

Loading never unpickles arbitrary objects: `.safetensors` files are read tensor by tensor
with plain file reads (`szero_jax.tensorfile`); `.ckpt/.pt/.pth/.bin` go through
`torch.load(weights_only=True, mmap=True)`, which refuses any pickle that would build
something other than tensors and plain containers.

Mapping is a stream: `convert_state_dict` takes (key, array) pairs one at a time. A
converter describes each network as a `Job`, checks every job on shapes alone
(`check_jobs`: all problems listed before a byte is read), then `write_checkpoint` reads,
converts and writes one tensor at a time into a `szero_jax.checkpoints.ParamsWriter`, so
memory holds a tensor or two, never a network, whatever the checkpoint's size.
A key map is a pure function `torch_key -> None | (flax_path, transform) | [(path, transform), ...]`
where `flax_path` is "a/b/c" inside the `params` collection and `transform` names a rule
in `TRANSFORMS` or is a callable on the numpy array.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Optional

import numpy as np

from szero_jax import tensorfile

TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
OUTPUT_DTYPES = ("float32", "bfloat16")


class ConversionError(ValueError):
    """A state dict did not map completely onto the target params."""


def output_dtype(name: str):
    """The numpy dtype of a converter's ``--dtype`` (the dtype params are stored in)."""
    if name == "float32":
        return np.dtype(np.float32)
    if name == "bfloat16":
        import ml_dtypes  # pylint: disable=import-outside-toplevel  (a jax dependency)
        return np.dtype(ml_dtypes.bfloat16)
    raise ValueError(f"dtype: expected one of {OUTPUT_DTYPES}, got {name!r}")


# ---------------------------------------------------------------------------------------
# Loading.


class StateDict(Mapping):
    """A read-only, lazy view of a checkpoint's tensors: each value is read on access.

    ``stream(keys)`` yields (key, array) pairs and, once the consumer asks for the next
    pair, gives the previous tensor's pages back (``release``): a memory-mapped ``.ckpt``
    would otherwise keep every page it was read through resident.
    """

    def __init__(self, keys: list[str], getter: Callable[[str], np.ndarray],
                 shapes: dict[str, tuple[int, ...]],
                 release: Optional[Callable[[str], None]] = None):
        self._keys = list(keys)
        self._getter = getter
        self._release = release
        self.shapes = shapes

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.shapes:
            raise KeyError(key)
        return self._getter(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def release(self, key: str) -> None:
        """Drops the resident pages ``key`` was read through (a no-op for copied reads)."""
        if self._release is not None:
            self._release(key)

    def stream(self, keys: Optional[Iterable[str]] = None) -> Iterator[tuple[str, np.ndarray]]:
        for key in self._keys if keys is None else keys:
            yield key, self[key]
            self.release(key)


def _load_safetensors(path: Path) -> StateDict:
    try:
        handle = tensorfile.TensorFile(path)
    except OSError as e:
        raise ValueError(f"path: {path} is not a readable safetensors file: {e}") from e

    def get(k: str) -> np.ndarray:
        arr = handle[k]
        if handle.info[k]["dtype"] in ("BF16", "F8_E4M3", "F8_E5M2"):
            arr = arr.astype(np.float32)  # the transforms and callers get native numpy floats
        return arr
    return StateDict(list(handle), get, handle.shapes)


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


_MADV_DONTNEED = 4  # <sys/mman.h>, Linux


def _page_releaser() -> Optional[Callable[[Any], None]]:
    """``release(tensor)``: madvise(MADV_DONTNEED) over a memory-mapped tensor's pages.

    The pages are a read-only use of a file mapping, so dropping them loses nothing (a later
    access reads them from the file again); only the resident set shrinks. None where libc
    has no madvise: the conversion still works, holding more resident memory.
    """
    import ctypes  # pylint: disable=import-outside-toplevel
    import mmap  # pylint: disable=import-outside-toplevel
    if not sys.platform.startswith("linux"):
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE

    def release(t) -> None:
        storage = t.untyped_storage()
        ptr, n = storage.data_ptr(), storage.nbytes()
        if n:
            start, end = ptr // page * page, -(-(ptr + n) // page) * page
            madvise(start, end - start, _MADV_DONTNEED)
    return release


def _load_torch(path: Path) -> StateDict:
    import pickle  # pylint: disable=import-outside-toplevel  (for the exception type only)
    import torch  # pylint: disable=import-outside-toplevel
    mapped = True
    try:
        try:
            obj = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # legacy (non-zip) files cannot be memory-mapped
                raise
            obj, mapped = torch.load(path, weights_only=True, map_location="cpu"), False
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"path: refused to load {path}: it is not a weights-only checkpoint (its pickle "
            f"asks for objects beyond tensors and plain containers). {e}") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"path: {path} is not a readable PyTorch checkpoint (truncated?): "
                         f"{type(e).__name__}: {e}") from e
    state = _unwrap(obj, path)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    # Only pages of the mapped file may be dropped: in a legacy file's anonymous (read-in)
    # copy, MADV_DONTNEED would zero the data.
    release_pages = _page_releaser() if mapped else None

    def get(k: str) -> np.ndarray:
        t = tensors[k].detach()
        if t.dtype.is_floating_point and (t.dtype == torch.bfloat16 or t.itemsize == 1):
            t = t.to(torch.float32)  # numpy has no bfloat16 / float8
        return t.numpy()

    def release(k: str) -> None:
        release_pages(tensors[k])
    return StateDict(list(tensors), get, {k: tuple(v.shape) for k, v in tensors.items()},
                     release if release_pages else None)


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
    return StateDict(list(owner), lambda k: owner[k][k], shapes, lambda k: owner[k].release(k))


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

    state_items: (torch_key, array) pairs, e.g. `load_state_dict(p).stream()` (lazy).
    keymap_fn:   torch_key -> None (unmapped) | (path, transform) | list of those.
    target:      the params the arrays must fill (see `target_shapes`).
    dropped:     key prefixes (str) or compiled regexes of keys to skip knowingly.
    dtype:       floating-point arrays are cast to it (None: kept as read).
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
            if copy:  # one pass: cast and lay out (no copy when both already hold)
                if tensorfile.is_float(arr.dtype) and dtype is not None:
                    arr = arr.astype(dtype, order="C", copy=False)
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


# ---------------------------------------------------------------------------------------
# Streaming conversion into a checkpoint.

@dataclasses.dataclass(frozen=True, eq=False)
class Job:
    """One network of an output checkpoint: the source tensors it reads and how they map.

    name:    label for progress and error messages (e.g. "unet").
    state:   the source tensors (lazy, from `load_state_dict`).
    keymap, target, dropped: as in `convert_state_dict`; the key map's paths are the
             checkpoint's param paths (DynamiCrafter's parts prefix theirs, "unet/...").
    select:  which of the state's keys belong to this network (None: all of them).
    """
    name: str
    state: StateDict
    keymap: Callable[[str], Any]
    target: Any
    dropped: tuple = ()
    select: Optional[Callable[[str], bool]] = None

    def keys(self) -> list[str]:
        """Source keys this job reads, in the file's order: selected and not dropped."""
        return [k for k in self.state if (self.select is None or self.select(k))
                and not _is_dropped(k, self.dropped)]


def check_jobs(jobs: Iterable[Job], ignored: Iterable[str | re.Pattern] = ()) -> None:
    """Maps every job on shapes alone and raises one `ConversionError` listing the problems
    of all of them, plus the keys of their sources that no job selects and `ignored` does
    not name. Reads no tensor data."""
    jobs, ignored = list(jobs), tuple(ignored)
    problems = []
    for job in jobs:
        shapes = {k: job.state.shapes[k] for k in job.keys()}
        try:
            check_keymap(shapes, job.keymap, job.target, job.dropped)
        except ConversionError as e:
            problems.append(f"{job.name}: {e}")
    states = {id(j.state): j.state for j in jobs}
    for state in states.values():
        mine = [j for j in jobs if j.state is state]
        left = [f"{k} {state.shapes[k]}" for k in state if not _is_dropped(k, ignored)
                and not any(j.select is None or j.select(k) for j in mine)]
        if left:
            problems.append(_format_problems({"unmapped PyTorch keys": left}))
    if problems:
        raise ConversionError("state dict does not map onto the Flax params:\n"
                              + "\n".join(problems))


def target_specs(target: Any, dtype) -> dict[str, tuple[tuple[int, ...], Any]]:
    """{path: (shape, dtype)} of the params a target holds: floats in ``dtype``, other
    leaves (none in the current networks) in their own dtype."""
    tree = target["params"] if isinstance(target, Mapping) and set(target) == {"params"} else target
    flat = flatten(tree)
    out = {}
    for path, leaf in flat.items():
        leaf_dtype = getattr(leaf, "dtype", np.float32)
        out[path] = (tuple(leaf.shape), dtype if tensorfile.is_float(leaf_dtype) else leaf_dtype)
    return out


class Progress:
    """Per-network progress on stderr: a tqdm bar (tensors done, bytes written) on a
    terminal, and a start and an end line either way (logs, tests)."""

    def __init__(self, name: str, tensors: int, nbytes: int, dtype, file=None):
        from tqdm import tqdm  # pylint: disable=import-outside-toplevel
        self.name, self.total, self.nbytes = name, tensors, nbytes
        self.done = self.written = 0
        self.file = file or sys.stderr
        self.start = time.time()
        print(f"{name}: converting {tensors} tensors, {nbytes / 1e9:.2f} GB as "
              f"{np.dtype(dtype).name}", file=self.file, flush=True)
        self.bar = tqdm(total=nbytes, desc=name, unit="B", unit_scale=True, leave=False,
                        file=self.file, disable=not getattr(self.file, "isatty", lambda: False)(),
                        mininterval=0.5)

    def update(self, nbytes: int) -> None:
        self.done += 1
        self.written += nbytes
        self.bar.update(nbytes)
        self.bar.set_postfix_str(f"{self.done}/{self.total} tensors", refresh=False)

    def close(self) -> None:
        self.bar.close()
        print(f"{self.name}: {self.done}/{self.total} tensors, {self.written / 1e9:.2f} GB "
              f"written in {time.time() - self.start:.0f} s", file=self.file, flush=True)


def write_checkpoint(path: str | os.PathLike, jobs: Iterable[Job], config: Any, family: str,
                     dtype, overwrite: bool = False,
                     extra: Optional[Callable[[Path], Any]] = None) -> Path:
    """Converts ``jobs`` (checked first, see `check_jobs`) into one checkpoint at ``path``,
    tensor by tensor, network by network, with floats stored in ``dtype``. ``extra(dir)``
    adds files beside the params before the checkpoint appears (all or nothing)."""
    from szero_jax import checkpoints  # pylint: disable=import-outside-toplevel
    jobs, dtype = list(jobs), np.dtype(dtype)
    specs: dict[str, tuple] = {}
    per_job = []
    for job in jobs:
        mine = target_specs(job.target, dtype)
        clash = sorted(set(mine) & set(specs))
        if clash:
            raise ValueError(f"jobs: {job.name} fills params another job fills: {clash[:5]}")
        specs.update(mine)
        per_job.append(mine)
    with checkpoints.ParamsWriter(path, specs, config, family, overwrite) as writer:
        for job, mine in zip(jobs, per_job):
            nbytes = sum(int(np.prod(s)) * np.dtype(d).itemsize for s, d in mine.values())
            progress = Progress(job.name, len(mine), nbytes, dtype)
            for p, arr in convert_state_dict(job.state.stream(job.keys()), job.keymap,
                                             job.target, job.dropped, dtype):
                progress.update(writer.write(p, arr))
            progress.close()
        if extra is not None:
            extra(writer.staging)
    return Path(path)
