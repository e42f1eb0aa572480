"""Wheels built once per session, in stable build folders under build/test-wheels (ccache-friendly)."""

from __future__ import annotations

from pathlib import Path

import pytest
from wheel_support import build

from cpubuild import wheel


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wheelhouse")


@pytest.fixture(scope="session")
def avx512_wheel(wheelhouse: Path) -> wheel.WheelResult:
    return build("avx512", wheelhouse)


@pytest.fixture(scope="session")
def portable_wheel(wheelhouse: Path) -> wheel.WheelResult:
    return build("all", wheelhouse)


@pytest.fixture(scope="session")
def tuned_wheel(wheelhouse: Path) -> wheel.WheelResult:
    """The wheel tuned for this host's best recipe that can be a variant wheel (avx2 on Zen 1, avx512_bf16 on
    Zen 4 and, since amx has no tuned wheel, on Sapphire Rapids): one this CPU can run."""
    return build("native", wheelhouse)
