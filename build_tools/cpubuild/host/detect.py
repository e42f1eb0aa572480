"""HostInfo: what a machine's CPU is, and what this process may run on it.

`host_from_inputs()` builds a HostInfo from plain inputs (cpuinfo text, XCR0, the AMX permission
answer, HWCAP values, affinity, a cgroup root), so recorded machines (tests/fixtures/cpuinfo/)
drive exactly the code the live probe runs; `detect_host()` gathers those inputs from this machine.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

from cpubuild.features import AARCH64, ARCHES, X86_64, known_features
from cpubuild.host import cpuinfo, hwcap, uarch, x86_state
from cpubuild.host.cores import CoreCount, usable_cores
from cpubuild.host.x86_state import AmxPermission


class ProbeError(Exception):
    """The host could not be probed (unsupported architecture, unreadable machine file)."""


@dataclass(frozen=True)
class ProbeInputs:
    """Everything the probe reads, so a recorded machine can stand in for the live one."""

    arch: str
    cpuinfo_text: str
    xcr0: int | None = None  # x86-64; None: could not be read (the kernel's flags are trusted)
    xcr0_error: str | None = None  # why XCR0 could not be read
    amx_permission: AmxPermission | None = None  # x86-64 with amx_tile; None: not asked
    hwcap: int | None = None  # aarch64 AT_HWCAP; None: unavailable (cpuinfo is trusted)
    hwcap2: int | None = None
    affinity: int | None = None  # None: os.sched_getaffinity
    cgroup_root: Path = Path("/")


@dataclass(frozen=True)
class HostInfo:
    """The probe's answer. Feature names use the /proc/cpuinfo spelling of `cpubuild.features`."""

    arch: str
    vendor: str
    model_name: str
    microarchitecture: str  # archspec name, e.g. "icelake", "neoverse_v1", "x86_64_v4"
    psabi_level: str | None  # "x86-64-v1".."x86-64-v4"; None off x86-64
    cpu_features: frozenset[str]  # everything the CPU reports
    usable_features: frozenset[str]  # cpu_features minus those the OS does not let us use
    unusable: dict[str, str]  # present-but-unusable feature -> reason
    cores: CoreCount
    xcr0: int | None = None
    amx_permission: AmxPermission | None = None
    hwcap: int | None = None
    hwcap2: int | None = None
    notes: tuple[str, ...] = field(default=())

    def known_usable(self) -> list[str]:
        """The vocabulary features (cpubuild.features) this process can use, in display order."""
        return [name for name in known_features(self.arch) if name in self.usable_features]

    def known_missing(self) -> list[str]:
        """The vocabulary features the CPU does not have at all."""
        return [name for name in known_features(self.arch) if name not in self.cpu_features]


def _x86_unusable(
    flags: frozenset[str], xcr0: int | None, permission: AmxPermission | None
) -> dict[str, str]:
    unusable: dict[str, str] = {}
    for flag in sorted(flags):
        needed = x86_state.required_state(flag)
        if needed is None:
            continue
        mask, state_name = needed
        if xcr0 is not None and xcr0 & mask != mask:
            unusable[flag] = f"not enabled by the OS: XCR0={xcr0:#x} lacks {state_name}"
        elif flag.startswith("amx") and permission is not None and not permission.granted:
            unusable[flag] = (
                "the OS refused AMX tile permission: arch_prctl(ARCH_REQ_XCOMP_PERM, "
                f"XFEATURE_XTILEDATA) failed with {permission.detail}"
            )
    return unusable


def _from_x86(inputs: ProbeInputs, fields: dict[str, str], affinity_cores: CoreCount) -> HostInfo:
    flags = cpuinfo.feature_flags(fields, X86_64)
    notes = []
    if inputs.xcr0 is None:
        notes.append(
            f"XCR0 was not read ({inputs.xcr0_error or 'no value given'}); trusting the kernel's "
            "/proc/cpuinfo flags, which Linux clears for register state it does not enable"
        )
    unusable = _x86_unusable(flags, inputs.xcr0, inputs.amx_permission)
    usable = frozenset(flags - unusable.keys())
    vendor = fields.get("vendor_id", "generic")
    return HostInfo(
        arch=X86_64,
        vendor=vendor,
        model_name=fields.get("model name", "unknown x86-64 CPU"),
        microarchitecture=uarch.microarchitecture_name(X86_64, vendor, flags),
        psabi_level=uarch.psabi_level(usable),
        cpu_features=flags,
        usable_features=usable,
        unusable=unusable,
        cores=affinity_cores,
        xcr0=inputs.xcr0,
        amx_permission=inputs.amx_permission,
        notes=tuple(notes),
    )


def _from_aarch64(inputs: ProbeInputs, fields: dict[str, str], cores: CoreCount) -> HostInfo:
    listed = cpuinfo.feature_flags(fields, AARCH64)
    notes = []
    if inputs.hwcap is None:
        # No auxiliary vector: the cpuinfo list is the kernel's word for the same bits.
        granted, unusable = listed, {}
        notes.append("AT_HWCAP was not read; trusting the /proc/cpuinfo Features line")
    else:
        granted = hwcap.decode_hwcaps(inputs.hwcap, inputs.hwcap2 or 0)
        unusable = {
            name: "listed in /proc/cpuinfo but not granted to this process in AT_HWCAP/AT_HWCAP2"
            for name in sorted(listed - granted)
        }
    implementer, part = fields.get("CPU implementer", ""), fields.get("CPU part", "")
    vendor = uarch.arm_vendor(implementer)
    cpu_features = listed | granted
    return HostInfo(
        arch=AARCH64,
        vendor=vendor,
        model_name=fields.get("model name") or uarch.arm_model_name(implementer, part),
        microarchitecture=uarch.microarchitecture_name(AARCH64, vendor, cpu_features, part),
        psabi_level=None,
        cpu_features=cpu_features,
        usable_features=frozenset(cpu_features - unusable.keys()),
        unusable=unusable,
        cores=cores,
        hwcap=inputs.hwcap,
        hwcap2=inputs.hwcap2,
        notes=tuple(notes),
    )


