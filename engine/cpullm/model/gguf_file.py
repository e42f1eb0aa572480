"""Open and validate a GGUF file: metadata and memory-mapped, still-quantized tensors.

Public API
----------
``GGUFFile.open(path)``
    Parses the header of a GGUF v2/v3 file (little-endian) and memory-maps it. Every read is
    bounds-checked, so a truncated or corrupt file raises :class:`GGUFError` naming the file.
    Nothing is dequantized: each :class:`GGUFTensor` holds a zero-copy numpy view of its bytes.
``GGUFFile.metadata``
    ``dict[str, value]``: scalars as Python ``int``/``float``/``bool``/``str``; arrays of strings as
    ``list[str]``; numeric arrays as read-only numpy arrays (views of the file).
``GGUFFile.tensors``
    ``dict[name, GGUFTensor]`` in file order.
``GGUFFile.get_int / get_float / get_bool / get_str / get_strings / get_numbers(key, default)``
    Typed metadata: a value of another type raises :class:`GGUFError` naming the key and the type
    expected; a missing key without a default raises too. ``get_token_id(name, n_tokens)`` reads
    ``tokenizer.ggml.{name}_token_id`` and checks that it names a token.
``GGUFError``
    A ``ValueError`` whose message names the file and says what is wrong.
``GGUFFile.check_tensor_types(supported)``
    Names the first tensor whose type is not in ``supported`` (the native library's own table, read by
    ``cpullm.native.loader.tensor_types``; the reader itself sizes every type the gguf package knows).

Why not ``gguf.GGUFReader``: it builds a numpy view per metadata element, which takes about 2 s on
SmolLM2-135M (49152 tokens + 48900 merges). This reader parses strings with ``struct`` instead and
opens that file in tens of milliseconds; tests check it agrees with ``GGUFReader`` field by field
and byte for byte on the tensors. The gguf package's constants (types, block sizes) are reused.

The file is untrusted: every count and length is checked against the bytes left before anything is
allocated or looped over (so no edit of a few bytes can make opening allocate without bound or run for
long), keys must be unique, nested arrays are refused, and each tensor must have 1 to 4 positive
dimensions, a known type, and data that starts at a multiple of ``general.alignment`` inside the data
section, fits in the file and overlaps no other tensor. All of it is O(metadata + tensors), never
O(file bytes).

Tensor conventions (the same as ``GGUFReader``):

* ``ne`` is GGUF order, innermost (contiguous) dimension first: a matrix has ``ne = (cols, rows)``.
* ``shape`` is the row-major numpy view, ``tuple(reversed(ne))``, so a weight matrix is
  ``(rows, cols) = (out_features, in_features)`` and ``y = W @ x`` contracts over ``cols``.
* ``data`` is ``float32``/``float16`` with ``shape`` for F32/F16, and ``uint8`` bytes of shape
  ``(*shape[:-1], bytes_per_row)`` for BF16 and the block-quantized types; this is exactly what
  ``gguf.quants.dequantize(tensor.data, tensor.type)`` accepts.
"""

from __future__ import annotations

import enum
import itertools
import math
import mmap
import os
import struct
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# struct format and numpy dtype of each fixed-size scalar value type (little-endian).
_SCALAR_FORMATS: dict[GGUFValueType, tuple[str, type[np.generic]]] = {
    GGUFValueType.UINT8: ("<B", np.uint8),
    GGUFValueType.INT8: ("<b", np.int8),
    GGUFValueType.UINT16: ("<H", np.uint16),
    GGUFValueType.INT16: ("<h", np.int16),
    GGUFValueType.UINT32: ("<I", np.uint32),
    GGUFValueType.INT32: ("<i", np.int32),
    GGUFValueType.FLOAT32: ("<f", np.float32),
    GGUFValueType.BOOL: ("<?", np.bool_),
    GGUFValueType.UINT64: ("<Q", np.uint64),
    GGUFValueType.INT64: ("<q", np.int64),
    GGUFValueType.FLOAT64: ("<d", np.float64),
}

_FLOAT_VIEWS: dict[GGMLQuantizationType, type[np.generic]] = {
    GGMLQuantizationType.F32: np.float32,
    GGMLQuantizationType.F16: np.float16,
}

