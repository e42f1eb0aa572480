"""`cpubuild matrix`: the CI build jobs (arch x recipe, plus the portable wheel per arch) as JSON.

The output is a GitHub Actions matrix (`{"include": [...]}`) read by .github/workflows/wheels.yml with
`fromJSON`. Each job names its cibuildwheel build identifier; a test checks that
`cibuildwheel --print-build-identifiers` with ci/cibuildwheel.toml agrees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from cpubuild import naming
from cpubuild.features import ARCHES
from cpubuild.wheel_variants import inexpressible

# The engine wheel is py3-none (ctypes, no CPython ABI), so one interpreter per arch builds it.
CIBW_PYTHON: Final = "cp311"
RUNNERS: Final = {"x86_64": "ubuntu-24.04", "aarch64": "ubuntu-24.04-arm"}


def cibw_identifier(arch: str) -> str:
    return f"{CIBW_PYTHON}-manylinux_{arch}"


def jobs(recipes_dir: Path | None = None) -> list[dict[str, Any]]:
    """One job per (arch, recipe) in priority order, then the portable wheel of the arch.

    A recipe that needs a feature no variant provider has a property for (amx) gets no tuned wheel: a
    variant wheel for it would install on CPUs without the feature. The portable wheel carries it.
    """
    from cpubuild.recipes import load_recipes

    recipes = load_recipes(recipes_dir)
    out = []
    for arch in ARCHES:
        targets = [r.name for r in recipes.for_arch(arch) if not inexpressible(arch, r.features)]
        if not targets:
            continue
        for isa in [*targets, naming.PORTABLE]:
            out.append(
                {
                    "name": f"{arch}-{isa}",
                    "arch": arch,
                    "isa": isa,
                    "runner": RUNNERS[arch],
                    "cibw_build": cibw_identifier(arch),
                }
            )
    return out


def github_matrix(recipes_dir: Path | None = None) -> dict[str, Any]:
    return {"include": jobs(recipes_dir)}
