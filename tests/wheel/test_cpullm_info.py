"""`cpullm info` / `python -m cpullm info [--json] [--selftest]` against the source tree's native build."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from wheel_support import REPO, clean_env, x86_host

pytestmark = x86_host


def _info(lib_dir, *args, **env):
    full_env = clean_env(PYTHONPATH=str(REPO / "engine"), CPULLM_LIB_DIR=str(lib_dir), **env)
    command = [sys.executable, "-m", "cpullm", "info", *args]
    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=120, cwd="/")


def test_json_shows_variant_reason_and_usable_features(native_lib_dir):
    from cpullm.native import loader as _native

    done = _info(native_lib_dir, "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    expected = _native.select(native_lib_dir)
    assert info["variant"] == expected.variant.name
    assert info["reason"] == expected.reason
    assert set(info["host"]["usable"]) == set(expected.host.usable)
    assert info["kernel_sets"][0] == "ref"
    assert {c["name"] for c in info["candidates"]} >= {"generic", "avx2", "amx"}
    assert "selftest" not in info


def test_text_form_and_selftest(native_lib_dir):
    done = _info(native_lib_dir, "--selftest")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0].startswith("cpullm 0.1.0")
    assert "variant:" in done.stdout and "usable features:" in done.stdout
    assert "self-test: passed" in done.stdout or "no self-test in this build" in done.stdout


def test_refused_variant_is_explained_with_exit_1(native_lib_dir):
    import cpullm.native.loader as native

    if "amx_tile" in native.select(native_lib_dir).host.usable:
        pytest.skip("this host can run AMX")
    done = _info(native_lib_dir, "--json", CPULLM_ISA="amx")
    assert done.returncode == 1
    info = json.loads(done.stdout)
    assert info["variant"] is None
    # The missing list starts with the first amx feature this host lacks (avx512f on an AVX2-only host).
    assert info["error"].startswith("CPULLM_ISA=amx: this CPU cannot run the amx variant; missing: ")
    assert "amx_tile" in info["error"].split("missing: ", 1)[1]
    assert info["host"]["usable"]  # the host's features are still shown
    # Outside the cpullm command the same refusal is an ImportError at import time.
    full_env = clean_env(
        PYTHONPATH=str(REPO / "engine"), CPULLM_LIB_DIR=str(native_lib_dir), CPULLM_ISA="amx"
    )
    imported = subprocess.run(
        [sys.executable, "-c", "import cpullm"], capture_output=True, text=True, env=full_env
    )
    assert imported.returncode == 1 and "VariantError: CPULLM_ISA=amx" in imported.stderr
