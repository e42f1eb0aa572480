#!/usr/bin/env python3
"""Translate recipes/<arch>/*.toml into a CMake include file and the engine's variant table.

CMake cannot read TOML, so CMakeLists.txt runs this script at configure time. It is the CMake side of
"data over code": the variant list, required features, flags and kernel sets come from the recipes only.
Standard library only (it runs in the build environment, before anything is installed).

Usage: recipes.py RECIPES_DIR ARCH COMPILER_ID COMPILER_VERSION VARIANTS OUT_CMAKE OUT_JSON
  VARIANTS: "all" or a comma/semicolon separated list of recipe names.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def _load(recipes_dir: Path, arch: str) -> dict[str, dict]:
    folder = recipes_dir / arch
    if not folder.is_dir():
        sys.exit(f"recipes.py: no recipes for architecture {arch!r} (looked in {folder})")
    recipes = {}
    for path in sorted(folder.glob("*.toml")):
        with path.open("rb") as f:
            recipes[path.stem] = tomllib.load(f)
    return recipes


def _required_features(recipes: dict[str, dict], name: str) -> list[str]:
    chain, seen = [], set()
    while name:
        if name in seen:
            sys.exit(f"recipes.py: cycle in recipe parents at {name!r}")
        seen.add(name)
        chain.append(recipes[name])
        name = recipes[name].get("parent", "")
    features: list[str] = []
    for recipe in reversed(chain):
        features += [f for f in recipe.get("features", []) if f not in features]
    return features


def _flags(recipe: dict, family: str, version: str) -> list[str] | None:
    have = _version_tuple(version)
    best = None
    for entry in recipe.get("flags", {}).get(family, []):
        need = _version_tuple(entry["min_version"])
        if have >= need and (best is None or need > _version_tuple(best["min_version"])):
            best = entry
    return None if best is None else list(best["flags"])


def main(argv: list[str]) -> None:
    if len(argv) != 8:
        sys.exit(__doc__)
    recipes_dir, arch, compiler_id, compiler_version, variants, out_cmake, out_json = argv[1:]
    family = {"GNU": "gcc", "Clang": "clang", "AppleClang": "clang"}.get(compiler_id)
    if family is None:
        sys.exit(f"recipes.py: compiler {compiler_id} is not supported; use gcc or clang")
    recipes = _load(Path(recipes_dir), arch)
    names = [v for v in variants.replace(";", ",").split(",") if v]
    wanted = sorted(recipes) if names in ([], ["all"]) else names
    lines, table = [f"set(CPULLM_VARIANTS {' '.join(wanted)})"], []
    for name in wanted:
        if name not in recipes:
            sys.exit(f"recipes.py: no recipe {name!r} for {arch}; known: {', '.join(sorted(recipes))}")
        recipe = recipes[name]
        flags = _flags(recipe, family, compiler_version)
        if flags is None:
            sys.exit(
                f"recipes.py: {compiler_id} {compiler_version} is too old for recipe {name!r} "
                f"(recipes/{arch}/{name}.toml has no [[flags.{family}]] entry it satisfies)"
            )
        features = _required_features(recipes, name)
        kernels = recipe.get("kernels", ["ref"])
        lines += [
            f"set(CPULLM_VARIANT_{name}_FLAGS {' '.join(flags)})",
            f"set(CPULLM_VARIANT_{name}_KERNELS {' '.join(kernels)})",
            f'set(CPULLM_VARIANT_{name}_FEATURES "{",".join(features)}")',
            f"set(CPULLM_VARIANT_{name}_PRIORITY {int(recipe.get('priority', 0))})",
        ]
        table.append(
            {
                "name": name,
                "arch": arch,
                "priority": int(recipe.get("priority", 0)),
                "features": features,
                "flags": flags,
                "kernels": kernels,
                "library": f"libcpullm_{name}.so",
            }
        )
    Path(out_cmake).write_text("\n".join(lines) + "\n")
    # Every recipe of the arch, built or not, so an engine that cannot run on a host can name the
    # wheel that would.
    catalog = [
        {"name": n, "priority": int(r.get("priority", 0)), "features": _required_features(recipes, n)}
        for n, r in sorted(recipes.items())
    ]
    doc = {"arch": arch, "variants": table, "recipes": catalog}
    Path(out_json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv)
