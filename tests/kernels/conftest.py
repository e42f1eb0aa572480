from __future__ import annotations

from pathlib import Path

import pytest

from kernels.helpers import host_variants, load, recipes


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Tests asking for `variant` run once per x86_64 recipe (native_lib_dir builds them all); those the
    # host cannot run skip with why.
    explicit = any("variant" in m.args[0] for m in metafunc.definition.iter_markers("parametrize"))
    if "variant" in metafunc.fixturenames and not explicit:
        metafunc.parametrize("variant", [recipe.name for recipe in recipes("x86_64")])


@pytest.fixture
def kernels(native_lib_dir: Path, variant: str):
    runnable = host_variants(native_lib_dir)
    if variant not in runnable:
        pytest.skip(f"this host cannot run the {variant} variant (runnable here: {', '.join(runnable)})")
    return load(native_lib_dir, variant)
