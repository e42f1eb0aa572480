"""Usable cores from affinity and cgroup quotas, on fake cgroup trees."""

from __future__ import annotations

import os
from pathlib import Path

from cpubuild.host.cores import cgroup_cpu_quota, usable_cores

V2_MOUNTINFO = "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw\n"
V1_MOUNTINFO = (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 {root} /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "33 31 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
)


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v2_tree(root: Path, cgroup: str, limits: dict[str, str]) -> None:
    write(root, "proc/self/mountinfo", V2_MOUNTINFO)
    write(root, "proc/self/cgroup", f"0::{cgroup}\n")
    for directory, cpu_max in limits.items():
        write(root, f"sys/fs/cgroup{directory}/cpu.max", cpu_max + "\n")


def test_v2_quota_bounds_affinity(tmp_path):
    v2_tree(tmp_path, "/kubepods/pod1/c1", {"/kubepods/pod1/c1": "250000 100000"})
    cores = usable_cores(affinity=8, root=tmp_path)
    assert cores.quota == 2.5
    assert cores.usable == 2
    assert cores.quota_source == "/sys/fs/cgroup/kubepods/pod1/c1/cpu.max"


def test_v2_tightest_ancestor_wins(tmp_path):
    v2_tree(
        tmp_path,
        "/kubepods/pod1/c1",
        {"/kubepods/pod1/c1": "max 100000", "/kubepods/pod1": "150000 100000", "/kubepods": "400000 100000"},
    )
    cores = usable_cores(affinity=8, root=tmp_path)
    assert (cores.quota, cores.usable) == (1.5, 1)
    assert cores.quota_source == "/sys/fs/cgroup/kubepods/pod1/cpu.max"


def test_v2_unlimited_uses_affinity(tmp_path):
    v2_tree(tmp_path, "/", {"": "max 100000"})
    cores = usable_cores(affinity=3, root=tmp_path)
    assert (cores.quota, cores.usable) == (None, 3)


def test_affinity_smaller_than_quota(tmp_path):
    v2_tree(tmp_path, "/c", {"/c": "800000 100000"})
    assert usable_cores(affinity=2, root=tmp_path).usable == 2


def test_quota_below_one_cpu_still_gives_one_core(tmp_path):
    v2_tree(tmp_path, "/c", {"/c": "50000 100000"})
    assert usable_cores(affinity=4, root=tmp_path).usable == 1


def test_v1_quota_in_a_namespaced_container(tmp_path):
    # Inside a cgroup namespace the process sees "/" and the mount root is "/".
    write(tmp_path, "proc/self/mountinfo", V1_MOUNTINFO.format(root="/"))
    write(tmp_path, "proc/self/cgroup", "5:memory:/\n4:cpu,cpuacct:/\n0::/\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "300000\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    cores = usable_cores(affinity=16, root=tmp_path)
    assert (cores.quota, cores.usable) == (3.0, 3)
    assert cores.quota_source == "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us"


def test_v1_path_below_the_mount_root(tmp_path):
    # Docker without a cgroup namespace: mount root /docker/abc, the process's cgroup /docker/abc.
    write(tmp_path, "proc/self/mountinfo", V1_MOUNTINFO.format(root="/docker/abc"))
    write(tmp_path, "proc/self/cgroup", "4:cpu,cpuacct:/docker/abc\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "200000\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(tmp_path) == (2.0, "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us")


def test_v1_unlimited(tmp_path):
    write(tmp_path, "proc/self/mountinfo", V1_MOUNTINFO.format(root="/"))
    write(tmp_path, "proc/self/cgroup", "4:cpu,cpuacct:/\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert usable_cores(affinity=5, root=tmp_path).usable == 5


def test_no_cgroup_filesystem(tmp_path):
    cores = usable_cores(root=tmp_path)
    assert cores.affinity == len(os.sched_getaffinity(0))
    assert cores.usable == cores.affinity and cores.quota is None
