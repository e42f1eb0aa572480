"""aarch64: cross-built with g++-aarch64-linux-gnu, repaired, self-tested by an arm64 Python under qemu."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from wheel_support import BUILD_ROOT, QEMU_ARM, REPO, build, clean_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.qemu,
    pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None, reason="g++-aarch64-linux-gnu missing"),
    pytest.mark.skipif(
        QEMU_ARM is None, reason="qemu-aarch64 not installed (scripts/install-system-deps.sh)"
    ),
]


@pytest.fixture(scope="module")
def sysroot():
    """An arm64 CPython from Debian's packages (scripts/arm64-python.sh; idempotent)."""
    script = [str(REPO / "scripts" / "arm64-python.sh"), str(BUILD_ROOT.parent / "arm64-sysroot")]
    done = subprocess.run(["bash", *script], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"scripts/arm64-python.sh failed: {done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def dotprod_wheel(tmp_path_factory):
    return build("dotprod", tmp_path_factory.mktemp("arm-wheels"), arch="aarch64")


def test_cross_built_wheel_is_repaired_for_aarch64(dotprod_wheel):
    assert dotprod_wheel.path.name.startswith("cpullm-0.1.0-py3-none-manylinux_")
    assert dotprod_wheel.path.name.endswith("_aarch64-dotprod.whl")  # a PEP 825 variant label
    assert dotprod_wheel.variant["properties"] == {
        "aarch64": {"asimddp": ["on"], "asimdhp": ["on"], "fphp": ["on"], "asimd": ["on"]}
    }
    assert dotprod_wheel.platform_tag.endswith("_aarch64")
    with zipfile.ZipFile(dotprod_wheel.path) as archive:
        elf = archive.read("cpullm/_lib/libcpullm_dotprod.so")
        info = json.loads(archive.read("cpullm/_build_info.json"))
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183  # EM_AARCH64
    assert info["arch"] == "aarch64" and "asimddp" in info["required_features"]
    assert any("dotprod" in flag for flag in info["flags"])
    assert info["compiler"].startswith("aarch64-linux-gnu-g++")


def test_self_test_runs_under_qemu_aarch64(dotprod_wheel, sysroot):
    command = [
        sys.executable,
        "-m",
        "cpubuild.cli.main",
        "verify",
        str(dotprod_wheel.path),
        "--sysroot",
        sysroot,
        "--json",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=clean_env(), cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["variant"] == "dotprod" and report["how"].startswith("qemu-aarch64")
    assert report["info"]["host"]["arch"] == "aarch64"
    selftest = report["selftest"]
    assert selftest["passed"] is True or selftest["report"] == "no self-test in this build"


def test_x86_verify_refuses_without_a_sysroot(dotprod_wheel):
    command = [sys.executable, "-m", "cpubuild.cli", "verify", str(dotprod_wheel.path)]
    done = subprocess.run(command, capture_output=True, text=True, env=clean_env(), cwd=REPO, timeout=120)
    assert done.returncode == 1
    assert "pass --sysroot" in done.stderr and "scripts/arm64-python.sh" in done.stderr


@pytest.fixture(scope="module")
def arm_portable_wheel(tmp_path_factory):
    return build("all", tmp_path_factory.mktemp("arm-portable"), arch="aarch64")


@pytest.mark.parametrize(
    ("cpu", "expected"), [("cortex-a53", "armv8"), ("cortex-a76", "dotprod"), ("max", "sve")]
)
def test_portable_aarch64_wheel_picks_the_variant_of_each_emulated_cpu(
    arm_portable_wheel, sysroot, cpu, expected
):
    from cpubuild.verify import verify

    report = verify(arm_portable_wheel.path, sysroot=Path(sysroot), cpu=cpu)
    assert report.ok, report.error
    assert report.variant == expected and report.how.startswith(f"qemu-aarch64 -cpu {cpu}")
    assert report.selftest["passed"] is True or report.selftest["report"] == "no self-test in this build"


def test_tuned_aarch64_wheel_is_refused_cleanly_on_an_older_core(dotprod_wheel, sysroot):
    from cpubuild.verify import verify

    strict = verify(dotprod_wheel.path, sysroot=Path(sysroot), cpu="cortex-a53")
    assert not strict.ok and "dotprod needs asimddp" in (strict.error or "")
    lenient = verify(dotprod_wheel.path, sysroot=Path(sysroot), cpu="cortex-a53", allow_refusal=True)
    assert lenient.ok and lenient.refused
