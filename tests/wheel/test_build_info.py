"""The build manifest of a wheel built without cpubuild (cmake/build_info.py), and the source date.

cpubuild's full manifest (build_tools/cpubuild/manifest.py) and the one CMake writes for a plain
`pip install .` must agree on every key they share; an explicit SOURCE_DATE_EPOCH wins over the commit
date in both.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from wheel_support import REPO, clean_env

from cpubuild import manifest, reproducible

SCRIPT = REPO / "cmake" / "build_info.py"
TOOLCHAIN = ["/usr/bin/g++-12", "GNU", "12.2.0", "3.28.1"]
TABLE = {
    "arch": "x86_64",
    "variants": [  # out of priority order on purpose, with the keys cmake/recipes.py writes
        {"name": "avx512", "arch": "x86_64", "priority": 30, "features": ["avx2", "avx512f"],
         "flags": ["-mavx512f"], "kernels": ["ref", "avx512"], "library": "libcpullm_avx512.so"},
        {"name": "generic", "arch": "x86_64", "priority": 0, "features": [], "flags": ["-march=x86-64"],
         "kernels": ["ref"], "library": "libcpullm_generic.so"},
        {"name": "avx2", "arch": "x86_64", "priority": 10, "features": ["avx2"], "flags": ["-mavx2"],
         "kernels": ["ref", "avx2"], "library": "libcpullm_avx2.so"},
    ],
}  # fmt: skip


def _cmake_info(
    tmp_path: Path, requested: str, source: Path, table=TABLE, **env: str
) -> subprocess.CompletedProcess:
    variants = tmp_path / "_variants.json"
    variants.write_text(json.dumps(table))
    out = tmp_path / "_build_info.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, str(SCRIPT), str(variants), requested, str(source), *TOOLCHAIN, str(out)]
    environment = {k: v for k, v in clean_env(**env).items() if k != "SOURCE_DATE_EPOCH" or k in env}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)


def _read(tmp_path: Path, done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / "_build_info.json").read_text())


@pytest.mark.parametrize(("requested", "target"), [("all", "all"), ("", "all"), ("avx2", "avx2")])
def test_cmake_manifest_agrees_with_cpubuilds_on_shared_keys(tmp_path, requested, target):
    table = TABLE
    if target != "all":  # a tuned build holds only its own variant
        table = {**TABLE, "variants": [v for v in TABLE["variants"] if v["name"] == target]}
    ours = _read(tmp_path, _cmake_info(tmp_path, requested, REPO, table))
    toolchain = {"compiler": "g++-12 (GNU 12.2.0)", "compiler_id": "GNU", "compiler_version": "12.2.0",
                 "cmake_version": "3.28.1"}  # fmt: skip
    full = manifest.build_info(
        target=target, table=table, toolchain=toolchain, source=reproducible.source_commit(REPO),
        source_date="-", variant_label=None, platform_tag="manylinux_2_34_x86_64",
    )  # fmt: skip
    shared = set(ours) & set(full) - {"builder", "source_date"}
    assert shared >= {"recipe", "arch", "portable", "required_features", "flags", "variants", "compiler",
                      "source_commit", "source_dirty"}  # fmt: skip
    assert {k: ours[k] for k in shared} == {k: full[k] for k in shared}
    assert (ours["builder"], full["builder"]) == ("cmake", "cpubuild")
    # What `cpubuild install` needs from any manifest.
    assert ours["portable"] == (target == "all") and ours["arch"] == "x86_64"
    assert ours["required_features"] == ([] if target == "all" else ["avx2"])


def test_cmake_manifest_names_a_list_of_recipes(tmp_path):
    ours = _read(tmp_path, _cmake_info(tmp_path, "avx2;avx512", REPO))
    assert ours["recipe"] == "avx2,avx512" and not ours["portable"]


def test_cmake_manifest_outside_a_checkout_and_with_an_explicit_date(tmp_path):
    source = tmp_path / "cpullm-0.1.0"  # an unpacked sdist: no .git of its own
    source.mkdir()
    ours = _read(tmp_path, _cmake_info(tmp_path, "all", source))
    assert ours["source_commit"] == "unknown (not a git checkout)" and ours["source_date"] == "unknown"
    ours = _read(tmp_path, _cmake_info(tmp_path, "all", source, SOURCE_DATE_EPOCH="1700000000"))
    assert ours["source_date"] == "2023-11-14T22:13:20Z"
    # Inside the repository the explicit date still wins over the commit's.
    ours = _read(tmp_path, _cmake_info(tmp_path, "all", REPO, SOURCE_DATE_EPOCH="1700000000"))
    assert ours["source_date"] == "2023-11-14T22:13:20Z" and len(ours["source_commit"]) == 40
    done = _cmake_info(tmp_path, "all", REPO, SOURCE_DATE_EPOCH="yesterday")
    assert done.returncode != 0 and "SOURCE_DATE_EPOCH='yesterday' is not a number" in done.stderr


def test_explicit_source_date_epoch_wins_over_the_commit_date(monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    committed = int(subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%ct"],
                                   capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert reproducible.source_date_epoch(REPO) == committed
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert reproducible.source_date_epoch(REPO) == 1_700_000_000 != committed
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "")  # set but empty: as if unset
    assert reproducible.source_date_epoch(REPO) == committed


def test_malformed_source_date_epoch_is_a_clear_build_error(monkeypatch, tmp_path):
    from cpubuild import wheel

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "2024-01-01")
    with pytest.raises(reproducible.SourceDateError, match="not a number of seconds"):
        reproducible.source_date_epoch(REPO)
    with pytest.raises(wheel.WheelBuildError, match="SOURCE_DATE_EPOCH='2024-01-01'"):
        wheel.build(wheel.WheelTarget("x86_64", "generic"), source=REPO, out_dir=tmp_path,
                    build_root=tmp_path / "build")  # fmt: skip
