"""Fixtures for the server tests: a tiny random GGUF model and real servers on loopback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for _p in (str(HERE), str(HERE.parent / "engine")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from gguf import GGMLQuantizationType as QT  # noqa: E402
from server_process import TINY_CONTEXT, ServerProcess, running_server  # noqa: E402
from tiny_gguf import TinySpec, write_tiny_gguf  # noqa: E402


@pytest.fixture(scope="session")
def tiny_server_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = TinySpec(weight_type=QT.Q8_0, context_length=TINY_CONTEXT)
    return write_tiny_gguf(tmp_path_factory.mktemp("server_model") / "tiny-chat.gguf", spec)


@pytest.fixture(scope="session")
def server(native_lib_dir: Path, tiny_server_model: Path, tmp_path_factory) -> Iterator[ServerProcess]:
    """A server with default settings (no API key) on the tiny model, two threads."""
    log = tmp_path_factory.mktemp("server_log") / "server.log"
    with running_server(native_lib_dir, [str(tiny_server_model), "--threads", "2"], log) as s:
        yield s
