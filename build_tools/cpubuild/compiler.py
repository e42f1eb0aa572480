"""Identify a C++ compiler: family (gcc or clang), version, target triple."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Final

from cpubuild import env
from cpubuild.recipes import parse_version

COMPILER_ENV: Final = "CPUBUILD_CXX"
DEFAULT_COMPILER: Final = "c++"
_TIMEOUT_S: Final = 30


class CompilerError(Exception):
    """The compiler cannot be found, run or identified."""


@dataclass(frozen=True)
class CompilerInfo:
    command: str  # as the user gave it
    path: str  # resolved absolute path
    family: str  # "gcc" or "clang"
    version: str  # e.g. "12.2.0"
    target: str  # e.g. "x86_64-linux-gnu"
    mtime_ns: int  # of the resolved executable, part of the probe cache key

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return parse_version(self.version)

    @property
    def target_arch(self) -> str:
        """The target triple's CPU in cpubuild's spelling."""
        cpu = self.target.split("-", 1)[0]
        return {"amd64": "x86_64", "arm64": "aarch64"}.get(cpu, cpu)


def default_compiler(explicit: str | None = None) -> str:
    """--compiler > $CPUBUILD_CXX > c++."""
    return env.text(COMPILER_ENV, explicit) or DEFAULT_COMPILER


def _run(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([path, *args], capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CompilerError(f"could not run the compiler {path} {' '.join(args)}: {exc}") from None


def identify_compiler(command: str) -> CompilerInfo:
    """Run `command --version` (and -dumpfullversion / -dumpmachine) to learn what compiler it is."""
    path = shutil.which(command)
    if path is None:
        raise CompilerError(
            f"compiler {command!r} was not found on PATH; install it or pass --compiler /path/to/c++ "
            f"(or set ${COMPILER_ENV})."
        )
    path = os.path.abspath(path)
    banner = _run(path, "--version")
    text = banner.stdout + banner.stderr
    if banner.returncode != 0:
        raise CompilerError(f"{path} --version failed (exit {banner.returncode}): {text.strip()[:300]}")
    if re.search(r"clang version", text):
        family = "clang"
        match = re.search(r"clang version (\d+(?:\.\d+)*)", text)
        version = match.group(1) if match else ""
    elif "Free Software Foundation" in text or re.search(
        r"\((GCC|[^)]*\bGCC\b[^)]*)\)|^g\+\+|^gcc", text, re.M
    ):
        family = "gcc"
        full = _run(path, "-dumpfullversion")  # gcc >= 7; older ones print the full version for -dumpversion
        version = full.stdout.strip() if full.returncode == 0 and full.stdout.strip() else ""
        if not version:
            version = _run(path, "-dumpversion").stdout.strip()
    else:
        first = text.strip().splitlines()[0] if text.strip() else "(no output)"
        raise CompilerError(f"cannot tell whether {path} is GCC or Clang from its --version: {first!r}")
    if not re.match(r"\d+", version):
        raise CompilerError(
            f"cannot read the version of {family} compiler {path} from {text.strip()[:200]!r}"
        )
    machine = _run(path, "-dumpmachine")
    return CompilerInfo(
        command=command,
        path=path,
        family=family,
        version=version,
        target=machine.stdout.strip() if machine.returncode == 0 else "",
        mtime_ns=os.stat(path).st_mtime_ns,
    )
