"""Wheel names: a local version label per target, or a distinct distribution name per target.

Local style (default): ``cpullm-0.1.0+avx512.bf16-py3-none-<platform>.whl``: the recipe is the PEP 440
local label (normalized: ``_`` becomes ``.``), for private indexes and wheelhouses.
Dist style: ``cpullm_avx512_bf16-0.1.0-py3-none-<platform>.whl``: a distribution per target, for
indexes that refuse local versions; every one still installs the ``cpullm`` package.
The portable wheel (every variant, ``--isa all``) is plain ``cpullm-0.1.0-...`` in both styles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

BASE_NAME: Final = "cpullm"
PORTABLE: Final = "all"
NAME_STYLES: Final = ("local", "dist")


@dataclass(frozen=True)
class WheelName:
    """The parts of a wheel file name (PEP 427), escaped as they appear in the name."""

    distribution: str
    version: str
    python: str
    abi: str
    platform: str

    @classmethod
    def parse(cls, filename: str) -> WheelName:
        parts = filename.removesuffix(".whl").split("-")
        if not filename.endswith(".whl") or len(parts) not in (5, 6):
            raise ValueError(f"{filename!r} is not a wheel file name (name-version-python-abi-platform.whl)")
        return cls(parts[0], parts[1], parts[-3], parts[-2], parts[-1])

    @property
    def filename(self) -> str:
        return f"{self.distribution}-{self.version}-{self.python}-{self.abi}-{self.platform}.whl"

    @property
    def dist_info(self) -> str:
        return f"{self.distribution}-{self.version}.dist-info"


def local_label(recipe: str) -> str:
    """The PEP 440 local version label of a recipe: ``avx512_bf16`` -> ``avx512.bf16``."""
    return recipe.replace("_", ".").replace("-", ".").lower()


def recipe_from_label(label: str) -> str:
    """Inverse of `local_label` (recipe names use ``_`` and never ``.``)."""
    return label.replace(".", "_")


def escape(name: str) -> str:
    """A distribution name as wheel file names and dist-info folders spell it (PEP 427 / 503)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def identity(version: str, isa: str, style: str) -> tuple[str, str]:
    """(distribution name, version) of the wheel for target `isa` in naming `style`."""
    if style not in NAME_STYLES:
        raise ValueError(f"unknown name style {style!r}; use one of: {', '.join(NAME_STYLES)}")
    if isa == PORTABLE:
        return BASE_NAME, version
    if style == "local":
        return BASE_NAME, f"{version}+{local_label(isa)}"
    return f"{BASE_NAME}_{isa}", version


def target_of(name: WheelName) -> str | None:
    """The recipe a wheel's name says it was built for; None for the portable wheel or a foreign name."""
    if "+" in name.version:
        return recipe_from_label(name.version.split("+", 1)[1])
    prefix = f"{BASE_NAME}_"
    return name.distribution[len(prefix) :] if name.distribution.startswith(prefix) else None
