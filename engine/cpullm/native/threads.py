"""How many threads the engine uses, and (optionally) pinning them to CPUs.

Public API
----------
``usable_cores(root=Path("/")) -> int``
    The CPU affinity mask bounded by the cgroup CPU quota, at least 1. Containers see every host CPU but
    may only use their quota (Kubernetes ``resources.limits.cpu``): cgroup v2 ``cpu.max`` and v1
    ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` are read for the process's own cgroup (``/proc/self/cgroup``)
    and its ancestors up to the mount; the tightest wins, rounded down (2.5 CPUs -> 2 threads). The same
    rule as the toolchain's ``cpubuild.host.cores``, kept here so the engine wheel stands alone.
``default_threads() -> int``
    ``CPULLM_THREADS`` when set, else ``usable_cores()``.
``pin_pool(start_pool, n_threads) -> list[int]``
    Pin the calling thread and the native pool's worker threads to distinct CPUs of the affinity set.
    The native pool starts its workers lazily; ``start_pool()`` must make it do so (one tiny step). The
    workers are told apart as the threads that appeared during that call, and each is pinned by its
    thread id with ``sched_setaffinity`` (Linux accepts a thread id there), so no native support is needed.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from pathlib import Path

from cpullm import env

THREADS_ENV = "CPULLM_THREADS"


def _cgroup_mounts(root: Path) -> list[tuple[int, str, str]]:
    """(cgroup version, mounted cgroup path, mount point) of cgroup2 and of v1 mounts with ``cpu``."""
    try:
        lines = (root / "proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        # id parent major:minor root mountpoint options [optional...] - fstype source super-options
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or not tail:
            continue
        if tail[0] == "cgroup2":
            mounts.append((2, fields[3], fields[4]))
        elif tail[0] == "cgroup" and len(tail) >= 3 and "cpu" in tail[2].split(","):
            mounts.append((1, fields[3], fields[4]))
    return mounts


def _own_cgroups(root: Path) -> dict[int, str]:
    """{2: the process's v2 cgroup path, 1: its v1 path for the cpu controller}, where present."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return {}
    paths = {}
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            paths[2] = path
        elif "cpu" in controllers.split(","):
            paths[1] = path
    return paths


def _read_quota(directory: Path, version: int) -> float | None:
    """CPUs' worth of quota set in ``directory``; None when unlimited or unreadable."""
    try:
        if version == 2:
            quota, _, period = (directory / "cpu.max").read_text().strip().partition(" ")
            return None if quota == "max" else int(quota) / int(period)
        quota_us = int((directory / "cpu.cfs_quota_us").read_text())
        period_us = int((directory / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError, ZeroDivisionError):
        return None


def cgroup_cpu_quota(root: Path = Path("/")) -> float | None:
    """The tightest CPU quota along the process's cgroup paths, in CPUs; None when there is none."""
    own = _own_cgroups(root)
    quotas = []
    for version, mount_root, mount_point in _cgroup_mounts(root):
        path = own.get(version)
        if path is None:
            continue
        if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
            path = path[len(mount_root) :]  # the mount shows the cgroup tree from mount_root down
        parts = [p for p in path.split("/") if p]
        base = root / mount_point.lstrip("/")
        for depth in range(len(parts), -1, -1):
            quota = _read_quota(base.joinpath(*parts[:depth]), version)
            if quota is not None:
                quotas.append(quota)
    return min(quotas, default=None)


def usable_cores(root: Path = Path("/")) -> int:
    """CPU affinity bounded by the cgroup CPU quota (rounded down), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        cores = min(cores, math.floor(quota))
    return max(1, cores)


def default_threads() -> int:
    """``CPULLM_THREADS`` if set (a positive integer), else the usable cores."""
    value = env.get(THREADS_ENV)
    if value is None or not value.strip():
        return usable_cores()
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{THREADS_ENV}={value!r} is not a positive number of threads; fix or unset it")
    return n


_affinity_before_pinning: list[int] = []


def _thread_ids() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/task")}


def pin_pool(start_pool: Callable[[], None], n_threads: int) -> list[int]:
    """Pin this thread and the pool's workers to distinct CPUs; returns the CPUs, this thread's first.

    With more threads than CPUs in the affinity set, CPUs are reused round-robin.
    """
    if not hasattr(os, "sched_setaffinity") or not os.path.isdir("/proc/self/task"):
        raise RuntimeError("thread pinning needs Linux (sched_setaffinity and /proc/self/task)")
    if not _affinity_before_pinning:  # pinning narrows this thread's own mask: remember the first one
        _affinity_before_pinning.extend(sorted(os.sched_getaffinity(0)))
    cpus = _affinity_before_pinning
    before = _thread_ids()
    start_pool()
    workers = sorted(_thread_ids() - before)[: max(0, n_threads - 1)]
    me = threading.get_native_id()
    chosen = [cpus[i % len(cpus)] for i in range(1 + len(workers))]
    for tid, cpu in zip([me, *workers], chosen, strict=True):
        os.sched_setaffinity(tid, {cpu})
    return chosen
