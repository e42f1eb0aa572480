"""cpullm_selftest (what the wheel verifier calls) passes for every variant this host can run; the AMX
variant, which this host cannot run, is skipped with that reason."""

from __future__ import annotations


def test_selftest_passes(kernels, variant):
    failures, report = kernels.selftest()
    assert failures == 0, report
    assert f"variant {variant}," in report
    assert ", 0 failed" in report
    # Every quantized and float format was checked.
    for name in ("Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K", "F32", "F16", "BF16"):
        assert f"matmul {name}: 11 shapes" in report
    assert "attention: F32, F16 and Q8_0 caches, 20 runs of 7 shapes (windows, soft-caps)" in report
