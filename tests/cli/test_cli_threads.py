"""Thread count (affinity within the cgroup quota, CPULLM_THREADS) and pinning threads to CPUs."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from cpubuild.host import cores
from cpullm.native import threads

V2_MOUNTINFO = "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw\n"
V1_MOUNTINFO = (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 {root} /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "33 31 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
)
V1_CPU = "sys/fs/cgroup/cpu,cpuacct"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


# (name, files, expected quota in CPUs)
TREES = [
    ("v2-own-cgroup", {
        "proc/self/mountinfo": V2_MOUNTINFO, "proc/self/cgroup": "0::/kubepods/pod1/c1\n",
        "sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "250000 100000\n",
    }, 2.5),
    ("v2-tightest-ancestor", {
        "proc/self/mountinfo": V2_MOUNTINFO, "proc/self/cgroup": "0::/kubepods/pod1/c1\n",
        "sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "max 100000\n",
        "sys/fs/cgroup/kubepods/pod1/cpu.max": "150000 100000\n",
        "sys/fs/cgroup/kubepods/cpu.max": "400000 100000\n",
    }, 1.5),
    ("v2-unlimited", {
        "proc/self/mountinfo": V2_MOUNTINFO, "proc/self/cgroup": "0::/\n",
        "sys/fs/cgroup/cpu.max": "max 100000\n",
    }, None),
    ("v1-namespaced", {
        "proc/self/mountinfo": V1_MOUNTINFO.format(root="/"),
        "proc/self/cgroup": "5:memory:/\n4:cpu,cpuacct:/\n0::/\n",
        f"{V1_CPU}/cpu.cfs_quota_us": "300000\n", f"{V1_CPU}/cpu.cfs_period_us": "100000\n",
    }, 3.0),
    ("v1-below-mount-root", {
        "proc/self/mountinfo": V1_MOUNTINFO.format(root="/docker/abc"),
        "proc/self/cgroup": "4:cpu,cpuacct:/docker/abc\n",
        f"{V1_CPU}/cpu.cfs_quota_us": "200000\n", f"{V1_CPU}/cpu.cfs_period_us": "100000\n",
    }, 2.0),
    ("v1-unlimited", {
        "proc/self/mountinfo": V1_MOUNTINFO.format(root="/"), "proc/self/cgroup": "4:cpu,cpuacct:/\n",
        f"{V1_CPU}/cpu.cfs_quota_us": "-1\n", f"{V1_CPU}/cpu.cfs_period_us": "100000\n",
    }, None),
    ("no-cgroups", {}, None),
]  # fmt: skip


@pytest.mark.parametrize(("files", "quota"), [t[1:] for t in TREES], ids=[t[0] for t in TREES])
def test_quota_matches_the_toolchains_probe(tmp_path, files, quota):
    root = _tree(tmp_path, files)
    assert threads.cgroup_cpu_quota(root) == quota
    assert cores.cgroup_cpu_quota(root)[0] == quota  # the engine and `cpubuild detect` agree


def test_usable_cores_rounds_the_quota_down_within_the_affinity(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    for cpu_max, expected in [("150000 100000", 1), ("50000 100000", 1), ("6400000 100000", affinity)]:
        root = _tree(tmp_path / cpu_max.split()[0], {
            "proc/self/mountinfo": V2_MOUNTINFO, "proc/self/cgroup": "0::/c\n",
            "sys/fs/cgroup/c/cpu.max": cpu_max + "\n",
        })  # fmt: skip
        assert threads.usable_cores(root) == min(expected, affinity)


def test_this_host_agrees_with_cpubuild():
    assert threads.usable_cores() == cores.usable_cores().usable


def test_threads_env_overrides_the_default(monkeypatch):
    monkeypatch.setenv("CPULLM_THREADS", "3")
    assert threads.default_threads() == 3
    monkeypatch.delenv("CPULLM_THREADS")
    assert threads.default_threads() == threads.usable_cores()
    for bad in ("0", "lots"):
        monkeypatch.setenv("CPULLM_THREADS", bad)
        with pytest.raises(ValueError, match="CPULLM_THREADS"):
            threads.default_threads()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_pin_pool_pins_the_caller_and_the_new_threads_to_distinct_cpus():
    """Python threads stand in for the native workers: they also appear in /proc/self/task."""
    release = threading.Event()
    workers: list[threading.Thread] = []
    seen: dict[str, object] = {}

    def start_pool() -> None:  # like the native pool: starts one worker that waits for work
        worker = threading.Thread(target=release.wait)
        worker.start()
        workers.append(worker)

    def caller() -> None:  # pin from a helper thread so the test process keeps its own affinity
        seen["cpus"] = threads.pin_pool(start_pool, 2)
        seen["caller"] = os.sched_getaffinity(0)
        seen["worker"] = os.sched_getaffinity(workers[0].native_id or 0)

    helper = threading.Thread(target=caller)
    helper.start()
    helper.join()
    release.set()
    workers[0].join()
    cpus = seen["cpus"]
    assert isinstance(cpus, list) and len(set(cpus)) == 2
    assert seen["caller"] == {cpus[0]}
    assert seen["worker"] == {cpus[1]}
