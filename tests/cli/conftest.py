"""Fixtures for the `cpullm generate/chat/bench` tests: a tiny chat model and ways to run the command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENGINE_TESTS = REPO / "tests" / "engine"
if str(ENGINE_TESTS) not in sys.path:
    sys.path.insert(0, str(ENGINE_TESTS))

from gguf import GGMLQuantizationType as QT  # noqa: E402
from tiny_gguf import TinySpec, write_tiny_gguf  # noqa: E402

RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def tiny_model(native_lib_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untied llama (Q8_0 weights, byte-level BPE vocabulary, ChatML template with a system turn)."""
    os.environ["CPULLM_LIB_DIR"] = str(native_lib_dir)  # the in-process tests load these libraries
    spec = TinySpec(weight_type=QT.Q8_0, context_length=512, tied=False)  # untied: varied output
    return write_tiny_gguf(tmp_path_factory.mktemp("cli") / "tiny.gguf", spec)


@pytest.fixture(scope="session")
def run_cli(native_lib_dir: Path) -> RunCli:
    """Run `python -m cpullm ARGS` from the source tree in a subprocess; stdin from ``input``; more
    environment variables in ``env_extra``."""
    env = dict(os.environ)
    env["CPULLM_LIB_DIR"] = str(native_lib_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "engine"), env.get("PYTHONPATH")]))
    env.pop("CPULLM_THREADS", None)

    def run(
        *args: str | bytes,
        input: str | bytes = "",
        timeout: float = 120,
        env_extra: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        # bytes, decoded here: text mode would turn a generated "\r\n" into "\n"; bytes arguments and
        # input reach the command as they are (e.g. invalid UTF-8)
        result = subprocess.run(
            [sys.executable, "-m", "cpullm", *args],
            input=input.encode() if isinstance(input, str) else input,
            capture_output=True,
            env={**env, **(env_extra or {})},
            timeout=timeout,
        )
        out, err = result.stdout.decode(), result.stderr.decode()
        return subprocess.CompletedProcess(result.args, result.returncode, out, err)

    return run
