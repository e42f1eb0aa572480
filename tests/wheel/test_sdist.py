"""The engine's sdist (`python -m build --sdist`, the release workflow's sdist job): it holds exactly what
the build needs, and a wheel built from it installs and knows how it was built."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import tomllib
from wheel_support import REPO, clean_env, make_venv, x86_host

pytestmark = pytest.mark.slow

# What the build reads (pyproject.toml, CMakeLists.txt, cmake/, csrc/, recipes/, engine/) plus the licence
# and the readmes; everything else in the repository (toolchain, tests, CI, benchmarks) stays out.
SDIST_ROOTS = ("CMakeLists.txt", "pyproject.toml", "LICENSE", "README.md", "cmake/", "csrc/", "recipes/",
               "engine/")  # fmt: skip
# The recipe loader CMakeLists.txt runs, from build_tools/ (pyproject's sdist.include).
_SKBUILD = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["scikit-build"]
LOADER = tuple(p.lstrip("/") for p in _SKBUILD["sdist"]["include"])
NEEDED = ("CMakeLists.txt", "pyproject.toml", "LICENSE", "engine/README-pypi.md",
          "build_tools/cpubuild/recipes_cmake.py", "cmake/build_info.py", "csrc/runtime/probe.cc",
          "engine/cpullm/__init__.py",
          "recipes/x86_64/generic.toml", "recipes/aarch64/armv8.toml")  # fmt: skip
JUNK_PARTS = ("__pycache__", ".venv", "build", "dist", "wheelhouse", ".git", ".pytest_cache", ".ruff_cache")
JUNK_SUFFIXES = (".pyc", ".so", ".gguf", ".whl", ".o")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sdist")
    command = [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), str(REPO)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=clean_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = out.glob("cpullm-*.tar.gz")
    return path


def _members(sdist: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(sdist) as archive:
        members = archive.getmembers()
    top = sdist.name.removesuffix(".tar.gz")
    assert all(m.name.startswith(f"{top}/") for m in members)
    return {m.name.removeprefix(f"{top}/"): m for m in members if not m.isdir()}


def _source_files() -> set[str]:
    """Files git would commit (tracked, or new and not ignored) under the sdist's roots."""
    command = ["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard"]
    listed = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split("\n")
    present = [f for f in listed if f and (REPO / f).is_file()]  # not deleted in the working tree
    return {f for f in present if f.startswith(SDIST_ROOTS) and (f in SDIST_ROOTS or "/" in f)} | set(LOADER)


def test_the_recipe_loader_in_the_sdist_runs_on_its_own(sdist, tmp_path):
    """CMake runs cpubuild.recipes_cmake from the unpacked sdist: it must import from there alone.

    `python -I -S` ignores site-packages, so an installed cpubuild (the developer's editable one) cannot
    stand in for a module the sdist forgot."""
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    (source,) = tmp_path.iterdir()
    code = "import sys; sys.path.insert(0, sys.argv[1]); import cpubuild.recipes_cmake"
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(source / "build_tools")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_sdist_holds_the_build_inputs_and_nothing_else(sdist):
    members = _members(sdist)
    names = set(members)
    assert set(NEEDED) <= names
    assert names - {"PKG-INFO"} == _source_files()  # every source file of the build, no other file
    junk = [n for n in names if set(n.split("/")) & set(JUNK_PARTS) or n.endswith(JUNK_SUFFIXES)]
    assert junk == []
    assert all(m.isfile() for m in members.values())  # no links that would dangle once unpacked


def test_sdist_metadata_has_the_short_readme_licence_and_urls(sdist):
    with tarfile.open(sdist) as archive:
        top = sdist.name.removesuffix(".tar.gz")
        pkg_info = archive.extractfile(f"{top}/PKG-INFO").read().decode()
    assert "License-Expression: MIT" in pkg_info and "License-File: LICENSE" in pkg_info
    assert (
        "Project-URL: Source, https://" in pkg_info
        and "Classifier: Operating System :: POSIX :: Linux" in pkg_info
    )
    description = pkg_info.split("\n\n", 1)[1]
    assert description.strip() == (REPO / "engine" / "README-pypi.md").read_text().strip()
    assert len(description) < 4000  # the short PyPI page, not the developer README


@x86_host
def test_a_wheel_built_from_the_sdist_installs_and_reports_its_build(sdist, tmp_path):
    # Unpacked into a stable folder so ccache hits on later runs (pip would pick a random one).
    unpacked = REPO / "build" / "test-sdist"
    subprocess.run(["rm", "-rf", str(unpacked)], check=True)
    with tarfile.open(sdist) as archive:
        archive.extractall(unpacked, filter="data")
    (source,) = unpacked.iterdir()
    # One small variant keeps this quick; the portable default builds them all the same way.
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-build-isolation", "--no-deps", "-q",
               "-w", str(tmp_path / "out"), "-C", "cmake.define.CPULLM_VARIANTS=generic",
               "-C", "build-dir=build/wheel"]  # fmt: skip
    if shutil.which("ccache"):
        command += ["-C", "cmake.define.CMAKE_CXX_COMPILER_LAUNCHER=ccache"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=clean_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel_path,) = (tmp_path / "out").glob("cpullm-0.1.0-py3-none-linux_x86_64.whl")
    with zipfile.ZipFile(wheel_path) as archive:
        names = set(archive.namelist())
        info = json.loads(archive.read("cpullm/_build_info.json"))
    assert {"cpullm/_lib/libcpullm_generic.so", "cpullm/_lib/libcpullm_probe.so",
            "cpullm/_lib/_variants.json", "cpullm-0.1.0.dist-info/licenses/LICENSE"} <= names  # fmt: skip
    assert info["builder"] == "cmake" and info["recipe"] == "generic" and info["arch"] == "x86_64"
    assert info["variants"][0]["name"] == "generic" and info["compiler_id"] in ("GNU", "Clang")
    # The unpacked sdist sits inside this checkout, but it is not a checkout itself.
    assert info["source_commit"] == "unknown (not a git checkout)"
    python = make_venv(tmp_path / "venv", wheel_path)
    shown = subprocess.run([str(python), "-m", "cpullm", "info", "--json"], capture_output=True, text=True,
                           env=clean_env(), cwd=tmp_path, timeout=120)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["variant"] == "generic" and report["build"] == info
    text = subprocess.run([str(python), "-m", "cpullm", "info"], capture_output=True, text=True,
                          env=clean_env(), cwd=tmp_path, timeout=120).stdout  # fmt: skip
    assert "built:     recipe generic with" in text and "by pip/CMake (not cpubuild)" in text
