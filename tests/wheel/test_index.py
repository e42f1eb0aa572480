"""`cpubuild index`: a static PEP 503/691 index with PEP 825 variants.json, served on loopback to pip."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest
from fake_wheels import HOST_PLATFORM, fake_wheel
from index_server import serve, url
from variantlib.api import get_variants_by_priority
from wheel_support import clean_env, x86_host

from cpubuild import wheel_variants
from cpubuild.host.detect import detect_host
from cpubuild.index import JSON_MEDIA_TYPE, IndexBuildError, build_index
from cpubuild.recipes import load_recipes
from cpubuild.selection import select

CPUBUILD = [sys.executable, "-m", "cpubuild.cli"]
AVX2 = ("avx", "avx2", "fma", "f16c", "bmi2", "popcnt", "bmi1", "abm", "movbe")
AVX512 = (*AVX2, "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd")
SVE = ("asimd", "asimddp", "asimdhp", "fphp", "i8mm", "bf16", "sve")


@pytest.fixture
def house(tmp_path: Path) -> Path:
    folder = tmp_path / "house"
    folder.mkdir()
    fake_wheel(folder)  # the portable wheel: a plain wheel
    fake_wheel(folder, recipe="avx2", features=AVX2)
    fake_wheel(folder, recipe="avx512", features=AVX512)
    fake_wheel(folder, recipe="avx512_vnni", features=(*AVX512, "avx512_vnni"))
    fake_wheel(folder, recipe="sve", arch="aarch64", features=SVE, plat="linux_aarch64")
    return folder


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_index_lists_every_file_with_its_hash_in_html_and_json(house, tmp_path):
    result = build_index(house, tmp_path / "out")
    page = tmp_path / "out" / "simple" / "cpullm"
    names = [*sorted(p.name for p in house.glob("*.whl")), "cpullm-0.1.0-variants.json"]
    html = (page / "index.html").read_text()
    links = dict(re.findall(r'<a href="([^"#]+)#sha256=([0-9a-f]{64})"', html))
    assert sorted(links) == sorted(names)
    assert all(links[name] == _sha256(page / name) for name in names)
    assert 'data-requires-python="&gt;=3.10"' in html
    document = json.loads((page / "index.json").read_text())
    assert document["meta"] == {"api-version": "1.1"} and document["versions"] == ["0.1.0"]
    assert {f["filename"]: f["hashes"]["sha256"] for f in document["files"]} == links
    root = json.loads((tmp_path / "out" / "simple" / "index.json").read_text())
    assert root["projects"] == [{"name": "cpullm"}]
    assert '<a href="cpullm/">cpullm</a>' in (tmp_path / "out" / "simple" / "index.html").read_text()
    variants = json.loads((page / "cpullm-0.1.0-variants.json").read_text())
    assert sorted(variants["variants"]) == ["avx2", "avx512", "avx512_vnni", "sve"]
    assert variants["variants"]["avx512_vnni"] == {"x86_64": {"level": ["v4"], "avx512_vnni": ["on"]}}
    assert result.validated_with == "variantlib 0.2.2"


def test_the_command_prints_json_and_a_second_run_replaces_its_own_output(house, tmp_path):
    out = tmp_path / "out"
    for _ in range(2):
        command = [*CPUBUILD, "index", str(house), "--out", str(out), "--json"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["variants_json"] == {"cpullm-0.1.0-variants.json": ["avx2", "avx512", "avx512_vnni", "sve"]}
    files = {f["file"]: f for f in report["projects"]["cpullm"]}
    assert files[f"cpullm-0.1.0-py3-none-{HOST_PLATFORM}-avx2.whl"]["variant"] == "avx2"
    assert files[f"cpullm-0.1.0-py3-none-{HOST_PLATFORM}.whl"]["variant"] is None


def _pip_install(index_url: str, target: Path) -> str:
    """Plain pip (no variant support) installs cpullm from the index; which wheel it took (BUILT_AS)."""
    command = [sys.executable, "-m", "pip", "install", "--isolated", "--no-deps", "--no-cache-dir",
               "--disable-pip-version-check", "--index-url", index_url, "--target", str(target),
               "cpullm"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return re.search(r"BUILT_AS = '(\w+)'", (target / "cpullm" / "__init__.py").read_text()).group(1)


@pytest.mark.parametrize("negotiate", [True, False], ids=["pep691-json", "pep503-html"])
def test_plain_pip_from_the_served_index_installs_the_portable_wheel(house, tmp_path, negotiate):
    build_index(house, tmp_path / "out")
    with serve(tmp_path / "out", negotiate=negotiate) as server:
        assert _pip_install(url(server), tmp_path / "site") == "portable"
        kinds = {kind for kind, path in server.served if path == "/simple/cpullm/"}
    assert kinds == ({"json"} if negotiate else {"html"})
    assert not list((tmp_path / "site").glob("*.dist-info/variant.json"))


def test_a_variant_aware_installer_picks_the_best_variant_from_the_served_index(house, tmp_path):
    """What a variant-aware installer does (PEP 825's suggested steps), with variantlib, over HTTP."""
    build_index(house, tmp_path / "out")
    with serve(tmp_path / "out") as server:
        request = urllib.request.Request(f"{url(server)}/cpullm/", headers={"Accept": JSON_MEDIA_TYPE})
        with urllib.request.urlopen(request, timeout=30) as answer:
            page = json.load(answer)
        files = {f["filename"]: f for f in page["files"]}
        with urllib.request.urlopen(f"{url(server)}/cpullm/cpullm-0.1.0-variants.json", timeout=30) as answer:
            body = answer.read()
    assert hashlib.sha256(body).hexdigest() == files["cpullm-0.1.0-variants.json"]["hashes"]["sha256"]
    index = json.loads(body)
    # the plugin-api the wheels name (the PyPI plugins) cannot load under variantlib 0.2: use the probe's
    plugins = (("x86_64", "X8664Plugin"), ("aarch64", "AArch64Plugin"))
    index["providers"] = {
        ns: {"requires": ["cpubuild"], "plugin-api": f"cpubuild.variant_provider:{cls}"}
        for ns, cls in plugins
    }
    ranked = [v.label for v in get_variants_by_priority(variants_json=index)]
    host = detect_host()
    runnable = [v.recipe.name for v in select(host, load_recipes()).verdicts if v.runnable]
    offered = [label for label in ("avx512_vnni", "avx512", "avx2") if label in runnable]
    assert ranked == [*offered, "null"] if host.arch == "x86_64" else ranked == ["null"]
    if offered:
        assert f"cpullm-0.1.0-py3-none-{HOST_PLATFORM}-{offered[0]}.whl" in files


def _one_line_error(*args: str) -> str:
    done = subprocess.run([*CPUBUILD, "index", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == "", (done.returncode, done.stdout)
    assert (
        done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    )
    return done.stderr


def test_bad_wheelhouses_are_refused_with_a_sentence(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no wheels" in _one_line_error(str(empty), "--out", str(tmp_path / "o"))
    assert "is not a folder" in _one_line_error(str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / f"cpullm-0.1.0-py3-none-{HOST_PLATFORM}.whl").write_bytes(b"not a zip")
    assert "cannot be read as a wheel" in _one_line_error(str(broken), "--out", str(tmp_path / "o"))


def test_a_variant_wheel_without_variant_json_or_with_another_label_is_refused(tmp_path):
    house = tmp_path / "house"
    house.mkdir()
    wheel = fake_wheel(house, recipe="avx2", features=AVX2)
    with zipfile.ZipFile(wheel) as archive:
        members = {n: archive.read(n) for n in archive.namelist() if not n.endswith("variant.json")}
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(
        IndexBuildError, match=r"has a variant label but no cpullm-0\.1\.0\.dist-info/variant\.json"
    ):
        build_index(house, tmp_path / "out")
    wheel.unlink()
    other = wheel_variants.document({"avx512": {"x86_64": {"level": ["v4"]}}})
    fake_wheel(house, recipe="avx2", features=AVX2, variant_json=other)
    with pytest.raises(IndexBuildError, match="describes \\['avx512'\\]; the file name says 'avx2'"):
        build_index(house, tmp_path / "out")


def test_a_wheel_whose_name_and_metadata_disagree_is_refused(tmp_path):
    house = tmp_path / "house"
    house.mkdir()
    fake_wheel(house, version="0.1.0", metadata_version="0.2.0")
    with pytest.raises(IndexBuildError, match=r"its METADATA says version '0\.2\.0', its name '0\.1\.0'"):
        build_index(house, tmp_path / "out")


def test_one_label_with_two_property_sets_in_a_release_is_refused(tmp_path):
    house = tmp_path / "house"
    house.mkdir()
    fake_wheel(house, recipe="avx2", features=AVX2)
    lying = wheel_variants.document({"avx2": {"x86_64": {"level": ["v4"]}}})
    fake_wheel(house, recipe="avx2", features=AVX2, plat="manylinux_2_34_x86_64", variant_json=lying)
    with pytest.raises(IndexBuildError, match="one label must mean one property set"):
        build_index(house, tmp_path / "out")


def test_an_out_folder_it_did_not_write_is_left_alone(house, tmp_path):
    foreign = tmp_path / "out" / "simple"
    foreign.mkdir(parents=True)
    (foreign / "keep.txt").write_text("someone else's")
    with pytest.raises(IndexBuildError, match="was not written by `cpubuild index`"):
        build_index(house, tmp_path / "out")
    assert (foreign / "keep.txt").read_text() == "someone else's"


@x86_host
@pytest.mark.slow
def test_real_wheels_plain_pip_gets_the_portable_wheel_and_it_runs_here(
    tmp_path, portable_wheel, tuned_wheel
):
    """The one real-build proof: the index of the portable and the tuned wheel, plain pip, import, probe."""
    house = tmp_path / "house"
    house.mkdir()
    for built in (portable_wheel, tuned_wheel):
        shutil.copyfile(built.path, house / built.path.name)
    result = build_index(house, tmp_path / "out")
    label = tuned_wheel.variant["label"]
    assert result.variants["cpullm-0.1.0-variants.json"]["variants"] == {
        label: tuned_wheel.variant["properties"]
    }
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False, symlinks=True)
    python = env_dir / "bin" / "python"
    with serve(tmp_path / "out") as server:
        command = [sys.executable, "-m", "pip", "--python", str(python), "install", "--isolated",
                   "--no-deps", "--no-cache-dir", "--disable-pip-version-check", "--index-url", url(server),
                   "cpullm"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    info = subprocess.run([str(python), "-m", "cpullm", "info", "--json"], capture_output=True, text=True,
                          env=clean_env(), cwd=tmp_path, timeout=120)  # fmt: skip
    assert info.returncode == 0, info.stderr
    report = json.loads(info.stdout)
    assert report["build"]["portable"] and report["build"]["variant_label"] is None
    # the portable wheel's probe loads this CPU's best variant (amx has no tuned wheel: it may be better)
    assert report["variant"] == select(detect_host(), load_recipes()).best.name
    assert report["variant"] in (label, "amx")
