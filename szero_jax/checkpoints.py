"""Save and load Flax params with a JSON config beside them.

A checkpoint is a directory:
        <path>/config.json          {"format_version", "family", "config"}
        <path>/params.safetensors   every param, named by its "a/b/c" path (format 2)
        <path>/params/              an orbax PyTree checkpoint (format 1, still read: the
                                    shipped tiny family)
It is written to a temporary sibling directory and renamed into place, so a reader never
sees a half-written checkpoint. The params file is written and read one tensor at a time
(`szero_jax.tensorfile`, no memory mapping): `ParamsWriter` lets a converter stream a
multi-GB network from its source without holding it, and `load_params(dtype=...)` casts
each tensor as it is read, so a bfloat16 load never holds a float32 copy. Model configs
(frozen dataclasses from `szero_jax.models.configs`, possibly nested) are stored as tagged
dicts and rebuilt by class name; plain dicts are stored as they are.

The shipped tiny family lives under `TINY_DIR/<name>/`, one checkpoint per network.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from szero_jax import tensorfile

FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)   # 1: orbax params/ directory
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.safetensors"
PARAMS_DIR = "params"    # format 1
TINY_DIR = Path(__file__).resolve().parent / "assets" / "tiny"
SEP = "/"

_CLASS_TAG = "__dataclass__"


def _encode(obj: Any) -> Any:
    """JSON-ready form of a config: dataclasses tagged with their class name."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return {_CLASS_TAG: type(obj).__name__, "fields": fields}
    if isinstance(obj, dict):
        return {str(k): _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v) for v in obj]
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ValueError(f"config: cannot store a value of type {type(obj).__name__} ({obj!r}); "
                     "expected dataclasses, dicts, lists, tuples, numbers, strings or None")


def _decode(obj: Any, in_dataclass: bool = False) -> Any:
    """Inverse of `_encode`; lists inside dataclasses become tuples (frozen, hashable)."""
    if isinstance(obj, dict) and _CLASS_TAG in obj:
        from szero_jax.models import configs  # pylint: disable=import-outside-toplevel
        name = obj[_CLASS_TAG]
        cls = getattr(configs, name, None)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise ValueError(f"config: unknown config class {name!r}; expected a dataclass defined "
                             "in szero_jax.models.configs")
        return cls(**{k: _decode(v, True) for k, v in obj["fields"].items()})
    if isinstance(obj, dict):
        return {k: _decode(v, in_dataclass) for k, v in obj.items()}
    if isinstance(obj, list):
        items = [_decode(v, in_dataclass) for v in obj]
        return tuple(items) if in_dataclass else items
    return obj


def _check_family(family: str) -> None:
    if not family or not isinstance(family, str):
        raise ValueError(f"family: expected a non-empty string, got {family!r}")


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': x}} -> {'a/b': x}; the leaves of a params tree by path."""
    out = {}
    for k, v in tree.items():
        key = str(k)
        if not key or SEP in key:
            raise ValueError(f"params: key {key!r} is empty or contains {SEP!r}")
        path = f"{prefix}{SEP}{key}" if prefix else key
        if isinstance(v, Mapping):
            out.update(flatten(v, path))
        else:
            out[path] = v
    return out


def unflatten(flat: Mapping[str, Any]) -> dict:
    root: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split(SEP)
        node = root
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return root


