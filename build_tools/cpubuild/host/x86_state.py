"""x86-64 OS support checks: which CPU features the OS lets this process use.

A CPU flag says the silicon has an instruction set; the process may only use it when the OS saves
and restores the matching register state. The OS says so in XCR0 (read with XGETBV, allowed only
when CPUID reports OSXSAVE), and Linux additionally requires each process to ask for the AMX tile
data state with arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) (Linux 5.16+).

The live reads run a few bytes of machine code from an executable mapping (CPUID and XGETBV have no
libc wrapper); they are only attempted on x86-64 and every failure is reported, never raised.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
from dataclasses import dataclass
from typing import Final

# XCR0 state-component bits (Intel SDM vol. 1, 13.1).
XCR0_SSE: Final = 1 << 1
XCR0_AVX: Final = 1 << 2  # upper halves of YMM registers
XCR0_OPMASK: Final = 1 << 5  # AVX-512 k0-k7
XCR0_ZMM_HI256: Final = 1 << 6  # upper halves of ZMM0-15
XCR0_HI16_ZMM: Final = 1 << 7  # ZMM16-31
XCR0_XTILECFG: Final = 1 << 17
XCR0_XTILEDATA: Final = 1 << 18

YMM_STATE: Final = XCR0_SSE | XCR0_AVX
ZMM_STATE: Final = YMM_STATE | XCR0_OPMASK | XCR0_ZMM_HI256 | XCR0_HI16_ZMM
AMX_STATE: Final = XCR0_XTILECFG | XCR0_XTILEDATA

# Flags whose instructions use YMM state (VEX-encoded 256-bit). avx512* and amx* are matched by prefix.
YMM_FEATURES: Final = frozenset(
    {"avx", "avx2", "fma", "f16c", "fma4", "xop", "vaes", "vpclmulqdq", "avx_vnni", "avx_vnni_int8",
     "avx_vnni_int16", "avx_ifma", "avx_ne_convert"}
)  # fmt: skip

ARCH_REQ_XCOMP_PERM: Final = 0x1023
XFEATURE_XTILEDATA: Final = 18
SYS_ARCH_PRCTL: Final = 158  # x86-64 syscall number


def required_state(feature: str) -> tuple[int, str] | None:
    """(XCR0 mask, what it is) that `feature` needs enabled, or None when it needs no extended state."""
    if feature.startswith("amx"):
        return AMX_STATE, "the AMX tile state (XCR0 bits 17, 18)"
    if feature.startswith("avx512"):
        return ZMM_STATE, "the AVX-512 opmask/ZMM state (XCR0 bits 1, 2, 5, 6, 7)"
    if feature in YMM_FEATURES:
        return YMM_STATE, "the AVX YMM state (XCR0 bits 1, 2)"
    return None


@dataclass(frozen=True)
class AmxPermission:
    """The answer to arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)."""

    granted: bool
    detail: str  # "granted", or the errno name with its message

    @classmethod
    def from_text(cls, text: str) -> AmxPermission:
        """Parse a fixture's answer: "granted" or an errno name such as "EPERM"."""
        if text == "granted":
            return cls(True, "granted")
        return cls.refused(getattr(errno, text, 0), text)

    @classmethod
    def refused(cls, code: int, name: str | None = None) -> AmxPermission:
        name = name or errno.errorcode.get(code, f"errno {code}")
        message = os.strerror(code) if code else "refused"
        return cls(False, f"{name} ({message})")


# --- live reads ------------------------------------------------------------------------------

# uint32_t cpuid_reg(uint32_t leaf /*edi*/, uint32_t subleaf /*esi*/, uint32_t reg_index /*edx*/)
# returns eax/ebx/ecx/edx of CPUID(leaf, subleaf) selected by reg_index (0..3).
_CPUID_CODE: Final = bytes.fromhex(
    "53"  # push rbx (callee-saved, clobbered by cpuid)
    "4189d0"  # mov r8d, edx
    "89f8"  # mov eax, edi
    "89f1"  # mov ecx, esi
    "0fa2"  # cpuid
    "4183f801"
    "7502"
    "89d8"  # cmp r8d,1; jne +2; mov eax, ebx
    "4183f802"
    "7502"
    "89c8"  # cmp r8d,2; jne +2; mov eax, ecx
    "4183f803"
    "7502"
    "89d0"  # cmp r8d,3; jne +2; mov eax, edx
    "5b"  # pop rbx
    "c3"  # ret
)
# uint64_t xgetbv(uint32_t index /*edi*/)
_XGETBV_CODE: Final = bytes.fromhex(
    "89f9"  # mov ecx, edi
    "0f01d0"  # xgetbv
    "48c1e220"  # shl rdx, 32
    "4809d0"  # or rax, rdx
    "c3"  # ret
)


class _MachineCode:
    """Callable functions made from raw x86-64 bytes in one executable anonymous mapping."""

    def __init__(self) -> None:
        size = mmap.PAGESIZE
        self._map = mmap.mmap(-1, size, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self._map.write(_CPUID_CODE.ljust(64, b"\xcc") + _XGETBV_CODE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        self.cpuid_reg = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32)(
            base
        )
        self.xgetbv = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint32)(base + 64)


def read_live_xcr0() -> tuple[int | None, str | None]:
    """(XCR0, None), or (None, why it could not be read). XCR0 is 0 when the OS has not enabled XSAVE."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None, f"XCR0 exists only on x86-64, not on {platform.machine()}"
    try:
        code = _MachineCode()
    except (OSError, ValueError) as exc:  # e.g. a W^X policy refuses executable anonymous memory
        return None, f"could not map executable memory to run XGETBV ({exc})"
    osxsave = code.cpuid_reg(1, 0, 2) >> 27 & 1  # CPUID.1:ECX.OSXSAVE[bit 27]
    if not osxsave:
        return 0, None
    return int(code.xgetbv(0)), None


def request_live_amx_permission() -> AmxPermission:
    """Ask Linux for AMX tile data permission for this process (idempotent; Linux 5.16+)."""
    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    result = syscall(
        ctypes.c_long(SYS_ARCH_PRCTL), ctypes.c_long(ARCH_REQ_XCOMP_PERM), ctypes.c_ulong(XFEATURE_XTILEDATA)
    )
    if result == 0:
        return AmxPermission(True, "granted")
    return AmxPermission.refused(ctypes.get_errno())
