"""Typed ctypes bindings for the kernel C ABI (``csrc/include/cpullm/cpullm.h``).

``Kernels(lib)`` wraps one loaded variant library; every method takes numpy arrays, checks their dtype
and shape, and calls either the fastest path compiled into that library (``impl=BEST``) or its scalar
reference (``impl=REF``). Errors reported by the library are raised as ``KernelError`` with its sentence.
"""

from __future__ import annotations

import ctypes

import numpy as np
import numpy.typing as npt
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from cpullm.native import abi, loader
from cpullm.runtime.kv_dtypes import KV_DTYPES

BEST = 0
REF = 1

F32Array = npt.NDArray[np.float32]


# ggml/GGUF tensor type ids (the gguf package's enum). Which of them a library runs is its own table:
# ``Kernels.tensor_types``.
DType = GGMLQuantizationType


def block(dtype: DType) -> tuple[int, int]:
    """(weights per block, bytes per block), as ggml defines them."""
    return GGML_QUANT_SIZES[DType(dtype)]


# One quantized activation block: f32 d, i32 sum, 32 x i8.
ACT_BLOCK = np.dtype([("d", "<f4"), ("sum", "<i4"), ("q", "i1", (32,))])


class KernelError(ValueError):
    """The library refused the call; the message says why."""


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


def _f32(a: npt.ArrayLike, name: str) -> F32Array:
    arr = np.ascontiguousarray(a, dtype=np.float32)
    if arr.size == 0:
        raise KernelError(f"{name} is empty; kernels need at least one value")
    return arr


def row_bytes(dtype: DType, cols: int) -> int:
    """Bytes of one GGUF row of ``cols`` values (cols a multiple of the block size)."""
    per, size = block(dtype)
    if cols % per:
        raise KernelError(f"{DType(dtype).name} rows need a multiple of {per} values, not {cols}")
    return cols // per * size


