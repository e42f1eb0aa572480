"""Parse Linux /proc/cpuinfo text.

Only the first processor block is read: on the machines cpubuild targets every logical CPU reports the
same feature flags, and reading one block keeps the probe fast.
"""

from __future__ import annotations

from pathlib import Path

from cpubuild.features import AARCH64, X86_64

PROC_CPUINFO = Path("/proc/cpuinfo")
_READ_LIMIT = 64 * 1024

# The key holding the feature list, per architecture.
FLAGS_KEY = {X86_64: "flags", AARCH64: "Features"}


def first_block(text: str) -> dict[str, str]:
    """The `key: value` pairs of the first processor block in `text` (keys and values stripped)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        if not separator:
            if fields and not line.strip():
                break  # blank line: the first block is over
            continue
        key = key.strip()
        if key == "processor" and "processor" in fields:
            break  # a second block without a blank line in between
        # Some kernels wrap long lines of one key ("Features" repeated); merge them.
        if key in fields and key in FLAGS_KEY.values():
            fields[key] = f"{fields[key]} {value.strip()}"
        else:
            fields.setdefault(key, value.strip())
    return fields


def feature_flags(fields: dict[str, str], arch: str) -> frozenset[str]:
    """The feature flags of a parsed block, as the kernel spells them."""
    return frozenset(fields.get(FLAGS_KEY.get(arch, "flags"), "").split())


def read_cpuinfo(path: Path = PROC_CPUINFO) -> str:
    """The text of /proc/cpuinfo, or "" when it cannot be read (some sandboxes hide /proc)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            # The first block is a few KiB; big machines print hundreds of blocks we do not need.
            return file.read(_READ_LIMIT)
    except OSError:
        return ""
