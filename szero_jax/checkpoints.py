"""Save and load Flax params as an orbax checkpoint with a JSON config beside them.

A checkpoint is a directory:
        <path>/config.json   {"format_version", "family", "config"}
        <path>/params/       orbax PyTree checkpoint of the params
It is written to a temporary sibling directory and renamed into place, so a reader never
sees a half-written checkpoint. Model configs (frozen dataclasses from
`szero_jax.models.configs`, possibly nested) are stored as tagged dicts and rebuilt by class
name; plain dicts are stored as they are.

The shipped tiny family lives under `TINY_DIR/<name>/`, one checkpoint per network.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
TINY_DIR = Path(__file__).resolve().parent / "assets" / "tiny"

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


def save_params(path: str | os.PathLike, params: Any, config: Any, family: str,
                overwrite: bool = False) -> Path:
    """Writes `params` (a pytree of arrays) and `config` to the checkpoint directory `path`.

    `config` is a config dataclass or a plain dict; `family` names the network
    (e.g. "dynamicrafter_unet", "sd_vae") and is checked again by `load_params`.
    """
    path = Path(path)
    if not family or not isinstance(family, str):
        raise ValueError(f"family: expected a non-empty string, got {family!r}")
    if path.exists() and not overwrite:
        raise ValueError(f"path: {path} already exists; pass overwrite=True to replace it")
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("params: expected a non-empty pytree of arrays")
    meta = {"format_version": FORMAT_VERSION, "family": family, "config": _encode(config)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        ocp.PyTreeCheckpointer().save((tmp / PARAMS_DIR).resolve(), params)
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
        if path.exists():
            shutil.rmtree(path)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_config(path: str | os.PathLike, expected_family: str | None = None) -> tuple[Any, str]:
    """Reads only `config.json`: returns (config, family)."""
    path = Path(path)
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
    if meta["format_version"] != FORMAT_VERSION:
        raise ValueError(f"path: {cfg_file} has format_version {meta['format_version']}; "
                         f"expected {FORMAT_VERSION}")
    if expected_family is not None and meta["family"] != expected_family:
        raise ValueError(f"path: {path} holds a {meta['family']!r} checkpoint; expected "
                         f"{expected_family!r}")
    return _decode(meta["config"]), meta["family"]


def load_params(path: str | os.PathLike, expected_family: str | None = None) -> tuple[Any, Any]:
    """Returns (params, config) from a checkpoint written by `save_params`.

    Params come back as a nested dict of jax arrays on the default device; `config` is the
    rebuilt dataclass (or the plain dict that was saved).
    """
    path = Path(path)
    config, _ = load_config(path, expected_family)
    params_dir = (path / PARAMS_DIR).resolve()
    if not params_dir.is_dir():
        raise FileNotFoundError(f"path: {path} has no {PARAMS_DIR}/ directory")
    ckpt = ocp.PyTreeCheckpointer()
    try:
        tree = ckpt.metadata(params_dir).item_metadata.tree
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        params = ckpt.restore(params_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    except Exception as e:  # orbax raises many types for damaged files
        raise ValueError(f"path: could not read the params in {params_dir} (missing or truncated "
                         f"files?): {type(e).__name__}: {e}") from e
    return jax.device_put(params), config


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