class ParamsWriter(tensorfile.CloseOrAbort):
    """Writes a checkpoint one tensor at a time.

    ``specs``: ``{"a/b/c": (shape, dtype)}`` of every param, in file order. ``write(path,
    array)`` stores one param (any order); ``close()`` checks that every param was written,
    adds ``config.json`` and renames the directory into place. Used as a context manager,
    an exception leaves nothing behind. Files that belong with the params (a tokenizer) can
    be put in ``staging``, the directory that becomes ``path``.
    """

    def __init__(self, path: str | os.PathLike, specs: Mapping[str, tuple[Iterable[int], Any]],
                 config: Any, family: str, overwrite: bool = False):
        self.path = Path(path)
        _check_family(family)
        if not specs:
            raise ValueError("specs: expected at least one param")
        if self.path.exists() and not overwrite:
            raise ValueError(f"path: {self.path} already exists; pass overwrite=True to replace it")
        self._meta = json.dumps({"format_version": FORMAT_VERSION, "family": family,
                                 "config": _encode(config)}, indent=1, sort_keys=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
        try:
            self._file = tensorfile.TensorFileWriter(self._tmp / PARAMS_FILE, specs,
                                                     {"format": "szero_jax", "family": family})
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        self.total_bytes = self._file.total_bytes
        self.staging = self._tmp

    def write(self, path: str, array) -> int:
        """Stores the param at ``path``; returns the bytes written."""
        return self._file.write(path, np.asarray(array))

    def close(self) -> Path:
        try:
            self._file.close()
            (self._tmp / CONFIG_FILE).write_text(self._meta)
            if self.path.exists():
                shutil.rmtree(self.path)
            os.rename(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        self._file.abort()
        shutil.rmtree(self._tmp, ignore_errors=True)


def save_params(path: str | os.PathLike, params: Mapping, config: Any, family: str,
                overwrite: bool = False) -> Path:
    """Writes `params` (a nested dict of arrays) and `config` to the checkpoint directory `path`.

    `config` is a config dataclass or a plain dict; `family` names the network
    (e.g. "dynamicrafter_unet", "sd_vae") and is checked again by `load_params`.
    """
    _check_family(family)
    if not isinstance(params, Mapping):
        raise ValueError(f"params: expected a nested dict of arrays, got {type(params).__name__}")
    flat = flatten(params)
    if not flat:
        raise ValueError("params: expected a non-empty pytree of arrays")
    specs = {}
    for k, v in flat.items():
        if not hasattr(v, "shape") or not hasattr(v, "dtype"):
            raise ValueError(f"params: leaf {k!r} is a {type(v).__name__}, expected an array")
        specs[k] = (v.shape, v.dtype)
    with ParamsWriter(path, specs, config, family, overwrite) as writer:
        for k, v in flat.items():
            writer.write(k, np.asarray(v))
    return Path(path)


def _read_meta(path: Path, expected_family: str | None) -> dict:
    if not path.is_dir():
        raise FileNotFoundError(f"path: no checkpoint directory at {path}")
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise FileNotFoundError(f"path: {path} has no {CONFIG_FILE}; expected a directory written "
                                "by szero_jax.checkpoints.save_params")
    try:
        meta = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"path: {cfg_file} is not valid JSON (truncated?): {e}") from e
    if not isinstance(meta, dict) or not {"format_version", "family", "config"} <= set(meta):
        raise ValueError(f"path: {cfg_file} lacks format_version/family/config")
    if meta["format_version"] not in READ_VERSIONS:
        raise ValueError(f"path: {cfg_file} has format_version {meta['format_version']}; "
                         f"expected one of {READ_VERSIONS}")
    if expected_family is not None and meta["family"] != expected_family:
        raise ValueError(f"path: {path} holds a {meta['family']!r} checkpoint; expected "
                         f"{expected_family!r}")
    return meta


def load_config(path: str | os.PathLike, expected_family: str | None = None) -> tuple[Any, str]:
    """Reads only `config.json`: returns (config, family)."""
    meta = _read_meta(Path(path), expected_family)
    return _decode(meta["config"]), meta["family"]


def _cast(array: np.ndarray, dtype) -> np.ndarray:
    if dtype is not None and tensorfile.is_float(array.dtype) and array.dtype != dtype:
        return array.astype(dtype)
    return array


def _read_orbax(params_dir: Path, dtype) -> Any:
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    ckpt = ocp.PyTreeCheckpointer()
    tree = ckpt.metadata(params_dir).item_metadata.tree
    restore_args = jax.tree.map(
        lambda m: ocp.RestoreArgs(restore_type=np.ndarray, dtype=(
            dtype if dtype is not None and tensorfile.is_float(m.dtype) else None)), tree)
    return ckpt.restore(params_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))


def load_params(path: str | os.PathLike, expected_family: str | None = None,
                dtype: Any = None) -> tuple[Any, Any]:
    """Returns (params, config) from a checkpoint written by `save_params` / `ParamsWriter`.

    Params come back as a nested dict of jax arrays on the default device; `config` is the
    rebuilt dataclass (or the plain dict that was saved). `dtype` (e.g. jnp.bfloat16) casts
    every floating-point param while it is read; None keeps the stored dtypes.
    """
    path = Path(path)
    meta = _read_meta(path, expected_family)
    config = _decode(meta["config"])
    dtype = None if dtype is None else np.dtype(dtype)
    if meta["format_version"] == 1:
        params_dir = (path / PARAMS_DIR).resolve()
        if not params_dir.is_dir():
            raise FileNotFoundError(f"path: {path} has no {PARAMS_DIR}/ directory")
        try:
            params = _read_orbax(params_dir, dtype)
        except Exception as e:  # orbax raises many types for damaged files
            raise ValueError(f"path: could not read the params in {params_dir} (missing or "
                             f"truncated files?): {type(e).__name__}: {e}") from e
        return jax.device_put(params), config
    file = path / PARAMS_FILE
    if not file.is_file():
        raise FileNotFoundError(f"path: {path} has no {PARAMS_FILE}")
    try:
        tensors = tensorfile.TensorFile(file)
    except (ValueError, OSError) as e:
        raise ValueError(f"path: could not read the params in {file} (missing or truncated "
                         f"files?): {e}") from e
    # One tensor at a time: read, cast, hand to the device, drop the host copy.
    flat = {name: jax.device_put(_cast(tensors[name], dtype)) for name in tensors}
    return unflatten(flat), config


def param_bytes(params: Any) -> int:
    """Bytes held by the arrays of a params tree."""
    return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(params))


def load_default(name: str) -> tuple[Any, Any]:
    """Loads the shipped tiny-family network `name` from `TINY_DIR/<name>`."""
    path = TINY_DIR / name
    if not path.is_dir():
        have = sorted(p.name for p in TINY_DIR.iterdir() if p.is_dir()) if TINY_DIR.is_dir() else []
        raise FileNotFoundError(
            f"name: no shipped tiny checkpoint {name!r} in {TINY_DIR} (available: {have or 'none'}). "
            "The tiny family is produced by experiments/train_tiny; or load converted weights "
            "with load_params(path).")
    return load_params(path)
