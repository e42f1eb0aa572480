"""Helpers for the wheel tests: building wheels in stable folders, fresh venvs, a clean environment."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from cpubuild import wheel

REPO = Path(__file__).resolve().parents[2]
# Stable build folders (ccache-friendly), apart from the ones `cpubuild wheel` uses by default.
BUILD_ROOT = REPO / "build" / "test-wheels"
QEMU_X86 = shutil.which("qemu-x86_64")
QEMU_ARM = shutil.which("qemu-aarch64")

x86_host = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 host tests")


def build(isa: str, out: Path, arch: str = "x86_64") -> wheel.WheelResult:
    target = wheel.resolve_target(isa, arch)
    return wheel.build(target, source=REPO, out_dir=out, build_root=BUILD_ROOT)


def pip_installable(wheel_path: Path, folder: Path) -> Path:
    """`wheel_path`, or for a variant wheel a copy in `folder` under its plain name (pip refuses labels)."""
    from cpubuild.naming import WheelName

    name = WheelName.parse(wheel_path.name)
    if name.variant is None:
        return wheel_path
    staged = folder / name.plain_filename
    shutil.copyfile(wheel_path, staged)
    return staged


def make_venv(path: Path, wheel_path: Path) -> Path:
    """A fresh venv with `wheel_path` installed (no dependencies: import and info need only the stdlib)."""
    venv.create(path, with_pip=False, symlinks=True)
    python = path / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    command = [*pip, "install", "-q", "--no-deps", str(pip_installable(wheel_path, path.parent))]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return python


def clean_env(**extra: str) -> dict[str, str]:
    drop = {"PYTHONPATH", "CPULLM_LIB_DIR", "CPULLM_ISA", "VIRTUAL_ENV"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}
