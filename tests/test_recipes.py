"""Recipe loading and validation: the real recipes load; each kind of mistake names file and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cpubuild.recipes import CompilerTooOldError, RecipeError, flags_for, load_recipes, parse_version

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


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
    ("x86_64/avx2.toml", 'kernels = ["ref", "avx2"]', 'kernels = ["ref", "avx2"]\nkernel = []', "kernel",
     "unknown field"),
    ("aarch64/sve.toml", 'features = ["sve"]', 'features = ["sve", "sve"]', "features", "more than once"),
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