class Kernels:
    """The kernels of one loaded variant library."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = abi.bind(lib)

    def _check(self, rc: int) -> None:
        if rc < 0:
            raise KernelError(self.lib.cpullm_last_error().decode())

    @property
    def best_kernel_set(self) -> str:
        return self.lib.cpullm_best_kernel_set().decode()

    @property
    def tensor_types(self) -> dict[DType, tuple[int, int]]:
        """The tensor types this library runs (its own table): (weights, bytes) per block of each."""
        return {DType(t.id): (t.block_size, t.block_bytes) for t in loader.tensor_types(self.lib).values()}

    @property
    def kernel_sets(self) -> list[str]:
        """The kernel sets compiled into this library: "ref" first, then from the plainest to the best."""
        return self.lib.cpullm_variant_kernel_sets().decode().split(",")

    def set_num_threads(self, n: int) -> None:
        self._check(self.lib.cpullm_set_num_threads(n))

    def num_threads(self) -> int:
        return int(self.lib.cpullm_get_num_threads())

    def selftest(self) -> tuple[int, str]:
        """(failed checks, report) of the library's own fast-path-vs-reference self-test."""
        buf = ctypes.create_string_buffer(1 << 16)
        failures = self.lib.cpullm_selftest(buf, len(buf))
        return int(failures), buf.value.decode()

    def quantize_act(self, x: npt.ArrayLike, impl: int = BEST) -> np.ndarray:
        """x[n] f32 -> n/32 ACT_BLOCK records."""
        xs = _f32(x, "x").ravel()
        out = np.zeros(xs.size // 32, dtype=ACT_BLOCK)
        self._check(self.lib.cpullm_quantize_act(impl, _ptr(xs), xs.size, _ptr(out)))
        return out

    def dequantize(self, dtype: DType, data: np.ndarray, n: int) -> F32Array:
        """n values of raw GGUF bytes of ``dtype`` -> f32[n]."""
        raw = np.ascontiguousarray(data).view(np.uint8).ravel()
        need = row_bytes(dtype, n)
        if raw.size < need:
            raise KernelError(f"{n} {DType(dtype).name} values need {need} bytes, got {raw.size}")
        y = np.empty(n, dtype=np.float32)
        self._check(self.lib.cpullm_dequantize(int(dtype), _ptr(raw), n, _ptr(y)))
        return y

    def matmul(
        self, dtype: DType, w: np.ndarray, rows: int, cols: int, x: npt.ArrayLike, impl: int = BEST
    ) -> F32Array:
        """Y[m, rows] = X[m, cols] · Wᵀ with W raw GGUF bytes [rows × row_bytes]. x may be 1-D (m = 1)."""
        raw = self._matrix_bytes(dtype, w, rows, cols)
        xs = _f32(x, "x")
        if xs.shape[-1] != cols:
            raise KernelError(f"x has {xs.shape[-1]} columns, the matrix has {cols}")
        m = xs.size // cols
        y = np.empty((m, rows), dtype=np.float32)
        self._check(self.lib.cpullm_matmul(impl, int(dtype), _ptr(raw), rows, cols, _ptr(xs), m, _ptr(y)))
        return y.reshape(rows) if xs.ndim == 1 else y

    def repack(self, dtype: DType, w: np.ndarray, rows: int, cols: int) -> np.ndarray | None:
        """This library's packed copy of a GGUF matrix, or None when it has no packed layout for dtype."""
        n = int(self.lib.cpullm_packed_bytes(int(dtype), rows, cols))
        self._check(n)
        if n == 0:
            return None
        raw = self._matrix_bytes(dtype, w, rows, cols)
        packed = np.empty(n, dtype=np.uint8)
        self._check(self.lib.cpullm_repack(int(dtype), _ptr(raw), rows, cols, _ptr(packed)))
        return packed

    def matmul_packed(
        self, dtype: DType, w: np.ndarray, packed: np.ndarray, rows: int, cols: int, x: npt.ArrayLike
    ) -> F32Array:
        """matmul (BEST) through the packed copy made by repack(); w must be the same GGUF matrix."""
        raw = self._matrix_bytes(dtype, w, rows, cols)
        xs = _f32(x, "x")
        m = xs.size // cols
        y = np.empty((m, rows), dtype=np.float32)
        rc = self.lib.cpullm_matmul_packed(
            int(dtype), _ptr(raw), _ptr(packed), rows, cols, _ptr(xs), m, _ptr(y)
        )
        self._check(rc)
        return y.reshape(rows) if xs.ndim == 1 else y

    def bench_matmul(
        self,
        dtype: DType,
        w: np.ndarray,
        rows: int,
        cols: int,
        copies: int,
        m: int,
        reps: int,
        impl: int = BEST,
    ) -> np.ndarray:
        """Seconds of each of `reps` native calls; call k uses copy k % copies of the matrices laid end to
        end in w. BEST uses this library's packed layout when it has one (repacked before timing)."""
        raw = np.ascontiguousarray(w).view(np.uint8).ravel()
        if raw.size != copies * rows * row_bytes(dtype, cols):
            raise KernelError(f"w must hold {copies} copies of a {rows}×{cols} {DType(dtype).name} matrix")
        x = np.random.default_rng(0).standard_normal((m, cols), dtype=np.float32)
        y = np.empty((m, rows), dtype=np.float32)
        secs = np.zeros(reps)
        rc = self.lib.cpullm_bench_matmul(
            impl, int(dtype), _ptr(raw), rows, cols, copies, _ptr(x), m, _ptr(y), reps, _ptr(secs)
        )
        if rc != 0:
            raise KernelError("cpullm_bench_matmul refused its arguments")
        return secs

    def bench_stream_read(self, buf: np.ndarray, reps: int) -> np.ndarray:
        """Seconds of each of `reps` native passes reading all of buf (over the library's threads)."""
        raw = np.ascontiguousarray(buf).view(np.uint8).ravel()
        secs = np.zeros(reps)
        checksum = ctypes.c_uint64()
        nbytes = raw.size // 64 * 64
        if (
            self.lib.cpullm_bench_stream_read(_ptr(raw), nbytes, reps, _ptr(secs), ctypes.byref(checksum))
            != 0
        ):
            raise KernelError("cpullm_bench_stream_read needs at least 64 bytes")
        return secs

    def bench_int8_peak(self, iters: int, reps: int) -> tuple[np.ndarray, int] | None:
        """(seconds of each of `reps` passes, multiply-adds per pass) of the variant's int8 dot instruction
        run in registers on every thread of the pool; None when the variant has none (generic)."""
        secs = np.zeros(reps)
        macs = ctypes.c_int64()
        if self.lib.cpullm_bench_int8_peak(iters, reps, _ptr(secs), ctypes.byref(macs)) != 0:
            return None
        return secs, int(macs.value)

    def bench_int8_block_peak(
        self, iters: int, reps: int, super_block: bool = False
    ) -> tuple[np.ndarray, int] | None:
        """As bench_int8_peak, with the work a quantized product adds around the dot instruction per block
        and row: for 32-weight blocks (Q4_0) its integer correction, then the float conversion, scaling and
        sum; for super-blocks (``super_block``: Q4_K) the sub-block scale's integer multiply and the
        minimum's second sum. The ceiling of the packed products; None where the variant does not measure
        it (all but AVX-512 VNNI)."""
        secs = np.zeros(reps)
        macs = ctypes.c_int64()
        rc = self.lib.cpullm_bench_int8_block_peak(
            int(super_block), iters, reps, _ptr(secs), ctypes.byref(macs)
        )
        if rc != 0:
            return None
        return secs, int(macs.value)

    def bench_f32_peak(self, iters: int, reps: int) -> tuple[np.ndarray, int]:
        """(seconds of each of `reps` passes, multiply-adds per pass) of the variant's widest float FMA
        run in registers on every thread of the pool: the f32/f16 (and, without a bf16 dot, bf16) ceiling."""
        secs = np.zeros(reps)
        macs = ctypes.c_int64()
        if self.lib.cpullm_bench_f32_peak(iters, reps, _ptr(secs), ctypes.byref(macs)) != 0:
            raise KernelError("cpullm_bench_f32_peak needs iters and reps of at least 1")
        return secs, int(macs.value)

    def _matrix_bytes(self, dtype: DType, w: np.ndarray, rows: int, cols: int) -> np.ndarray:
        raw = np.ascontiguousarray(w).view(np.uint8).ravel()
        if raw.size != rows * row_bytes(dtype, cols):
            raise KernelError(
                f"a {rows}×{cols} {DType(dtype).name} matrix is {rows * row_bytes(dtype, cols)} bytes, "
                f"got {raw.size}"
            )
        return raw

    def rmsnorm(self, x: npt.ArrayLike, w: npt.ArrayLike, eps: float, impl: int = BEST) -> F32Array:
        xs, ws = _f32(x, "x"), _f32(w, "w")
        n = xs.shape[-1]
        if ws.size != n:
            raise KernelError(f"rmsnorm weight has {ws.size} values, rows have {n}")
        y = np.empty_like(xs)
        self._check(self.lib.cpullm_rmsnorm(impl, _ptr(xs), _ptr(ws), _ptr(y), xs.size // n, n, eps))
        return y

    def silu_mul(self, g: npt.ArrayLike, u: npt.ArrayLike, impl: int = BEST) -> F32Array:
        gs, us = _f32(g, "g"), _f32(u, "u")
        if gs.shape != us.shape:
            raise KernelError(f"g {gs.shape} and u {us.shape} must have the same shape")
        y = np.empty_like(gs)
        self._check(self.lib.cpullm_silu_mul(impl, _ptr(gs), _ptr(us), _ptr(y), gs.size))
        return y

    def add(self, a: npt.ArrayLike, b: npt.ArrayLike, impl: int = BEST) -> F32Array:
        as_, bs = _f32(a, "a"), _f32(b, "b")
        if as_.shape != bs.shape:
            raise KernelError(f"a {as_.shape} and b {bs.shape} must have the same shape")
        y = np.empty_like(as_)
        self._check(self.lib.cpullm_add(impl, _ptr(as_), _ptr(bs), _ptr(y), as_.size))
        return y

    def softmax(self, x: npt.ArrayLike, impl: int = BEST) -> F32Array:
        y = _f32(x, "x").copy()
        self._check(self.lib.cpullm_softmax(impl, _ptr(y), y.size))
        return y

    def argmax(self, x: npt.ArrayLike, impl: int = BEST) -> int:
        xs = _f32(x, "x")
        i = int(self.lib.cpullm_argmax(impl, _ptr(xs), xs.size))
        self._check(i)
        return i

    def rope(
        self,
        x: npt.ArrayLike,
        pos: npt.ArrayLike,
        *,
        neox: bool,
        theta_base: float = 10000.0,
        rot_dims: int | None = None,
        freq_scale: float = 1.0,
        freq_factors: npt.ArrayLike | None = None,
        impl: int = BEST,
    ) -> F32Array:
        """x[n_tokens, n_heads, head_dim] rotated (a copy); pos[n_tokens] int32."""
        y = _f32(x, "x").copy()
        if y.ndim != 3:
            raise KernelError(f"rope needs x shaped [tokens, heads, head_dim], got {y.shape}")
        n_tokens, n_heads, head_dim = y.shape
        ps = np.ascontiguousarray(pos, dtype=np.int32)
        if ps.size != n_tokens:
            raise KernelError(f"{ps.size} positions for {n_tokens} tokens")
        ff = None if freq_factors is None else _f32(freq_factors, "freq_factors")
        rot = head_dim if rot_dims is None else rot_dims
        mode = 2 if neox else 0
        rc = self.lib.cpullm_rope(
            impl, _ptr(y), n_tokens, n_heads, head_dim, _ptr(ps), mode, rot, theta_base, freq_scale, _ptr(ff)
        )
        self._check(rc)
        return y

    def kv_write(self, cache: PagedKV, k: npt.ArrayLike, v: npt.ArrayLike, pos0: int) -> None:
        """Store k, v [n_tokens, n_kv_heads, head_dim] at positions pos0.. of ``cache``."""
        ks, vs = _f32(k, "k"), _f32(v, "v")
        n_tokens = ks.size // (cache.n_kv_heads * cache.head_dim)
        rc = self.lib.cpullm_kv_write(
            cache.kv_type, cache.block_size, cache.n_kv_heads, cache.head_dim, _ptr(cache.k_pool),
            _ptr(cache.v_pool), _ptr(cache.block_table), _ptr(ks), _ptr(vs), pos0, n_tokens,
        )  # fmt: skip
        self._check(rc)

    def attention(
        self, q: npt.ArrayLike, pos0: int, cache: PagedKV, scale: float, impl: int = BEST
    ) -> F32Array:
        """q[n_q, n_heads, head_dim] (query t at position pos0 + t) -> out of the same shape."""
        qs = _f32(q, "q")
        if qs.ndim != 3 or qs.shape[2] != cache.head_dim:
            raise KernelError(f"q must be [n_q, n_heads, {cache.head_dim}], got {qs.shape}")
        out = np.empty_like(qs)
        rc = self.lib.cpullm_attention(
            impl, _ptr(qs), qs.shape[0], pos0, qs.shape[1], cache.kv_type, cache.block_size, cache.n_kv_heads,
            cache.head_dim, _ptr(cache.k_pool), _ptr(cache.v_pool), _ptr(cache.block_table), scale, _ptr(out),
        )  # fmt: skip
        self._check(rc)
        return out


class PagedKV:
    """A numpy-backed paged KV cache for one sequence (tests and tools; the engine keeps its own)."""

    def __init__(
        self,
        *,
        n_blocks: int,
        block_size: int,
        n_kv_heads: int,
        head_dim: int,
        dtype: str,
        block_table: npt.ArrayLike,
    ) -> None:
        """dtype: "f32", "f16" or "q8_0" (int8 with an f16 scale per 32 values; head_dim % 32 == 0)."""
        if dtype not in KV_DTYPES:
            raise KernelError(f"KV cache dtype must be one of {', '.join(KV_DTYPES)}, not {dtype!r}")
        self.kv_type = KV_DTYPES[dtype].native_id
        self.block_size, self.n_kv_heads, self.head_dim = block_size, n_kv_heads, head_dim
        if dtype == "q8_0":  # per (block, head): the int8 tile, then its f16 scales (kv_layout.h)
            shape: tuple[int, ...] = (n_blocks, n_kv_heads, block_size * head_dim * 17 // 16)
        else:
            shape = (n_blocks, block_size, n_kv_heads, head_dim)
        np_type = {"f32": np.float32, "f16": np.float16, "q8_0": np.uint8}[dtype]
        self.k_pool = np.zeros(shape, dtype=np_type)
        self.v_pool = np.zeros(shape, dtype=np_type)
        self.block_table = np.ascontiguousarray(block_table, dtype=np.int32)
        if self.block_table.size and (self.block_table.min() < 0 or self.block_table.max() >= n_blocks):
            raise KernelError(f"block_table entries must be in [0, {n_blocks})")
