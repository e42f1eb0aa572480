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
``GGUFError``
    A ``ValueError`` whose message names the file and says what is wrong.
``SUPPORTED_TENSOR_TYPES``
    The tensor types the engine runs; :meth:`GGUFFile.check_tensor_types` enforces them.

Why not ``gguf.GGUFReader``: it builds a numpy view per metadata element, which takes about 2 s on
SmolLM2-135M (49152 tokens + 48900 merges). This reader parses strings with ``struct`` instead and
opens that file in tens of milliseconds; tests check it agrees with ``GGUFReader`` field by field
and byte for byte on the tensors. The gguf package's constants (types, block sizes) are reused.

Tensor conventions (the same as ``GGUFReader``):

* ``ne`` is GGUF order, innermost (contiguous) dimension first: a matrix has ``ne = (cols, rows)``.
* ``shape`` is the row-major numpy view, ``tuple(reversed(ne))``, so a weight matrix is
  ``(rows, cols) = (out_features, in_features)`` and ``y = W @ x`` contracts over ``cols``.
* ``data`` is ``float32``/``float16`` with ``shape`` for F32/F16, and ``uint8`` bytes of shape
  ``(*shape[:-1], bytes_per_row)`` for BF16 and the block-quantized types; this is exactly what
  ``gguf.quants.dequantize(tensor.data, tensor.type)`` accepts.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

SUPPORTED_TENSOR_TYPES: frozenset[GGMLQuantizationType] = frozenset(
    {
        GGMLQuantizationType.F32,
        GGMLQuantizationType.F16,
        GGMLQuantizationType.BF16,
        GGMLQuantizationType.Q8_0,
        GGMLQuantizationType.Q4_0,
        GGMLQuantizationType.Q4_1,
        GGMLQuantizationType.Q4_K,
        GGMLQuantizationType.Q6_K,
    }
)

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
        if etype == GGUFValueType.ARRAY:
            return [_read_value(cur, etype, key) for _ in range(count)]
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
    raw_type = cur.u32(f"the type of tensor {name!r}")
    rel_offset = cur.u64(f"the data offset of tensor {name!r}")
    try:
        qtype = GGMLQuantizationType(raw_type)
    except ValueError:
        raise GGUFError(
            f"{cur.path}: tensor {name!r} has unknown tensor type {raw_type}; this file needs a newer "
            "GGUF reader or is corrupt."
        ) from None
    return _TensorInfo(name, ne, qtype, rel_offset)


def _tensor_view(buf: mmap.mmap, info: _TensorInfo, offset: int, path: Path) -> np.ndarray:
    block_size, type_size = GGML_QUANT_SIZES[info.type]
    n_elements = math.prod(info.ne)  # Python ints: a corrupt shape cannot overflow
    if info.ne[0] % block_size != 0:
        raise GGUFError(
            f"{path}: tensor {info.name!r} has {info.ne[0]} columns, not a multiple of the "
            f"{info.type.name} block size {block_size}. The file is corrupt."
        )
    n_bytes = n_elements // block_size * type_size
    if offset + n_bytes > len(buf):
        raise GGUFError(
            f"{path}: the file is truncated: tensor {info.name!r} ends at byte {offset + n_bytes}, "
            f"but the file has {len(buf)} bytes. Download the file again."
        )
    shape = tuple(reversed(info.ne))
    if info.type in _FLOAT_VIEWS:
        return np.frombuffer(buf, dtype=_FLOAT_VIEWS[info.type], count=n_elements, offset=offset).reshape(
            shape
        )
    row_bytes = info.ne[0] // block_size * type_size
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
        metadata: dict[str, Any] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            vtype = _value_type(cur.u32(f"the type of {key!r}"), cur, f"metadata key {key!r}")
            metadata[key] = _read_value(cur, vtype, key)
        infos = [_read_tensor_info(cur, i) for i in range(n_tensors)]
        alignment = _alignment(metadata, path)
        data_offset = -(-cur.pos // alignment) * alignment
        tensors: dict[str, GGUFTensor] = {}
        for info in infos:
            if info.name in tensors:
                raise GGUFError(f"{path}: tensor {info.name!r} appears twice. The file is corrupt.")
            offset = data_offset + info.rel_offset
            data = _tensor_view(buf, info, offset, path)
            tensors[info.name] = GGUFTensor(info.name, info.type, info.ne, offset, data)
        return cls(path, version, metadata, tensors, alignment, data_offset, buf)

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise GGUFError(
                f"{self.path}: metadata 'general.architecture' is missing; this is not a model file."
            )
        return arch

    def check_tensor_types(self, supported: frozenset[GGMLQuantizationType] = SUPPORTED_TENSOR_TYPES) -> None:
        """Raise GGUFError naming the first tensor whose type the engine cannot run."""
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
        raise GGUFError(f"{path}: is a directory; give the path of a .gguf file.") from None
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
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFError(
            f"{path}: 'general.alignment' is {alignment!r}, not a power of two. The file is corrupt."
        )
    return alignment
