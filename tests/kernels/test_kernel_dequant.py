"""Dequantization of every block format agrees with the independent gguf package."""

from __future__ import annotations

import numpy as np
import pytest

from cpullm.testing.kernels import DType, KernelError, block
from kernels.helpers import ALL_TYPES, block_multiple, gguf_dequantize, random_weights


@pytest.mark.parametrize("dtype", ALL_TYPES, ids=lambda t: t.name)
def test_dequantize_matches_gguf_package(kernels, dtype):
    rng = np.random.default_rng(int(dtype))
    rows, cols = 3, block_multiple(dtype) * 5
    raw = random_weights(dtype, rows, cols, rng)
    want = gguf_dequantize(dtype, raw, rows, cols)
    got = kernels.dequantize(dtype, raw, rows * cols).reshape(rows, cols)
    # Same float operations in the same order: bit-for-bit.
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("variant", ["generic"])
def test_dequantize_rejects_partial_blocks(kernels):
    with pytest.raises(KernelError, match="multiple of 32"):
        kernels.dequantize(DType.Q4_1, np.zeros(40, np.uint8), 31)


@pytest.mark.parametrize("variant", ["generic"])
def test_library_type_table_is_what_the_tests_cover_and_ggml_sizes(kernels):
    # The library's table (csrc/kernels/dtypes.def) is the one list of types: these tests must cover each,
    # and each row's block geometry must be ggml's.
    table = kernels.tensor_types
    assert set(table) == set(ALL_TYPES)
    for dtype, geometry in table.items():
        assert geometry == block(dtype), dtype.name
    with pytest.raises(KernelError, match=r"weight type 16 is not supported; use one of F32:0:1:4,"):
        kernels._check(kernels.lib.cpullm_dequantize(16, b"x" * 64, 32, b"x" * 128))
