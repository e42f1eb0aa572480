"""The kernel sets a library reports come from one table (csrc/kernels/kernel_sets.def): exactly the sets its
recipe lists that have code, "ref" first and the best last, and best_kernel_set() is the best of them. A
recipe that lists a set without requiring the CPU features the set's code executes does not compile."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cpubuild.recipes import Recipe
from kernels.helpers import REPO, recipes, sets_with_code

CXX = shutil.which("g++") or shutil.which("c++")
VARIANT_INFO = REPO / "csrc" / "api" / "variant_info.cc"
PRINT_SETS = """#include <cstdio>
#include "cpullm/cpullm.h"
int main() { std::puts(cpullm_variant_kernel_sets()); }
"""

needs_cxx = pytest.mark.skipif(CXX is None, reason="no C++ compiler (run scripts/install-system-deps.sh)")


def _recipe(arch: str, name: str) -> Recipe:
    (recipe,) = (r for r in recipes(arch) if r.name == name)
    return recipe


def test_library_reports_the_sets_of_its_recipe_that_have_code(kernels, variant):
    recipe = _recipe("x86_64", variant)
    reported = kernels.kernel_sets
    assert reported[0] == "ref" and len(set(reported)) == len(reported), reported
    assert set(reported) == sets_with_code(recipe.kernels)
    assert kernels.best_kernel_set == reported[-1]


def _variant_info(
    tmp_path: Path, features: str, sets: list[str], *, link: bool
) -> subprocess.CompletedProcess[str]:
    """Compile api/variant_info.cc as CMake would for a recipe with these features and kernel sets."""
    defines = ['-DCPULLM_VARIANT_NAME="test"', f'-DCPULLM_VARIANT_FEATURES="{features}"']
    defines += [f"-DCPULLM_KSET_{s.upper()}=1" for s in sets]
    includes = [f"-I{REPO / 'csrc'}", f"-I{REPO / 'csrc' / 'include'}"]
    cmd = [CXX, "-std=c++17", "-Wall", "-Wextra", "-Werror", *includes]
    if link:
        main = tmp_path / "main.cc"
        main.write_text(PRINT_SETS)
        cmd += [*defines, str(VARIANT_INFO), str(main), "-o", str(tmp_path / "sets")]
    else:
        cmd += [*defines, "-fsyntax-only", str(VARIANT_INFO)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@needs_cxx
def test_a_set_without_code_is_not_reported(tmp_path):
    # recipes/aarch64/sve.toml named an `sve` set that has no files; a library reports only sets with code.
    i8mm = _recipe("aarch64", "i8mm")
    listed = [*i8mm.kernels, "sve"]
    built = _variant_info(tmp_path, ",".join(i8mm.features), listed, link=True)
    assert built.returncode == 0, built.stderr
    done = subprocess.run([tmp_path / "sets"], capture_output=True, text=True, timeout=30)
    reported = done.stdout.strip().split(",")
    assert reported[0] == "ref" and "sve" not in reported
    assert set(reported) == sets_with_code(listed)


@needs_cxx
def test_a_recipe_missing_a_sets_features_does_not_compile(tmp_path):
    avx512 = _recipe("x86_64", "avx512")
    sets = sorted(sets_with_code(avx512.kernels) - {"ref"})
    good = _variant_info(tmp_path, ",".join(avx512.features), sets, link=False)
    assert good.returncode == 0, good.stderr
    short = [f for f in avx512.features if not f.startswith("avx512")]
    bad = _variant_info(tmp_path, ",".join(short), sets, link=False)
    assert bad.returncode != 0
    assert "kernel set avx512 executes the CPU features" in bad.stderr
    assert "this variant's recipe does not require them all" in bad.stderr
