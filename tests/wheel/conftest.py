"""Wheels built once per session, in stable build folders under build/test-wheels (ccache-friendly)."""

from __future__ import annotations

from pathlib import Path

import pytest
from wheel_support import build

from cpubuild import wheel
from cpubuild.host.detect import detect_host
from cpubuild.recipes import load_recipes
from cpubuild.selection import select


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
    """The wheel tuned for this host's best recipe: one this CPU can run (avx2 on Zen 1, avx512 on Zen 4)."""
    return build(select(detect_host(), load_recipes()).best.name, wheelhouse)
