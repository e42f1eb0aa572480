"""`cpubuild wheel`: one variant per tuned wheel, the manifest, names, RECORD, no leaked paths, errors."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import zipfile

import pytest
from wheel_support import BUILD_ROOT, REPO, x86_host

from cpubuild import wheel
from cpubuild.manifest import MANIFEST_PATH, VARIANTS_PATH
from cpubuild.recipes import load_recipes

pytestmark = [x86_host, pytest.mark.slow]


def _check_record(archive: zipfile.ZipFile, dist_info: str) -> None:
    lines = archive.read(f"{dist_info}/RECORD").decode().splitlines()
    listed = {line.rsplit(",", 2)[0] for line in lines}
    assert listed == set(archive.namelist())
    for line in lines:
        name, digest, size = line.rsplit(",", 2)
        if name.endswith("RECORD"):
            continue
        data = archive.read(name)
        want = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert (digest, int(size)) == (want, len(data)), name


def test_tuned_wheel_has_one_variant_a_manifest_and_a_variant_label(avx512_wheel):
    path = avx512_wheel.path
    assert path.name.startswith("cpullm-0.1.0-py3-none-manylinux_")
    assert path.name.endswith("_x86_64-avx512.whl")
    assert avx512_wheel.platform_tag.startswith("manylinux_")
    # gcc 12 on Debian 12 reaches glibc 2.34 (RHEL 9's) as long as nothing pulls in GLIBCXX_3.4.30.
    glibc = tuple(int(n) for n in avx512_wheel.platform_tag.split("_")[1:3])
    assert glibc <= (2, 34), avx512_wheel.platform_tag
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        libs = sorted(n for n in names if n.startswith("cpullm/_lib/libcpullm_"))
        assert libs == ["cpullm/_lib/libcpullm_avx512.so", "cpullm/_lib/libcpullm_probe.so"]
        info = json.loads(archive.read(MANIFEST_PATH))
        table = json.loads(archive.read(VARIANTS_PATH))
        metadata = archive.read("cpullm-0.1.0.dist-info/METADATA").decode()
        variant = json.loads(archive.read("cpullm-0.1.0.dist-info/variant.json"))
        _check_record(archive, "cpullm-0.1.0.dist-info")
    assert info["recipe"] == "avx512" and info["arch"] == "x86_64" and not info["portable"]
    assert {"avx512f", "avx512bw", "avx2"} <= set(info["required_features"])
    assert info["flags"] == table["variants"][0]["flags"] and info["flags"]
    assert info["compiler_id"] == "GNU" and info["compiler_version"][0].isdigit()
    assert info["cmake_version"][0].isdigit()
    # The commit the build saw: HEAD then, so HEAD or one of its ancestors now (others may commit meanwhile).
    commit = info["source_commit"]
    assert len(commit) == 40 and int(commit, 16) >= 0
    ancestor = subprocess.run(["git", "-C", str(REPO), "merge-base", "--is-ancestor", commit, "HEAD"])
    assert ancestor.returncode == 0
    assert info["source_date"].endswith("Z") and info["platform_tag"] == avx512_wheel.platform_tag
    assert "Version: 0.1.0\n" in metadata and "Name: cpullm\n" in metadata
    assert variant["variants"] == {"avx512": {"x86_64": {"level": ["v4"]}}}
    assert info["variant_label"] == "avx512"
    assert avx512_wheel.variant["validated_with"].startswith("variantlib")


def test_the_wheel_is_built_with_the_flags_cpubuild_proved(avx512_wheel):
    """issue 11: cpubuild proves the flags, CMake builds with exactly those (no second choice in CMake)."""
    from cpubuild.flags import resolve_flags
    from cpubuild.recipes import load_recipes

    proven = resolve_flags(load_recipes().get("avx512", "x86_64"), wheel.compiler_for("x86_64", None))
    record = json.loads((avx512_wheel.build_dir / wheel.FLAGS_RECORD).read_text())
    assert record["flags"] == {"avx512": list(proven.flags)}
    assert record["compiler"]["path"] == proven.compiler.path
    assert avx512_wheel.build_info["flags"] == list(proven.flags)
    commands = json.loads((avx512_wheel.build_dir / "compile_commands.json").read_text())
    variant = [c for c in commands if "/cpullm_avx512.dir/" in c["output"]]
    assert variant
    for command in variant:
        assert [arg for arg in command["command"].split() if arg.startswith("-m")] == list(proven.flags)


def test_no_build_paths_leak_into_the_wheel(avx512_wheel):
    assert avx512_wheel.leaked_paths == []
    with zipfile.ZipFile(avx512_wheel.path) as archive:
        blob = b"".join(archive.read(n) for n in archive.namelist())
    for needle in (str(REPO), str(BUILD_ROOT), "/tmp/"):
        assert needle.encode() not in blob


def test_a_recipe_no_provider_can_express_gets_no_tuned_wheel():
    """amx: no variant property for AMX, so a variant wheel would install on CPUs without it."""
    with pytest.raises(wheel.WheelBuildError, match="amx_bf16, amx_int8, amx_tile cannot be expressed"):
        wheel.resolve_target("amx", "x86_64")


def test_portable_wheel_carries_every_variant_and_no_label(portable_wheel):
    assert portable_wheel.path.name.startswith("cpullm-0.1.0-py3-none-manylinux_")
    with zipfile.ZipFile(portable_wheel.path) as archive:
        table = json.loads(archive.read(VARIANTS_PATH))
        info = json.loads(archive.read(MANIFEST_PATH))
        present = {n for n in archive.namelist() if n.startswith("cpullm/_lib/libcpullm_")}
    names = {v["name"] for v in table["variants"]}
    assert names == {recipe.name for recipe in load_recipes(REPO / "recipes").for_arch("x86_64")}
    assert present == {f"cpullm/_lib/libcpullm_{n}.so" for n in names | {"probe"}}
    assert info["portable"] and info["recipe"] == "all" and info["required_features"] == []


def test_native_maps_this_host_to_its_best_recipe():
    from cpubuild.host.detect import detect_host
    from cpubuild.recipes import load_recipes
    from cpubuild.selection import select

    target = wheel.resolve_target("native", None)
    assert target.isa == select(detect_host(), load_recipes()).best.name
    assert target.isa in target.why


def test_unknown_recipe_and_foreign_native_are_refused_with_sentences():
    with pytest.raises(wheel.WheelBuildError, match=r"no x86_64 recipe named 'avx9000'; known: .*avx2"):
        wheel.resolve_target("avx9000", "x86_64")
    with pytest.raises(wheel.WheelBuildError, match="--isa native builds for this host, which is x86_64"):
        wheel.resolve_target("native", "aarch64")


def test_first_error_finds_the_compiler_error():
    log = "\n".join([
        "[1/3] Building CXX object x.o",
        "FAILED: x.o",
        "../csrc/a.cc:3:5: error: 'foo' was not declared in this scope",
        "../csrc/a.cc:9:1: error: second",
    ])  # fmt: skip
    assert wheel.first_error(log) == "../csrc/a.cc:3:5: error: 'foo' was not declared in this scope"
    cmake = "CMake Error at CMakeLists.txt:33 (message):\n  cpullm: reading recipes failed: no recipe\n"
    assert wheel.first_error(cmake).startswith("CMake Error at CMakeLists.txt:33 (message): cpullm: reading")


def test_flags_the_compiler_rejects_are_refused_before_building(tmp_path):
    recipes = tmp_path / "recipes" / "x86_64"
    recipes.mkdir(parents=True)
    (recipes / "broken.toml").write_text(
        'name = "broken"\narch = "x86_64"\ndescription = "a flag gcc rejects"\npriority = 0\nfeatures = []\n'
        'kernels = ["ref"]\n[[flags.gcc]]\nmin_version = "1"\nflags = ["-mno-such-flag"]\n'
        '[[flags.clang]]\nmin_version = "1"\nflags = ["-mno-such-flag"]\n'
    )
    target = wheel.WheelTarget("x86_64", "broken")
    with pytest.raises(wheel.WheelBuildError) as caught:
        wheel.build(target, source=REPO, out_dir=tmp_path / "out", recipes_dir=tmp_path / "recipes",
                    build_root=tmp_path / "build")  # fmt: skip
    assert "-mno-such-flag" in str(caught.value)


def test_cli_wheel_json_and_noop_rebuild(avx512_wheel, tmp_path):
    """The command line builds the same wheel; a second build reuses the stable build folder."""
    cmd = [sys.executable, "-m", "cpubuild.cli", "wheel", "--isa", "avx512", "--out", str(tmp_path), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["isa"] == "avx512" and result["platform_tag"] == avx512_wheel.platform_tag
    assert (tmp_path / avx512_wheel.path.name).is_file()


def test_build_failure_reports_the_first_error_and_the_log(tmp_path, monkeypatch):
    """Flags that break the real sources: the compiler's first error and the log's path come back."""
    monkeypatch.setattr(wheel, "check_compiler", lambda *args: None)  # let the bad flags reach the build
    recipes = tmp_path / "recipes" / "x86_64"
    recipes.mkdir(parents=True)
    flags = '["-Dnamespace=namespace_broken_by_the_test"]'
    (recipes / "broken.toml").write_text(
        'name = "broken"\narch = "x86_64"\ndescription = "breaks C++ sources"\npriority = 0\nfeatures = []\n'
        f'kernels = ["ref"]\n[[flags.gcc]]\nmin_version = "1"\nflags = {flags}\n'
        f'[[flags.clang]]\nmin_version = "1"\nflags = {flags}\n'
    )
    target = wheel.WheelTarget("x86_64", "broken")
    with pytest.raises(wheel.WheelBuildError) as caught:
        wheel.build(target, source=REPO, out_dir=tmp_path / "out", recipes_dir=tmp_path / "recipes",
                    build_root=tmp_path / "build")  # fmt: skip
    assert "error:" in str(caught.value)
    assert caught.value.log == tmp_path / "build" / "logs" / "wheel-x86_64-broken.log"
    assert "namespace_broken_by_the_test" in caught.value.log.read_text()


def test_finalize_turns_a_raw_backend_wheel_into_the_named_wheel(avx512_wheel, tmp_path):
    """The CI path: cibuildwheel runs the backend, then `cpubuild finalize` is its repair command."""
    from wheel_support import clean_env

    from cpubuild.reproducible import source_date_epoch

    build_dir = BUILD_ROOT / "wheel-x86_64-avx512"
    settings = wheel.config_settings(wheel.WheelTarget("x86_64", "avx512"), REPO, build_dir, None, None)
    defines = [f"-C{key}={value}" for key, value in settings.items()]
    backend = [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-build-isolation", "--no-deps",
               "-w", str(tmp_path / "raw"), *defines]  # fmt: skip
    env = clean_env(SOURCE_DATE_EPOCH=str(source_date_epoch(REPO)))
    done = subprocess.run(backend, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (raw,) = (tmp_path / "raw").glob("*.whl")
    assert raw.name.startswith("cpullm-0.1.0-py3-none-linux_x86_64")
    with zipfile.ZipFile(raw) as archive:  # the backend alone already writes a manifest (cmake/build_info.py)
        raw_info = json.loads(archive.read(MANIFEST_PATH))
    assert raw_info["builder"] == "cmake" and raw_info["recipe"] == "avx512"
    assert len(raw_info["source_commit"]) == 40
    finalize = [sys.executable, "-m", "cpubuild.cli", "finalize", str(raw), "--out", str(tmp_path / "out"),
                "--source", str(REPO), "--build-dir", str(build_dir)]  # fmt: skip
    done = subprocess.run(finalize, capture_output=True, text=True, env={**env, "CPUBUILD_ISA": "avx512"})
    assert done.returncode == 0, done.stderr[-3000:]
    (final,) = (tmp_path / "out").glob("*.whl")
    assert final.name == avx512_wheel.path.name
    with zipfile.ZipFile(final) as a, zipfile.ZipFile(avx512_wheel.path) as b:
        assert a.namelist() == b.namelist()
        ours, theirs = json.loads(a.read(MANIFEST_PATH)), json.loads(b.read(MANIFEST_PATH))
    assert ours["builder"] == "cpubuild"  # finalize replaced the backend's manifest
    skip = {"source_commit", "source_dirty", "source_date"}  # others may commit while the tests run
    assert {k: v for k, v in ours.items() if k not in skip} == {
        k: v for k, v in theirs.items() if k not in skip
    }
