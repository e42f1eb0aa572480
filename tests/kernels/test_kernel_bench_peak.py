"""The roofline's compute limit: each variant with an int8 dot instruction times it in registers, on every
thread of its pool; generic has none and says so."""

from __future__ import annotations

import pytest


def test_int8_peak_counts_the_work(kernels, variant: str) -> None:
    result = kernels.bench_int8_peak(iters=20_000, reps=2)
    if variant == "generic":
        assert result is None
        return
    assert result is not None
    seconds, macs = result
    # 8 accumulators per iteration of 32 (256-bit: AVX2, AVX-VNNI) or 64 (512-bit) int8 products, per thread
    per_op = 64 if variant.startswith("avx512") or variant == "amx" else 32
    assert macs == 20_000 * 8 * per_op * kernels.num_threads()
    assert (seconds > 0).all()


@pytest.mark.parametrize("variant", ["avx2"])
def test_int8_peak_scales_with_iterations(kernels) -> None:
    """The loop is not folded away: ten times the iterations take clearly longer (best of three each)."""
    short = min(kernels.bench_int8_peak(iters=100_000, reps=3)[0])
    long = min(kernels.bench_int8_peak(iters=1_000_000, reps=3)[0])
    assert long > 3 * short


@pytest.mark.parametrize("super_block", [False, True])
def test_int8_block_peak_counts_the_work(kernels, variant: str, super_block: bool) -> None:
    """The block-scaled peaks (AVX-512 VNNI sets only): 8 activation rows × 8 vpdpbusd of 64 products per
    iteration, per thread, in either block form; the other sets say they do not measure them."""
    result = kernels.bench_int8_block_peak(iters=20_000, reps=2, super_block=super_block)
    if variant not in ("avx512_vnni", "avx512_bf16", "amx"):
        assert result is None
        return
    assert result is not None
    seconds, macs = result
    assert macs == 20_000 * 8 * 8 * 64 * kernels.num_threads()
    assert (seconds > 0).all()


@pytest.mark.parametrize("variant", ["avx512_vnni"])
@pytest.mark.parametrize("super_block", [False, True])
def test_int8_block_peak_scales_with_iterations(kernels, super_block: bool) -> None:
    short = min(kernels.bench_int8_block_peak(iters=50_000, reps=3, super_block=super_block)[0])
    long = min(kernels.bench_int8_block_peak(iters=500_000, reps=3, super_block=super_block)[0])
    assert long > 3 * short


def test_f32_peak_counts_the_work(kernels, variant: str) -> None:
    """The float FMA peak (the f32/f16/bf16 products' ceiling here): 12 chains of the variant's widest float
    vector per iteration, per thread."""
    seconds, macs = kernels.bench_f32_peak(iters=20_000, reps=2)
    width = 16 if variant.startswith("avx512") or variant == "amx" else 8 if variant.startswith("avx") else 4
    assert macs == 20_000 * 12 * width * kernels.num_threads()
    assert (seconds > 0).all()


@pytest.mark.parametrize("variant", ["avx2"])
def test_f32_peak_scales_with_iterations(kernels) -> None:
    short = min(kernels.bench_f32_peak(iters=100_000, reps=3)[0])
    long = min(kernels.bench_f32_peak(iters=1_000_000, reps=3)[0])
    assert long > 3 * short
