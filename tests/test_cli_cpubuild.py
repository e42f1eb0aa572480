"""The `cpubuild` commands, run in-process (typer's CliRunner) and once through the installed script."""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cpubuild.cli.main import app
from cpubuild.host.cores import cgroup_cpu_quota
from cpubuild.host.detect import detect_host, live_arch

MACHINES = Path(__file__).parent / "fixtures" / "cpuinfo"
RECIPES = Path(__file__).resolve().parents[1] / "recipes"
runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_detect_json_on_a_recorded_machine():
    code, out, _ = run("detect", "--json", "--machine", str(MACHINES / "amx_refused.toml"))
    assert code == 0
    document = json.loads(out)
    assert document["schema_version"] == 1
    assert document["best"] == "avx512_bf16"
    assert document["host"]["microarchitecture"] == "sapphirerapids"
    assert document["host"]["xcr0"] == "0x602e7"
    assert document["host"]["usable_cores"] == 16
    amx = next(r for r in document["recipes"] if r["name"] == "amx")
    assert amx["runnable"] is False and amx["missing"] == []
    assert [u["name"] for u in amx["unusable"]] == ["amx_tile", "amx_int8", "amx_bf16"]
    assert "amx_tile" not in document["features"]["usable"]
    assert [u["name"] for u in document["features"]["unusable"]] == ["amx_tile", "amx_bf16", "amx_int8"]


def test_detect_table_names_the_best_recipe_and_why_not():
    code, out, _ = run("detect", "--machine", str(MACHINES / "no_zmm_state.toml"))
    assert code == 0
    assert "Best recipe: avx2" in out
    assert "not enabled by the OS" in " ".join(out.split())
    code, out, _ = run("detect", "--machine", str(MACHINES / "graviton3.toml"))
    assert "Best recipe: sve" in out and "Neoverse V1" in out


def test_recipes_json_and_arch_filter():
    code, out, _ = run("recipes", "--json", "--arch", "aarch64")
    assert code == 0
    document = json.loads(out)
    assert [r["name"] for r in document["recipes"]] == ["armv8", "dotprod", "i8mm", "sve"]
    assert document["recipes"][1]["features"] == ["asimd", "asimddp", "asimdhp", "fphp"]
    assert document["recipes"][1]["flags"]["gcc"][0]["min_version"] == "8"
    assert document["recipes"][1]["kernels"] == ["ref", "neon", "dotprod"]
    assert document["recipes"][1]["own_kernels"] == ["dotprod"]
    code, _, err = run("recipes", "--arch", "riscv64")
    assert code == 2 and "unknown architecture 'riscv64'" in err


def test_recipes_flag_beats_environment(tmp_path):
    broken = tmp_path / "recipes"
    shutil.copytree(RECIPES, broken)
    (broken / "x86_64" / "avx2.toml").write_text("name = [")
    env = {"CPUBUILD_RECIPES": str(broken)}
    code, _, err = run("recipes", env=env)
    assert code == 1 and "avx2.toml" in err and "is not valid TOML" in err
    code, out, _ = run("recipes", "--json", "--recipes", str(RECIPES), env=env)
    assert code == 0 and len(json.loads(out)["recipes"]) == len(list(RECIPES.glob("*/*.toml")))


def test_flags_refuses_a_too_old_compiler(tmp_path):
    fake = tmp_path / "g++-7"
    fake.write_text(
        "#!/bin/sh\ncase \"$1\" in --version) echo 'g++ (GCC) 7.5.0'; echo 'Free Software Foundation';;\n"
        "-dumpfullversion) echo 7.5.0;; -dumpmachine) echo x86_64-linux-gnu;; esac\n"
    )
    fake.chmod(0o755)
    code, out, err = run(
        "flags", "--isa", "avx512_bf16", "--compiler", str(fake), "--cache-dir", str(tmp_path)
    )
    assert code == 1 and out == ""
    assert "error:" in err and "gcc 7.5.0 is too old for recipe 'avx512_bf16'" in err
    # The environment variable is used when no flag is given.
    code, _, err = run("flags", "--isa", "avx512_bf16", env={"CPUBUILD_CXX": str(fake)})
    assert code == 1 and "7.5.0 is too old" in err


