"""Reproducible wheels: the source's commit date as every timestamp, and a deterministic archive.

Two builds of one commit and recipe, in different folders, must give byte-identical wheels. The
compilers get SOURCE_DATE_EPOCH and prefix maps (CMakeLists.txt); this module writes the archive
itself: entries in a fixed order (dist-info last, RECORD very last), one timestamp, fixed
permissions, fixed compression, a RECORD regenerated from the files.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Final

ZIP_EPOCH_MIN: Final = 315532800  # 1980-01-01: the earliest time a zip entry can hold
COMPRESS_LEVEL: Final = 6


def _git(source: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


class SourceDateError(ValueError):
    """$SOURCE_DATE_EPOCH is set but is not a number of seconds."""


def source_date_epoch(source: Path) -> int:
    """$SOURCE_DATE_EPOCH when set (an explicit choice wins), else the source's commit date, else 1980-01-01.

    cmake/build_info.py (wheels built without cpubuild) follows the same order.
    """
    explicit = os.environ.get("SOURCE_DATE_EPOCH")
    if explicit is not None and explicit.strip():
        if not explicit.strip().isdigit():
            raise SourceDateError(
                f"SOURCE_DATE_EPOCH={explicit!r} is not a number of seconds since 1970; set it to one "
                "(e.g. `git log -1 --format=%ct`) or unset it to use the commit date"
            )
        return int(explicit)
    committed = _git(source, "log", "-1", "--format=%ct")
    return int(committed) if committed else ZIP_EPOCH_MIN


def source_commit(source: Path) -> dict[str, object]:
    """The commit id and whether tracked files differ from it (untracked files are not counted)."""
    commit = _git(source, "rev-parse", "HEAD")
    status = _git(source, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit or "unknown (not a git checkout)", "dirty": bool(status)}


def iso_date(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _ordered(tree: Path, dist_info: str) -> list[str]:
    """Every file below `tree` (posix paths): the package first, then dist-info, RECORD last."""
    files = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())
    record = f"{dist_info}/RECORD"
    files = [f for f in files if f != record]
    return [*sorted(files, key=lambda f: (f.startswith(f"{dist_info}/"), f)), record]


def write_wheel(tree: Path, dist_info: str, out: Path, epoch: int) -> Path:
    """Zip the unpacked wheel `tree` into `out` deterministically, writing a fresh RECORD."""
    names = _ordered(tree, dist_info)
    lines = []
    for name in names[:-1]:
        data = (tree / name).read_bytes()
        lines.append(f"{name},{_record_hash(data)},{len(data)}")
    lines.append(f"{names[-1]},,")
    (tree / names[-1]).write_text("\n".join(lines) + "\n")
    stamp = time.gmtime(max(epoch, ZIP_EPOCH_MIN))[:6]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with zipfile.ZipFile(tmp, "w") as archive:
        for name in names:
            path = tree / name
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.create_system = 3  # unix, so external_attr carries the permissions
            executable = name.endswith(".so") or ".so." in name or os.access(path, os.X_OK)
            info.external_attr = ((0o100755 if executable else 0o100644) & 0xFFFF) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes(), compresslevel=COMPRESS_LEVEL)
    tmp.replace(out)
    return out


def leaked_paths(tree: Path, needles: list[str]) -> list[tuple[str, str]]:
    """(file, needle) for every file below `tree` whose bytes contain one of the absolute `needles`."""
    found = []
    encoded = [(n, n.encode()) for n in needles if n and n != "/"]
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [(path.relative_to(tree).as_posix(), n) for n, raw in encoded if raw in data]
    return found
