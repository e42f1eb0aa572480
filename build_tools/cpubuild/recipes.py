"""Recipes: one TOML file per build target under recipes/<arch>/<name>.toml (schema: recipes/README.md).

This is the one recipe loader: `cpubuild` imports it, and CMake runs it (`cpubuild.recipes_cmake`)
before anything is installed, so it uses the standard library only (tomllib; tomli on Python 3.10).
`load_recipes()` reads and validates every file; a malformed or inconsistent recipe raises RecipeError
naming the file and the field. A recipe inherits its parent's `features` and `kernels` and lists only
what it adds. `flags_for()` picks the compiler flags of a recipe. recipes/recipe.schema.json states
the per-file rules for editors and CI; the tests check that it and this loader agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

from cpubuild import env
from cpubuild.features import ARCHES, known_features

COMPILER_FAMILIES: Final = ("gcc", "clang")
RECIPES_ENV: Final = "CPUBUILD_RECIPES"
REFERENCE_KERNELS: Final = "ref"
# Target words of `cpubuild wheel --isa` that a recipe may not be called.
RESERVED_NAMES: Final = ("all", "native")
_FIELDS: Final = frozenset(
    {"name", "arch", "description", "parent", "priority", "features", "kernels", "flags"}
)
# Recipe names become CMake variables, library names and PEP 440 local labels.
_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_]*$")
_VERSION_RE: Final = re.compile(r"^\d+(\.\d+){0,2}$")
# One compiler argument each: CMake passes the list on as it is (';' would split it, a space would not).
_FLAG_RE: Final = re.compile(r"^-[^\s;]+$")


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
    """A validated build target. `features` and `kernels` are the full lists: ancestors' first, then own."""

    name: str
    arch: str
    description: str
    parent: str | None
    priority: int
    own_features: tuple[str, ...]
    features: tuple[str, ...]
    ancestors: tuple[str, ...]  # parent first, root last
    own_kernels: tuple[str, ...]
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


# --- where recipes and kernel sets live -------------------------------------------------------------

# build_tools/cpubuild/recipes.py -> the repository root (editable install or source checkout).
_BESIDE_PACKAGE: Final = Path(__file__).resolve().parents[2]


def default_recipes_dir(explicit: Path | None = None) -> Path:
    """--recipes DIR > $CPUBUILD_RECIPES > the repository's recipes/ folder."""
    chosen = env.path(RECIPES_ENV, explicit)
    if chosen is not None:
        return chosen
    # A non-editable install has no repository around it, so try the working directory.
    beside_package = _BESIDE_PACKAGE / "recipes"
    if beside_package.is_dir() or not (Path.cwd() / "recipes").is_dir():
        return beside_package
    return Path.cwd() / "recipes"


def default_kernels_dir(recipes_root: Path) -> Path:
    """The engine's csrc/kernels: this package's source tree, else the one the recipes folder sits in."""
    beside_package = _BESIDE_PACKAGE / "csrc" / "kernels"
    return beside_package if beside_package.is_dir() else recipes_root.resolve().parent / "csrc" / "kernels"


def known_kernel_sets(kernels_dir: Path) -> tuple[str, ...]:
    """The kernel sets the engine's sources define, sorted.

    A kernel set exists exactly when some `csrc/kernels/<kernel>/<kernel>_<set>.cc` does: those are the
    files CMake compiles into a variant whose recipe lists <set>. The file names are the one list.
    """
    sets = set()
    for folder in kernels_dir.iterdir() if kernels_dir.is_dir() else ():
        prefix = f"{folder.name}_"
        sets.update(p.stem[len(prefix) :] for p in folder.glob(f"{prefix}*.cc") if p.is_file())
    return tuple(sorted(sets))


# --- reading one file -------------------------------------------------------------------------------


def _string_list(path: Path, data: dict[str, Any], key: str) -> tuple[str, ...]:
    if key not in data:
        raise RecipeError(path, key, "is missing; give a list of strings (it may be empty)")
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


def _recipe_name(path: Path, data: dict[str, Any], key: str) -> str:
    name = _string(path, data, key)
    if not _NAME_RE.match(name):
        raise RecipeError(
            path, key, f"{name!r} is not a recipe name: use lower-case letters, digits and '_', letter first"
        )
    return name


def _flag_list(path: Path, where: str, flags: object) -> tuple[str, ...]:
    if not isinstance(flags, list) or not flags or not all(isinstance(f, str) and f for f in flags):
        raise RecipeError(path, where, f"must be a non-empty list of strings, not {flags!r}")
    for flag in flags:
        if not _FLAG_RE.match(flag):
            raise RecipeError(
                path, where,
                f"{flag!r} is not one compiler option: each item starts with '-' and has no spaces or ';' "
                "(split 'a b' into two items)",
            )  # fmt: skip
    return tuple(flags)


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
            parsed.append(FlagEntry(version, _flag_list(path, f"{where}.flags", entry.get("flags"))))
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


