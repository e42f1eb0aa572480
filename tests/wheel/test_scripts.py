"""The shell scripts: bash -n and shellcheck; scripts/build-image.sh explains a missing image builder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from wheel_support import REPO

SCRIPTS = sorted((REPO / "scripts").glob("*.sh"))
BUILD_IMAGE = REPO / "scripts" / "build-image.sh"


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_script_parses_and_passes_shellcheck(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    shellcheck = Path(sys.executable).parent / "shellcheck"
    if not shellcheck.exists():
        pytest.fail(
            f"shellcheck is not installed in {shellcheck.parent}; run `make venv` (requirements-dev.txt)"
        )
    done = subprocess.run([str(shellcheck), str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout


def _path_with(tmp_path: Path, fake_docker: str | None) -> str:
    """A PATH holding the few tools the script uses before it looks for a builder, plus a fake docker."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "grep", "sed", "env"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    if fake_docker is not None:
        (bin_dir / "docker").write_text(f"#!/bin/sh\n{fake_docker}\n")
        (bin_dir / "docker").chmod(0o755)
    return str(bin_dir)


@pytest.mark.parametrize(
    ("fake_docker", "reason"),
    [
        (None, "neither buildah nor docker is installed"),
        ("echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' >&2; exit 1",
         "docker is installed but its daemon does not answer (Cannot connect to the Docker daemon"),
    ],
)  # fmt: skip
def test_build_image_without_a_builder_says_why_and_what_to_do(tmp_path, fake_docker, reason):
    env = {"PATH": _path_with(tmp_path, fake_docker), "HOME": str(tmp_path)}
    done = subprocess.run([shutil.which("bash"), str(BUILD_IMAGE)], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"no image builder here: {reason}" in done.stderr
    assert "Install buildah (daemonless), or start the docker daemon" in done.stderr