def test_flags_unknown_isa():
    code, _, err = run("flags", "--isa", "avx1024")
    assert code == 2 and "no recipe named 'avx1024'" in err and "avx512_bf16" in err


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_flags_amx_json_with_gcc(tmp_path):
    code, out, err = run("flags", "--isa", "amx", "--compiler", "g++", "--json", "--cache-dir", str(tmp_path))
    if code != 0 and ("too old" in err or "builds for" in err):
        pytest.skip(err)
    assert code == 0, err
    document = json.loads(out)
    assert document["flags"][-3:] == ["-mamx-tile", "-mamx-int8", "-mamx-bf16"]
    assert document["compiler"]["family"] == "gcc" and document["probe_cached"] is False


# --- this live host ------------------------------------------------------------------------------


def live_host_is_avx512_bf16_without_amx() -> bool:
    if live_arch() != "x86_64":
        return False
    host = detect_host()
    return "avx512_bf16" in host.usable_features and "amx_tile" not in host.cpu_features


@pytest.mark.skipif(
    not live_host_is_avx512_bf16_without_amx(),
    reason="this live-host check needs an x86-64 CPU with usable AVX-512 BF16 and no AMX",
)
def test_live_detect_json_through_the_installed_command():
    command = Path(sys.executable).parent / "cpubuild"
    if not command.exists():
        pytest.skip(f"{command} is not installed (run `make venv`)")
    start = time.perf_counter()
    done = subprocess.run([str(command), "detect", "--json"], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    document = json.loads(done.stdout)
    assert document["best"] == "avx512_bf16"
    amx = next(r for r in document["recipes"] if r["name"] == "amx")
    assert amx["runnable"] is False
    assert amx["missing"] == ["amx_tile", "amx_int8", "amx_bf16"]
    assert document["host"]["psabi_level"] == "x86-64-v4"
    affinity = len(os.sched_getaffinity(0))
    quota, _ = cgroup_cpu_quota()
    expected = affinity if quota is None else max(1, min(affinity, math.floor(quota)))
    assert document["host"]["usable_cores"] == expected
    # One cold sample (archspec import included) on a shared machine: a loose bound here; the
    # 100 ms promise is checked on the median below.
    assert document["probe_seconds"] < 0.25
    assert wall < 10  # the whole command, Python start-up included


def test_probe_takes_under_100_ms():
    detect_host()  # warm imports and page cache, as a real run would have them
    times = []
    for _ in range(7):
        start = time.perf_counter()
        detect_host()
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.1, times


def documented_detect_fields() -> set[str]:
    """The field names of the README's `cpubuild detect --json` schema table."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## cpubuild detect", 1)[1].split("\n## ", 1)[0]
    fields: set[str] = set()
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) > 2 and cells[1].strip().startswith("`"):
            for name in cells[1].split(","):
                name = name.strip().strip("`")
                fields.add(name if not name.startswith(".") else "recipes[]" + name)
    return fields


def document_fields(document: dict) -> set[str]:
    fields = set(document)
    fields |= {f"host.{key}" for key in document["host"]}
    fields |= {f"features.{key}" for key in document["features"]}
    fields |= {f"recipes[].{key}" for key in document["recipes"][0]}
    return fields


def test_readme_documents_every_detect_json_field():
    _, out, _ = run("detect", "--json", "--machine", str(MACHINES / "graviton2.toml"))
    documented = documented_detect_fields()
    actual = document_fields(json.loads(out))
    assert actual - {"host", "features"} == documented  # "host" and "features" are the groups
    assert "recipes[].why_not" in documented and "host.psabi_level" in documented


# --- issue 10: bad input files are one-line errors, not tracebacks ----------------------------------


def one_line_error(code: int, out: str, err: str) -> str:
    assert code == 1 and out == "", (code, out, err)
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_detect_machine_that_is_not_a_machine_file(tmp_path):
    binary = tmp_path / "machine.toml"
    binary.write_bytes(bytes(range(256)) * 8)
    err = one_line_error(*run("detect", "--machine", str(binary)))
    assert f"cannot read machine file {binary}: not UTF-8 text" in err
    err = one_line_error(*run("detect", "--machine", str(tmp_path)))
    assert "cannot read machine file" in err
    typed = tmp_path / "typed.toml"
    typed.write_text('arch = "x86_64"\ncpuinfo = "machine.toml"\nxcr0 = "0x7"\n')
    assert "key 'xcr0' must be a non-negative integer, not '0x7'" in one_line_error(
        *run("detect", "--machine", str(typed))
    )
    typed.write_text('arch = "x86_64"\ncpuinfo = "machine.toml"\n')
    assert "cannot read cpuinfo file 'machine.toml': not UTF-8" in one_line_error(
        *run("detect", "--machine", str(typed))
    )


def test_finalize_refuses_what_is_not_an_engine_wheel(tmp_path):
    import zipfile

    out = str(tmp_path / "out")
    binary = tmp_path / "random.bin"
    binary.write_bytes(bytes(range(256)))
    err = one_line_error(*run("finalize", str(binary), "--isa", "avx2", "--out", out))
    assert "is not a wheel" in err and "not a wheel file name" in err
    named = tmp_path / "cpullm-0.1.0-py3-none-linux_x86_64.whl"
    named.write_bytes(bytes(range(256)))
    assert "is not a wheel (File is not a zip file)" in one_line_error(
        *run("finalize", str(named), "--isa", "avx2", "--out", out)
    )
    with zipfile.ZipFile(named, "w") as archive:
        archive.writestr("cpullm/__init__.py", "")
    err = one_line_error(*run("finalize", str(named), "--isa", "avx2", "--out", out))
    assert "is not a cpullm engine wheel" in err
    missing = tmp_path / "none.whl"
    err = one_line_error(*run("finalize", str(missing), "--isa", "avx2", "--out", out))
    assert f"{missing} is not a file" in err


# --- the CPUBUILD_* registry -------------------------------------------------------------------------


def test_unknown_cpubuild_variable_is_named_with_its_close_match():
    code, _, err = run("recipes", "--json", env={"CPUBUILD_RECIPE": str(RECIPES), "CPUBUILD_ZZZ": "1"})
    assert code == 0
    warning = "warning: CPUBUILD_RECIPE is set but is not a cpubuild setting, so it is ignored;"
    assert f"{warning} did you mean CPUBUILD_RECIPES?" in err
    assert "CPUBUILD_ZZZ is set but is not a cpubuild setting" in err and "known: CPUBUILD_RECIPES" in err
    code, _, err = run("recipes", "--json", env={"CPUBUILD_RECIPES": str(RECIPES)})
    assert code == 0 and "warning" not in err


def test_settings_precedence_flag_then_environment_then_default():
    from cpubuild import env

    assert env.text("CPUBUILD_CXX", "clang++", {"CPUBUILD_CXX": "g++"}) == "clang++"
    assert env.text("CPUBUILD_CXX", None, {"CPUBUILD_CXX": "g++"}) == "g++"
    assert env.text("CPUBUILD_CXX", None, {"CPUBUILD_CXX": ""}) is None  # empty is unset
    assert env.path("CPUBUILD_CACHE_DIR", None, {"CPUBUILD_CACHE_DIR": "/c"}) == Path("/c")
    with pytest.raises(KeyError):
        env.text("CPUBUILD_NOT_REGISTERED")
    for setting in env.SETTINGS.values():
        assert setting.help and setting.default and setting.type in (str, Path), setting


def test_every_cpubuild_variable_in_the_toolchain_is_registered():
    """No CPUBUILD_* name outside the registry, and no reader but cpubuild.env (typer's envvar= included)."""
    import re

    from cpubuild import env

    package = Path(env.__file__).parent
    for path in sorted(package.glob("*.py")):
        text = path.read_text()
        for name in re.findall(r"\bCPUBUILD_[A-Z0-9_]+", text):
            assert name in env.SETTINGS, f"{path.name} names {name}, which is not in cpubuild.env.SETTINGS"
        if path.name != "env.py":
            assert "envvar=" not in text and "getenv(" not in text, path.name
            for line in text.splitlines():
                reads = re.search(r"environ(\.get\(|\[)", line)
                assert not (reads and ("CPUBUILD_" in line or "_ENV" in line)), (path.name, line)


def test_wheel_unknown_isa_is_a_bad_argument_like_flags():
    """The same unknown recipe name gets the same exit status from `flags` and `wheel`: 2, a bad argument."""
    code, _, err = run("wheel", "--isa", "avx1024")
    assert code == 2 and "recipe named 'avx1024'" in err


def test_help_and_usage_errors_are_plain_text():
    """No `<bool>` metavar on flags, no boxes around usage errors (greppable in CI logs)."""
    code, out, _ = run("flags", "--help")
    assert code == 0
    json_line = next(line for line in out.splitlines() if line.strip().startswith("--json"))
    assert "<bool>" not in json_line and "Print JSON" in json_line
    assert not any(mark in out for mark in "╭│╰")
    code, _, err = run("flags", "--bogus")
    assert code == 2 and "No such option: --bogus" in err and not any(mark in err for mark in "╭│╰")
