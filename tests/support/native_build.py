"""Build the engine's native libraries for tests, once, in a stable folder (ccache-friendly).

`make test` needs no prior build: the first test that asks for the libraries configures and builds
them into build/test-<arch> under the repository root; later runs only rebuild what changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOLCHAINS = {"aarch64": REPO / "cmake" / "toolchains" / "aarch64-linux-gnu.cmake"}


def _tool(name: str) -> str:
    """Prefer the tool installed in this Python's environment (the Makefile's .venv), then PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found; run `make venv` to install the build tools")
    return found


def build_native(arch: str = "x86_64", variants: str = "all") -> Path:
    """Configure (first time) and build the native libraries for `arch`; return their folder."""
    build_dir = REPO / "build" / f"test-{arch}"
    args = [
        _tool("cmake"), "-S", str(REPO), "-B", str(build_dir), "-G", "Ninja",
        f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}",
        "-DCMAKE_BUILD_TYPE=Release", "-DCPULLM_WERROR=ON",
        f"-DCPULLM_VARIANTS={variants}", f"-DPython3_EXECUTABLE={sys.executable}",
    ]  # fmt: skip
    if arch in TOOLCHAINS:
        args.append(f"-DCMAKE_TOOLCHAIN_FILE={TOOLCHAINS[arch]}")
    if shutil.which("ccache"):
        args.append("-DCMAKE_CXX_COMPILER_LAUNCHER=ccache")
    env = dict(os.environ)
    for step in (args, [_tool("cmake"), "--build", str(build_dir)]):
        result = subprocess.run(step, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"native build failed: {' '.join(step)}\n{result.stdout}\n{result.stderr}")
    return build_dir
