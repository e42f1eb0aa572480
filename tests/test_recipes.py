"""Recipe loading and validation: the real recipes load; each kind of mistake names file and field."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import jsonschema
import pytest

from cpubuild.recipes import (
    CompilerTooOldError,
    RecipeError,
    flags_for,
    known_kernel_sets,
    load_recipes,
    parse_version,
)

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from cpubuild import recipes as loader
from cpubuild.features import ARCHES

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
SCHEMA = json.loads((RECIPES / "recipe.schema.json").read_text())


def test_real_recipes_load_with_inherited_features():
    recipes = load_recipes(RECIPES)
    assert [r.name for r in recipes.for_arch("x86_64")] == [
        "generic", "avx2", "avx_vnni", "avx512", "avx512_vnni", "avx512_bf16", "amx",
    ]  # fmt: skip
    assert [r.name for r in recipes.for_arch("aarch64")] == ["armv8", "dotprod", "i8mm", "sve"]
    amx = recipes.get("amx")
    assert amx.ancestors == ("avx512_bf16", "avx512_vnni", "avx512", "avx2", "generic")
    assert amx.features[:9] == ("avx", "avx2", "fma", "f16c", "bmi2", "popcnt", "bmi1", "abm", "movbe")
    assert amx.features[-3:] == ("amx_tile", "amx_int8", "amx_bf16")
    assert recipes.get("sve").features == ("asimd", "asimddp", "asimdhp", "fphp", "i8mm", "bf16", "sve")


def test_kernels_are_inherited_like_features():
    recipes = load_recipes(RECIPES)
    amx = recipes.get("amx")
    assert amx.own_kernels == ("amx",)
    assert amx.kernels == ("ref", "avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx")
    assert recipes.get("generic").kernels == ("ref",)
    assert recipes.get("avx_vnni").kernels == ("ref", "avx2", "avx_vnni")
    # sve adds no kernel set of its own (there are no SVE kernels): it runs its parents'.
    assert recipes.get("sve").own_kernels == ()
    assert recipes.get("sve").kernels == ("ref", "neon", "dotprod", "i8mm")


def test_known_kernel_sets_are_the_kernel_file_names(tmp_path):
    sets = known_kernel_sets(REPO / "csrc" / "kernels")
    assert {"ref", "avx2", "avx_vnni", "avx512", "avx512_vnni", "avx512_bf16", "amx"} <= set(sets)
    assert {"neon", "dotprod", "i8mm"} <= set(sets)
    # Derived, not hand-kept: <kernel>/<kernel>_<set>.cc names a set; other files do not.
    kernels = tmp_path / "kernels"
    for name in ("matmul/matmul_ref.cc", "matmul/matmul_sse9.cc", "matmul/x86_quant.h",
                 "matmul/attention_avx2.cc", "ops/ops_ref.cc", "ops/ops_neon.h"):  # fmt: skip
        (kernels / name).parent.mkdir(parents=True, exist_ok=True)
        (kernels / name).write_text("")
    assert known_kernel_sets(kernels) == ("ref", "sse9")
    tree = copy_recipes(tmp_path)
    for path in tree.glob("*/*.toml"):
        if path.stem not in ("generic", "avx2"):
            path.unlink()
    with pytest.raises(RecipeError, match=r"unknown kernel set 'avx2'.*known: ref, sse9"):
        load_recipes(tree, kernels)
    edit(tree, "x86_64/avx2.toml", 'kernels = ["avx2"]', 'kernels = ["sse9"]')
    assert load_recipes(tree, kernels).get("avx2").kernels == ("ref", "sse9")


def test_flags_for_picks_the_highest_satisfied_entry():
    avx2 = load_recipes(RECIPES).get("avx2")
    assert flags_for(avx2, "gcc", "12.2.0") == ["-march=x86-64-v3", "-mtune=generic"]
    assert flags_for(avx2, "gcc", "11") == ["-march=x86-64-v3", "-mtune=generic"]
    assert "-mavx2" in flags_for(avx2, "gcc", "10.5.0")
    assert "-mavx2" in flags_for(avx2, "clang", (11, 1))
    with pytest.raises(CompilerTooOldError, match=r"gcc 7\.5\.0 is too old .* needs gcc 8 or newer"):
        flags_for(avx2, "gcc", "7.5.0")
    with pytest.raises(ValueError, match="unknown compiler family 'msvc'"):
        flags_for(avx2, "msvc", "19")


def test_parse_version():
    assert parse_version("12.2.0") == (12, 2, 0)
    assert parse_version("17.0.6-rc1") == (17, 0, 6)
    assert parse_version("11.1") > parse_version("11")


def test_env_override_and_explicit_dir(tmp_path, monkeypatch):
    tree = copy_recipes(tmp_path)
    (tree / "aarch64" / "sve.toml").unlink()
    monkeypatch.setenv("CPUBUILD_RECIPES", str(tree))
    assert [r.name for r in load_recipes().for_arch("aarch64")] == ["armv8", "dotprod", "i8mm"]
    assert len(load_recipes(RECIPES).for_arch("aarch64")) == 4  # explicit beats the environment


def copy_recipes(tmp_path: Path) -> Path:
    tree = tmp_path / "recipes"
    shutil.copytree(RECIPES, tree, ignore=shutil.ignore_patterns("*.md"))
    return tree


def edit(tree: Path, relative: str, old: str, new: str) -> Path:
    path = tree / relative
    text = path.read_text()
    assert old in text, f"{old!r} not in {relative}"
    path.write_text(text.replace(old, new, 1))
    return path


# (file, old text, new text, field named in the error, words in the message)
BROKEN = [
    ("x86_64/avx2.toml", '"movbe"]', '"movbe", "avx3"]', "features", "unknown feature 'avx3'"),
    ("x86_64/avx2.toml", 'parent = "generic"', 'parent = "genric"', "parent", "unknown parent 'genric'"),
    ("x86_64/generic.toml", "priority = 0", 'priority = 0\nparent = "amx"', "parent", "cycle"),
    ("x86_64/avx2.toml", 'arch = "x86_64"', 'arch = "aarch64"', "arch", "'x86_64' folder"),
    ("x86_64/avx2.toml", 'name = "avx2"', 'name = "avx_2"', "name", "file name stem 'avx2'"),
    ("x86_64/avx2.toml", "[[flags.clang]]", "[[flags.clangg]]", "flags.clangg", "unknown compiler family"),
    ("x86_64/avx512.toml", "priority = 20", "priority = 10", "priority", "must exceed parent 'avx2'"),
    ("x86_64/avx2.toml", 'min_version = "8"', 'min_version = "eight"', "flags.gcc[0].min_version", "version"),
    ("x86_64/avx2.toml", 'priority = 10', 'priority = "10"', "priority", "must be an integer"),
    ("x86_64/avx2.toml", 'kernels = ["avx2"]', 'kernels = ["avx2"]\nkernel = []', "kernel", "unknown field"),
    ("aarch64/sve.toml", 'features = ["sve"]', 'features = ["sve", "sve"]', "features", "more than once"),
    # issue 10: a kernel set the sources do not have was accepted
    ("x86_64/avx2.toml", 'kernels = ["avx2"]', 'kernels = ["avx2", "avx3"]', "kernels",
     "unknown kernel set 'avx3'"),
    ("x86_64/avx512.toml", 'kernels = ["avx512"]', 'kernels = ["avx2", "avx512"]', "kernels",
     "'avx2' is already inherited from 'avx2'"),
    ("x86_64/avx512.toml", '"avx512cd"]', '"avx512cd", "fma"]', "features", "'fma' is already inherited"),
    ("x86_64/generic.toml", 'kernels = ["ref"]', "kernels = []", "kernels", "must include 'ref'"),
    ("x86_64/generic.toml", '"-march=x86-64", "-mtune', '"-march=x86-64 -mtune', "flags.gcc[0].flags",
     "is not one compiler option"),
    ("x86_64/generic.toml", '"-march=x86-64", "-mtune', '"march=x86-64", "-mtune', "flags.gcc[0].flags",
     "starts with '-'"),
    ("x86_64/avx2.toml", 'parent = "generic"', "parent = 3", "parent", "must be a non-empty string"),
    ("x86_64/avx2.toml", 'parent = "generic"', 'parent = "Generic"', "parent", "is not a recipe name"),
]  # fmt: skip


@pytest.mark.parametrize(("relative", "old", "new", "field", "words"), BROKEN)
def test_broken_recipe_names_file_and_field(tmp_path, relative, old, new, field, words):
    tree = copy_recipes(tmp_path)
    edit(tree, relative, old, new)
    with pytest.raises(RecipeError) as caught:
        load_recipes(tree)
    assert caught.value.field == field
    assert words in caught.value.problem
    assert caught.value.path.parent.parent == tree
    assert str(caught.value.path) in str(caught.value)


def test_missing_clang_flags(tmp_path):
    tree = copy_recipes(tmp_path)
    path = tree / "x86_64" / "generic.toml"
    path.write_text(path.read_text().split("[[flags.clang]]")[0])
    with pytest.raises(RecipeError) as caught:
        load_recipes(tree)
    assert (caught.value.path, caught.value.field) == (path, "flags.clang")
    assert "at least one [[flags.clang]] entry" in str(caught.value)


def test_bad_toml(tmp_path):
    tree = copy_recipes(tmp_path)
    path = edit(tree, "aarch64/i8mm.toml", "priority = 20", "priority = = 20")
    with pytest.raises(RecipeError, match="is not valid TOML") as caught:
        load_recipes(tree)
    assert caught.value.path == path and caught.value.field is None


def test_missing_folder(tmp_path):
    with pytest.raises(RecipeError, match="CPUBUILD_RECIPES"):
        load_recipes(tmp_path / "nowhere")


def test_reserved_and_malformed_names(tmp_path):
    for name, words in (("all", "is reserved"), ("native", "is reserved"), ("Avx2", "is not a recipe name")):
        tree = copy_recipes(tmp_path / name)
        path = tree / "x86_64" / f"{name}.toml"
        text = (tree / "x86_64" / "generic.toml").read_text().replace('name = "generic"', f'name = "{name}"')
        path.write_text(text.replace("priority = 0", 'priority = 1\nparent = "generic"'))
        with pytest.raises(RecipeError, match=words) as caught:
            load_recipes(tree)
        assert (caught.value.path, caught.value.field) == (path, "name")


def test_binary_recipe_is_a_sentence(tmp_path):
    tree = copy_recipes(tmp_path)
    path = tree / "x86_64" / "avx2.toml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(RecipeError, match=r"cannot be read|is not valid TOML") as caught:
        load_recipes(tree)
    assert caught.value.path == path


# --- recipes/recipe.schema.json and the loader agree ---------------------------------------------------


def schema_errors(path: Path) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [error.message for error in validator.iter_errors(tomllib.loads(path.read_text()))]


def test_schema_is_valid_and_every_recipe_matches_it():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    paths = sorted(RECIPES.glob("*/*.toml"))
    assert len(paths) == len(load_recipes(RECIPES).all()) > 0
    for path in paths:
        assert schema_errors(path) == [], path


def test_schema_names_the_loaders_fields_and_arches():
    assert set(SCHEMA["properties"]) == set(loader._FIELDS)
    assert set(SCHEMA["required"]) == set(loader._FIELDS) - {"parent"}
    assert tuple(SCHEMA["properties"]["arch"]["enum"]) == ARCHES
    assert set(SCHEMA["properties"]["flags"]["required"]) == set(loader.COMPILER_FAMILIES)
    assert SCHEMA["properties"]["name"]["not"]["enum"] == list(loader.RESERVED_NAMES)


# One-file mistakes the schema can see: the loader must refuse each too (and name that file).
SCHEMA_REJECTS = [
    ("x86_64/avx2.toml", 'kernels = ["avx2"]', 'kernels = ["avx2"]\nkernel = []'),
    ("x86_64/avx2.toml", "priority = 10", 'priority = "10"'),
    ("x86_64/avx2.toml", "priority = 10", "priority = true"),
    ("x86_64/avx2.toml", 'kernels = ["avx2"]\n', ""),
    ("x86_64/avx2.toml", 'kernels = ["avx2"]', 'kernels = "avx2"'),
    ("x86_64/avx2.toml", 'kernels = ["avx2"]', 'kernels = ["avx2", "avx2"]'),
    ("x86_64/generic.toml", 'kernels = ["ref"]', "kernels = []"),
    ("x86_64/avx2.toml", "[[flags.clang]]", "[[flags.clangg]]"),
    ("x86_64/avx2.toml", 'min_version = "8"', 'min_version = "eight"'),
    ("x86_64/avx2.toml", 'min_version = "8"', 'min_version = 8'),
    ("x86_64/avx2.toml", 'min_version = "8"', 'min_version = "8"\nmax_version = "9"'),
    ("x86_64/generic.toml", 'flags = ["-march=x86-64", "-mtune=generic"]', "flags = []"),
    ("x86_64/generic.toml", '"-march=x86-64", "-mtune', '"-march=x86-64 -mtune'),
    ("x86_64/generic.toml", '"-march=x86-64", "-mtune', '"march=x86-64", "-mtune'),
    ("x86_64/generic.toml", '"-march=x86-64", "-mtune', '"-march=x86-64;-mtune'),
    ("x86_64/generic.toml", 'arch = "x86_64"', 'arch = "riscv64"'),
    ("x86_64/generic.toml", 'name = "generic"', 'name = "Generic"'),
    ("x86_64/avx2.toml", 'parent = "generic"', "parent = 3"),
    ("x86_64/avx2.toml", 'description = "x86-64-v3', 'description = ""\nx = "'),
    ("x86_64/avx2.toml", 'description = "x86-64-v3: AVX2, FMA, F16C, BMI2 (Haswell, Zen 1 and newer)"\n', ""),
]  # fmt: skip
# Well-formed variations: both accept.
SCHEMA_ACCEPTS = [
    ("x86_64/avx2.toml", "[[flags.clang]]",
     '[[flags.gcc]]\nmin_version = "13.1"\nflags = ["-march=x86-64-v3"]\n\n[[flags.clang]]'),
    ("x86_64/avx512.toml", 'kernels = ["avx512"]', "kernels = []"),
    ("x86_64/avx512.toml", '"avx512cd"]', '"avx512cd", "avx512_fp16"]'),
]  # fmt: skip


@pytest.mark.parametrize(("relative", "old", "new"), SCHEMA_REJECTS)
def test_schema_and_loader_both_reject(tmp_path, relative, old, new):
    tree = copy_recipes(tmp_path)
    path = edit(tree, relative, old, new)
    assert schema_errors(path), "the schema accepts it"
    with pytest.raises(RecipeError) as caught:
        load_recipes(tree)
    assert caught.value.path == path


@pytest.mark.parametrize(("relative", "old", "new"), SCHEMA_ACCEPTS)
def test_schema_and_loader_both_accept(tmp_path, relative, old, new):
    tree = copy_recipes(tmp_path)
    path = edit(tree, relative, old, new)
    assert schema_errors(path) == []
    assert load_recipes(tree).get(path.stem).path == path