def _read_toml(path: Path) -> dict[str, Any]:
    if tomllib is None:
        raise RecipeError(
            path, None, "cannot be read: Python 3.10 needs the tomli package (pip install tomli)"
        )
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(path, None, f"is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(path, None, f"cannot be read: {exc}") from None


def _read_one(path: Path, kernel_sets: tuple[str, ...], kernels_dir: Path) -> _RawRecipe:
    data = _read_toml(path)
    unknown = sorted(data.keys() - _FIELDS)
    if unknown:
        raise RecipeError(path, unknown[0], f"unknown field; the schema has {', '.join(sorted(_FIELDS))}")
    name, arch = _recipe_name(path, data, "name"), _string(path, data, "arch")
    if name != path.stem:
        raise RecipeError(path, "name", f"is {name!r} but must equal the file name stem {path.stem!r}")
    if name in RESERVED_NAMES:
        raise RecipeError(path, "name", f"{name!r} is reserved (cpubuild wheel --isa {name}); pick another")
    if arch not in ARCHES:
        raise RecipeError(path, "arch", f"unknown architecture {arch!r}; use one of {', '.join(ARCHES)}")
    if arch != path.parent.name:
        raise RecipeError(path, "arch", f"is {arch!r} but the file lives in the {path.parent.name!r} folder")
    parent = _recipe_name(path, data, "parent") if "parent" in data else None
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
    if parent is None and REFERENCE_KERNELS not in kernels:
        # Every variant carries the scalar references; the other recipes inherit them from their root.
        raise RecipeError(
            path,
            "kernels",
            f"must include {REFERENCE_KERNELS!r}: a recipe with no parent lists the reference",
        )
    for kernel_set in kernels:
        if kernel_set not in kernel_sets:
            known = ", ".join(kernel_sets) or "none (is that the engine's source tree?)"
            problem = (
                f"unknown kernel set {kernel_set!r}: there is no "
                f"{kernels_dir}/<kernel>/<kernel>_{kernel_set}.cc; known: {known}"
            )
            raise RecipeError(path, "kernels", problem)
    return _RawRecipe(
        name, arch, _string(path, data, "description"), parent, priority, features, kernels,
        _flag_entries(path, data), path,
    )  # fmt: skip


# --- the set of recipes: parents, inheritance -------------------------------------------------------


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


def _inherited(raw: _RawRecipe, lineage: list[_RawRecipe], key: str) -> tuple[str, ...]:
    """Root's items first, then each descendant's; an item the recipe already inherits is an error."""
    merged: list[str] = []
    for ancestor in lineage:
        merged += getattr(ancestor, key)
    for item in getattr(raw, key):
        if item in merged:
            owner = next(a.name for a in lineage if item in getattr(a, key))
            problem = f"{item!r} is already inherited from {owner!r}; list only what {raw.name!r} adds"
            raise RecipeError(raw.path, key, problem)
        merged.append(item)
    return tuple(merged)


def _resolve(raw: _RawRecipe, by_name: dict[str, _RawRecipe]) -> Recipe:
    ancestors = _ancestry(raw, by_name)
    if raw.parent is not None and raw.priority <= by_name[raw.parent].priority:
        parent_priority = by_name[raw.parent].priority
        problem = f"is {raw.priority} but must exceed parent {raw.parent!r}'s {parent_priority}"
        raise RecipeError(raw.path, "priority", problem)
    lineage = [by_name[name] for name in reversed(ancestors)]  # root first
    return Recipe(
        raw.name, raw.arch, raw.description, raw.parent, raw.priority, raw.features,
        _inherited(raw, lineage, "features"), ancestors, raw.kernels, _inherited(raw, lineage, "kernels"),
        raw.flags, raw.path,
    )  # fmt: skip


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


def load_recipes(directory: Path | None = None, kernels_dir: Path | None = None) -> RecipeSet:
    """Load and validate every recipes/<arch>/<name>.toml under `directory` (see default_recipes_dir).

    Kernel sets are checked against `kernels_dir` (default: `default_kernels_dir`).
    """
    root = default_recipes_dir(directory)
    if not root.is_dir():
        raise RecipeError(root, None, f"is not a folder of recipes; set --recipes DIR or ${RECIPES_ENV}")
    kernels_dir = kernels_dir or default_kernels_dir(root)
    kernel_sets = known_kernel_sets(kernels_dir)
    by_arch: dict[str, tuple[Recipe, ...]] = {}
    for arch_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        raws = [_read_one(path, kernel_sets, kernels_dir) for path in sorted(arch_dir.glob("*.toml"))]
        by_name = {raw.name: raw for raw in raws}
        recipes = [_resolve(raw, by_name) for raw in raws]
        if recipes:
            by_arch[arch_dir.name] = tuple(sorted(recipes, key=lambda r: (r.priority, r.name)))
    if not by_arch:
        raise RecipeError(root, None, "holds no recipes (expected <arch>/<name>.toml files)")
    return RecipeSet(root, by_arch)
