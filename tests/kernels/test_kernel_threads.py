"""The thread pool under stress: many back-to-back jobs, more threads than cores, workers woken from
sleep after idle gaps, and pools resized between jobs; results stay bitwise those of one thread."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cpullm.testing.kernels import DType
from kernels.helpers import random_weights


@pytest.mark.parametrize("variant", ["avx2", "generic"])
def test_pool_stress_keeps_results_bitwise(kernels):
    rng = np.random.default_rng(5)
    rows, cols = 200, 256
    w = random_weights(DType.Q4_1, rows, cols, rng)
    x = rng.standard_normal((3, cols), dtype=np.float32)
    kernels.set_num_threads(1)
    want = kernels.matmul(DType.Q4_1, w, rows, cols, x)
    try:
        for threads in (8, 2, 5):  # resize between jobs; 8 threads on fewer cores
            kernels.set_num_threads(threads)
            assert kernels.num_threads() == threads
            for _ in range(300):  # back to back: workers are spinning
                np.testing.assert_array_equal(kernels.matmul(DType.Q4_1, w, rows, cols, x), want)
            for _ in range(3):  # idle gaps long enough for workers to sleep on the condition variable
                time.sleep(0.2)
                np.testing.assert_array_equal(kernels.matmul(DType.Q4_1, w, rows, cols, x), want)
    finally:
        kernels.set_num_threads(1)
