"""Recipes: one TOML file per build target under recipes/<arch>/<name>.toml (schema: recipes/README.md).

`load_recipes()` reads and validates every file; a malformed or inconsistent recipe raises
RecipeError naming the file and the field. `flags_for()` picks the compiler flags of a recipe.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

from cpubuild.features import ARCHES, known_features

COMPILER_FAMILIES: Final = ("gcc", "clang")
RECIPES_ENV: Final = "CPUBUILD_RECIPES"
_FIELDS: Final = frozenset(
    {"name", "arch", "description", "parent", "priority", "features", "kernels", "flags"}
)
_VERSION_RE: Final = re.compile(r"^\d+(\.\d+){0,2}$")


class RecipeError(ValueError):
    """A recipe file is malformed or inconsistent with the others."""

    def __init__(self, path: Path, field: str | None, problem: str) -> None:
        self.path, self.field, self.problem = path, field, problem
        where = f"{path}: field {field!r}" if field else str(path)
        super().__init__(f"{where}: {problem}")


class CompilerTooOldError(Exception):
    """No flag entry of a recipe is satisfied by the compiler's version."""


def parse_version(text: str) -> tuple[int, ...]:
    """ "12.2.0" -> (12, 2, 0). Anything after the numeric prefix (e.g. "-rc1") is ignored."""
    match = re.match(r"\d+(\.\d+)*", text.strip())
    if not match:
        raise ValueError(f"not a version number: {text!r}")
    return tuple(int(part) for part in match.group(0).split("."))


@dataclass(frozen=True)
class FlagEntry:
    """Flags for compilers at or above `min_version`."""

    min_version: str
    flags: tuple[str, ...]

    @property
    def version_key(self) -> tuple[int, ...]:
        return parse_version(self.min_version)


@dataclass(frozen=True)
class Recipe:
    """A validated build target. `features` is the full requirement: ancestors' first, then own."""

    name: str
    arch: str
    description: str
    parent: str | None
    priority: int
    own_features: tuple[str, ...]
    features: tuple[str, ...]
    ancestors: tuple[str, ...]  # parent first, root last
    kernels: tuple[str, ...]
    flags: dict[str, tuple[FlagEntry, ...]]  # family -> entries sorted by min_version
    path: Path


def flags_for(recipe: Recipe, compiler_family: str, compiler_version: str | tuple[int, ...]) -> list[str]:
    """The flags of the highest `min_version` entry the compiler satisfies.

    Raises CompilerTooOldError when the compiler is older than every entry, and ValueError for a
    compiler family the recipes do not know.
    """
    if compiler_family not in recipe.flags:
        raise ValueError(
            f"unknown compiler family {compiler_family!r}; "
            f"recipes have flags for {', '.join(COMPILER_FAMILIES)}"
        )
    version = parse_version(compiler_version) if isinstance(compiler_version, str) else compiler_version
    satisfied = [entry for entry in recipe.flags[compiler_family] if entry.version_key <= version]
    if not satisfied:
        oldest = recipe.flags[compiler_family][0].min_version
        shown = ".".join(map(str, version))
        raise CompilerTooOldError(
            f"{compiler_family} {shown} is too old for recipe {recipe.name!r}: it needs "
            f"{compiler_family} {oldest} or newer. Install a newer compiler and pass it with --compiler, "
            "or pick an older --isa."
        )
    return list(max(satisfied, key=lambda entry: entry.version_key).flags)


# --- loading ------------------------------------------------------------------------------------


def default_recipes_dir(explicit: Path | None = None) -> Path:
    """--recipes DIR > $CPUBUILD_RECIPES > the repository's recipes/ folder."""
    if explicit is not None:
        return explicit
    if os.environ.get(RECIPES_ENV):
        return Path(os.environ[RECIPES_ENV])
    # build_tools/cpubuild/recipes.py -> repository root (editable install or source checkout);
    # a non-editable install has no repository around it, so try the working directory.
    beside_package = Path(__file__).resolve().parents[2] / "recipes"
    if beside_package.is_dir() or not (Path.cwd() / "recipes").is_dir():
        return beside_package
    return Path.cwd() / "recipes"


