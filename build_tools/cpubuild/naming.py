"""Wheel names: the portable wheel is a plain wheel; a tuned wheel is a PEP 825 variant wheel.

Portable (every kernel variant, ``--isa all``): ``cpullm-0.1.0-py3-none-<platform>.whl``, what any
installer installs. Tuned (one recipe): ``cpullm-0.1.0-py3-none-<platform>-<label>.whl``, the label being
the recipe's name (``null`` for a recipe that needs no CPU feature); `cpubuild.wheel_variants` writes
the properties the label stands for.

Two older styles were removed because plain pip got them wrong: a local version label per recipe
(``+avx2``; pip orders labels as strings and installed ``+generic`` on an AVX-512 host, and public
indexes refuse local versions) and a distribution per recipe (``cpullm_avx2``; pip ignores
Provides-Dist, so two flavours installed over each other's files).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

BASE_NAME: Final = "cpullm"
PORTABLE: Final = "all"
REMOVED_STYLES_MESSAGE: Final = (
    "--name-style (and its environment variable) was removed: local version labels (cpullm-0.1.0+avx2) "
    "sort as strings, so plain pip installed +generic on AVX-512 hosts, and public indexes refuse them; "
    "per-recipe distributions (cpullm_avx2) install beside cpullm over the same files. A tuned wheel is "
    "now a PEP 825 variant wheel (cpullm-0.1.0-py3-none-<platform>-avx2.whl): plain pip skips it and "
    "installs the portable wheel (--isa all); `cpubuild install` or a variant-aware installer picks the "
    "best variant. Drop the option."
)


@dataclass(frozen=True)
class WheelName:
    """The parts of a wheel file name (PEP 427, plus PEP 825's variant label), escaped as in the name."""

    distribution: str
    version: str
    python: str
    abi: str
    platform: str
    variant: str | None = None  # the PEP 825 variant label; None for a plain wheel

    @classmethod
    def parse(cls, filename: str) -> WheelName:
        parts = filename.removesuffix(".whl").split("-")
        if not filename.endswith(".whl") or len(parts) not in (5, 6, 7):
            form = "name-version[-build]-python-abi-platform[-label].whl"
            raise ValueError(f"{filename!r} is not a wheel file name ({form})")
        # A build tag (third part) starts with a digit; a python tag never does.
        has_build = len(parts) > 5 and parts[2][:1].isdigit()
        variant = parts[-1] if len(parts) - has_build == 6 else None
        tags = parts[-4:-1] if variant is not None else parts[-3:]
        if len(parts) == 7 and not has_build:
            raise ValueError(f"{filename!r} is not a wheel file name: its build tag must start with a digit")
        return cls(parts[0], parts[1], *tags, variant=variant)

    @property
    def filename(self) -> str:
        label = f"-{self.variant}" if self.variant else ""
        return f"{self.distribution}-{self.version}-{self.python}-{self.abi}-{self.platform}{label}.whl"

    @property
    def dist_info(self) -> str:
        return f"{self.distribution}-{self.version}.dist-info"

    @property
    def plain_filename(self) -> str:
        """The name without the variant label: what a non-variant-aware pip accepts for a local file."""
        return f"{self.distribution}-{self.version}-{self.python}-{self.abi}-{self.platform}.whl"


def escape(name: str) -> str:
    """A distribution name as wheel file names and dist-info folders spell it (PEP 427 / 503)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def project(name: str) -> str:
    """A distribution name normalized as PEP 503 index URLs spell it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def target_of(name: WheelName) -> str | None:
    """The variant label a wheel's name carries: its recipe, or ``null`` for one that needs no CPU feature.

    None for a plain wheel (the portable one)."""
    return name.variant
