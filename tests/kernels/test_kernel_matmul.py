"""Matrix products: every runnable variant's fast path vs the reference in the same library, the reference
vs numpy on gguf-dequantized weights, and thread-count independence."""

from __future__ import annotations

import numpy as np
import pytest

from cpullm.testing.kernels import ACT_BLOCK, BEST, REF, DType, KernelError
from kernels.helpers import (
    ALL_TYPES,
    QUANT_TYPES,
    TOL,
    act_values,
    block_multiple,
    gguf_dequantize,
    random_weights,
)

# (rows, cols in blocks or for float types an odd count, activation rows m)
SHAPES = [
    (1, 1, 1),
    (7, 3, 1),
    (33, 5, 1),
    (64, 18, 1),
    (5, 2, 3),
    (19, 7, 4),
    (48, 6, 13),
    (3, 1, 9),
    (35, 3, 19),
]


def _cols(dtype: DType, n: int) -> int:
    per = block_multiple(dtype)
    return n * per if per > 1 else n * 37 + 3  # float types: not a multiple of any vector width


def _case(dtype: DType, rows: int, n: int, m: int, seed: int):
    rng = np.random.default_rng(seed)
    cols = _cols(dtype, n)
    w = random_weights(dtype, rows, cols, rng)
    x = rng.standard_normal((m, cols), dtype=np.float32)
    return w, x, cols


def _act(kernels, dtype: DType, x: np.ndarray) -> np.ndarray:
    """The activations as the kernels see them (quantized for quantized weight types)."""
    if block_multiple(dtype) == 1:
        return x.astype(np.float64)
    return np.stack([act_values(kernels.quantize_act(row, impl=REF)) for row in x]).astype(np.float64)