def host_from_inputs(inputs: ProbeInputs) -> HostInfo:
    """Build a HostInfo from recorded or live inputs."""
    if inputs.arch not in ARCHES:
        raise ProbeError(
            f"cpubuild supports {' and '.join(ARCHES)} CPUs, not {inputs.arch!r}; "
            "run it on one of those (or under qemu-user for an emulated one)."
        )
    fields = cpuinfo.first_block(inputs.cpuinfo_text)
    cores = usable_cores(inputs.affinity, inputs.cgroup_root)
    if inputs.arch == X86_64:
        return _from_x86(inputs, fields, cores)
    return _from_aarch64(inputs, fields, cores)


def live_arch() -> str:
    """This machine's architecture in cpubuild's spelling."""
    machine = platform.machine()
    return {"AMD64": X86_64, "amd64": X86_64, "arm64": AARCH64}.get(machine, machine)


def live_inputs() -> ProbeInputs:
    """Read the probe's inputs from this machine and process."""
    arch = live_arch()
    text = cpuinfo.read_cpuinfo()
    if arch == X86_64:
        xcr0, xcr0_error = x86_state.read_live_xcr0()
        flags = cpuinfo.feature_flags(cpuinfo.first_block(text), X86_64)
        permission = x86_state.request_live_amx_permission() if "amx_tile" in flags else None
        return ProbeInputs(arch, text, xcr0=xcr0, xcr0_error=xcr0_error, amx_permission=permission)
    if arch == AARCH64:
        caps = hwcap.read_live_hwcaps()
        if caps is None:
            return ProbeInputs(arch, text)
        return ProbeInputs(arch, text, hwcap=caps[0], hwcap2=caps[1])
    return ProbeInputs(arch, text)


def detect_host() -> HostInfo:
    """Probe this machine."""
    return host_from_inputs(live_inputs())


# --- machine files: a recorded machine for tests and `cpubuild detect --machine` ------------------

_MACHINE_KEYS: dict[str, type] = {
    "arch": str, "cpuinfo": str, "xcr0": int, "amx_permission": str, "hwcap": int, "hwcap2": int,
    "affinity": int, "source": str,
}  # fmt: skip


# A recorded /proc/cpuinfo of a 512-CPU machine is about 1 MiB; refuse to read without bound (/dev/zero).
_MAX_MACHINE_FILE_BYTES = 16 << 20


def _read_text(path: Path) -> str:
    with path.open("rb") as file:
        data = file.read(_MAX_MACHINE_FILE_BYTES + 1)
    if len(data) > _MAX_MACHINE_FILE_BYTES:
        raise OSError(f"it is larger than {_MAX_MACHINE_FILE_BYTES >> 20} MiB")
    return data.decode("utf-8")


def _short(exc: Exception) -> str:
    """An exception as one short line (a decode error quotes bytes of the file; keep only its gist)."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start} is {exc.object[exc.start : exc.start + 1]!r})"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def inputs_from_machine_file(path: Path, cgroup_root: Path | None = None) -> ProbeInputs:
    """Read a machine description (TOML) whose `cpuinfo` names a file next to it.

    Keys: arch, cpuinfo, and optionally xcr0 (int), amx_permission ("granted" or an errno name),
    hwcap, hwcap2 (ints), affinity (int). Anything else is refused, so typos do not pass silently.
    """
    try:
        data = tomllib.loads(_read_text(path))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProbeError(
            f"cannot read machine file {path}: {_short(exc)}; give a TOML machine file"
        ) from None
    unknown = sorted(data.keys() - _MACHINE_KEYS.keys())
    if unknown:
        raise ProbeError(
            f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_MACHINE_KEYS))}"
        )
    for key in ("arch", "cpuinfo"):
        if key not in data:
            raise ProbeError(f"{path}: missing required key {key!r}")
    for key, value in data.items():
        kind = _MACHINE_KEYS[key]
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            shown = "a non-negative integer" if kind is int else "a string"
            raise ProbeError(f"{path}: key {key!r} must be {shown}, not {value!r}")
    try:
        text = _read_text(path.parent / data["cpuinfo"])
    except (OSError, UnicodeDecodeError) as exc:
        raise ProbeError(f"{path}: cannot read cpuinfo file {data['cpuinfo']!r}: {_short(exc)}") from None
    permission = data.get("amx_permission")
    return ProbeInputs(
        arch=data["arch"],
        cpuinfo_text=text,
        xcr0=data.get("xcr0"),
        xcr0_error=None if "xcr0" in data else "the machine file gives no xcr0",
        amx_permission=AmxPermission.from_text(permission) if permission else None,
        hwcap=data.get("hwcap"),
        hwcap2=data.get("hwcap2"),
        affinity=data.get("affinity"),
        cgroup_root=cgroup_root or Path(os.devnull),
    )
