"""Compiler flags for a recipe, proven by compiling a probe.

`resolve_flags()` identifies the compiler, picks the recipe's flags for its family and version
(`recipes.flags_for`), and compiles a tiny translation unit with them (`-c`, including the ISA
intrinsics header of the recipe's architecture) to prove the compiler accepts every flag. Successful
probes are cached in the user cache dir, keyed by compiler path, mtime, version and flags, so a
compiler upgrade re-probes; failures are never cached, so fixing the toolchain takes effect at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cpubuild import env
from cpubuild.compiler import CompilerInfo, identify_compiler
from cpubuild.features import AARCH64
from cpubuild.recipes import CompilerTooOldError, Recipe, flags_for

CACHE_ENV: Final = "CPUBUILD_CACHE_DIR"
_PROBE_TIMEOUT_S: Final = 120
_HEADERS: Final = {"x86_64": "immintrin.h", AARCH64: "arm_neon.h"}


class FlagsError(Exception):
    """The compiler cannot build a recipe: too old, wrong target, or it rejects a flag."""


@dataclass(frozen=True)
class FlagsResult:
    recipe: Recipe
    compiler: CompilerInfo
    flags: tuple[str, ...]
    cached: bool  # the probe's success came from the cache


def default_cache_dir(explicit: Path | None = None) -> Path:
    """--cache-dir > $CPUBUILD_CACHE_DIR > $XDG_CACHE_HOME/cpubuild > ~/.cache/cpubuild."""
    chosen = env.path(CACHE_ENV, explicit)
    if chosen is not None:
        return chosen
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cpubuild"


def probe_source(arch: str) -> str:
    """The probe translation unit: the arch's intrinsics header and nothing to compile."""
    return f"#include <{_HEADERS.get(arch, 'cstddef')}>\nint cpubuild_flag_probe;\n"


def _cache_file(cache_dir: Path, compiler: CompilerInfo, flags: tuple[str, ...], arch: str) -> Path:
    key = json.dumps([compiler.path, compiler.mtime_ns, compiler.version, arch, list(flags)])
    return cache_dir / "flag-probes" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def _first_error_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower():
            return line
    return lines[0] if lines else "(no output)"


def compile_probe(compiler: CompilerInfo, flags: tuple[str, ...], arch: str) -> str | None:
    """Compile the probe with `flags`; None on success, else the compiler's first error line."""
    extra = ["-Werror=unused-command-line-argument"] if compiler.family == "clang" else []
    with tempfile.TemporaryDirectory(prefix="cpubuild-probe-") as tmp:
        source = Path(tmp) / "probe.cc"
        source.write_text(probe_source(arch))
        command = [
            compiler.path,
            *flags,
            *extra,
            "-x",
            "c++",
            "-c",
            str(source),
            "-o",
            str(Path(tmp) / "probe.o"),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"could not run {compiler.path}: {exc}"
    if done.returncode == 0:
        return None
    return _first_error_line(done.stderr + done.stdout)


def resolve_flags(
    recipe: Recipe, compiler_command: str, cache_dir: Path | None = None, *, use_cache: bool = True
) -> FlagsResult:
    """The flags `compiler_command` should use for `recipe`, after proving it accepts them."""
    compiler = identify_compiler(compiler_command)
    if compiler.target and compiler.target_arch != recipe.arch:
        raise FlagsError(
            f"{compiler.path} builds for {compiler.target}, but recipe {recipe.name!r} is for {recipe.arch}; "
            f"pass --compiler with a compiler for {recipe.arch} (e.g. a cross compiler)."
        )
    try:
        flags = tuple(flags_for(recipe, compiler.family, compiler.version))
    except CompilerTooOldError as exc:
        raise FlagsError(f"{compiler.path}: {exc}") from None
    cache_file = _cache_file(default_cache_dir(cache_dir), compiler, flags, recipe.arch)
    if use_cache and cache_file.is_file():
        return FlagsResult(recipe, compiler, flags, cached=True)
    error = compile_probe(compiler, flags, recipe.arch)
    if error is not None:
        raise FlagsError(
            f"{compiler.family} {compiler.version} ({compiler.path}) cannot build recipe {recipe.name!r} "
            f"with {' '.join(flags)}; the compiler said: '{error}'. Use a newer compiler (--compiler) "
            "or pick another --isa."
        )
    if use_cache:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            record = {"compiler": compiler.path, "version": compiler.version, "flags": list(flags)}
            cache_file.write_text(json.dumps(record))
        except OSError:
            pass  # an unwritable cache only costs a re-probe next time
    return FlagsResult(recipe, compiler, flags, cached=False)
