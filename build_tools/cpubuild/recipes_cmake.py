"""The CMake side of the recipe loader: `main()` runs at configure time (`python -m` runs it too).

CMake cannot read TOML, so CMakeLists.txt runs this module (standard library only, build_tools/ put first
on sys.path) to turn the recipes into a CMake include file and the engine's variant table. It asks the
same loader `cpubuild` uses (`cpubuild.recipes`), so recipes are validated once, one way.

Flags: `cpubuild wheel` proves the flags of each variant with its compiler and hands them to CMake as a
flags record (JSON, `write_flags_record`); CMake builds with exactly those, after checking that the
compiler it found is the one the flags were proven with and that the recipes still give the same flags.
Without a record (plain `pip install .` or `cmake`), the flags are picked for the compiler CMake found.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cpubuild.recipes import CompilerTooOldError, Recipe, flags_for, load_recipes, parse_version

RECORD_SCHEMA_VERSION: Final = 1
# CMAKE_CXX_COMPILER_ID -> the recipes' compiler family.
CMAKE_FAMILIES: Final = {"GNU": "gcc", "Clang": "clang", "AppleClang": "clang"}


class ConfigureError(Exception):
    """The recipes cannot be turned into a build: one sentence for CMake to print."""


@dataclass(frozen=True)
class Compiler:
    """A compiler as both sides name it: family (gcc/clang), version, resolved path."""

    family: str
    version: str
    path: str

    def same_as(self, other: Compiler) -> bool:
        def key(c: Compiler) -> tuple[str, tuple[int, ...], str]:
            version = parse_version(c.version)
            return c.family, version + (0,) * (3 - len(version)), os.path.realpath(c.path)

        return key(self) == key(other)

    def __str__(self) -> str:
        return f"{self.family} {self.version} ({self.path})"


@dataclass(frozen=True)
class FlagsRecord:
    """The flags cpubuild proved for each variant, and the compiler that proved them."""

    arch: str
    compiler: Compiler
    flags: dict[str, tuple[str, ...]]  # variant -> flags


def write_flags_record(path: Path, record: FlagsRecord) -> None:
    document = {
        "schema_version": RECORD_SCHEMA_VERSION,
        "arch": record.arch,
        "compiler": {"family": record.compiler.family, "version": record.compiler.version,
                     "path": record.compiler.path},
        "flags": {name: list(flags) for name, flags in sorted(record.flags.items())},
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def read_flags_record(path: Path) -> FlagsRecord:
    try:
        document = json.loads(path.read_text())
        version = document.get("schema_version")
        if version != RECORD_SCHEMA_VERSION:
            raise ValueError(f"schema_version {version!r}, not {RECORD_SCHEMA_VERSION}")
        compiler = Compiler(**{k: str(document["compiler"][k]) for k in ("family", "version", "path")})
        flags = {str(name): tuple(map(str, items)) for name, items in document["flags"].items()}
        return FlagsRecord(str(document["arch"]), compiler, flags)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigureError(
            f"cannot read the flags record {path}: {exc}; run cpubuild wheel again."
        ) from None


def _wanted(variants: str, recipes: dict[str, Recipe], arch: str) -> list[str]:
    names = [v for v in variants.replace(";", ",").split(",") if v]
    if names in ([], ["all"]):
        return list(recipes)
    unknown = [n for n in names if n not in recipes]
    if unknown:
        raise ConfigureError(f"no {arch} recipe named {unknown[0]!r}; known: {', '.join(recipes)}")
    return names


def _recipe_flags(recipe: Recipe, compiler: Compiler) -> tuple[str, ...]:
    try:
        return tuple(flags_for(recipe, compiler.family, compiler.version))
    except CompilerTooOldError as exc:
        raise ConfigureError(str(exc)) from None


def resolve_flags(
    recipes: dict[str, Recipe], wanted: list[str], compiler: Compiler, record: FlagsRecord | None
) -> dict[str, tuple[str, ...]]:
    """The flags to build each wanted variant with: the record's, once checked, else the recipes'."""
    chosen = {name: _recipe_flags(recipes[name], compiler) for name in wanted}
    if record is None:
        return chosen
    if not record.compiler.same_as(compiler):
        raise ConfigureError(
            f"cpubuild proved the flags with {record.compiler}, but CMake found {compiler}; build with the "
            "compiler cpubuild checked (--compiler / CPUBUILD_CXX, and no other CXX or toolchain file)"
        )
    if sorted(record.flags) != sorted(wanted):
        raise ConfigureError(
            f"the flags record covers {', '.join(sorted(record.flags))} but CMake builds "
            f"{', '.join(sorted(wanted))}; run cpubuild wheel again"
        )
    for name in wanted:
        if record.flags[name] != chosen[name]:
            raise ConfigureError(
                f"recipe {name!r} now gives {' '.join(chosen[name])} but cpubuild proved "
                f"{' '.join(record.flags[name])}; the recipes changed since: run cpubuild wheel again"
            )
    return dict(record.flags)


def _cmake_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def _cmake_set(name: str, *values: str) -> str:
    return f"set({name} {' '.join(_cmake_quote(v) for v in values)})"


def configure(
    recipes_dir: Path, kernels_dir: Path, arch: str, variants: str, compiler: Compiler,
    record: FlagsRecord | None,
) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """The CMake include text and the variant table (`_variants.json`) for `variants` of `arch`."""
    if record is not None and record.arch != arch:
        raise ConfigureError(f"the flags record is for {record.arch}, but CMake builds for {arch}")
    recipe_set = load_recipes(recipes_dir, kernels_dir)
    recipes = {r.name: r for r in sorted(recipe_set.for_arch(arch), key=lambda r: r.name)}
    if not recipes:
        raise ConfigureError(f"no recipes for architecture {arch!r} in {recipes_dir}")
    wanted = _wanted(variants, recipes, arch)
    flags = resolve_flags(recipes, wanted, compiler, record)
    source = "the flags cpubuild proved" if record is not None else f"picked for {compiler}"
    lines = [_cmake_set("CPULLM_VARIANTS", *wanted), _cmake_set("CPULLM_FLAGS_SOURCE", source)]
    table = []
    for name in wanted:
        recipe = recipes[name]
        lines += [
            _cmake_set(f"CPULLM_VARIANT_{name}_FLAGS", *flags[name]),
            _cmake_set(f"CPULLM_VARIANT_{name}_KERNELS", *recipe.kernels),
            _cmake_set(f"CPULLM_VARIANT_{name}_FEATURES", ",".join(recipe.features)),
            _cmake_set(f"CPULLM_VARIANT_{name}_PRIORITY", str(recipe.priority)),
        ]
        table.append({
            "name": name, "arch": arch, "priority": recipe.priority, "features": list(recipe.features),
            "flags": list(flags[name]), "kernels": list(recipe.kernels), "library": f"libcpullm_{name}.so",
        })  # fmt: skip
    # Every recipe of the arch, built or not, so an engine that cannot run on a host can name the
    # wheel that would.
    catalog = [
        {"name": r.name, "priority": r.priority, "features": list(r.features)} for r in recipes.values()
    ]
    return "\n".join(lines) + "\n", {"arch": arch, "variants": table, "recipes": catalog}


def main(argv: list[str] | None = None) -> int:
    summary = (__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m cpubuild.recipes_cmake", description=summary)
    parser.add_argument("--recipes", type=Path, required=True, help="folder of recipes/<arch>/*.toml")
    parser.add_argument("--kernels", type=Path, required=True, help="the engine's csrc/kernels")
    parser.add_argument("--arch", required=True)
    parser.add_argument("--variants", required=True, help="'all' or recipe names, comma separated")
    parser.add_argument("--compiler-id", required=True, help="CMAKE_CXX_COMPILER_ID")
    parser.add_argument("--compiler-version", required=True, help="CMAKE_CXX_COMPILER_VERSION")
    parser.add_argument("--compiler", required=True, help="CMAKE_CXX_COMPILER")
    parser.add_argument("--flags-record", type=Path, help="the flags cpubuild proved (JSON)")
    parser.add_argument("--out-cmake", type=Path, required=True)
    parser.add_argument("--out-json", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        family = CMAKE_FAMILIES.get(args.compiler_id)
        if family is None:
            raise ConfigureError(f"compiler {args.compiler_id} is not supported; use GCC or Clang")
        compiler = Compiler(family, args.compiler_version, args.compiler)
        record = read_flags_record(args.flags_record) if args.flags_record else None
        include, table = configure(args.recipes, args.kernels, args.arch, args.variants, compiler, record)
    except (ConfigureError, ValueError) as exc:  # RecipeError is a ValueError
        print(exc, file=sys.stderr)
        return 1
    args.out_cmake.write_text(include)
    args.out_json.write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
