"""`cpubuild.flags`: version-gated flags, the compile probe, its cache, refusals (fake compilers), and
CMake building with exactly the flags cpubuild proved (`cpubuild.recipes_cmake`)."""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cpubuild import recipes_cmake
from cpubuild.compiler import CompilerError, identify_compiler
from cpubuild.flags import FlagsError, resolve_flags
from cpubuild.recipes import load_recipes
from cpubuild.recipes_cmake import Compiler, FlagsRecord

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


# --- the flags CMake builds with are the flags cpubuild proved (cpubuild.recipes_cmake) ----------------

REPO = Path(__file__).resolve().parents[1]
GCC = Compiler("gcc", "12.2.0", "/usr/bin/g++-12")


def configure(
    variants: str, compiler: Compiler = GCC, record: FlagsRecord | None = None, arch: str = "x86_64"
):
    return recipes_cmake.configure(
        RECIPES.directory, REPO / "csrc" / "kernels", arch, variants, compiler, record
    )


def test_without_a_record_the_flags_are_picked_for_cmakes_compiler():
    include, table = configure("avx2,generic")
    assert [v["flags"] for v in table["variants"]] == [
        ["-march=x86-64-v3", "-mtune=generic"], ["-march=x86-64", "-mtune=generic"],
    ]  # fmt: skip
    assert 'set(CPULLM_VARIANT_avx2_FLAGS "-march=x86-64-v3" "-mtune=generic")' in include
    assert 'set(CPULLM_VARIANT_avx2_KERNELS "ref" "avx2")' in include
    _, old = configure("avx2", Compiler("gcc", "10.5.0", "/usr/bin/g++-10"))
    assert "-mavx2" in old["variants"][0]["flags"]
    with pytest.raises(recipes_cmake.ConfigureError, match=r"gcc 7\.5\.0 is too old"):
        configure("avx2", Compiler("gcc", "7.5.0", "/usr/bin/g++-7"))


def test_a_matching_record_is_used():
    include, table = configure("avx2", GCC, FlagsRecord("x86_64", GCC, AVX2))
    assert table["variants"][0]["flags"] == ["-march=x86-64-v3", "-mtune=generic"]
    assert 'set(CPULLM_FLAGS_SOURCE "the flags cpubuild proved")' in include


AVX2 = {"avx2": ("-march=x86-64-v3", "-mtune=generic")}


@pytest.mark.parametrize(
    ("record", "words"),
    [
        (FlagsRecord("x86_64", Compiler("clang", "15.0.6", "/usr/bin/clang++"), AVX2),
         "proved the flags with clang 15.0.6 (/usr/bin/clang++), but CMake found gcc 12.2.0"),
        (FlagsRecord("x86_64", Compiler("gcc", "12.3.0", GCC.path), AVX2),
         "proved the flags with gcc 12.3.0"),
        (FlagsRecord("x86_64", Compiler("gcc", "12.2.0", "/opt/other/g++"), AVX2),
         "but CMake found gcc 12.2.0 (/usr/bin/g++-12)"),
        (FlagsRecord("x86_64", GCC, {"avx2": ("-march=haswell",)}),
         "recipe 'avx2' now gives -march=x86-64-v3 -mtune=generic but cpubuild proved -march=haswell"),
        (FlagsRecord("x86_64", GCC, {"avx512": ("-march=x86-64-v4",)}), "the flags record covers avx512"),
        (FlagsRecord("aarch64", GCC, AVX2), "is for aarch64"),
    ],
)  # fmt: skip
def test_a_record_that_does_not_match_stops_the_configure(record, words):
    with pytest.raises(recipes_cmake.ConfigureError, match=re.escape(words)):
        configure("avx2", GCC, record)


