"""Two builds of one commit and recipe, in two different clones, give byte-identical wheels."""

from __future__ import annotations

import subprocess
import zipfile

import pytest
from wheel_support import REPO, x86_host

from cpubuild import wheel

pytestmark = [x86_host, pytest.mark.slow]


def _clone(origin, dest):
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(origin), str(dest)], check=True, timeout=300)
    return dest


def test_same_commit_in_two_folders_gives_identical_bytes(tmp_path):
    # The second clone is made from the first, so both hold one commit even if main moves meanwhile.
    first = _clone(REPO, tmp_path / "first-clone")
    second = _clone(first, tmp_path / "second" / "deeper" / "clone")
    results = []
    for source in (first, second):
        target = wheel.WheelTarget("x86_64", "avx2")
        results.append(
            wheel.build(
                target,
                source=source,
                out_dir=tmp_path / f"out-{len(results)}",
                recipes_dir=source / "recipes",
            )
        )
    a, b = results
    assert a.path.name == b.path.name
    assert a.leaked_paths == [] and b.leaked_paths == []
    if a.path.read_bytes() != b.path.read_bytes():
        with zipfile.ZipFile(a.path) as za, zipfile.ZipFile(b.path) as zb:
            differ = [n for n in za.namelist() if za.read(n) != zb.read(n)]
        pytest.fail(f"the wheels differ in: {differ}")
    assert a.build_info["source_dirty"] is False