@pytest.mark.parametrize("dtype", ALL_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fast_path_matches_reference(kernels, dtype, shape):
    rows, n, m = shape
    w, x, cols = _case(dtype, rows, n, m, seed=rows * 1000 + n * 10 + m)
    want = kernels.matmul(dtype, w, rows, cols, x, impl=REF)
    got = kernels.matmul(dtype, w, rows, cols, x, impl=BEST)
    wf = gguf_dequantize(dtype, w, rows, cols).astype(np.float64)
    scale = np.abs(_act(kernels, dtype, x)) @ np.abs(wf).T  # [m, rows]: Σ|w||x̂|, the error scale
    np.testing.assert_array_less(np.abs(got - want), TOL[dtype] * scale + 1e-30)


@pytest.mark.parametrize("variant", ["generic"])
@pytest.mark.parametrize("dtype", ALL_TYPES, ids=lambda t: t.name)
def test_reference_matches_numpy_on_gguf_dequantized_weights(kernels, dtype):
    rows, n, m = 21, 6, 3
    w, x, cols = _case(dtype, rows, n, m, seed=7)
    got = kernels.matmul(dtype, w, rows, cols, x, impl=REF)
    wf = gguf_dequantize(dtype, w, rows, cols).astype(np.float64)
    xa = _act(kernels, dtype, x)
    want = xa @ wf.T
    np.testing.assert_array_less(np.abs(got - want), 1e-5 * (np.abs(xa) @ np.abs(wf).T) + 1e-30)


THREAD_TYPES = [DType.Q4_1, DType.Q5_0, DType.Q8_0, DType.Q4_K, DType.F16, DType.BF16]


@pytest.mark.parametrize("dtype", THREAD_TYPES, ids=lambda t: t.name)
def test_results_do_not_depend_on_thread_count(kernels, dtype):
    rows, n, m = 203, 4, 5
    w, x, cols = _case(dtype, rows, n, m, seed=11)
    results = []
    try:
        for threads in (1, 2, 3):
            kernels.set_num_threads(threads)
            results.append(kernels.matmul(dtype, w, rows, cols, x))
    finally:
        kernels.set_num_threads(1)
    for r in results[1:]:
        np.testing.assert_array_equal(r.view(np.uint32), results[0].view(np.uint32))


def test_quantize_act_fast_path_is_bitwise_reference(kernels):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(32 * 37, dtype=np.float32) * rng.uniform(0, 10, 32 * 37).astype(np.float32)
    x[64:96] = 0.0  # an all-zero block gets d = 0
    fast, ref = kernels.quantize_act(x), kernels.quantize_act(x, impl=REF)
    assert fast.tobytes() == ref.tobytes()
    assert fast.dtype == ACT_BLOCK and fast["d"][2] == 0.0
    np.testing.assert_array_equal(fast["sum"], fast["q"].astype(np.int32).sum(axis=1))
    # Round to nearest, half to even, of x / d, and |q| <= 127.
    d = np.abs(x.reshape(-1, 32)).max(axis=1) / np.float32(127)
    inv = np.where(d == 0, np.float32(0), np.float32(1) / np.where(d == 0, 1, d)).astype(np.float32)
    np.testing.assert_array_equal(fast["q"], np.rint(x.reshape(-1, 32) * inv[:, None]).astype(np.int8))


@pytest.mark.parametrize("variant", ["generic"])
def test_bad_arguments_raise_sentences(kernels):
    with pytest.raises(KernelError, match="not a positive multiple of the type's block size 256"):
        kernels.lib.cpullm_matmul(0, int(DType.Q4_K), b"x" * 144, 1, 100, b"x" * 400, 1, b"x" * 4)
        kernels._check(-1)
    unsupported = max(int(t) for t in kernels.tensor_types) + 1  # one past the library's table
    with pytest.raises(KernelError, match=f"weight type {unsupported} is not supported"):
        kernels._check(kernels.lib.cpullm_matmul(0, unsupported, b"x", 1, 32, b"x" * 128, 1, b"x" * 4))
    with pytest.raises(KernelError, match="thread count must be between 1 and 1024"):
        kernels.set_num_threads(0)


# The x86 packed layout has every quantized type but Q2_K and Q3_K (Arm's: Q4_0, Q4_1, Q8_0).
PACKED_TYPES = [t for t in QUANT_TYPES if t not in (DType.Q2_K, DType.Q3_K)]


@pytest.mark.parametrize("dtype", PACKED_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize(
    # rows x blocks x activation rows: one row group, pairs of groups (the 512-bit products) with a lone
    # group or ragged rows after them, and activation tiles full (8, 4) and ragged.
    "shape",
    [(8, 1, 1), (21, 3, 1), (64, 18, 1), (40, 5, 6), (24, 2, 11)],
    ids=lambda s: "x".join(map(str, s)),
)
def test_packed_layout_matches_reference(kernels, dtype, shape):
    rows, n, m = shape
    w, x, cols = _case(dtype, rows, n, m, seed=rows + n + m)
    packed = kernels.repack(dtype, w, rows, cols)
    if packed is None:
        pytest.skip(f"the {kernels.lib.cpullm_variant_name().decode()} variant has no packed layout")
    want = kernels.matmul(dtype, w, rows, cols, x, impl=REF)
    got = kernels.matmul_packed(dtype, w, packed, rows, cols, x)
    wf = gguf_dequantize(dtype, w, rows, cols).astype(np.float64)
    scale = np.abs(_act(kernels, dtype, x)) @ np.abs(wf).T
    np.testing.assert_array_less(np.abs(got - want), TOL[dtype] * scale + 1e-30)


@pytest.mark.parametrize("variant", ["avx2", "generic"])
def test_benchmark_entry_points_time_real_work(kernels):
    rng = np.random.default_rng(9)
    rows, cols, copies = 64, 128, 3
    w = np.concatenate([random_weights(DType.Q4_1, rows, cols, rng).ravel() for _ in range(copies)])
    for impl in (BEST, REF):
        secs = kernels.bench_matmul(DType.Q4_1, w, rows, cols, copies, 2, 4, impl)
        assert secs.shape == (4,) and (secs > 0).all()
    reads = kernels.bench_stream_read(np.ones(1 << 16), 2)
    assert reads.shape == (2,) and (reads > 0).all()
    with pytest.raises(KernelError, match="copies"):
        kernels.bench_matmul(DType.Q4_1, w[:-1], rows, cols, copies, 1, 1, BEST)