def test_the_cmake_entry_point_fails_in_one_line(tmp_path, capsys):
    tree = tmp_path / "recipes"
    shutil.copytree(RECIPES.directory, tree)
    avx2 = tree / "x86_64" / "avx2.toml"
    avx2.write_text(avx2.read_text().replace('kernels = ["avx2"]', 'kernels = ["avx3"]'))
    args = ["--kernels", str(REPO / "csrc" / "kernels"), "--arch", "x86_64", "--variants", "all",
            "--compiler-id", "GNU", "--compiler-version", "12.2.0", "--compiler", "/usr/bin/g++",
            "--out-cmake", str(tmp_path / "r.cmake"), "--out-json", str(tmp_path / "v.json")]  # fmt: skip
    assert recipes_cmake.main(["--recipes", str(tree), *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown kernel set 'avx3'" in err and str(avx2) in err
    record = tmp_path / "record.json"
    record.write_bytes(b"\x00\xff not json")
    assert (
        recipes_cmake.main(["--recipes", str(RECIPES.directory), "--flags-record", str(record), *args]) == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot read the flags record {record}" in err
    assert recipes_cmake.main(["--recipes", str(RECIPES.directory), *args]) == 0
    assert json.loads((tmp_path / "v.json").read_text())["arch"] == "x86_64"


def test_record_round_trip(tmp_path):
    record = FlagsRecord("x86_64", GCC, AVX2)
    recipes_cmake.write_flags_record(tmp_path / "r.json", record)
    assert recipes_cmake.read_flags_record(tmp_path / "r.json") == record


def _cmake(*args: str) -> subprocess.CompletedProcess[str]:
    bindir = Path(sys.executable).parent
    cmake = str(bindir / "cmake") if (bindir / "cmake").exists() else "cmake"
    ninja = str(bindir / "ninja") if (bindir / "ninja").exists() else "ninja"
    command = [cmake, "-S", str(REPO), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() != "x86_64", reason="configures the x86_64 avx2 variant")
def test_cmake_builds_with_the_flags_cpubuild_proved(tmp_path):
    """Configure the way `cpubuild wheel` does; compile_commands.json must hold exactly the proven flags."""
    from cpubuild import wheel

    target = wheel.WheelTarget("x86_64", "avx2")
    try:
        record = wheel.check_compiler(target, "c++", None, REPO)
    except wheel.WheelBuildError as exc:
        pytest.skip(f"this host's c++ cannot build avx2: {exc}")
    build = tmp_path / "build"
    record_path = build / wheel.FLAGS_RECORD
    recipes_cmake.write_flags_record(record_path, record)
    settings = wheel.config_settings(target, REPO, build, record.compiler.path, None, record_path)
    defines = [f"-D{key.removeprefix('cmake.define.')}={value}" for key, value in settings.items()
               if key.startswith("cmake.define.")]  # fmt: skip
    done = _cmake("-B", settings["build-dir"], *defines)
    assert done.returncode == 0, done.stderr
    assert "flags: the flags cpubuild proved" in done.stdout
    commands = json.loads((build / "compile_commands.json").read_text())
    variant = [c for c in commands if "/cpullm_avx2.dir/" in c["output"]]
    assert len(variant) > 10  # the common sources and the ref and avx2 kernels
    for command in variant:
        machine_flags = [arg for arg in command["command"].split() if arg.startswith("-m")]
        assert machine_flags == list(record.flags["avx2"]), command["file"]
    # The record counts for one configure only: it does not stay in the cache.
    assert "CPULLM_FLAGS_RECORD" not in (build / "CMakeCache.txt").read_text()

    # A record from another compiler (or of other flags) stops the configure with a sentence.
    other = FlagsRecord("x86_64", Compiler("gcc", "99.1.0", record.compiler.path), record.flags)
    recipes_cmake.write_flags_record(record_path, other)
    done = _cmake("-B", settings["build-dir"], *defines)
    assert done.returncode != 0
    assert "cpubuild proved the flags with gcc 99.1.0" in " ".join(done.stderr.split())
