"""The JSON documents of `cpubuild detect --json` and `cpubuild recipes --json` (schema_version 1).

The detect schema is documented in README.md ("cpubuild detect"); fields are only ever added within
one schema_version, never renamed or removed.
"""

from __future__ import annotations

from typing import Any, Final

from cpubuild.features import known_features
from cpubuild.host.detect import HostInfo
from cpubuild.recipes import Recipe
from cpubuild.selection import Selection

SCHEMA_VERSION: Final = 1


def _hex(value: int | None) -> str | None:
    return None if value is None else f"{value:#x}"


def host_document(host: HostInfo) -> dict[str, Any]:
    return {
        "arch": host.arch,
        "vendor": host.vendor,
        "model_name": host.model_name,
        "microarchitecture": host.microarchitecture,
        "psabi_level": host.psabi_level,
        "usable_cores": host.cores.usable,
        "cores": {
            "affinity": host.cores.affinity,
            "cgroup_quota": host.cores.quota,
            "quota_source": host.cores.quota_source,
            "usable": host.cores.usable,
        },
        "xcr0": _hex(host.xcr0),
        "amx_permission": host.amx_permission.detail if host.amx_permission else None,
        "hwcap": _hex(host.hwcap),
        "hwcap2": _hex(host.hwcap2),
        "notes": list(host.notes),
    }


def features_document(host: HostInfo) -> dict[str, Any]:
    order = {name: index for index, name in enumerate(known_features(host.arch))}
    unusable = sorted(host.unusable.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))
    return {
        "usable": host.known_usable(),
        "unusable": [{"name": name, "reason": reason} for name, reason in unusable],
        "missing": host.known_missing(),
        "cpu_flags": sorted(host.cpu_features),
    }


def detect_document(selection: Selection, probe_seconds: float | None = None) -> dict[str, Any]:
    """The whole `cpubuild detect --json` document."""
    host = selection.host
    return {
        "schema_version": SCHEMA_VERSION,
        "probe_seconds": probe_seconds,
        "host": host_document(host),
        "features": features_document(host),
        "recipes": [
            {
                "name": verdict.recipe.name,
                "priority": verdict.recipe.priority,
                "runnable": verdict.runnable,
                "missing": list(verdict.missing),
                "unusable": [{"name": name, "reason": reason} for name, reason in verdict.unusable],
                "why_not": verdict.why_not() or None,
            }
            for verdict in selection.verdicts
        ],
        "best": selection.best.name if selection.best else None,
    }


def recipe_document(recipe: Recipe) -> dict[str, Any]:
    return {
        "name": recipe.name,
        "arch": recipe.arch,
        "description": recipe.description,
        "parent": recipe.parent,
        "priority": recipe.priority,
        "features": list(recipe.features),
        "own_features": list(recipe.own_features),
        "kernels": list(recipe.kernels),
        "own_kernels": list(recipe.own_kernels),
        "flags": {
            family: [{"min_version": e.min_version, "flags": list(e.flags)} for e in entries]
            for family, entries in recipe.flags.items()
        },
        "path": str(recipe.path),
    }
