"""The CI files, validated offline: workflow schema, actionlint, and cibuildwheel agreeing with the matrix."""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
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


def _actionlint(path: Path) -> subprocess.CompletedProcess:
    # With shellcheck, actionlint also checks every `run:` script.
    command = [_tool("actionlint"), "-shellcheck", _tool("shellcheck"), str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_workflow_passes_actionlint():
    done = _actionlint(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_does_flag_a_bad_run_script(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo $1\n")
    done = _actionlint(bad)
    assert done.returncode != 0 and "SC2086" in done.stdout  # shellcheck ran: $1 is unquoted


def test_matrix_lists_every_variant_recipe_and_the_portable_wheel_per_arch():
    jobs = matrix.jobs()
    recipes = load_recipes()
    for arch in ("x86_64", "aarch64"):
        isas = [j["isa"] for j in jobs if j["arch"] == arch]
        # amx needs features no variant provider can express: it ships in the portable wheel only
        assert isas == [r.name for r in recipes.for_arch(arch) if r.name != "amx"] + ["all"]
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


def _flow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps_text(job: dict) -> str:
    return "\n".join(str(step.get("run", "")) + str(step.get("uses", "")) for step in job["steps"])


def test_every_job_has_a_timeout():
    for name, job in _flow()["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int) and 0 < job["timeout-minutes"] <= 120, name


def test_build_job_keeps_a_ccache_keyed_on_recipe_and_compiler():
    flow = _flow()
    build = flow["jobs"]["build"]
    (cache,) = [s for s in build["steps"] if str(s.get("uses", "")).startswith("actions/cache@")]
    key, restore = cache["with"]["key"], cache["with"]["restore-keys"].strip()
    # The recipe (job name, recipe files) and the compiler (the cibuildwheel release pins the image).
    for part in ("${{ matrix.name }}", "${{ env.CIBUILDWHEEL_VERSION }}",
                 "hashFiles('recipes/**/*.toml', 'ci/cibuildwheel.toml')"):  # fmt: skip
        assert part in key and part in restore
    assert key.startswith(restore) and key.endswith("${{ github.sha }}")
    # The cached folder is the one the container's ccache writes, through cibuildwheel's /host mount.
    assert cache["with"]["path"] == ".ccache"
    assert "CCACHE_DIR=/host${{ github.workspace }}/.ccache" in build["env"]["CIBW_ENVIRONMENT_LINUX"]
    assert "cmake.define.CMAKE_CXX_COMPILER_LAUNCHER=ccache" in build["env"]["CIBW_CONFIG_SETTINGS_LINUX"]
    assert "ccache" in tomllib.loads(CIBW_CONFIG.read_text())["tool"]["cibuildwheel"]["before-all"]
    version = flow["env"]["CIBUILDWHEEL_VERSION"]
    assert '"cibuildwheel==${CIBUILDWHEEL_VERSION}"' in _steps_text(build)
    assert version.count(".") == 2 and all(p.isdigit() for p in version.split("."))


def test_sdist_job_builds_checks_and_uploads_the_sdist():
    sdist = _flow()["jobs"]["sdist"]
    text = _steps_text(sdist)
    assert "python -m build --sdist --outdir dist ." in text
    assert "pip wheel --no-deps --wheel-dir sdist-wheel dist/cpullm-*.tar.gz" in text  # it builds a wheel
    assert "cpullm info --json" in text and "'builder'] == 'cmake'" in text
    (upload,) = [s for s in sdist["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert upload["with"]["name"] == "sdist" and upload["with"]["path"] == "dist/*.tar.gz"


def test_publish_job_uses_trusted_publishing_on_tags_only():
    flow = _flow()
    publish = flow["jobs"]["publish"]
    assert flow[True]["push"] == {"tags": ["v*"]}  # YAML 1.1 reads the key `on` as true
    assert publish["if"] == "github.event_name == 'push' && startsWith(github.ref, 'refs/tags/v')"
    assert set(publish["needs"]) == {"build", "sdist"}
    assert publish["permissions"] == {"id-token": "write"}  # OIDC for PyPI, nothing else
    assert flow["permissions"] == {"contents": "read"}  # every other job reads only
    assert all("permissions" not in job for name, job in flow["jobs"].items() if name != "publish")
    (upload,) = [
        s for s in publish["steps"] if str(s.get("uses", "")).startswith("pypa/gh-action-pypi-publish@")
    ]
    assert not upload.get("with", {}).get("password")  # no API token: trusted publishing
    assert publish["environment"]["name"] == "pypi"
    # Only the portable wheels (their artifacts match the pattern) and the sdist are downloaded.
    downloads = [
        s["with"] for s in publish["steps"] if str(s.get("uses", "")).startswith("actions/download-artifact@")
    ]
    patterns = [d.get("pattern") or d["name"] for d in downloads]
    assert sorted(patterns) == ["sdist", "wheel-*-all"]
    portable = {f"wheel-{j['name']}" for j in matrix.jobs() if j["isa"] == "all"}
    every = {f"wheel-{j['name']}" for j in matrix.jobs()}
    assert {a for a in every if fnmatch.fnmatch(a, "wheel-*-all")} == portable and portable
