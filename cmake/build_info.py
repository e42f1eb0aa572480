#!/usr/bin/env python3
"""Write the build manifest (cpullm/_build_info.json) of a wheel built without cpubuild.

A plain `pip install .` (or `pip wheel`, cibuildwheel's build step) runs only scikit-build-core and
CMake, so CMakeLists.txt runs this script at configure time and installs its output into the wheel.
`cpubuild wheel` and `cpubuild finalize` then replace it with the full manifest
(build_tools/cpubuild/manifest.py), which adds what only they know: the repaired platform tag and the
name style. The keys both share are computed the same way (tests/wheel/test_build_info.py compares
them). Standard library only (it runs in the build environment); no paths and no build times, so two
builds of one commit write the same file.

Usage: build_info.py VARIANTS_JSON REQUESTED SOURCE_DIR COMPILER COMPILER_ID COMPILER_VERSION
                     CMAKE_VERSION OUT
  REQUESTED: the CPULLM_VARIANTS asked for ("all", or a comma/semicolon separated list of recipes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


def _git(source: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _source(source: Path) -> tuple[str, bool | None, int | None]:
    """(commit, dirty, commit date) when `source` is the top of a git checkout; an unpacked sdist is not."""
    top = _git(source, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != source.resolve():
        return "unknown (not a git checkout)", None, None
    commit = _git(source, "rev-parse", "HEAD") or "unknown (not a git checkout)"
    dirty = bool(_git(source, "status", "--porcelain", "--untracked-files=no"))
    date = _git(source, "log", "-1", "--format=%ct")
    return commit, dirty, int(date) if date and date.isdigit() else None


def _source_date(committed: int | None) -> str:
    """An explicit SOURCE_DATE_EPOCH wins over the commit date (as in cpubuild's reproducible.py)."""
    explicit = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if explicit and not explicit.isdigit():
        sys.exit(
            f"build_info.py: SOURCE_DATE_EPOCH={explicit!r} is not a number of seconds since 1970; "
            "set it to one (e.g. `git log -1 --format=%ct`) or unset it to use the commit date"
        )
    epoch = int(explicit) if explicit else committed
    return "unknown" if epoch is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def build_info(
    table: dict[str, Any], requested: str, source: Path, toolchain: dict[str, str]
) -> dict[str, Any]:
    variants = [
        {"name": v["name"], "priority": v["priority"], "features": v["features"], "flags": v["flags"]}
        for v in sorted(table["variants"], key=lambda v: v["priority"])
    ]
    names = [n for n in requested.replace(";", ",").split(",") if n]
    recipe = "all" if names in ([], ["all"]) else ",".join(names)
    # The wheel runs wherever its least demanding variant runs.
    baseline = variants[0] if variants else {"features": [], "flags": []}
    commit, dirty, committed = _source(source)
    return {
        "schema_version": SCHEMA_VERSION,
        "builder": "cmake",
        "recipe": recipe,
        "arch": table["arch"],
        "portable": recipe == "all",
        "required_features": baseline["features"],
        "flags": baseline["flags"] if recipe == "all" else variants[-1]["flags"],
        "variants": variants,
        **toolchain,
        "source_commit": commit,
        "source_dirty": dirty,
        "source_date": _source_date(committed),
    }


def main(argv: list[str]) -> None:
    if len(argv) != 9:
        sys.exit(__doc__)
    variants_json, requested, source, compiler, compiler_id, compiler_version, cmake_version, out = argv[1:]
    table = json.loads(Path(variants_json).read_text())
    toolchain = {
        "compiler": f"{Path(compiler).name} ({compiler_id} {compiler_version})",
        "compiler_id": compiler_id,
        "compiler_version": compiler_version,
        "cmake_version": cmake_version,
    }
    info = build_info(table, requested, Path(source), toolchain)
    Path(out).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv)
