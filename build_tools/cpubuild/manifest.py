"""The build manifest inside every wheel: ``cpullm/_build_info.json``.

It records what the wheel was built from and with (recipe, required features, flags, compiler, CMake,
source commit and date) so `cpubuild install` can choose among wheels and a user can tell what they run.
No paths and no build times: the manifest must be identical for two builds of the same commit.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any, Final

MANIFEST_PATH: Final = "cpullm/_build_info.json"
VARIANTS_PATH: Final = "cpullm/_lib/_variants.json"
SCHEMA_VERSION: Final = 1


class ManifestError(Exception):
    """A wheel has no readable manifest or variant table."""


def _cmake_var(text: str, name: str) -> str | None:
    match = re.search(rf'set\({name} "([^"]*)"\)', text)
    return match.group(1) if match else None


def toolchain_from_build_dir(build_dir: Path) -> dict[str, str]:
    """Compiler id/version and CMake version, read from CMake's own records in the build folder."""
    found = sorted(build_dir.glob("CMakeFiles/*/CMakeCXXCompiler.cmake"))
    if not found:
        return {"compiler": "unknown", "compiler_id": "unknown", "compiler_version": "unknown",
                "cmake_version": "unknown"}  # fmt: skip
    text = found[-1].read_text()
    compiler_id = _cmake_var(text, "CMAKE_CXX_COMPILER_ID") or "unknown"
    version = _cmake_var(text, "CMAKE_CXX_COMPILER_VERSION") or "unknown"
    command = Path(_cmake_var(text, "CMAKE_CXX_COMPILER") or "c++").name
    return {
        "compiler": f"{command} ({compiler_id} {version})",
        "compiler_id": compiler_id,
        "compiler_version": version,
        "cmake_version": found[-1].parent.name,
    }


def build_info(
    *,
    target: str,
    table: dict[str, Any],
    toolchain: dict[str, str],
    source: dict[str, object],
    source_date: str,
    variant_label: str | None,
    platform_tag: str,
) -> dict[str, Any]:
    """The manifest of a wheel built for `target` (a recipe name or "all") from variant `table`."""
    variants = [
        {"name": v["name"], "priority": v["priority"], "features": v["features"], "flags": v["flags"]}
        for v in sorted(table["variants"], key=lambda v: v["priority"])
    ]
    # The wheel runs wherever its least demanding variant runs.
    baseline = variants[0] if variants else {"features": [], "flags": []}
    return {
        "schema_version": SCHEMA_VERSION,
        "builder": "cpubuild",  # a plain `pip install .` writes "cmake" (cmake/build_info.py)
        "recipe": target,
        "arch": table["arch"],
        "portable": target == "all",
        "required_features": baseline["features"],
        "flags": baseline["flags"] if target == "all" else variants[-1]["flags"],
        "variants": variants,
        **toolchain,
        "source_commit": source["commit"],
        "source_dirty": source["dirty"],
        "source_date": source_date,
        "variant_label": variant_label,  # PEP 825 label in the file name; None for the portable wheel
        "platform_tag": platform_tag,
    }


def read_from_wheel(wheel: Path) -> dict[str, Any]:
    """The manifest of `wheel`; for a wheel without one, a minimal manifest from its variant table."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            if MANIFEST_PATH in names:
                return json.loads(archive.read(MANIFEST_PATH))
            if VARIANTS_PATH in names:
                table = json.loads(archive.read(VARIANTS_PATH))
                variants = sorted(table["variants"], key=lambda v: v["priority"])
                return {
                    "recipe": variants[0]["name"] if len(variants) == 1 else "all",
                    "arch": table["arch"],
                    "portable": len(variants) > 1,
                    "required_features": variants[0]["features"] if variants else [],
                    "variants": variants,
                }
    except (OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise ManifestError(f"cannot read {wheel.name}: {exc}") from None
    raise ManifestError(
        f"{wheel.name} has neither {MANIFEST_PATH} nor {VARIANTS_PATH}; is it a cpullm wheel?"
    )
