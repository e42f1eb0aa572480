"""The CPULLM_* environment variables of the engine: one registry, read by one function.

Each row of ``SETTINGS`` is a variable the engine reads (name, default, one line of help); ``get()`` is
the only reader. The server's variables are its flags' (``CPULLM_<FLAG>``, see
:mod:`cpullm.server.settings`). ``unknown(environ, also_known)`` names the CPULLM_* variables that are set
but mean nothing, each with its closest known name, so a misspelt variable is reported, not ignored.
Standard library only: it runs at ``import cpullm``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

PREFIX: Final = "CPULLM_"


@dataclass(frozen=True)
class EnvSetting:
    name: str
    default: str  # what applies when the variable is unset, in words
    help: str


SETTINGS: Final[dict[str, EnvSetting]] = {
    s.name: s
    for s in (
        EnvSetting("CPULLM_ISA", "the best runnable variant", "load this variant (refused if it cannot run)"),
        EnvSetting("CPULLM_LIB_DIR", "cpullm/_lib", "the folder of the native variant libraries"),
        EnvSetting("CPULLM_THREADS", "the usable cores", "threads for the native kernels"),
        EnvSetting("CPULLM_CACHE_DIR", "~/.cache/cpullm/models", "where the default model is cached"),
    )
}  # fmt: skip


def get(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of registered variable `name`, or None when it is unset or empty."""
    SETTINGS[name]  # KeyError: a variable missing from the registry is a programming error
    value = (os.environ if environ is None else environ).get(name)
    return value or None


def unknown(environ: Mapping[str, str] | None = None, also_known: Iterable[str] = ()) -> list[str]:
    """One warning sentence per set CPULLM_* variable that no registry knows (a typo, or a stale name)."""
    known = sorted({*SETTINGS, *also_known})
    warnings = []
    for name in sorted(os.environ if environ is None else environ):
        if name.startswith(PREFIX) and name not in known:
            # Compared without the shared prefix, which would make every name look close.
            suffixes = [k.removeprefix(PREFIX) for k in known]
            close = difflib.get_close_matches(name.removeprefix(PREFIX), suffixes, n=1)
            hint = f"; did you mean {PREFIX}{close[0]}?" if close else f"; known: {', '.join(known)}"
            warnings.append(f"{name} is set but cpullm does not read it{hint}")
    return warnings
