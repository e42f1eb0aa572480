from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The engine's Python package is used from the source tree; its native libraries from build/test-<arch>.
sys.path.insert(0, str(REPO / "engine"))
sys.path.insert(0, str(REPO / "tests"))


@pytest.fixture(scope="session")
def native_lib_dir() -> Path:
    """The x86_64 (host) native libraries, every variant, built once per session."""
    from support.native_build import build_native

    return build_native("x86_64")
