"""Choose and load the native variant library, safely.

Order of events (no SIGILL, ever):
1. load ``libcpullm_probe.so`` (compiled with no ISA flags) and ask which CPU features are usable;
2. read ``_variants.json`` (written by the build from the recipes) for the variants in this wheel;
3. score each: 0 when any required feature is not usable, else 1 + the recipe's priority;
4. load the best (or ``CPULLM_ISA``'s choice, refused if the host cannot run it) and check it is the
   library the table describes.

Nothing compiled with ISA flags is loaded before step 3 says the host can run it.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from cpullm import env
from cpullm.native import abi

ABI_VERSION = 1
PROBE_ABI_VERSION = 1


class VariantError(ImportError):
    """No variant library in this installation can run here (or the one asked for cannot)."""


@dataclass(frozen=True)
class HostFeatures:
    arch: str
    usable: frozenset[str]
    unusable: dict[str, str]  # feature -> why the OS will not let this process use it


@dataclass(frozen=True)
class Variant:
    name: str
    priority: int
    features: tuple[str, ...]
    library: str
    flags: tuple[str, ...] = ()

    def missing(self, host: HostFeatures) -> list[str]:
        """Required features the host cannot use, each with the reason when the CPU has it."""
        out = []
        for f in self.features:
            if f in host.usable:
                continue
            out.append(f"{f} ({host.unusable[f]})" if f in host.unusable else f)
        return out

    def score(self, host: HostFeatures) -> int:
        return 0 if self.missing(host) else 1 + self.priority


@dataclass(frozen=True)
class Selection:
    variant: Variant
    reason: str
    host: HostFeatures
    lib_dir: Path
    candidates: dict[str, int] = field(default_factory=dict)  # variant -> score


def lib_dir() -> Path:
    """Where the native libraries are: ``CPULLM_LIB_DIR`` or the package's ``cpullm/_lib`` folder."""
    folder = env.get("CPULLM_LIB_DIR")
    return Path(folder) if folder else Path(__file__).resolve().parents[1] / "_lib"


def _read_c_string(fn: ctypes._CFuncPtr) -> str:  # type: ignore[name-defined]
    """Call ``size_t fn(char* buf, size_t cap)``: the size first, then the text."""
    need = fn(None, 0)
    buf = ctypes.create_string_buffer(need + 1)
    fn(buf, need + 1)
    return buf.value.decode()


def probe_host(directory: Path) -> HostFeatures:
    path = directory / "libcpullm_probe.so"
    if not path.is_file():
        raise VariantError(f"cpullm is incomplete: {path} is missing; reinstall the cpullm wheel")
    probe = abi.bind(ctypes.CDLL(str(path)), abi.PROBE_SIGNATURES)
    if probe.cpullm_probe_abi_version() != PROBE_ABI_VERSION:
        found = probe.cpullm_probe_abi_version()
        raise VariantError(f"{path} has probe ABI {found}, expected {PROBE_ABI_VERSION}; reinstall cpullm")
    usable = _read_c_string(probe.cpullm_probe_usable)
    unusable = _read_c_string(probe.cpullm_probe_unusable)
    reasons = dict(item.split(":", 1) for item in unusable.split(";") if item)
    return HostFeatures(
        arch=probe.cpullm_probe_arch().decode(),
        usable=frozenset(f for f in usable.split(",") if f),
        unusable=reasons,
    )


def _read_table(directory: Path) -> dict:
    path = directory / "_variants.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise VariantError(f"cpullm is incomplete: {path} is missing; reinstall the cpullm wheel") from None


def _variants(table: dict) -> list[Variant]:
    return [
        Variant(v["name"], int(v["priority"]), tuple(v["features"]), v["library"], tuple(v.get("flags", ())))
        for v in table["variants"]
    ]


def _advice(table: dict, host: HostFeatures) -> str:
    """Name the recipes (wheels) this host could run, best first."""
    runnable = [
        Variant(r["name"], int(r["priority"]), tuple(r["features"]), "") for r in table.get("recipes", [])
    ]
    fits = sorted((v for v in runnable if v.score(host) > 0), key=lambda v: -v.priority)
    if not fits:
        return "No cpullm build exists for this CPU."
    names = ", ".join(v.name for v in fits[:3])
    return (
        f"Install the wheel built for {fits[0].name} (this host can run: {names}), "
        "or the portable wheel that carries every variant."
    )


def select(directory: Path | None = None, forced: str | None = None) -> Selection:
    directory = directory or lib_dir()
    host = probe_host(directory)
    table = _read_table(directory)
    variants = _variants(table)
    scores = {v.name: v.score(host) for v in variants}
    forced = forced if forced is not None else env.get("CPULLM_ISA")
    if forced:
        chosen = next((v for v in variants if v.name == forced), None)
        if chosen is None:
            raise VariantError(
                f"CPULLM_ISA={forced}: this cpullm installation has no {forced!r} variant; "
                f"it has: {', '.join(v.name for v in variants)}"
            )
        if scores[forced] == 0:
            raise VariantError(
                f"CPULLM_ISA={forced}: this CPU cannot run the {forced} variant; missing: "
                f"{', '.join(chosen.missing(host))}. Unset CPULLM_ISA to pick the best runnable variant."
            )
        return Selection(chosen, f"forced by CPULLM_ISA={forced}", host, directory, scores)
    runnable = [v for v in variants if scores[v.name] > 0]
    if not runnable:
        details = "; ".join(f"{v.name} needs {', '.join(v.missing(host))}" for v in variants)
        raise VariantError(
            f"this cpullm wheel cannot run on this CPU ({host.arch}): {details}. {_advice(table, host)}"
        )
    best = max(runnable, key=lambda v: scores[v.name])
    others = [v.name for v in variants if v is not best]
    reason = f"best of the {len(runnable)} runnable variant(s)"
    if others:
        reason += f" among {', '.join(others)}"
    return Selection(best, reason, host, directory, scores)


def load_variant(selection: Selection) -> ctypes.CDLL:
    """dlopen the selected variant and check it is what the table says."""
    path = selection.lib_dir / selection.variant.library
    lib = abi.bind(ctypes.CDLL(str(path)))
    if lib.cpullm_abi_version() != ABI_VERSION:
        raise VariantError(f"{path} has ABI {lib.cpullm_abi_version()}, this cpullm expects {ABI_VERSION}")
    name = lib.cpullm_variant_name().decode()
    features = tuple(f for f in lib.cpullm_variant_features().decode().split(",") if f)
    if name != selection.variant.name or features != selection.variant.features:
        raise VariantError(
            f"{path} reports variant {name} requiring {features}, "
            "not what _variants.json says; reinstall cpullm"
        )
    return lib


@dataclass(frozen=True)
class TensorType:
    """One row of a library's tensor type table (csrc/kernels/dtypes.def)."""

    name: str
    id: int  # the ggml/GGUF type id files store
    block_size: int  # weights per block
    block_bytes: int


def tensor_types(lib: ctypes.CDLL) -> dict[int, TensorType]:
    """The tensor types ``lib`` runs, by ggml/GGUF id: the library's own table, never a list kept here."""
    rows = [item.split(":") for item in abi.bind(lib).cpullm_tensor_types().decode().split(",") if item]
    return {int(i): TensorType(name, int(i), int(per), int(size)) for name, i, per, size in rows}


@cache
def native() -> tuple[ctypes.CDLL, Selection]:
    """The loaded variant library and why it was chosen (loaded once per process)."""
    selection = select()
    return load_variant(selection), selection
