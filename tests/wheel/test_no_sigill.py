"""No SIGILL, proved with installed wheels under older emulated CPUs (qemu-x86_64 -cpu ...)."""

from __future__ import annotations

import json
import subprocess

import pytest
from wheel_support import QEMU_X86, clean_env, make_venv, x86_host

pytestmark = [
    x86_host,
    pytest.mark.slow,
    pytest.mark.qemu,
    pytest.mark.skipif(QEMU_X86 is None, reason="qemu-x86_64 not installed (scripts/install-system-deps.sh)"),
]


def _run(python, cpu, *args, **env):
    command = [QEMU_X86, "-cpu", cpu, str(python), *args]
    return subprocess.run(command, capture_output=True, text=True, env=clean_env(**env), timeout=300, cwd="/")


@pytest.fixture(scope="module")
def avx512_venv(avx512_wheel, tmp_path_factory):
    return make_venv(tmp_path_factory.mktemp("venv-avx512"), avx512_wheel.path)


@pytest.fixture(scope="module")
def portable_venv(portable_wheel, tmp_path_factory):
    return make_venv(tmp_path_factory.mktemp("venv-portable"), portable_wheel.path)


def test_avx512_wheel_on_haswell_fails_at_import_not_sigill(avx512_venv):
    result = _run(avx512_venv, "Haswell", "-c", "import cpullm")
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])  # 132 would be SIGILL
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "cpullm.native.loader.VariantError: this cpullm wheel cannot run on this CPU (x86_64)"
    )
    assert "avx512 needs avx512f, avx512bw, avx512vl, avx512dq, avx512cd" in last
    assert "Install the wheel built for avx2" in last


def test_avx512_wheel_on_haswell_info_explains_the_refusal(avx512_venv):
    result = _run(avx512_venv, "Haswell", "-m", "cpullm", "info", "--json")
    assert result.returncode == 1, result.stderr[-2000:]
    info = json.loads(result.stdout)
    assert info["variant"] is None and "avx512 needs avx512f" in info["error"]
    assert {"avx2", "fma"} <= set(info["host"]["usable"]) and "avx512f" not in info["host"]["usable"]
    assert info["build"]["recipe"] == "avx512"


@pytest.mark.parametrize(("cpu", "expected"), [("Haswell", "avx2"), ("Nehalem", "generic")])
def test_portable_wheel_loads_the_best_variant_the_cpu_can_run(portable_venv, cpu, expected):
    result = _run(portable_venv, cpu, "-m", "cpullm", "info", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    info = json.loads(result.stdout)
    assert info["variant"] == expected
    assert info["reason"].startswith("best of the")
    runnable = {c["name"] for c in info["candidates"] if c["runnable"]}
    assert expected in runnable and "avx512" not in runnable


def test_forcing_a_variant_works_and_is_refused_when_the_cpu_cannot_run_it(portable_venv):
    forced = _run(portable_venv, "Haswell", "-m", "cpullm", "info", "--json", CPULLM_ISA="generic")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert json.loads(forced.stdout)["reason"] == "forced by CPULLM_ISA=generic"
    refused = _run(portable_venv, "Haswell", "-c", "import cpullm", CPULLM_ISA="avx512_vnni")
    assert refused.returncode == 1
    assert (
        "CPULLM_ISA=avx512_vnni: this CPU cannot run the avx512_vnni variant; missing: avx512f"
        in refused.stderr
    )


def test_cpullm_command_explains_the_refusal_on_haswell(avx512_venv):
    """The console script starts even where the variant is refused, so `cpullm info` can say why."""
    script = avx512_venv.parent / "cpullm"
    result = _run(avx512_venv, "Haswell", str(script), "info")
    assert result.returncode == 1, result.stderr[-2000:]
    assert (
        "error:     this cpullm wheel cannot run on this CPU (x86_64): avx512 needs avx512f" in result.stdout
    )
    host_line = next(line for line in result.stdout.splitlines() if line.startswith("host:"))
    assert "avx2" in host_line.split() or "avx2," in host_line.split()
    assert "avx512f" not in host_line
    other = _run(avx512_venv, "Haswell", str(script), "generate", "--help")
    assert other.returncode in (0, 1)  # help, or the refusal; never 132 (SIGILL)
