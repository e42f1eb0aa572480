"""`cpubuild.flags`: version-gated flags, the compile probe, its cache, and refusals (fake compilers)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cpubuild.compiler import CompilerError, identify_compiler
from cpubuild.flags import FlagsError, resolve_flags
from cpubuild.recipes import load_recipes

RECIPES = load_recipes(Path(__file__).resolve().parents[1] / "recipes")


def fake_compiler(
    tmp_path: Path, banner: str, version: str, *, reject: str = "", target: str = "x86_64-linux-gnu"
):
    """A shell script that answers like GCC/Clang, logs each compile, and rejects one flag if asked."""
    script = tmp_path / "fake-c++"
    banner_lines = "".join(f"echo '{line}'; " for line in banner.splitlines())
    lines = [
        "#!/bin/sh",
        'case "$1" in',
        f"  --version) {banner_lines}exit 0;;",
        f'  -dumpfullversion|-dumpversion) echo "{version}"; exit 0;;',
        f'  -dumpmachine) echo "{target}"; exit 0;;',
        "esac",
        f'echo "$*" >> "{tmp_path}/compiles.log"',
        'for arg in "$@"; do',
        f'  if [ -n "{reject}" ] && [ "$arg" = "{reject}" ]; then',
        f"    echo \"fake-c++: error: unrecognized command-line option '{reject}'\" >&2",
        "    exit 1",
        "  fi",
        "done",
        "exit 0",
    ]
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    return script


GCC75 = "g++ (Ubuntu 7.5.0-3ubuntu1~18.04) 7.5.0\nCopyright (C) 2017 Free Software Foundation, Inc."
GCC12 = "g++ (Debian 12.2.0-14) 12.2.0\nCopyright (C) 2022 Free Software Foundation, Inc."
CLANG15 = "Debian clang version 15.0.6\nTarget: x86_64-pc-linux-gnu\nThread model: posix"


def compiles(tmp_path: Path) -> int:
    log = tmp_path / "compiles.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_too_old_compiler_is_refused(tmp_path):
    compiler = fake_compiler(tmp_path, GCC75, "7.5.0")
    with pytest.raises(FlagsError) as caught:
        resolve_flags(RECIPES.get("avx512_bf16"), str(compiler), tmp_path / "cache")
    message = str(caught.value)
    assert "gcc 7.5.0 is too old for recipe 'avx512_bf16'" in message
    assert "needs gcc 10 or newer" in message
    assert compiles(tmp_path) == 0  # refused before compiling anything


def test_rejected_flag_is_quoted(tmp_path):
    compiler = fake_compiler(tmp_path, GCC12, "12.2.0", reject="-mavx512bf16")
    with pytest.raises(FlagsError) as caught:
        resolve_flags(RECIPES.get("avx512_bf16"), str(compiler), tmp_path / "cache")
    assert "cannot build recipe 'avx512_bf16'" in str(caught.value)
    assert "unrecognized command-line option '-mavx512bf16'" in str(caught.value)
    # A failure is not cached: the next call compiles again.
    with pytest.raises(FlagsError):
        resolve_flags(RECIPES.get("avx512_bf16"), str(compiler), tmp_path / "cache")
    assert compiles(tmp_path) == 2


def test_success_is_cached_and_keyed_by_compiler(tmp_path):
    cache = tmp_path / "cache"
    compiler = fake_compiler(tmp_path, GCC12, "12.2.0")
    first = resolve_flags(RECIPES.get("avx2"), str(compiler), cache)
    second = resolve_flags(RECIPES.get("avx2"), str(compiler), cache)
    assert first.flags == second.flags == ("-march=x86-64-v3", "-mtune=generic")
    assert (first.cached, second.cached) == (False, True)
    assert compiles(tmp_path) == 1
    assert len(list((cache / "flag-probes").iterdir())) == 1
    # Same path, new compiler (different version/mtime): probed again.
    compiler2 = fake_compiler(tmp_path, GCC12.replace("12.2.0", "12.3.0"), "12.3.0")
    assert compiler2 == compiler
    assert not resolve_flags(RECIPES.get("avx2"), str(compiler), cache).cached
    assert compiles(tmp_path) == 2
    # --no-cache compiles even with a cached success.
    assert not resolve_flags(RECIPES.get("avx2"), str(compiler), cache, use_cache=False).cached
    assert compiles(tmp_path) == 3


def test_clang_family_and_flags(tmp_path):
    compiler = fake_compiler(tmp_path, CLANG15, "15.0.6")
    info = identify_compiler(str(compiler))
    assert (info.family, info.version) == ("clang", "15.0.6")
    result = resolve_flags(RECIPES.get("avx512"), str(compiler), tmp_path / "cache")
    assert result.flags[0] == "-march=x86-64-v4"
    assert "-Werror=unused-command-line-argument" in (tmp_path / "compiles.log").read_text()


def test_wrong_target_is_refused(tmp_path):
    compiler = fake_compiler(tmp_path, GCC12, "12.2.0", target="aarch64-linux-gnu")
    with pytest.raises(FlagsError, match="builds for aarch64-linux-gnu, but recipe 'amx' is for x86_64"):
        resolve_flags(RECIPES.get("amx"), str(compiler), tmp_path / "cache")


def test_unknown_compiler_is_a_clear_error(tmp_path):
    with pytest.raises(CompilerError, match="was not found on PATH"):
        identify_compiler(str(tmp_path / "no-such-c++"))
    other = tmp_path / "mystery"
    other.write_text("#!/bin/sh\necho 'Mystery Compiler 1.0'\n")
    other.chmod(0o755)
    with pytest.raises(CompilerError, match=r"cannot tell whether .* is GCC or Clang"):
        identify_compiler(str(other))


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_real_gcc_compiles_the_amx_flags(tmp_path):
    info = identify_compiler("g++")
    if info.family != "gcc" or info.version_tuple < (11,) or info.target_arch != "x86_64":
        pytest.skip(f"needs an x86-64 gcc >= 11, found {info.family} {info.version} for {info.target}")
    result = resolve_flags(RECIPES.get("amx"), "g++", tmp_path / "cache")
    assert "-mamx-tile" in result.flags and "-mamx-int8" in result.flags and "-mamx-bf16" in result.flags
    assert not result.cached


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None, reason="no aarch64 cross compiler")
def test_real_cross_gcc_compiles_every_aarch64_recipe(tmp_path):
    for recipe in RECIPES.for_arch("aarch64"):
        result = resolve_flags(recipe, "aarch64-linux-gnu-g++", tmp_path / "cache")
        assert result.flags[0].startswith("-march=armv8")
