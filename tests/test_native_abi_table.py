"""The Python binding of the C ABI is one table that matches the C sources, function for function."""

from __future__ import annotations

import re
from pathlib import Path

from cpullm.native import abi

CSRC = Path(__file__).resolve().parents[1] / "csrc"


def _exported(pattern: str, paths: list[Path]) -> set[str]:
    return {name for p in paths for name in re.findall(pattern, p.read_text())}


def test_every_exported_variant_function_has_one_signature_and_no_more():
    sources = [p for p in CSRC.rglob("*") if p.suffix in {".h", ".cc"}]
    exported = _exported(r"CPULLM_\w*API\b[^(;{]*?\b(cpullm_[a-z0-9_]+)\s*\(", sources)
    assert exported == set(abi.SIGNATURES)


def test_every_probe_function_has_one_signature_and_no_more():
    declared = _exported(r"\b(cpullm_probe_[a-z0-9_]+)\s*\(", [CSRC / "include" / "cpullm" / "probe.h"])
    assert declared == set(abi.PROBE_SIGNATURES)


def test_argument_counts_match_the_declarations():
    """A changed C signature with a stale row is caught here (counts; types are checked by the tests
    that call each function)."""
    sources = "\n".join(p.read_text() for p in CSRC.rglob("*") if p.suffix in {".h", ".cc"})
    for name, (_, argtypes) in abi.SIGNATURES.items():
        match = re.search(r"CPULLM_\w*API\b[^(;{]*?\b" + name + r"\s*\(([^)]*)\)", sources)
        assert match, name
        params = match.group(1).strip()
        count = 0 if params in {"", "void"} else params.count(",") + 1
        assert count == len(argtypes), (name, params)
