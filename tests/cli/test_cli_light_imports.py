"""`cpullm info` must run where the engine's dependencies are not installed (a wheel installed with
--no-deps, as `cpubuild verify` does): building the command line imports neither numpy nor gguf."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "engine"

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("numpy", "gguf"):
            raise ImportError(f"{name} is blocked: the CLI must not import it to build its parser")
sys.meta_path.insert(0, Block())
from cpullm.cli.main import build_parser
build_parser().parse_args(["info", "--json"])
print("ok")
"""


def test_parser_builds_without_numpy_or_gguf() -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ENGINE)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
