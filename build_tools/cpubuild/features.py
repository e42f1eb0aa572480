"""The CPU feature vocabulary: the one list of feature names recipes, the probe and the engine use.

Names follow the Linux /proc/cpuinfo spelling ("flags" on x86-64, "Features" on aarch64), so a
feature in a recipe, in `cpubuild detect --json` and in the engine's runtime probe is the same string.
"""

from __future__ import annotations

from typing import Final

X86_64: Final = "x86_64"
AARCH64: Final = "aarch64"
ARCHES: Final = (X86_64, AARCH64)

# Features a recipe may require, per architecture, with a one-line description each.
X86_FEATURES: Final[dict[str, str]] = {
    "sse4_2": "SSE4.2",
    "avx": "AVX (256-bit float vectors; needs OS-enabled YMM state)",
    "avx2": "AVX2 (256-bit integer vectors)",
    "fma": "FMA3 fused multiply-add",
    "f16c": "F16C half-precision conversions",
    "bmi2": "BMI2 bit manipulation",
    # Scalar instructions -march=x86-64-v3 lets the compiler use anywhere; some hypervisors hide them.
    "popcnt": "POPCNT population count",
    "bmi1": "BMI1 bit manipulation",
    "abm": "LZCNT leading-zero count (cpuinfo calls it abm)",
    "movbe": "MOVBE byte-swapping loads and stores",
    "avx512f": "AVX-512 Foundation (needs OS-enabled ZMM/opmask state)",
    "avx512bw": "AVX-512 byte and word",
    "avx512vl": "AVX-512 vector length extensions",
    "avx512dq": "AVX-512 doubleword and quadword",
    "avx512cd": "AVX-512 conflict detection",
    "avx512_vnni": "AVX-512 VNNI integer dot products",
    "avx512_bf16": "AVX-512 BF16 dot products",
    "avx512_fp16": "AVX-512 FP16 arithmetic",
    "avx_vnni": "AVX-VNNI (VEX-encoded VNNI, 256-bit)",
    "amx_tile": "AMX tile registers (needs OS-enabled tile state and arch_prctl permission)",
    "amx_bf16": "AMX BF16 tile multiply",
    "amx_int8": "AMX INT8 tile multiply",
}

AARCH64_FEATURES: Final[dict[str, str]] = {
    "asimd": "Advanced SIMD (NEON)",
    "asimddp": "dot product (SDOT/UDOT)",
    "asimdhp": "Advanced SIMD half-precision arithmetic",
    "fphp": "scalar half-precision arithmetic",
    "bf16": "BFloat16 instructions",
    "i8mm": "int8 matrix multiply (SMMLA)",
    "sve": "Scalable Vector Extension",
    "sve2": "Scalable Vector Extension 2",
}

FEATURES: Final[dict[str, dict[str, str]]] = {X86_64: X86_FEATURES, AARCH64: AARCH64_FEATURES}


def known_features(arch: str) -> tuple[str, ...]:
    """The feature names valid for `arch`, in display order."""
    try:
        return tuple(FEATURES[arch])
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHES)}") from None
