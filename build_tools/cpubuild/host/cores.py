"""Usable cores: the CPU affinity mask bounded by the cgroup CPU quota.

Containers see every host CPU in /proc/cpuinfo and often in their affinity mask too, while the
cgroup quota (Kubernetes `resources.limits.cpu`) is what they may actually use. Both cgroup v2
(`cpu.max`) and v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`) are read, from the process's own
cgroup up to the root of its mount, and the tightest limit wins. `root` prefixes every path so
tests can point it at a fake tree.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CoreCount:
    """How many cores this process can keep busy, and where the limit comes from."""

    affinity: int  # CPUs in the sched_getaffinity mask
    quota: float | None  # CPUs' worth of time the cgroup allows per period; None: no limit found
    quota_source: str | None  # the file that set the quota
    usable: int  # min(affinity, floor(quota)), at least 1


@dataclass(frozen=True)
class _Mount:
    root: str  # the cgroup path mounted there
    mountpoint: str
    version: int  # 1 or 2


def _cgroup_mounts(root: Path) -> list[_Mount]:
    """The cgroup2 mount and the cgroup v1 mounts carrying the `cpu` controller, from mountinfo."""
    try:
        text = (root / "proc/self/mountinfo").read_text()
    except OSError:
        return []
    mounts = []
    for line in text.splitlines():
        # id parent major:minor root mountpoint options [optional...] - fstype source super-options
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 1:
            continue
        fstype = tail[0]
        if fstype == "cgroup2":
            mounts.append(_Mount(fields[3], fields[4], 2))
        elif fstype == "cgroup" and len(tail) >= 3 and "cpu" in tail[2].split(","):
            mounts.append(_Mount(fields[3], fields[4], 1))
    return mounts


def _process_cgroups(root: Path) -> dict[int, str]:
    """{1: path of the v1 cgroup holding `cpu`, 2: the v2 path} for this process, when present."""
    try:
        text = (root / "proc/self/cgroup").read_text()
    except OSError:
        return {}
    paths: dict[int, str] = {}
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            paths[2] = path
        elif "cpu" in controllers.split(","):
            paths[1] = path
    return paths


def _directories(root: Path, mount: _Mount, cgroup_path: str) -> list[Path]:
    """The process's cgroup directory under `mount` and its ancestors up to the mount point."""
    relative = cgroup_path
    if mount.root != "/" and (cgroup_path == mount.root or cgroup_path.startswith(mount.root + "/")):
        relative = cgroup_path[len(mount.root) :]
    base = root / mount.mountpoint.lstrip("/")
    parts = [part for part in relative.split("/") if part]
    return [base.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _read_v2(directory: Path) -> float | None:
    try:
        quota, _, period = (directory / "cpu.max").read_text().strip().partition(" ")
    except OSError:
        return None
    if quota == "max" or not period:
        return None
    return int(quota) / int(period)


def _read_v1(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None  # -1 means unlimited
    return quota / period


def cgroup_cpu_quota(root: Path = Path("/")) -> tuple[float | None, str | None]:
    """(CPUs' worth of quota, the file that set it), the tightest along the process's cgroup paths."""
    paths = _process_cgroups(root)
    best: tuple[float | None, str | None] = (None, None)
    for mount in _cgroup_mounts(root):
        cgroup_path = paths.get(mount.version)
        if cgroup_path is None:
            continue
        reader = _read_v2 if mount.version == 2 else _read_v1
        for directory in _directories(root, mount, cgroup_path):
            quota = reader(directory)
            if quota is not None and (best[0] is None or quota < best[0]):
                name = "cpu.max" if mount.version == 2 else "cpu.cfs_quota_us"
                best = (quota, "/" + str((directory / name).relative_to(root)))
    return best


def usable_cores(affinity: int | None = None, root: Path = Path("/")) -> CoreCount:
    """Cores this process can use: affinity ∩ cgroup quota (a 1.5-CPU quota gives 1 core)."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0))
    quota, source = cgroup_cpu_quota(root)
    usable = affinity if quota is None else max(1, min(affinity, math.floor(quota)))
    return CoreCount(affinity=affinity, quota=quota, quota_source=source, usable=usable)
