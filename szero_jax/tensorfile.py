"""safetensors files read and written one tensor at a time, without memory-mapping them.

The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length,
a JSON header ``{name: {"dtype", "shape", "data_offsets": [start, end]}, "__metadata__": {}}``
padded with spaces to a multiple of 8, then the raw little-endian bytes.

Why not the ``safetensors`` package: it memory-maps the file, and every page read through a
mapping stays in the process's resident set until the mapping closes, so streaming a 10 GB
checkpoint through it costs 10 GB of resident memory. Here each tensor is read with plain
file reads into its own array (the page cache is the kernel's, not the process's) and written
with ``os.pwrite`` at the offset the header gave it, so tensors may arrive in any order and
memory holds one tensor at a time.
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

DTYPES: dict[str, Any] = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_}
CODES = {np.dtype(v): k for k, v in DTYPES.items()}
FLOAT_CODES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")
_MAX_HEADER = 100 * 2 ** 20          # the safetensors package's own limit
_CHUNK = 1 << 30                     # os.pwrite writes at most ~2 GiB per call on Linux


def is_float(dtype) -> bool:
    """True for numpy and ml_dtypes floating types (numpy's issubdtype misses bfloat16)."""
    return CODES.get(np.dtype(dtype)) in FLOAT_CODES


def code(dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype not in CODES:
        raise ValueError(f"dtype: {dtype} has no safetensors code; expected one of "
                         f"{sorted(str(np.dtype(v)) for v in DTYPES.values())}")
    return CODES[dtype]


class TensorFile(Mapping):
    """A read-only, lazy ``{name: numpy array}`` view of a safetensors file.

    Opening reads and checks only the header (every tensor's byte range must lie inside the
    file, so a truncated download fails here, naming the path); ``tf[name]`` reads that
    tensor into a fresh array.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"path: {self.path} is not a safetensors file (under 8 bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER, size - 8):
                raise ValueError(f"path: {self.path} is not a readable safetensors file "
                                 f"(header length {n} for a {size}-byte file; truncated?)")
            try:
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"path: {self.path} has no readable safetensors header: {e}") from e
        if not isinstance(header, dict):
            raise ValueError(f"path: {self.path} has a safetensors header that is not a dict")
        self.metadata = header.pop("__metadata__", None) or {}
        self.data_start = 8 + n
        self.info: dict[str, dict] = {}
        for name, info in header.items():
            try:
                dtype, shape, (start, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"path: {self.path} header entry {name!r} is malformed: {info!r}") from e
            if dtype not in DTYPES:
                raise ValueError(f"path: {self.path} tensor {name!r} has unsupported dtype {dtype}")
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(DTYPES[dtype]).itemsize
            if end - start != nbytes or self.data_start + end > size or start < 0:
                raise ValueError(
                    f"path: {self.path} is not a readable safetensors file: tensor {name!r} "
                    f"needs bytes [{start}, {end}) of the data ({nbytes} for {shape} {dtype}) "
                    f"but the file holds {size - self.data_start} (truncated?)")
            self.info[name] = {"dtype": dtype, "shape": shape, "start": start, "nbytes": nbytes}

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v["shape"] for k, v in self.info.items()}

    def dtype(self, name: str):
        return np.dtype(DTYPES[self.info[name]["dtype"]])

    def nbytes(self, name: str) -> int:
        return self.info[name]["nbytes"]

    def __getitem__(self, name: str) -> np.ndarray:
        info = self.info[name]
        out = np.empty(info["shape"], DTYPES[info["dtype"]])
        if info["nbytes"]:
            view = memoryview(out.reshape(-1).view(np.uint8))
            with open(self.path, "rb", buffering=0) as f:
                f.seek(self.data_start + info["start"])
                got = 0
                while got < info["nbytes"]:
                    k = f.readinto(view[got:])
                    if not k:
                        raise ValueError(f"path: {self.path} ended inside tensor {name!r} "
                                         "(truncated?)")
                    got += k
        return out

    def __iter__(self):
        return iter(self.info)

    def __len__(self) -> int:
        return len(self.info)


class CloseOrAbort:
    """A writer as a context manager: ``close()`` (commit) on success, ``abort()`` (delete
    the partial output) on an exception."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self.abort()


class TensorFileWriter(CloseOrAbort):
    """Writes a safetensors file whose names, shapes and dtypes are all known up front.

    ``specs``: ``{name: (shape, dtype)}`` in file order. The header and the file's full size
    are written at once; ``write(name, array)`` puts each tensor's bytes at its offset, in any
    order; ``close()`` fails unless every tensor was written exactly once.
    """

    def __init__(self, path: str | os.PathLike, specs: Mapping[str, tuple[Iterable[int], Any]],
                 metadata: Mapping[str, str] | None = None):
        self.path = Path(path)
        header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
        self.slots: dict[str, tuple[tuple[int, ...], np.dtype, int]] = {}
        offset = 0
        for name, (shape, dtype) in specs.items():
            shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            header[name] = {"dtype": code(dtype), "shape": list(shape),
                            "data_offsets": [offset, offset + nbytes]}
            self.slots[name] = (shape, dtype, offset)
            offset += nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        self.data_start = 8 + len(blob)
        self.total_bytes = offset
        self.written: set[str] = set()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self._pwrite(struct.pack("<Q", len(blob)) + blob, 0)
            os.ftruncate(self._fd, self.data_start + offset)
        except BaseException:
            self.abort()
            raise

    def _pwrite(self, data, offset: int) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            k = os.pwrite(self._fd, view[:_CHUNK], offset)
            view, offset = view[k:], offset + k

    def write(self, name: str, array: np.ndarray) -> int:
        """Writes one tensor (its shape and dtype must be the declared ones); returns bytes."""
        if name not in self.slots:
            raise ValueError(f"name: {name!r} is not one of the {len(self.slots)} declared tensors")
        if name in self.written:
            raise ValueError(f"name: {name!r} was already written")
        shape, dtype, offset = self.slots[name]
        array = np.asarray(array)
        if array.shape != shape or array.dtype != dtype:
            raise ValueError(f"array: {name!r} is {array.shape} {array.dtype}; declared "
                             f"{shape} {dtype}")
        array = np.ascontiguousarray(array)
        if array.nbytes:
            self._pwrite(array.reshape(-1).view(np.uint8), self.data_start + offset)
        self.written.add(name)
        return array.nbytes

    def close(self) -> Path:
        missing = [n for n in self.slots if n not in self.written]
        if missing:
            self.abort()
            raise ValueError(f"specs: {len(missing)} declared tensors were never written, e.g. "
                             f"{missing[:5]}")
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        return self.path

    def abort(self) -> None:
        """Closes and deletes the partial file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)
