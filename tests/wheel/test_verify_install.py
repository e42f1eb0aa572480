"""`cpubuild verify` in a fresh venv, and `cpubuild install` choosing among wheels (and refusing)."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from wheel_support import REPO, clean_env, x86_host

from cpubuild import install
from cpubuild.host.detect import detect_host
from cpubuild.recipes import load_recipes
from cpubuild.selection import select
from cpubuild.verify import verify

AVX2 = ["avx", "avx2", "fma"]
AVX512 = [*AVX2, "avx512f", "avx512bw"]
PLAT = "py3-none-manylinux_2_34_x86_64.whl"
AVX2_WHEEL = "cpullm-0.1.0-py3-none-manylinux_2_34_x86_64-avx2.whl"
AVX512_WHEEL = "cpullm-0.1.0-py3-none-manylinux_2_34_x86_64-avx512.whl"
ARM_WHEEL = "cpullm-0.1.0-py3-none-manylinux_2_34_aarch64-sve.whl"
CPUBUILD = [sys.executable, "-m", "cpubuild.cli"]


def _fake_wheel(folder: Path, filename: str, arch: str, variants: dict[str, tuple[int, list[str]]]) -> Path:
    """A wheel holding only a manifest: enough for `install.choose`, which never runs the code."""
    info = {
        "arch": arch,
        "portable": len(variants) > 1,
        "recipe": "all" if len(variants) > 1 else next(iter(variants)),
        "variants": [{"name": n, "priority": p, "features": f} for n, (p, f) in variants.items()],
    }
    path = folder / filename
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("cpullm/_build_info.json", json.dumps(info))
    return path


@pytest.fixture
def house(tmp_path):
    _fake_wheel(tmp_path, AVX2_WHEEL, "x86_64", {"avx2": (10, AVX2)})
    _fake_wheel(tmp_path, AVX512_WHEEL, "x86_64", {"avx512": (20, AVX512)})
    portable = {"generic": (0, []), "avx2": (10, AVX2), "avx512": (20, AVX512)}
    _fake_wheel(tmp_path, f"cpullm-0.1.0-{PLAT}", "x86_64", portable)
    _fake_wheel(tmp_path, ARM_WHEEL, "aarch64", {"sve": (30, ["sve"])})
    return tmp_path


def test_best_tuned_wheel_wins_and_every_wheel_is_explained(house):
    host = install.HostView("x86_64", frozenset(AVX512))
    best, judged = install.choose(house, host, supported=None)
    assert best.path.name == AVX512_WHEEL
    assert best.best_variant == "avx512" and "tuned for avx512" in best.why
    why = {c.path.name: c.why for c in judged}
    assert "built for aarch64" in why[ARM_WHEEL]
    assert "portable wheel, would load avx512" in why[f"cpullm-0.1.0-{PLAT}"]


def test_older_cpu_gets_its_tuned_wheel_and_the_portable_one_is_the_fallback(house):
    host = install.HostView("x86_64", frozenset(AVX2))
    best, _ = install.choose(house, host, supported=None)
    assert best.path.name == AVX2_WHEEL
    (house / best.path.name).unlink()
    best, _ = install.choose(house, host, supported=None)
    assert best.portable and best.best_variant == "avx2"


def test_no_fitting_wheel_is_refused_naming_the_missing_features(tmp_path):
    _fake_wheel(tmp_path, AVX512_WHEEL, "x86_64", {"avx512": (20, AVX512)})
    host = install.HostView("x86_64", frozenset(AVX2), {"avx512f": "not enabled by the OS"})
    with pytest.raises(install.InstallError) as caught:
        install.choose(tmp_path, host, supported=None)
    message = str(caught.value)
    assert "none of the 1 wheel(s)" in message
    assert "avx512 needs avx512f (not enabled by the OS), avx512bw" in message
    assert "cpubuild wheel --isa native" in message


def test_empty_wheelhouse_is_refused(tmp_path):
    with pytest.raises(install.InstallError, match="holds no wheels"):
        install.choose(tmp_path, install.HostView("x86_64", frozenset()), supported=None)


def test_install_command_refuses_when_nothing_fits(tmp_path):
    _fake_wheel(tmp_path, ARM_WHEEL, "aarch64", {"sve": (30, ["sve"])})
    command = [*CPUBUILD, "install", "--wheelhouse", str(tmp_path), "--dry-run"]
    done = subprocess.run(command, capture_output=True, text=True, env=clean_env(), cwd=REPO)
    assert done.returncode == 1
    assert "none of the 1 wheel(s)" in done.stderr and "built for aarch64" in done.stderr


@x86_host
@pytest.mark.slow
def test_verify_installs_into_a_fresh_venv_and_runs_the_self_test(tuned_wheel):
    report = verify(tuned_wheel.path, with_deps=False)
    assert report.ok, report.error
    assert report.variant == tuned_wheel.target.isa and report.how == "venv"
    assert report.selftest is not None
    if report.selftest["ran"]:
        assert report.selftest["passed"] is True
    else:
        assert report.selftest["report"] == "no self-test in this build"
    assert report.generation.startswith("not run (--no-deps")
    assert any("pip" in step and "install" in step for step in report.steps)


@x86_host
@pytest.mark.slow
def test_verify_reports_a_wheel_this_cpu_cannot_run(monkeypatch, portable_wheel):
    """CPULLM_ISA=amx makes the installed wheel refuse here (no AMX): verify fails with the reason."""
    if "amx_tile" in detect_host().usable_features:
        pytest.skip("this host can run AMX")
    monkeypatch.setenv("CPULLM_ISA", "amx")
    report = verify(portable_wheel.path, with_deps=False)
    assert not report.ok
    assert "CPULLM_ISA=amx: this CPU cannot run the amx variant" in (report.error or "")


@x86_host
@pytest.mark.slow
def test_install_command_picks_installs_and_explains(tmp_path, tuned_wheel, portable_wheel):
    house = tmp_path / "house"
    house.mkdir()
    for result in (tuned_wheel, portable_wheel):
        (house / result.path.name).write_bytes(result.path.read_bytes())
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False, symlinks=True)
    python = env_dir / "bin" / "python"
    base = [*CPUBUILD, "install", "--wheelhouse", str(house), "--python", str(python)]
    dry = subprocess.run([*base, "--dry-run"], capture_output=True, text=True, env=clean_env(), cwd=REPO)
    assert dry.returncode == 0, dry.stderr
    assert "chosen:" in dry.stdout and "would run:" in dry.stdout
    assert not list(env_dir.glob("lib/python*/site-packages/cpullm"))
    done = subprocess.run(
        [*base, "--no-deps", "--json"], capture_output=True, text=True, env=clean_env(), cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    # The portable wheel would load the same variant as the wheel tuned for this host: a tie, tuned first.
    host_best = select(detect_host(), load_recipes()).best.name
    assert answer["installed"] and answer["variant"] == host_best
    # amx has no tuned wheel (no variant property for it): on an AMX host the portable wheel wins
    expected = tuned_wheel if host_best == tuned_wheel.target.isa else portable_wheel
    assert Path(answer["chosen"]).name == expected.path.name
    info = subprocess.run([str(python), "-m", "cpullm", "info", "--json"], capture_output=True, text=True,
                          env=clean_env(), cwd=tmp_path)  # fmt: skip
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["variant"] == host_best


@x86_host
@pytest.mark.slow
def test_verify_of_a_wheel_this_cpu_cannot_run_fails_or_passes_as_a_clean_refusal(avx512_wheel):
    """The avx512 variant wheel on a host without AVX-512: a failure, or with --allow-refusal (CI) a clean
    ImportError. (amx has no tuned wheel: no variant provider has a property for AMX.)"""
    if "avx512f" in detect_host().usable_features:
        pytest.skip("this host can run AVX-512")
    plain = verify(avx512_wheel.path, with_deps=False)
    assert not plain.ok and not plain.refused
    error = plain.error or ""
    assert "avx512 needs " in error and "avx512f" in error
    lenient = verify(avx512_wheel.path, with_deps=False, allow_refusal=True)
    assert lenient.ok and lenient.refused and lenient.variant is None
    assert any(step.endswith("-c import cpullm") for step in lenient.steps)


@x86_host
@pytest.mark.slow
def test_install_puts_the_tuned_variant_wheel_over_the_portable_one(tmp_path, tuned_wheel, portable_wheel):
    """The chooser installs a variant wheel (a name plain pip refuses) over the portable wheel, in place."""
    from wheel_support import make_venv

    isa = tuned_wheel.target.isa  # this host's best recipe that has a tuned wheel
    assert tuned_wheel.path.name.endswith(f"-{isa}.whl") and tuned_wheel.variant["label"] == isa
    python = make_venv(tmp_path / "env", portable_wheel.path)
    house = tmp_path / "house"
    house.mkdir()
    (house / tuned_wheel.path.name).write_bytes(tuned_wheel.path.read_bytes())
    command = [*CPUBUILD, "install", "--wheelhouse", str(house), "--python", str(python), "--no-deps"]
    done = subprocess.run(command, capture_output=True, text=True, env=clean_env(), cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert install.installed_flavours(str(python)) == ["cpullm"]
    info = subprocess.run([str(python), "-m", "cpullm", "info", "--json"], capture_output=True, text=True,
                          env=clean_env(), cwd=tmp_path)  # fmt: skip
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["build"]["variant_label"] == isa


@x86_host
@pytest.mark.slow
@pytest.mark.qemu
def test_verify_as_if_on_haswell(avx512_wheel, portable_wheel):
    refused = verify(avx512_wheel.path, with_deps=False, cpu="Haswell", allow_refusal=True)
    assert refused.ok and refused.refused and "avx512 needs avx512f" in (refused.error or "")
    portable = verify(portable_wheel.path, with_deps=False, cpu="Haswell")
    assert portable.ok and portable.variant == "avx2" and "qemu-x86_64 -cpu Haswell" in portable.how


@x86_host
@pytest.mark.slow
def test_verify_with_dependencies_runs_a_short_real_generation(tuned_wheel):
    """Dependencies from the index (pip's cache), then a greedy completion with the default model."""
    report = verify(tuned_wheel.path)
    assert report.ok, report.error
    assert report.generation.startswith("'The capital of France is' -> ")
    isa = select(detect_host(), load_recipes()).best.name
    assert "Paris" in report.generation and f"variant {isa})" in report.generation
