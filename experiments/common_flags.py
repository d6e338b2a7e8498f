"""absl flags shared by the launchers (generate, generate_image, convert, evaluate) and the
helpers that act on them: output folders written atomically, stereo formats, compute dtype,
the persistent compilation cache.

Each launcher calls ``define_*`` for the flags it takes, at import time of its module
(``python -m experiments.<name>``), so ``--help`` lists them with their defaults and
``--flagfile`` works (absl reads it). Defining a flag twice in one process is an error in
absl, so the defines are idempotent here (a second call is a no-op): the tests import every
launcher into one interpreter.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from absl import flags

FLAGS = flags.FLAGS

FORMATS = ("sbs", "half-sbs", "tb", "anaglyph", "all")
# --format all writes every layout below (io.LAYOUTS also has half-tb / anaglyph-dubois,
# reachable through szero_jax.io.stereo_layout).
ALL_FORMATS = ("sbs", "half-sbs", "tb", "anaglyph")
DTYPES = ("float32", "bfloat16")
TINY = "tiny"   # --checkpoint value meaning the shipped tiny family (szero_jax/assets/tiny)


def _caller_module() -> str:
    """The module calling define_* (absl names the main module by sys.argv[0])."""
    frame = sys._getframe(1)  # pylint: disable=protected-access
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return sys.argv[0] if name == "__main__" else name


def _once(name: str) -> bool:
    """True if ``name`` is still to be defined; either way ``name`` becomes a key flag of
    the calling launcher, so its ``--help`` lists it."""
    module = _caller_module()
    if name in FLAGS:
        FLAGS.register_key_flag_for_module(module, FLAGS[name])
        return False
    _PENDING.append((module, name))
    return True


_PENDING: list = []


def _register_pending() -> None:
    while _PENDING:
        module, name = _PENDING.pop()
        FLAGS.register_key_flag_for_module(module, FLAGS[name])


def define_checkpoint(default: str | None = TINY,
                      help_text: str = "Model checkpoint directory (szero_jax.checkpoints "
                                       "format, e.g. written by experiments/convert.py); "
                                       f"'{TINY}' = the shipped tiny family") -> None:
    if _once("checkpoint"):
        flags.DEFINE_string("checkpoint", default, help_text)
        _register_pending()


def define_output_dir(default: str | None = "out",
                      help_text: str = "Folder the outputs are written to (created if missing; "
                                       "files appear only when complete)") -> None:
    if _once("output_dir"):
        flags.DEFINE_string("output_dir", default, help_text)
        _register_pending()


def define_seed(default: int = 0) -> None:
    if _once("seed"):
        flags.DEFINE_integer("seed", default, "Random seed (same inputs + seed = same output)")
        _register_pending()


def define_format(default: str = "sbs") -> None:
    if _once("format"):
        flags.DEFINE_enum("format", default, FORMATS,
                          "Stereo layout of the combined output: side-by-side, half-width SBS, "
                          "top-bottom, red-cyan anaglyph, or all of them")
        _register_pending()


def define_dtype(default: str = "float32",
                 help_text: str = "Compute dtype of the networks (params stay float32)") -> None:
    if _once("dtype"):
        flags.DEFINE_enum("dtype", default, DTYPES, help_text)
        _register_pending()


def define_compilation_cache_dir(default: str | None = None) -> None:
    if _once("compilation_cache_dir"):
        flags.DEFINE_string("compilation_cache_dir", default,
                            "Persistent XLA compilation cache folder (reused across runs; "
                            "unset (default): no cache)")
        _register_pending()


def define_common(*, checkpoint: bool = True, output_dir: bool = True, seed: bool = True,
                  fmt: bool = True, dtype: bool = True, cache: bool = True) -> None:
    """The common flags of issue 6: --checkpoint --output_dir --seed --format --dtype
    --compilation_cache_dir (each can be left out)."""
    if checkpoint:
        define_checkpoint()
    if output_dir:
        define_output_dir()
    if seed:
        define_seed()
    if fmt:
        define_format()
    if dtype:
        define_dtype()
    if cache:
        define_compilation_cache_dir()


# ----------------------------------------------------------------------------- helpers
def checkpoint_path(value: str | None) -> str | None:
    """None for the tiny family ('tiny', '' or None), else the path (must exist)."""
    if value in (None, "", TINY):
        return None
    path = Path(value).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--checkpoint: no checkpoint at {path}")
    return str(path)


def formats(value: str) -> tuple[str, ...]:
    """The layouts --format asks for ('all' expands)."""
    if value not in FORMATS:
        raise ValueError(f"--format: expected one of {FORMATS}, got {value!r}")
    return ALL_FORMATS if value == "all" else (value,)


def enable_compilation_cache(path: str | None) -> None:
    """Turns on JAX's persistent compilation cache in ``path`` (no-op for None/'')."""
    if not path:
        return
    import jax  # pylint: disable=import-outside-toplevel
    Path(path).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def check_output_dir(path) -> Path:
    """Creates ``path`` if missing and checks it is a writable folder (clear errors)."""
    if not path:
        raise ValueError("--output_dir: expected a folder name, got an empty value")
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output_dir: {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PermissionError(f"--output_dir: cannot create {path}: {e.strerror or e}") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"--output_dir: {path} is not writable")
    return path


@contextlib.contextmanager
def staged_outputs(output_dir):
    """Yields a hidden temporary folder inside ``output_dir``; write every output there.
    On success each file is moved into ``output_dir`` (replacing older ones); on any error or
    interrupt (KeyboardInterrupt included) the temporary folder is deleted, so a run that
    does not finish leaves no new or partial files."""
    out = check_output_dir(output_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".partial-{uuid.uuid4().hex[:8]}-", dir=out))
    try:
        yield tmp
        for item in sorted(tmp.iterdir()):
            target = out / item.name
            if target.is_dir() and not item.is_dir():
                raise ValueError(f"--output_dir: {target} is a folder; cannot replace it")
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report_written(paths) -> None:
    """Prints what a launcher wrote, one line per file."""
    for p in paths:
        print(f"wrote {p}")