_MAX_DIMS = 4
# Tensor types this reader can size (all of ggml's that the gguf package knows the block size of).
_TENSOR_TYPES = {int(t): t for t in GGMLQuantizationType if t in GGML_QUANT_SIZES}
_MAX_DIM = (1 << 63) - 1  # ggml keeps dimensions in int64
# The fewest bytes one metadata entry / tensor description can take: key length (8) + value type (4) +
# a 1-byte value; name length (8) + rank (4) + one dimension (8) + type (4) + offset (8).
_MIN_KV_BYTES = 13
_MIN_TENSOR_INFO_BYTES = 32


class Missing(enum.Enum):
    MISSING = enum.auto()


MISSING = Missing.MISSING  # "no default": the typed getters raise GGUFError for an absent key
_T = TypeVar("_T")


class GGUFError(ValueError):
    """A GGUF file cannot be used; the message names the file, the problem and what to do."""


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of a GGUF file, still in its stored (possibly quantized) form."""

    name: str
    type: GGMLQuantizationType
    ne: tuple[int, ...]  # GGUF order: innermost dimension first
    offset: int  # absolute byte offset of the data in the file
    data: np.ndarray  # read-only view; see the module docstring for dtype and shape

    @property
    def shape(self) -> tuple[int, ...]:
        """Row-major shape, ``reversed(ne)``: a matrix is ``(rows, cols)``."""
        return tuple(reversed(self.ne))

    @property
    def rows(self) -> int:
        """Number of rows of the row-major view (product of all but the innermost dimension)."""
        return math.prod(self.ne[1:])

    @property
    def cols(self) -> int:
        """Length of one row, the innermost dimension ``ne[0]``."""
        return self.ne[0]

    @property
    def n_elements(self) -> int:
        return math.prod(self.ne)

    @property
    def n_bytes(self) -> int:
        block_size, type_size = GGML_QUANT_SIZES[self.type]
        return self.n_elements // block_size * type_size


class _Cursor:
    """Bounds-checked little-endian reads from a buffer; raises GGUFError naming the file."""

    def __init__(self, buf: mmap.mmap | bytes, path: Path) -> None:
        self.buf = buf
        self.size = len(buf)
        self.pos = 0
        self.path = path

    @property
    def left(self) -> int:
        return self.size - self.pos

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise GGUFError(
                f"{self.path}: the file is truncated or corrupt: reading {what} needs {n} bytes at offset "
                f"{self.pos}, but the file has {self.size} bytes. Download the file again."
            )

    def scalar(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def u32(self, what: str) -> int:
        return int(self.scalar("<I", what))

    def u64(self, what: str) -> int:
        return int(self.scalar("<Q", what))

    def string(self, what: str) -> str:
        n = self.u64(f"the length of {what}")
        self.need(n, what)
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(raw).decode("utf-8", errors="replace")

    def string_array(self, count: int, what: str) -> list[str]:
        self.need(count * 8, f"the {count} string lengths of {what}")  # each string has an 8-byte length
        # The hot loop of opening a file (tokens, merges): keep it to struct + slicing.
        buf, pos, size = self.buf, self.pos, self.size
        unpack = struct.unpack_from
        out: list[str] = []
        append = out.append
        for _ in range(count):
            if pos + 8 > size:
                self.pos = pos
                self.need(8, what)
            (n,) = unpack("<Q", buf, pos)
            pos += 8
            if pos + n > size:
                self.pos = pos
                self.need(n, what)
            append(buf[pos : pos + n].decode("utf-8", errors="replace"))
            pos += n
        self.pos = pos
        return out

    def numeric_array(self, dtype: type[np.generic], count: int, what: str) -> np.ndarray:
        itemsize = np.dtype(dtype).itemsize
        self.need(count * itemsize, what)
        arr = np.frombuffer(self.buf, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=self.pos)
        self.pos += count * itemsize
        return arr


def _value_type(raw: int, cur: _Cursor, what: str) -> GGUFValueType:
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise GGUFError(f"{cur.path}: {what} has unknown value type {raw}; the file is corrupt.") from None


def _read_value(cur: _Cursor, vtype: GGUFValueType, key: str) -> Any:
    if vtype == GGUFValueType.STRING:
        return cur.string(f"metadata value {key!r}")
    if vtype == GGUFValueType.ARRAY:
        etype = _value_type(cur.u32(f"the element type of {key!r}"), cur, f"metadata array {key!r}")
        count = cur.u64(f"the length of {key!r}")
        if etype == GGUFValueType.STRING:
            return cur.string_array(count, f"metadata array {key!r}")
        if etype == GGUFValueType.ARRAY:  # as llama.cpp: bounds the recursion a corrupt file could ask for
            raise GGUFError(
                f"{cur.path}: metadata {key!r} is an array of arrays, which GGUF model files do not use; "
                "the file is corrupt."
            )
        return cur.numeric_array(_SCALAR_FORMATS[etype][1], count, f"metadata array {key!r}")
    fmt = _SCALAR_FORMATS[vtype][0]
    value = cur.scalar(fmt, f"metadata value {key!r}")
    return bool(value) if vtype == GGUFValueType.BOOL else value


@dataclass(frozen=True)
class _TensorInfo:
    name: str
    ne: tuple[int, ...]
    type: GGMLQuantizationType
    rel_offset: int


def _read_tensor_info(cur: _Cursor, index: int) -> _TensorInfo:
    name = cur.string(f"the name of tensor #{index}")
    n_dims = cur.u32(f"the rank of tensor {name!r}")
    if not 1 <= n_dims <= _MAX_DIMS:
        raise GGUFError(
            f"{cur.path}: tensor {name!r} has rank {n_dims}; GGUF allows 1 to 4. The file is corrupt."
        )
    ne = tuple(cur.u64(f"the shape of tensor {name!r}") for _ in range(n_dims))
    if not all(1 <= n <= _MAX_DIM for n in ne):
        raise GGUFError(
            f"{cur.path}: tensor {name!r} has shape {list(ne)}; every dimension must be from 1 to "
            f"{_MAX_DIM}. The file is corrupt."
        )
    raw_type = cur.u32(f"the type of tensor {name!r}")
    rel_offset = cur.u64(f"the data offset of tensor {name!r}")
    qtype = _TENSOR_TYPES.get(raw_type)
    if qtype is None:
        raise GGUFError(
            f"{cur.path}: tensor {name!r} has unknown tensor type {raw_type}; this file needs a newer "
            "GGUF reader or is corrupt."
        )
    return _TensorInfo(name, ne, qtype, rel_offset)


def _place_tensors(infos: list[_TensorInfo], data_offset: int, alignment: int, cur: _Cursor) -> list[int]:
    """Absolute data offsets of ``infos``; raise GGUFError unless each is aligned, fits and overlaps none.

    O(n log n) in the tensor count: only offsets and sizes are compared, never the data.
    """
    path, size = cur.path, cur.size
    spans: list[tuple[int, int, str]] = []
    for info in infos:
        block_size, type_size = GGML_QUANT_SIZES[info.type]
        if info.ne[0] % block_size != 0:
            raise GGUFError(
                f"{path}: tensor {info.name!r} has {info.ne[0]} columns, not a multiple of the "
                f"{info.type.name} block size {block_size}. The file is corrupt."
            )
        if info.rel_offset % alignment:
            raise GGUFError(
                f"{path}: tensor {info.name!r} starts at offset {info.rel_offset} of the data section, not a "
                f"multiple of 'general.alignment' ({alignment}). The file is corrupt."
            )
        start = data_offset + info.rel_offset
        end = start + math.prod(info.ne) // block_size * type_size  # Python ints: no overflow
        if end > size:
            raise GGUFError(
                f"{path}: the file is truncated: tensor {info.name!r} ends at byte {end}, "
                f"but the file has {size} bytes. Download the file again."
            )
        spans.append((start, end, info.name))
    ordered = sorted(spans)
    for (_, end, name), (start, _, other) in itertools.pairwise(ordered):
        if start < end:
            raise GGUFError(
                f"{path}: the data of tensors {name!r} and {other!r} overlap (the second starts at byte "
                f"{start}, before the first ends at byte {end}). The file is corrupt."
            )
    return [start for start, _, _ in spans]


def _tensor_view(buf: mmap.mmap | bytes, info: _TensorInfo, offset: int) -> np.ndarray:
    """A read-only view of a tensor that :func:`_place_tensors` checked."""
    block_size, type_size = GGML_QUANT_SIZES[info.type]
    shape = tuple(reversed(info.ne))
    if info.type in _FLOAT_VIEWS:
        count = math.prod(info.ne)
        return np.frombuffer(buf, dtype=_FLOAT_VIEWS[info.type], count=count, offset=offset).reshape(shape)
    row_bytes = info.ne[0] // block_size * type_size
    n_bytes = math.prod(info.ne) // block_size * type_size
    return np.frombuffer(buf, dtype=np.uint8, count=n_bytes, offset=offset).reshape((*shape[:-1], row_bytes))


class GGUFFile:
    """A memory-mapped GGUF file. Use :meth:`open`; see the module docstring for conventions."""

    def __init__(
        self,
        path: Path,
        version: int,
        metadata: dict[str, Any],
        tensors: dict[str, GGUFTensor],
        alignment: int,
        data_offset: int,
        mapping: mmap.mmap | None = None,
    ) -> None:
        self.path = path
        self.mapping = mapping  # the file's memory map (None for in-memory data)
        self.version = version
        self.metadata = metadata
        self.tensors = tensors
        self.alignment = alignment
        self.data_offset = data_offset

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> GGUFFile:
        """Parse and memory-map ``path``; raise GGUFError if it is not a readable GGUF v2/v3 file."""
        path = Path(path)
        buf = _map_file(path)
        cur = _Cursor(buf, path)
        version = _read_preamble(cur)
        n_tensors = cur.u64("the tensor count")
        n_kv = cur.u64("the metadata count")
        if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES > cur.left:
            raise GGUFError(
                f"{path}: the header announces {n_kv} metadata entries and {n_tensors} tensors, more than "
                f"the {cur.left} bytes left in the file can hold. The file is truncated or corrupt."
            )
        metadata: dict[str, Any] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            if key in metadata:
                raise GGUFError(f"{path}: metadata key {key!r} appears twice. The file is corrupt.")
            vtype = _value_type(cur.u32(f"the type of {key!r}"), cur, f"metadata key {key!r}")
            metadata[key] = _read_value(cur, vtype, key)
        infos = [_read_tensor_info(cur, i) for i in range(n_tensors)]
        alignment = _alignment(metadata, path)
        data_offset = -(-cur.pos // alignment) * alignment
        names: set[str] = set()
        for info in infos:
            if info.name in names:
                raise GGUFError(f"{path}: tensor {info.name!r} appears twice. The file is corrupt.")
            names.add(info.name)
        offsets = _place_tensors(infos, data_offset, alignment, cur)
        tensors = {
            info.name: GGUFTensor(info.name, info.type, info.ne, offset, _tensor_view(buf, info, offset))
            for info, offset in zip(infos, offsets, strict=True)
        }
        return cls(path, version, metadata, tensors, alignment, data_offset, buf)

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise GGUFError(
                f"{self.path}: metadata 'general.architecture' is missing; this is not a model file."
            )
        return arch

    # ---- typed metadata (untrusted: the type is checked, not assumed) ----
    def get_int(self, key: str, default: _T | Missing = MISSING) -> int | _T:
        """Metadata ``key`` as an integer (``default`` when absent; required when no default)."""
        if key not in self.metadata:
            return self._default(key, default)
        value = self.metadata[key]
        if not _is_int(value):
            raise self._wrong_type(key, value, "an integer")
        return value

    def get_float(self, key: str, default: _T | Missing = MISSING) -> float | _T:
        """Metadata ``key`` as a number (integers are accepted); NaN and infinities are returned as read."""
        if key not in self.metadata:
            return self._default(key, default)
        value = self.metadata[key]
        if not (_is_int(value) or isinstance(value, float)):
            raise self._wrong_type(key, value, "a number")
        return float(value)

    def get_bool(self, key: str, default: _T | Missing = MISSING) -> bool | _T:
        """Metadata ``key`` as a boolean (an integer 0 or 1 is accepted)."""
        if key not in self.metadata:
            return self._default(key, default)
        value = self.metadata[key]
        if not (isinstance(value, bool) or (_is_int(value) and value in (0, 1))):
            raise self._wrong_type(key, value, "true or false")
        return bool(value)

    def get_str(self, key: str, default: _T | Missing = MISSING) -> str | _T:
        if key not in self.metadata:
            return self._default(key, default)
        value = self.metadata[key]
        if not isinstance(value, str):
            raise self._wrong_type(key, value, "a string")
        return value

    def get_strings(self, key: str, default: _T | Missing = MISSING) -> list[str] | _T:
        if key not in self.metadata:
            return self._default(key, default)
        value = self.metadata[key]
        if not isinstance(value, list):
            raise self._wrong_type(key, value, "an array of strings")
        return value

    def get_numbers(self, key: str, default: _T | Missing = MISSING) -> np.ndarray | _T:
        """Metadata ``key`` as a numeric array (a read-only view of the file)."""
        if key not in self.metadata:
            return self._default(key, default)
        value = self.metadata[key]
        if not isinstance(value, np.ndarray):
            raise self._wrong_type(key, value, "an array of numbers")
        return value

    def get_token_id(self, name: str, n_tokens: int) -> int | None:
        """``tokenizer.ggml.{name}_token_id`` (None when absent); GGUFError unless it names one of the
        ``n_tokens`` tokens of the vocabulary."""
        key = f"tokenizer.ggml.{name}_token_id"
        value = self.get_int(key, None)
        if value is not None and not 0 <= value < n_tokens:
            raise GGUFError(
                f"{self.path}: metadata {key!r} is {value}, but the vocabulary has {n_tokens} tokens (ids 0 "
                f"to {n_tokens - 1}). The file is inconsistent."
            )
        return value

    def _default(self, key: str, default: _T | Missing) -> _T:
        if isinstance(default, Missing):
            raise GGUFError(f"{self.path}: required metadata {key!r} is missing; the file is incomplete.")
        return default

    def _wrong_type(self, key: str, value: object, expected: str) -> GGUFError:
        return GGUFError(f"{self.path}: metadata {key!r} is {_describe(value)}, expected {expected}.")

    def check_tensor_types(self, supported: Collection[GGMLQuantizationType]) -> None:
        """Raise GGUFError naming the first tensor whose type is not in ``supported`` (the types the
        loaded native library runs)."""
        names = ", ".join(sorted(t.name for t in supported))
        for tensor in self.tensors.values():
            if tensor.type not in supported:
                raise GGUFError(
                    f"{self.path}: tensor {tensor.name!r} has type {tensor.type.name}, which cpullm does not "
                    f"support (supported: {names}). Use a GGUF quantized to one of these types."
                )


def _map_file(path: Path) -> mmap.mmap:
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise GGUFError(f"{path}: the file is empty; it is not a GGUF model.")
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise GGUFError(f"{path}: no such file. Check the model path.") from None
    except IsADirectoryError:
        raise GGUFError(
            f"{path}: is a directory without a config.json; give the path of a .gguf file or of a Hugging "
            "Face model folder."
        ) from None
    except PermissionError:
        raise GGUFError(f"{path}: permission denied when opening the model file.") from None


def _read_preamble(cur: _Cursor) -> int:
    cur.need(4, "the GGUF magic")
    magic = bytes(cur.buf[0:4])
    if magic != GGUF_MAGIC:
        raise GGUFError(f"{cur.path}: not a GGUF file (it starts with {magic!r}, expected b'GGUF').")
    cur.pos = 4
    version = cur.u32("the GGUF version")
    if version not in SUPPORTED_VERSIONS:
        hint = " It looks big-endian, which cpullm does not read." if version & 0xFFFF == 0 else ""
        raise GGUFError(
            f"{cur.path}: GGUF version {version} is not supported (supported: 2, 3).{hint} "
            "Convert the model again with a current llama.cpp."
        )
    return version


def _alignment(metadata: dict[str, Any], path: Path) -> int:
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not _is_int(alignment) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFError(
            f"{path}: 'general.alignment' is {_describe(alignment)}, not a power of two. The file is corrupt."
        )
    return alignment


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(value: object) -> str:
    """A short description of a metadata value for an error message (never the whole array)."""
    if isinstance(value, list):
        return f"an array of {len(value)} strings"
    if isinstance(value, np.ndarray):
        return f"an array of {value.size} {value.dtype} values"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
