"""The server image's runtime stage (ci/docker/Dockerfile), reproduced without a container daemon.

What the image does, done here by hand: a fresh Python environment holding only the portable wheel
(`cpubuild wheel --isa all`, as the build stage makes it) and its [server] extra; `cpullm info` as the
image build runs it; then `cpullm serve` (the ENTRYPOINT) with the Dockerfile's ENV, as an unprivileged
user (uid/gid 65534), with the installed code read-only and the model read from a /mnt/models-style
folder. KServe's probes and an OpenAI chat request must answer (tests/support/serving_probes.py, which
scripts/build-image.sh runs against the real image).

Two departures, both forced by running on a shared host rather than in a container: the server listens
on 127.0.0.1 (the image's 0.0.0.0 is inside its own network namespace), on 8080 when that port is free
and on a free port otherwise, and the model folder is a temporary one instead of /mnt/models.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from wheel_support import REPO, x86_host

from support.serving_probes import check

pytestmark = [x86_host, pytest.mark.slow]

DOCKERFILE = REPO / "ci" / "docker" / "Dockerfile"
NOBODY = 65534  # the unprivileged uid/gid the server runs as (the image's is 1000; any non-root will do)


def runtime_env() -> dict[str, str]:
    """The ENV of the Dockerfile's runtime stage (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stage, env = None, {}
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == "FROM":
            stage = words[-1]
        elif words and words[0] == "ENV" and stage == "runtime":
            env.update(word.split("=", 1) for word in words[1:])
    return env


def _as_nobody() -> list[str]:
    if os.geteuid() != 0:
        pytest.skip("runs the server as an unprivileged user (uid 65534), which needs root to switch to")
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    pytest.skip("neither setpriv nor runuser is installed (util-linux)")


def _python_for(prefix: list[str]) -> str:
    """An interpreter the unprivileged user can run (this one may sit in a home only root can enter)."""
    for candidate in (os.path.realpath(sys.executable), shutil.which("python3")):
        if (
            candidate
            and subprocess.run([*prefix, candidate, "-c", "pass"], capture_output=True).returncode == 0
        ):
            return candidate
    pytest.skip(f"no Python that uid {NOBODY} can run (tried {sys.executable} and python3 on PATH)")


def _port() -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8080))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def root() -> Iterator[Path]:
    # Not pytest's tmp_path: its parent is private to root, and the server user must reach the files.
    path = Path(tempfile.mkdtemp(prefix="cpullm-image-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_image_runtime_stage_serves_as_an_unprivileged_user(portable_wheel, root):
    if str(REPO / "tests" / "engine") not in sys.path:
        sys.path.insert(0, str(REPO / "tests" / "engine"))
    from tiny_gguf import TinySpec, write_tiny_gguf

    prefix = _as_nobody()
    python = _python_for(prefix)
    # The image: its Python, then `pip install "<wheel>[server]"` and nothing else.
    venv = root / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    install = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
               "--disable-pip-version-check", f"{portable_wheel.path}[server]"]  # fmt: skip
    done = subprocess.run(install, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    subprocess.run(["chmod", "-R", "a-w", str(venv)], check=True)
    models = root / "mnt" / "models"  # KServe's storage initializer puts the model here
    models.mkdir(parents=True)
    write_tiny_gguf(models / "tiny-chat.gguf", TinySpec(context_length=512)).chmod(0o444)
    home = root / "home" / "cpullm"  # WORKDIR, the user's home
    home.mkdir(parents=True)
    os.chown(home, NOBODY, NOBODY)

    port = _port()
    image_env = runtime_env()
    assert image_env["CPULLM_MODEL"] == "/mnt/models" and image_env["CPULLM_PORT"] == "8080"
    env = {"PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    env |= image_env | {"CPULLM_HOST": "127.0.0.1", "CPULLM_PORT": str(port), "CPULLM_MODEL": str(models)}
    before = _tree(venv)

    shown = subprocess.run([*prefix, "cpullm", "info", "--json"], capture_output=True, text=True, env=env,
                           cwd=home, timeout=120)  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    info = json.loads(shown.stdout)
    assert info["variant"] and info["build"]["builder"] == "cpubuild" and info["build"]["portable"]

    log = root / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen([*prefix, "cpullm", "serve"], stdout=out, stderr=subprocess.STDOUT, env=env,
                                  cwd=home)  # fmt: skip
    try:
        report = check(f"http://127.0.0.1:{port}", timeout_s=180, alive=lambda: server.poll() is None)
        status = Path(f"/proc/{server.pid}/status").read_text()
        uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
        assert set(uids) == {str(NOBODY)}, status  # real, effective, saved and filesystem uid
    except Exception:
        print(log.read_text())
        raise
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
    print("\n".join(report))
    assert [line for line in report if line.startswith("chat with tiny-chat:")]
    assert _tree(venv) == before  # nothing written into the installed code