def _string_list(path: Path, data: dict[str, Any], key: str, *, required: bool = True) -> tuple[str, ...]:
    if key not in data:
        if required:
            raise RecipeError(path, key, "is missing; give a list of strings (it may be empty)")
        return ()
    value = data[key]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RecipeError(path, key, f"must be a list of strings, not {value!r}")
    duplicates = sorted({item for item in value if value.count(item) > 1})
    if duplicates:
        raise RecipeError(path, key, f"lists {', '.join(duplicates)} more than once")
    return tuple(value)


def _string(path: Path, data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise RecipeError(
            path, key, "is missing" if value is None else f"must be a non-empty string, not {value!r}"
        )
    return value


def _flag_entries(path: Path, data: dict[str, Any]) -> dict[str, tuple[FlagEntry, ...]]:
    table = data.get("flags")
    if not isinstance(table, dict):
        raise RecipeError(path, "flags", "is missing; add [[flags.gcc]] and [[flags.clang]] entries")
    unknown = sorted(table.keys() - set(COMPILER_FAMILIES))
    if unknown:
        raise RecipeError(
            path, f"flags.{unknown[0]}", f"unknown compiler family; use {' or '.join(COMPILER_FAMILIES)}"
        )
    result = {}
    for family in COMPILER_FAMILIES:
        field = f"flags.{family}"
        entries = table.get(family)
        if not entries:
            raise RecipeError(path, field, f"is missing; every recipe needs at least one [[{field}]] entry")
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise RecipeError(path, field, "must be an array of tables ([[" + field + "]])")
        parsed = []
        for index, entry in enumerate(entries):
            where = f"{field}[{index}]"
            extra = sorted(entry.keys() - {"min_version", "flags"})
            if extra:
                raise RecipeError(
                    path, f"{where}.{extra[0]}", "unknown key; entries have min_version and flags"
                )
            version = entry.get("min_version")
            if not isinstance(version, str) or not _VERSION_RE.match(version):
                raise RecipeError(
                    path,
                    f"{where}.min_version",
                    f'must be a version string like "11" or "11.1", not {version!r}',
                )
            flags = entry.get("flags")
            if not isinstance(flags, list) or not flags or not all(isinstance(f, str) and f for f in flags):
                raise RecipeError(
                    path, f"{where}.flags", f"must be a non-empty list of strings, not {flags!r}"
                )
            parsed.append(FlagEntry(version, tuple(flags)))
        keys = [entry.version_key for entry in parsed]
        if len(set(keys)) != len(keys):
            raise RecipeError(path, field, "has two entries with the same min_version")
        result[family] = tuple(sorted(parsed, key=lambda entry: entry.version_key))
    return result


@dataclass(frozen=True)
class _RawRecipe:
    name: str
    arch: str
    description: str
    parent: str | None
    priority: int
    features: tuple[str, ...]
    kernels: tuple[str, ...]
    flags: dict[str, tuple[FlagEntry, ...]]
    path: Path


def _read_one(path: Path) -> _RawRecipe:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(path, None, f"is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(path, None, f"cannot be read: {exc}") from None
    unknown = sorted(data.keys() - _FIELDS)
    if unknown:
        raise RecipeError(path, unknown[0], f"unknown field; the schema has {', '.join(sorted(_FIELDS))}")
    name, arch = _string(path, data, "name"), _string(path, data, "arch")
    if name != path.stem:
        raise RecipeError(path, "name", f"is {name!r} but must equal the file name stem {path.stem!r}")
    if arch not in ARCHES:
        raise RecipeError(path, "arch", f"unknown architecture {arch!r}; use one of {', '.join(ARCHES)}")
    if arch != path.parent.name:
        raise RecipeError(path, "arch", f"is {arch!r} but the file lives in the {path.parent.name!r} folder")
    parent = data.get("parent")
    if parent is not None and (not isinstance(parent, str) or not parent):
        raise RecipeError(path, "parent", f"must be a recipe name, not {parent!r}")
    priority = data.get("priority")
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise RecipeError(path, "priority", f"must be an integer, not {priority!r}")
    features = _string_list(path, data, "features")
    valid = known_features(arch)
    for feature in features:
        if feature not in valid:
            raise RecipeError(
                path, "features", f"unknown feature {feature!r} for {arch}; known: {', '.join(valid)}"
            )
    kernels = _string_list(path, data, "kernels")
    if not kernels:
        raise RecipeError(path, "kernels", 'must name at least one kernel set (e.g. ["ref"])')
    return _RawRecipe(
        name, arch, _string(path, data, "description"), parent, priority, features, kernels,
        _flag_entries(path, data), path,
    )  # fmt: skip


def _ancestry(raw: _RawRecipe, by_name: dict[str, _RawRecipe]) -> tuple[str, ...]:
    chain: list[str] = []
    current = raw
    while current.parent is not None:
        if current.parent not in by_name:
            known = ", ".join(sorted(by_name))
            raise RecipeError(
                current.path, "parent", f"unknown parent {current.parent!r}; {current.arch} recipes: {known}"
            )
        if current.parent == raw.name or current.parent in chain:
            cycle = " -> ".join([raw.name, *chain, current.parent])
            raise RecipeError(raw.path, "parent", f"parents form a cycle: {cycle}")
        chain.append(current.parent)
        current = by_name[current.parent]
    return tuple(chain)


@dataclass(frozen=True)
class RecipeSet:
    """All recipes, per architecture, lowest priority first."""

    directory: Path
    by_arch: dict[str, tuple[Recipe, ...]]

    def for_arch(self, arch: str) -> tuple[Recipe, ...]:
        return self.by_arch.get(arch, ())

    def all(self) -> list[Recipe]:
        return [recipe for arch in ARCHES for recipe in self.for_arch(arch)]

    def get(self, name: str, arch: str | None = None) -> Recipe:
        """The recipe called `name` (of `arch` when given); KeyError with a helpful message otherwise."""
        found = [r for r in self.all() if r.name == name and (arch is None or r.arch == arch)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise KeyError(f"recipe {name!r} exists for several architectures; pass --arch")
        names = ", ".join(r.name for r in self.all() if arch is None or r.arch == arch)
        raise KeyError(f"no recipe named {name!r}; known recipes: {names}")


def load_recipes(directory: Path | None = None) -> RecipeSet:
    """Load and validate every recipes/<arch>/<name>.toml under `directory` (see default_recipes_dir)."""
    root = default_recipes_dir(directory)
    if not root.is_dir():
        raise RecipeError(root, None, f"is not a folder of recipes; set --recipes DIR or ${RECIPES_ENV}")
    by_arch: dict[str, tuple[Recipe, ...]] = {}
    for arch_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        raws = [_read_one(path) for path in sorted(arch_dir.glob("*.toml"))]
        by_name = {raw.name: raw for raw in raws}
        recipes = []
        for raw in raws:
            ancestors = _ancestry(raw, by_name)
            if raw.parent is not None and raw.priority <= by_name[raw.parent].priority:
                parent_priority = by_name[raw.parent].priority
                raise RecipeError(
                    raw.path,
                    "priority",
                    f"is {raw.priority} but must exceed parent {raw.parent!r}'s {parent_priority}",
                )
            required: list[str] = []
            for name in (*reversed(ancestors), raw.name):
                required += [f for f in by_name[name].features if f not in required]
            recipes.append(
                Recipe(
                    raw.name,
                    raw.arch,
                    raw.description,
                    raw.parent,
                    raw.priority,
                    raw.features,
                    tuple(required),
                    ancestors,
                    raw.kernels,
                    raw.flags,
                    raw.path,
                )
            )
        if recipes:
            by_arch[arch_dir.name] = tuple(sorted(recipes, key=lambda r: (r.priority, r.name)))
    if not by_arch:
        raise RecipeError(root, None, "holds no recipes (expected <arch>/<name>.toml files)")
    return RecipeSet(root, by_arch)
