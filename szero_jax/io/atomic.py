"""Atomic file output: write to a temporary name in the target folder, then rename."""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path


def check_output_path(path) -> Path:
    """The output path, after checking that its folder exists and is writable."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {str(folder)!r} is not writable")
    if path.is_dir():
        raise ValueError(f"output path {str(path)!r} is a folder, expected a file name")
    return path


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside `path` (same suffix, so writers pick the same format);
    on success rename it to `path`, on any failure delete it so no partial file is left."""
    path = check_output_path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
