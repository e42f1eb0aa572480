"""The CI files, validated offline: workflow schema, actionlint, and cibuildwheel agreeing with the matrix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from wheel_support import REPO

from cpubuild import matrix
from cpubuild.recipes import load_recipes

WORKFLOW = REPO / ".github" / "workflows" / "wheels.yml"
CIBW_CONFIG = REPO / "ci" / "cibuildwheel.toml"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {BIN}; run `make venv` (requirements-dev.txt)")
    return str(path)


def test_workflow_matches_the_github_workflow_schema():
    command = [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_workflow_passes_actionlint():
    done = subprocess.run([_tool("actionlint"), str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_matrix_lists_every_recipe_and_the_portable_wheel_per_arch():
    jobs = matrix.jobs()
    recipes = load_recipes()
    for arch in ("x86_64", "aarch64"):
        isas = [j["isa"] for j in jobs if j["arch"] == arch]
        assert isas == [r.name for r in recipes.for_arch(arch)] + ["all"]
    assert len({j["name"] for j in jobs}) == len(jobs)
    done = subprocess.run(
        [sys.executable, "-m", "cpubuild.cli", "matrix", "--json"], capture_output=True, text=True
    )
    assert done.returncode == 0 and len(done.stdout.strip().splitlines()) == 1  # fits $GITHUB_OUTPUT
    assert json.loads(done.stdout) == {"include": jobs}


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_cibuildwheel_build_identifiers_agree_with_the_matrix(arch):
    command = [_tool("cibuildwheel"), "--print-build-identifiers", "--platform", "linux", "--archs", arch,
               "--config-file", str(CIBW_CONFIG), str(REPO)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    identifiers = set(done.stdout.split())
    assert identifiers == {j["cibw_build"] for j in matrix.jobs() if j["arch"] == arch}


def test_workflow_builds_verifies_and_uploads_each_matrix_job():
    flow = yaml.safe_load(WORKFLOW.read_text())
    build = flow["jobs"]["build"]
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.jobs) }}"
    assert build["runs-on"] == "${{ matrix.runner }}"
    steps = " ".join(str(step.get("run", "")) + str(step.get("uses", "")) for step in build["steps"])
    assert "--only ${{ matrix.cibw_build }}" in steps and "--config-file ci/cibuildwheel.toml" in steps
    assert "cpubuild verify" in steps and "actions/upload-artifact" in steps
    # The build folder the workflow asks for is the one `cpubuild finalize` reads by default.
    assert (
        "build-dir=build/wheel-${{ matrix.arch }}-${{ matrix.isa }}"
        in build["env"]["CIBW_CONFIG_SETTINGS_LINUX"]
    )
    assert "cpubuild matrix --json" in str(flow["jobs"]["matrix"]["steps"])
