"""`cpullm info`: which native variant this installation loads, why, and what this CPU can use.

Standard library only, so it runs anywhere the package imports (including an emulated aarch64 Python
with nothing else installed): `cpubuild verify` calls `python -m cpullm info --json --selftest`.
"""

from __future__ import annotations

import ctypes
import json
import platform
import sys
from pathlib import Path
from typing import Any

from cpullm import __version__
from cpullm.native import eager, loader

SELFTEST_REPORT_BYTES = 64 * 1024


def run_selftest(lib: ctypes.CDLL) -> dict[str, Any]:
    """Run the variant library's kernel self-test when it has one (`cpullm_selftest`, 0 = pass)."""
    try:
        fn = lib.cpullm_selftest
    except AttributeError:
        return {"ran": False, "passed": None, "report": "no self-test in this build"}
    buf = ctypes.create_string_buffer(SELFTEST_REPORT_BYTES)
    status = fn(buf, SELFTEST_REPORT_BYTES)
    report = buf.value.decode(errors="replace")
    return {"ran": True, "passed": status == 0, "status": status, "report": report}


def _build_info(directory: Path) -> dict[str, Any] | None:
    path = directory.parent / "_build_info.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _candidates(directory: Path, host: loader.HostFeatures) -> list[dict[str, Any]]:
    variants = loader._variants(loader._read_table(directory))
    return [
        {
            "name": v.name,
            "priority": v.priority,
            "score": v.score(host),
            "runnable": v.score(host) > 0,
            "missing": v.missing(host),
        }
        for v in sorted(variants, key=lambda v: -v.priority)
    ]


def collect(selftest: bool = False) -> dict[str, Any]:
    """Everything `cpullm info` shows, as plain data. `error` is set when no variant can be loaded."""
    directory = loader.lib_dir()
    info: dict[str, Any] = {
        "cpullm_version": __version__,
        "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "lib_dir": str(directory.resolve()),
        "variant": None,
        "reason": None,
        "error": None,
        "build": _build_info(directory),
    }
    try:
        host = loader.probe_host(directory)
    except loader.VariantError as error:
        info["error"] = str(error)
        return info
    info["host"] = {"arch": host.arch, "usable": sorted(host.usable), "unusable": dict(host.unusable)}
    try:
        info["candidates"] = _candidates(directory, host)
        if eager.import_error is not None:
            raise eager.import_error
        lib, selection = loader.native()
    except loader.VariantError as error:
        info["error"] = str(error)
        return info
    info["variant"] = selection.variant.name
    info["reason"] = selection.reason
    info["variant_features"] = list(selection.variant.features)
    info["kernel_sets"] = lib.cpullm_variant_kernel_sets().decode().split(",")
    info["library"] = str(selection.lib_dir / selection.variant.library)
    if selftest:
        info["selftest"] = run_selftest(lib)
    return info


def render(info: dict[str, Any]) -> str:
    """The human-readable form of `collect()`."""
    lines = [f"cpullm {info['cpullm_version']}  ({info['python']})"]
    if info.get("variant"):
        lines.append(f"variant:   {info['variant']}  ({info['reason']})")
        lines.append(f"requires:  {', '.join(info['variant_features']) or 'nothing beyond the baseline'}")
        lines.append(f"kernels:   {', '.join(info['kernel_sets'])}")
    if info.get("error"):
        lines.append(f"error:     {info['error']}")
    host = info.get("host")
    if host:
        lines.append(f"host:      {host['arch']}; usable features: {', '.join(host['usable']) or 'none'}")
        for feature, why in sorted(host["unusable"].items()):
            lines.append(f"           {feature} present but unusable: {why}")
    for cand in info.get("candidates", []):
        state = "runnable" if cand["runnable"] else f"needs {', '.join(cand['missing'])}"
        lines.append(f"  {cand['name']:<14} priority {cand['priority']:>3}  {state}")
    build = info.get("build")
    if build:
        # "cmake": built by plain `pip install .`, without cpubuild's repair and reproducible archive.
        by = {"cmake": " by pip/CMake (not cpubuild)"}.get(str(build.get("builder")), "")
        lines.append(
            f"built:     recipe {build.get('recipe')} with {build.get('compiler')}{by}, "
            f"source {str(build.get('source_commit'))[:12]} ({build.get('source_date')})"
        )
    selftest = info.get("selftest")
    if selftest:
        verdict = "passed" if selftest["passed"] else ("failed" if selftest["ran"] else "skipped")
        lines.append(f"self-test: {verdict}: {selftest['report'].strip()}")
    return "\n".join(lines)


def main(as_json: bool, selftest: bool) -> int:
    info = collect(selftest=selftest)
    print(json.dumps(info, indent=2) if as_json else render(info))
    failed = info["error"] is not None or (info.get("selftest") or {}).get("passed") is False
    return 1 if failed else 0
