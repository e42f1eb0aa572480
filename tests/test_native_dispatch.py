"""Variant selection at import: the probe library, scoring, CPULLM_ISA, and real runs on older CPUs."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cpullm import _native

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 host tests")

QEMU = shutil.which("qemu-x86_64")
PYTHON = os.path.realpath(sys.executable)
ENGINE = str(Path(__file__).resolve().parents[1] / "engine")

SNIPPET = """
import sys
from cpullm import _native
try:
    lib, sel = _native.native()
except _native.VariantError as e:
    print("ERROR:", e)
    sys.exit(1)
print("VARIANT", sel.variant.name, lib.cpullm_variant_name().decode())
"""


def _run(lib_dir: Path, cpu: str | None, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [PYTHON, "-c", SNIPPET]
    if cpu:
        cmd = [QEMU or "qemu-x86_64", "-cpu", cpu, *cmd]
    inherited = {k: v for k, v in os.environ.items() if k != "CPULLM_ISA"}
    full_env = {**inherited, "CPULLM_LIB_DIR": str(lib_dir), "PYTHONPATH": ENGINE, **env}
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=120)


def test_host_picks_its_best_variant(native_lib_dir):
    sel = _native.select(native_lib_dir)
    runnable = {name for name, score in sel.candidates.items() if score > 0}
    assert sel.variant.name in runnable
    assert sel.candidates[sel.variant.name] == max(sel.candidates.values())
    lib = _native.load_variant(sel)
    assert lib.cpullm_variant_name().decode() == sel.variant.name
    if {"avx512_bf16", "avx512_vnni", "avx512bw"} <= sel.host.usable and "amx_tile" not in sel.host.usable:
        assert sel.variant.name == "avx512_bf16"
        assert sel.candidates["amx"] == 0


def test_generic_needs_nothing_and_amx_needs_tiles(native_lib_dir):
    sel = _native.select(native_lib_dir)
    assert sel.candidates["generic"] == 1
    amx = next(v for v in _native._variants(_native._read_table(native_lib_dir)) if v.name == "amx")
    assert {"amx_tile", "amx_int8", "amx_bf16"} <= set(amx.features)


def test_forced_variant_is_refused_when_host_cannot_run_it(native_lib_dir):
    sel = _native.select(native_lib_dir)
    if "amx_tile" in sel.host.usable:
        pytest.skip("this host can run AMX")
    refusal = r"CPULLM_ISA=amx: this CPU cannot run the amx variant; missing: .*amx_tile"
    with pytest.raises(_native.VariantError, match=refusal):
        _native.select(native_lib_dir, forced="amx")
    with pytest.raises(_native.VariantError, match="has no 'sse9' variant"):
        _native.select(native_lib_dir, forced="sse9")
    assert _native.select(native_lib_dir, forced="generic").variant.name == "generic"


@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 not installed (scripts/install-system-deps.sh)")
@pytest.mark.parametrize(("cpu", "expected"), [("Haswell", "avx2"), ("Nehalem", "generic")])
def test_older_cpu_under_qemu_picks_its_variant(native_lib_dir, cpu, expected):
    result = _run(native_lib_dir, cpu)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"VARIANT {expected} {expected}" in result.stdout


@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 not installed (scripts/install-system-deps.sh)")
def test_avx512_forced_on_haswell_is_refused_not_sigill(native_lib_dir):
    result = _run(native_lib_dir, "Haswell", CPULLM_ISA="avx512")
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    # `import cpullm` loads the variant eagerly, so the refusal surfaces as the ImportError itself.
    refusal = "CPULLM_ISA=avx512: this CPU cannot run the avx512 variant; missing: avx512f"
    assert refusal in result.stdout + result.stderr
