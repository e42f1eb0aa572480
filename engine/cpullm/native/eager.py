"""Load the native variant when ``import cpullm`` runs (standard library only).

A wheel whose variant this CPU cannot run must fail at import with ``VariantError`` (an ImportError)
naming the missing features. Two exceptions keep the package usable where that would be wrong:

- a source checkout with no native build (no ``_lib`` folder and no ``CPULLM_LIB_DIR``): nothing to load
  yet; the first real use raises instead;
- the ``cpullm`` command itself (``cpullm ...`` or ``python -m cpullm ...``): ``cpullm info`` must be able
  to explain the refusal, so the error is kept in ``import_error`` and every other subcommand re-raises it.
"""

from __future__ import annotations

import os
import sys

from cpullm import env
from cpullm.native import loader

import_error: loader.VariantError | None = None


def _running_the_cpullm_command() -> bool:
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if argv0 == "cpullm":
        return True
    orig = list(getattr(sys, "orig_argv", []))
    return any(orig[i] == "-m" and orig[i + 1] == "cpullm" for i in range(len(orig) - 1))


def load_at_import() -> None:
    global import_error
    if not loader.lib_dir().is_dir() and env.get("CPULLM_LIB_DIR") is None:
        return
    try:
        loader.native()
    except loader.VariantError as error:
        if not _running_the_cpullm_command():
            raise
        import_error = error
