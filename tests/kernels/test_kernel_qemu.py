"""Kernel self-tests of builds this host cannot run natively, under qemu-user: every aarch64 variant
(cross-compiled with g++-aarch64-linux-gnu) on a CPU model that has its features, and the x86 avx2
variant on a Haswell (no AVX-512). The self-test compares each compiled fast path with the reference."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kernels.helpers import recipes, sets_with_code
from support.native_build import build_native

QEMU_ARM = shutil.which("qemu-aarch64")
QEMU_X86 = shutil.which("qemu-x86_64")
CROSS = shutil.which("aarch64-linux-gnu-g++")
SYSROOT = "/usr/aarch64-linux-gnu"

pytestmark = [pytest.mark.qemu, pytest.mark.slow]


@pytest.fixture(scope="module")
def aarch64_build() -> Path:
    if QEMU_ARM is None or CROSS is None:
        pytest.skip("qemu-aarch64 or g++-aarch64-linux-gnu missing (run scripts/install-system-deps.sh)")
    return build_native("aarch64")


def _selftest(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


# (variant, qemu CPU model with its features, the fast path it must report)
ARM_CASES = [
    ("armv8", "cortex-a53", "neon"),
    ("dotprod", "cortex-a76", "dotprod"),
    ("i8mm", "max", "i8mm"),
    ("sve", "max", "i8mm"),  # no SVE-specific kernels: the sve build runs the i8mm/dotprod/neon paths
]


@pytest.mark.parametrize(("variant", "cpu", "fast_path"), ARM_CASES)
def test_aarch64_variant_selftest_under_qemu(aarch64_build, variant, cpu, fast_path):
    lib = aarch64_build / f"libcpullm_{variant}.so"
    result = _selftest(
        [QEMU_ARM, "-L", SYSROOT, "-cpu", cpu, str(aarch64_build / "cpullm_selftest"), str(lib)]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"variant {variant}, fast paths {fast_path} vs ref" in result.stdout
    assert "attention: F32, F16 and Q8_0 caches" in result.stdout
    assert ", 0 failed" in result.stdout
    # The library reports the sets of its recipe that have code (the sve recipe's `sve` has none), best last.
    (recipe,) = (r for r in recipes("aarch64") if r.name == variant)
    (line,) = (x for x in result.stdout.splitlines() if x.startswith("kernel sets: "))
    reported = line.removeprefix("kernel sets: ").split(",")
    assert reported[0] == "ref" and set(reported) == sets_with_code(recipe.kernels)
    assert reported[-1] == fast_path


def test_dotprod_build_is_not_run_on_a_cpu_without_dotprod(aarch64_build):
    # Guards the CPU models above: cortex-a53 really lacks sdot, so the dotprod case is a real test.
    lib = aarch64_build / "libcpullm_dotprod.so"
    result = _selftest(
        [QEMU_ARM, "-L", SYSROOT, "-cpu", "cortex-a53", str(aarch64_build / "cpullm_selftest"), str(lib)]
    )
    assert result.returncode != 0


@pytest.mark.skipif(QEMU_X86 is None, reason="qemu-x86_64 not installed (scripts/install-system-deps.sh)")
def test_avx2_variant_selftest_on_haswell_under_qemu(native_lib_dir):
    result = _selftest([QEMU_X86, "-cpu", "Haswell", str(native_lib_dir / "cpullm_selftest"),
                        str(native_lib_dir / "libcpullm_avx2.so")])  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "variant avx2, fast paths avx2 vs ref" in result.stdout
    assert ", 0 failed" in result.stdout
