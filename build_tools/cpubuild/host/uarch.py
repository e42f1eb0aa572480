"""Microarchitecture names (from archspec's validated CPU taxonomy) and the x86-64 psABI level.

archspec's own `host()` reads the machine it runs on; cpubuild must name fixtures' CPUs too (an
aarch64 dump on an x86-64 host), so this module applies archspec's selection rule to the parsed
vendor and flags of any machine: the deepest known target whose features the CPU has, from the
CPU's vendor, that descends from the best generic level.
"""

from __future__ import annotations

from typing import Final

from cpubuild.features import AARCH64

# x86-64 psABI micro-architecture levels, in /proc/cpuinfo spelling ("pni" is SSE3, "abm" covers LZCNT).
PSABI_LEVELS: Final[tuple[tuple[str, frozenset[str]], ...]] = (
    ("x86-64-v2", frozenset({"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"})),
    ("x86-64-v3", frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"})),
    ("x86-64-v4", frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})),
)


def psabi_level(usable_features: frozenset[str]) -> str:
    """The highest x86-64 psABI level whose features are all usable (each level includes the lower)."""
    level = "x86-64-v1"
    for name, required in PSABI_LEVELS:
        if not required <= usable_features:
            break
        level = name
    return level


def microarchitecture_name(arch: str, vendor: str, features: frozenset[str], cpu_part: str = "") -> str:
    """archspec's name for a CPU with this vendor, flags and (aarch64) part number, e.g. "icelake"."""
    import archspec.cpu  # imported here: it costs ~30 ms and only this function needs it

    targets = archspec.cpu.TARGETS
    if arch not in targets:
        return arch
    root = targets[arch]
    flags = set(features)
    if "ssse3" in flags:
        flags.add("sse3")  # archspec's rule: Linux prints SSE3 as "pni", and SSSE3 implies it

    def compatible(target: archspec.cpu.Microarchitecture) -> bool:
        if target.family != root or target.vendor not in (vendor, "generic"):
            return False
        if arch == AARCH64 and target.vendor == "generic" and target.name != AARCH64:
            return False  # archspec cannot tell armv8.x levels apart from flags
        return target.features <= flags

    candidates = [target for target in targets.values() if compatible(target)]
    if not candidates:
        return arch

    def depth(target: archspec.cpu.Microarchitecture) -> tuple[int, int]:
        return len(target.ancestors), len(target.features)

    best_generic = max((t for t in candidates if t.vendor == "generic"), key=depth, default=root)
    if cpu_part and any(t.cpu_part == cpu_part for t in candidates):
        candidates = [t for t in candidates if t.cpu_part == cpu_part]
    specific = [t for t in candidates if t > best_generic]
    return max(specific, key=depth).name if specific else best_generic.name


ARM_IMPLEMENTERS: Final[dict[str, str]] = {
    "0x41": "ARM",
    "0x61": "Apple",
    "0xc0": "Ampere",
    "0x48": "HiSilicon",
}

# Arm Ltd. part numbers ("CPU part" with implementer 0x41) -> product names, for the model line.
ARM_PARTS: Final[dict[str, str]] = {
    "0xd03": "Cortex-A53", "0xd07": "Cortex-A57", "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse N1", "0xd40": "Neoverse V1", "0xd49": "Neoverse N2", "0xd4f": "Neoverse V2",
    "0xd8e": "Neoverse N3", "0xd84": "Neoverse V3",
}  # fmt: skip


def arm_vendor(implementer: str) -> str:
    """archspec's vendor name for an aarch64 "CPU implementer" code (e.g. 0x41 -> "ARM")."""
    import archspec.cpu.schema

    vendors = archspec.cpu.schema.TARGETS_JSON["conversions"]["arm_vendors"]
    return vendors.get(implementer, ARM_IMPLEMENTERS.get(implementer, implementer or "generic"))


def arm_model_name(implementer: str, part: str) -> str:
    """A readable model for an aarch64 CPU, which /proc/cpuinfo does not name."""
    if implementer == "0x41" and part in ARM_PARTS:
        return ARM_PARTS[part]
    if not implementer and not part:
        return "unknown aarch64 CPU"
    return f"implementer {implementer or '?'} part {part or '?'}"
