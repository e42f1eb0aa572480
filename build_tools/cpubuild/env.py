"""The CPUBUILD_* environment variables: one registry, read by one function.

Every setting the environment can give cpubuild is a row of SETTINGS (name, type, default, one line of
help); `setting()` (typed: `text()`, `path()`) is the only reader, with the one precedence: command-line
flag > environment > default. `unknown()` names the CPUBUILD_* variables that are set but mean nothing
(a typo), each with its closest known name, so a misspelt variable is reported, not silently ignored.
Standard library only: the recipe loader, which CMake runs before anything is installed, reads it.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PREFIX: Final = "CPUBUILD_"


@dataclass(frozen=True)
class EnvSetting:
    name: str
    type: type  # str or Path
    default: str  # what applies when neither the flag nor the variable is given, in words
    help: str


SETTINGS: Final[dict[str, EnvSetting]] = {
    s.name: s
    for s in (
        EnvSetting(
            "CPUBUILD_RECIPES", Path, "the repository's recipes/", "the folder of recipes/<arch>/<name>.toml"
        ),
        EnvSetting("CPUBUILD_CXX", str, "c++", "the C++ compiler to check flags with and build with"),
        EnvSetting(
            "CPUBUILD_CACHE_DIR", Path, "$XDG_CACHE_HOME/cpubuild or ~/.cache/cpubuild",
            "where successful flag probes are cached",
        ),
        EnvSetting("CPUBUILD_ISA", str, "none (required)", "the recipe to build: a name, 'all' or 'native'"),
        EnvSetting("CPUBUILD_ARCH", str, "this host's", "the architecture to build for: x86_64 or aarch64"),
    )
}  # fmt: skip


Environ = Mapping[str, str]


def setting(name: str, explicit: str | Path | None = None, environ: Environ | None = None) -> object:
    """Setting `name`: `explicit` (the command-line flag) > $name > None (then the caller's default).

    An empty variable counts as unset. The value has the registry's type (str or Path).
    """
    spec = SETTINGS[name]  # KeyError: a setting missing from the registry is a programming error
    if explicit is not None:
        return explicit
    value = (os.environ if environ is None else environ).get(name)
    return spec.type(value) if value else None


def text(name: str, explicit: str | None = None, environ: Environ | None = None) -> str | None:
    """`setting()` of a str setting."""
    value = setting(name, explicit, environ)
    assert value is None or isinstance(value, str), name
    return value


def path(name: str, explicit: Path | None = None, environ: Environ | None = None) -> Path | None:
    """`setting()` of a Path setting."""
    value = setting(name, explicit, environ)
    assert value is None or isinstance(value, Path), name
    return value


def unknown(environ: Environ | None = None) -> list[str]:
    """One warning sentence per set CPUBUILD_* variable that is not in the registry."""
    environ = os.environ if environ is None else environ
    warnings = []
    for name in sorted(key for key in environ if key.startswith(PREFIX) and key not in SETTINGS):
        # Compare what follows the shared prefix (else every unknown name resembles every known one).
        suffixes = {known.removeprefix(PREFIX): known for known in SETTINGS}
        close = difflib.get_close_matches(name.removeprefix(PREFIX), suffixes, n=1, cutoff=0.6)
        hint = f"did you mean {suffixes[close[0]]}?" if close else f"known: {', '.join(SETTINGS)}"
        warnings.append(f"{name} is set but is not a cpubuild setting, so it is ignored; {hint}")
    return warnings
