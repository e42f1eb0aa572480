"""aarch64 HWCAP/HWCAP2 decoding and the live getauxval() read.

The kernel tells each process which CPU features it may use through the auxiliary vector
(AT_HWCAP, AT_HWCAP2). The bit numbers below are those of the Linux uapi header
arch/arm64/include/uapi/asm/hwcap.h; the names are the strings the kernel prints in the
"Features" line of /proc/cpuinfo for the same bits, so both sources speak one vocabulary.
"""

from __future__ import annotations

import ctypes
from typing import Final

AT_HWCAP: Final = 16
AT_HWCAP2: Final = 26

# bit number -> /proc/cpuinfo name, for AT_HWCAP.
HWCAP_BITS: Final[dict[int, str]] = {
    0: "fp", 1: "asimd", 2: "evtstrm", 3: "aes", 4: "pmull", 5: "sha1", 6: "sha2", 7: "crc32",
    8: "atomics", 9: "fphp", 10: "asimdhp", 11: "cpuid", 12: "asimdrdm", 13: "jscvt", 14: "fcma",
    15: "lrcpc", 16: "dcpop", 17: "sha3", 18: "sm3", 19: "sm4", 20: "asimddp", 21: "sha512",
    22: "sve", 23: "asimdfhm", 24: "dit", 25: "uscat", 26: "ilrcpc", 27: "flagm", 28: "ssbs",
    29: "sb", 30: "paca", 31: "pacg",
}  # fmt: skip

# bit number -> /proc/cpuinfo name, for AT_HWCAP2.
HWCAP2_BITS: Final[dict[int, str]] = {
    0: "dcpodp", 1: "sve2", 2: "sveaes", 3: "svepmull", 4: "svebitperm", 5: "svesha3", 6: "svesm4",
    7: "flagm2", 8: "frint", 9: "svei8mm", 10: "svef32mm", 11: "svef64mm", 12: "svebf16",
    13: "i8mm", 14: "bf16", 15: "dgh", 16: "rng", 17: "bti", 18: "mte", 19: "ecv", 20: "afp",
    21: "rpres", 22: "mte3", 23: "sme", 24: "smei16i64", 25: "smef64f64", 26: "smei8i32",
    27: "smef16f32", 28: "smeb16f32", 29: "smef32f32", 30: "smefa64", 31: "wfxt", 32: "ebf16",
    33: "sveebf16", 34: "cssc", 35: "rprfm", 36: "sve2p1", 37: "sme2", 38: "sme2p1",
    39: "smei16i32", 40: "smebi32i32", 41: "smeb16b16", 42: "smef16f16", 43: "mops", 44: "hbc",
}  # fmt: skip


def _decode(value: int, table: dict[int, str]) -> set[str]:
    return {name for bit, name in table.items() if value >> bit & 1}


def decode_hwcaps(hwcap: int, hwcap2: int) -> frozenset[str]:
    """The feature names (cpuinfo spelling) whose bits are set in AT_HWCAP / AT_HWCAP2."""
    return frozenset(_decode(hwcap, HWCAP_BITS) | _decode(hwcap2, HWCAP2_BITS))


def encode_hwcaps(features: set[str] | frozenset[str]) -> tuple[int, int]:
    """The (AT_HWCAP, AT_HWCAP2) values that carry `features`; names without a bit are ignored."""
    hwcap = sum(1 << bit for bit, name in HWCAP_BITS.items() if name in features)
    hwcap2 = sum(1 << bit for bit, name in HWCAP2_BITS.items() if name in features)
    return hwcap, hwcap2


def read_live_hwcaps() -> tuple[int, int] | None:
    """This process's (AT_HWCAP, AT_HWCAP2) from libc getauxval(), or None when libc lacks it."""
    try:
        # CDLL(None) is the running program's namespace, which includes libc: no library search.
        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError):
        return None
    getauxval.restype = ctypes.c_ulong
    getauxval.argtypes = [ctypes.c_ulong]
    return int(getauxval(AT_HWCAP)), int(getauxval(AT_HWCAP2))
