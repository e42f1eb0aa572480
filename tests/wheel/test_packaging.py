"""Package hygiene of both distributions: licence, PyPI metadata, and tomli for Python 3.10 builds."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import tomllib
from packaging.requirements import Requirement
from wheel_support import REPO

ENGINE = tomllib.loads((REPO / "pyproject.toml").read_text())
TOOLCHAIN = tomllib.loads((REPO / "build_tools" / "pyproject.toml").read_text())
# Code that runs at build time: CMake's helper scripts (in the engine's build environment) and cpubuild.
BUILD_TIME = sorted([*(REPO / "cmake").glob("*.py"), *(REPO / "build_tools" / "cpubuild").glob("*.py")])


def _tomli_for_310(requirements: list[str]) -> bool:
    for text in requirements:
        req = Requirement(text)
        if req.name == "tomli" and req.marker is not None:
            return req.marker.evaluate({"python_version": "3.10"}) and not req.marker.evaluate(
                {"python_version": "3.11"}
            )
    return False


def test_tomli_is_declared_where_build_time_code_imports_tomllib():
    importers = [p for p in BUILD_TIME if re.search(r"^\s*import tomllib", p.read_text(), re.M)]
    assert importers, "expected the recipe readers to import tomllib"
    for path in importers:
        assert "import tomli as tomllib" in path.read_text(), f"{path} has no fallback to tomli"
    assert _tomli_for_310(ENGINE["build-system"]["requires"])  # cmake/recipes.py runs in pip's build env
    assert _tomli_for_310(TOOLCHAIN["project"]["dependencies"])


def test_recipes_script_runs_on_tomli_when_tomllib_is_missing(tmp_path):
    """The recipe loader CMake runs, as on Python 3.10: no tomllib, tomli instead (pip's vendored copy)."""
    hide_tomllib = "import pip._vendor.tomli as t; sys.modules['tomllib'] = None; sys.modules['tomli'] = t"
    outputs = {}
    for mode, prelude in {"tomllib": "pass", "tomli": hide_tomllib}.items():
        out = tmp_path / mode
        out.mkdir()
        args = ["--recipes", str(REPO / "recipes"), "--kernels", str(REPO / "csrc" / "kernels"),
                "--arch", "x86_64", "--variants", "all", "--compiler-id", "GNU",
                "--compiler-version", "12.2.0", "--compiler", "c++",
                "--out-cmake", str(out / "r.cmake"), "--out-json", str(out / "v.json")]  # fmt: skip
        code = f"import sys; {prelude}; sys.path.insert(0, sys.argv[1]); "
        code += f"from cpubuild.recipes_cmake import main; sys.exit(main({args!r}))"
        command = [sys.executable, "-I", "-c", code, str(REPO / "build_tools")]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        outputs[mode] = ((out / "r.cmake").read_text(), json.loads((out / "v.json").read_text()))
    assert outputs["tomli"] == outputs["tomllib"] and outputs["tomli"][1]["variants"]


def test_licence_is_mit_in_both_distributions():
    licence = (REPO / "LICENSE").read_text()
    assert licence.startswith("MIT License\n") and "the cpubuild authors" in licence
    # hatchling takes licence files only from inside build_tools/, so it holds a copy (a link would
    # dangle in the sdist); the two must not drift apart.
    assert (REPO / "build_tools" / "LICENSE").read_text() == licence
    for project in (ENGINE["project"], TOOLCHAIN["project"]):
        assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
        assert not [c for c in project["classifiers"] if c.startswith("License ::")]  # PEP 639: one or other


@pytest.mark.parametrize("project", [ENGINE["project"], TOOLCHAIN["project"]], ids=["cpullm", "cpubuild"])
def test_pypi_metadata(project):
    assert project["urls"] == ENGINE["project"]["urls"]  # one project, one home
    assert all(url.startswith("https://") for url in project["urls"].values())
    assert "Operating System :: POSIX :: Linux" in project["classifiers"]
    minimum = project["requires-python"].removeprefix(">=")
    assert f"Programming Language :: Python :: {minimum}" in project["classifiers"]


def test_engine_readme_is_the_short_pypi_page():
    readme = REPO / ENGINE["project"]["readme"]
    assert readme != REPO / "README.md" and readme.is_file()
    text = readme.read_text()
    assert len(text) < 4000 and "pip install cpullm" in text
    assert "](" not in text  # no relative links: PyPI cannot follow them
