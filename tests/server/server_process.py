"""Start ``cpullm serve`` as a real subprocess on loopback (a free port) and wait until it is ready."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 90.0
# The tiny test model's context: long, so a stream can be cancelled long before it would end on its own.
TINY_CONTEXT = 2048


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    port: int
    log_path: Path
    tls_ca: Path | None = None  # the certificate to trust when the server speaks HTTPS

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls_ca else 'http'}://127.0.0.1:{self.port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=self.tls_ca) if self.tls_ca else True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        """Prometheus samples by their full name with labels, e.g. 'cpullm_num_requests_running'."""
        text = httpx.get(self.base_url + "/metrics", timeout=10).text
        samples = {}
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$", line)
            if m:
                samples[m.group(1)] = float(m.group(2))
        return samples


def server_env(lib_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPULLM_")}
    env.update({"CPULLM_LIB_DIR": str(lib_dir), "PYTHONPATH": str(REPO / "engine")})
    env.update(extra or {})
    return env


@contextmanager
def running_server(
    lib_dir: Path,
    args: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    wait: bool = True,
    tls_ca: Path | None = None,
) -> Iterator[ServerProcess]:
    port = free_port()
    cmd = [sys.executable, "-m", "cpullm", "serve", *args, "--port", str(port), "--host", "127.0.0.1"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=server_env(lib_dir, env)
        )
    server = ServerProcess(proc, port, log_path, tls_ca)
    try:
        if wait:
            wait_ready(server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def wait_ready(server: ServerProcess, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"the server exited with {server.proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.base_url + "/health", timeout=2, verify=server.verify).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server was not ready within {timeout} s:\n{server.log()}")
