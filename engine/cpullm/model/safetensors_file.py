"""Read ``.safetensors`` files: a validated header and zero-copy, memory-mapped tensors.

Public API
----------
``SafetensorsFile.open(path)``
    Parses the header (an 8-byte little-endian length, then that many bytes of JSON) and memory-maps the
    file. ``tensors`` maps each name to a :class:`SafeTensor`, whose ``data`` is a read-only numpy view of
    its bytes: ``float32``/``float16`` for F32/F16, ``uint16`` raw bits for BF16 (numpy has no bfloat16).
    Any problem raises :class:`SafetensorsError` (a ``ValueError``) naming the file and the tensor.
``SafetensorsError``

Why not the ``safetensors`` package: its numpy loader copies every tensor into memory and cannot read
BF16 at all (``TypeError: data type 'bfloat16' not understood``, safetensors 0.8), the type most models
ship in. The format is simple enough to map directly; the package stays a test-only dependency, used to
write the files the tests read here.

The file is untrusted: the header is at most :data:`MAX_HEADER_BYTES` and must fit in the file; every
entry needs a known dtype, 1 to 4 positive dimensions and ``data_offsets`` whose span is exactly the
shape's byte size inside the data section; spans must not overlap. All of it is O(header), never
O(file bytes), and nothing is read from the data until a tensor is used.
"""

from __future__ import annotations

import itertools
import json
import math
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAX_HEADER_BYTES = 100 << 20  # the reference implementation's own limit
MAX_DIMS = 4

# safetensors dtype -> (numpy view dtype, bytes per element). Other dtypes (integers, F8) are refused.
DTYPES: dict[str, tuple[type[np.generic], int]] = {
    "F32": (np.float32, 4),
    "F16": (np.float16, 2),
    "BF16": (np.uint16, 2),
}


class SafetensorsError(ValueError):
    """A safetensors file cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class SafeTensor:
    name: str
    dtype: str  # a key of DTYPES
    shape: tuple[int, ...]  # row-major, as stored (a matrix is (out_features, in_features))
    data: np.ndarray  # read-only view with ``shape``; BF16 as uint16 bits


class SafetensorsFile:
    def __init__(self, path: Path, tensors: dict[str, SafeTensor], metadata: dict[str, str]) -> None:
        self.path = path
        self.tensors = tensors
        self.metadata = metadata

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> SafetensorsFile:
        path = Path(path)
        buf = _map(path)
        if len(buf) < 8:
            raise SafetensorsError(
                f"{path}: the file is {len(buf)} bytes, too short for a safetensors header."
            )
        (n,) = struct.unpack_from("<Q", buf, 0)
        if n > MAX_HEADER_BYTES or 8 + n > len(buf):
            raise SafetensorsError(
                f"{path}: the header claims {n} bytes, but the file has {len(buf)} bytes and headers are at "
                f"most {MAX_HEADER_BYTES}. The file is truncated or not a safetensors file."
            )
        try:
            header = json.loads(bytes(buf[8 : 8 + n]).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise SafetensorsError(
                f"{path}: the header is not valid JSON ({e}). The file is corrupt."
            ) from None
        if not isinstance(header, dict):
            raise SafetensorsError(f"{path}: the header is not a JSON object. The file is corrupt.")
        metadata = header.pop("__metadata__", {})
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise SafetensorsError(f"{path}: '__metadata__' must map names to strings. The file is corrupt.")
        start = 8 + n
        spans = [_entry(path, name, entry, len(buf) - start) for name, entry in header.items()]
        for (_, e0, a), (s1, _, b) in itertools.pairwise(sorted(spans)):
            if s1 < e0:
                raise SafetensorsError(
                    f"{path}: the data of tensors {a!r} and {b!r} overlap. The file is corrupt."
                )
        tensors = {}
        for begin, _, name in spans:
            entry = header[name]
            view_dtype, _ = DTYPES[entry["dtype"]]
            shape = tuple(entry["shape"])
            data = np.frombuffer(buf, dtype=view_dtype, count=math.prod(shape), offset=start + begin)
            tensors[name] = SafeTensor(name, entry["dtype"], shape, data.reshape(shape))
        return cls(path, tensors, metadata)


def _entry(path: Path, name: str, entry: Any, data_bytes: int) -> tuple[int, int, str]:
    """(begin, end, name) of a checked header entry."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise SafetensorsError(
            f"{path}: the header entry of {name!r} must hold exactly dtype, shape and data_offsets. The file "
            "is corrupt."
        )
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPES:
        raise SafetensorsError(
            f"{path}: tensor {name!r} has dtype {dtype!r}; cpullm reads {', '.join(DTYPES)} weights. Use an "
            "unquantized 16- or 32-bit checkpoint."
        )
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= MAX_DIMS
        or not all(_is_int(d) and 1 <= d < 1 << 40 for d in shape)
    ):
        raise SafetensorsError(
            f"{path}: tensor {name!r} has shape {str(shape)[:80]}; expected 1 to {MAX_DIMS} positive "
            "dimensions. The file is corrupt."
        )
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise SafetensorsError(f"{path}: tensor {name!r} has malformed data_offsets. The file is corrupt.")
    begin, end = offsets
    size = math.prod(shape) * DTYPES[dtype][1]
    if not 0 <= begin <= end <= data_bytes or end - begin != size:
        raise SafetensorsError(
            f"{path}: tensor {name!r} ({dtype} {shape}, {size} bytes) has data_offsets [{begin}, {end}] in a "
            f"data section of {data_bytes} bytes. The file is truncated or corrupt."
        )
    if begin % DTYPES[dtype][1]:
        raise SafetensorsError(
            f"{path}: tensor {name!r} starts at an unaligned offset {begin}. The file is corrupt."
        )
    return begin, end, name


def _map(path: Path) -> mmap.mmap | bytes:
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return b""
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise SafetensorsError(f"{path}: no such file; the model folder is incomplete.") from None
    except (IsADirectoryError, PermissionError) as e:
        raise SafetensorsError(f"{path}: cannot be read ({e.strerror}).") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
