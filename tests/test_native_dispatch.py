"""Variant selection at import: the probe library, scoring, CPULLM_ISA, and real runs on older CPUs."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cpubuild.features import FEATURES, known_features
from cpullm.native import loader

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 host tests")

QEMU = shutil.which("qemu-x86_64")
PYTHON = os.path.realpath(sys.executable)
REPO = Path(__file__).resolve().parents[1]
ENGINE = str(REPO / "engine")

SNIPPET = """
import sys
from cpullm.native import loader
try:
    lib, sel = loader.native()
except loader.VariantError as e:
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
    sel = loader.select(native_lib_dir)
    runnable = {name for name, score in sel.candidates.items() if score > 0}
    assert sel.variant.name in runnable
    assert sel.candidates[sel.variant.name] == max(sel.candidates.values())
    lib = loader.load_variant(sel)
    assert lib.cpullm_variant_name().decode() == sel.variant.name
    if {"avx512_bf16", "avx512_vnni", "avx512bw"} <= sel.host.usable and "amx_tile" not in sel.host.usable:
        assert sel.variant.name == "avx512_bf16"
        assert sel.candidates["amx"] == 0


def test_generic_needs_nothing_and_amx_needs_tiles(native_lib_dir):
    sel = loader.select(native_lib_dir)
    assert sel.candidates["generic"] == 1
    amx = next(v for v in loader._variants(loader._read_table(native_lib_dir)) if v.name == "amx")
    assert {"amx_tile", "amx_int8", "amx_bf16"} <= set(amx.features)


def test_forced_variant_is_refused_when_host_cannot_run_it(native_lib_dir):
    sel = loader.select(native_lib_dir)
    if "amx_tile" in sel.host.usable:
        pytest.skip("this host can run AMX")
    refusal = r"CPULLM_ISA=amx: this CPU cannot run the amx variant; missing: .*amx_tile"
    with pytest.raises(loader.VariantError, match=refusal):
        loader.select(native_lib_dir, forced="amx")
    with pytest.raises(loader.VariantError, match="has no 'sse9' variant"):
        loader.select(native_lib_dir, forced="sse9")
    assert loader.select(native_lib_dir, forced="generic").variant.name == "generic"


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


# --- issue 11: the engine's probe and `cpubuild detect` speak of the same features --------------------


def test_native_probe_and_cpubuild_detect_agree_on_this_host(native_lib_dir):
    """The engine's probe (cpuid, XCR0, AMX permission) and `cpubuild detect` (/proc/cpuinfo, XCR0, AMX
    permission) find the same usable and unusable features here, under the same names."""
    from typer.testing import CliRunner

    from cpubuild.cli.main import app

    probe = loader.probe_host(native_lib_dir)
    result = CliRunner().invoke(app, ["detect", "--json"])
    assert result.exit_code == 0, result.stderr
    detected = json.loads(result.stdout)
    assert probe.arch == detected["host"]["arch"]
    vocabulary = set(known_features(probe.arch))
    assert probe.usable | probe.unusable.keys() <= vocabulary, (
        "the probe names a feature cpubuild does not know"
    )
    assert probe.usable, "the probe found no usable feature at all"
    assert sorted(probe.usable) == sorted(detected["features"]["usable"])
    unusable = {item["name"] for item in detected["features"]["unusable"]} & vocabulary
    assert sorted(probe.unusable) == sorted(unusable)


def probe_vocabulary() -> dict[str, set[str]]:
    """The feature names csrc/runtime/probe.cc can report, per architecture (its r.add("name", ...) calls)."""
    source = (REPO / "csrc" / "runtime" / "probe.cc").read_text()
    bodies = [part.split("\n}\n", 1)[0] for part in source.split("ProbeResult probe() {")[1:]]
    assert len(bodies) == 2, "probe.cc should define probe() once per architecture"
    names = re.compile(r'\br\.add\("([a-z0-9_]+)"')
    return {("aarch64" if "AT_HWCAP" in body else "x86_64"): set(names.findall(body)) for body in bodies}


def test_probe_source_and_cpubuild_share_one_feature_vocabulary():
    vocabulary = probe_vocabulary()
    for arch, features in FEATURES.items():
        assert vocabulary[arch] == set(features), arch
