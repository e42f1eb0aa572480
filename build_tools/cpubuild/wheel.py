"""`cpubuild wheel`: build the engine for one recipe (or all of an arch) into a named, repaired wheel.

Pipeline: resolve the target (a recipe, "all", or "native" = this host's best recipe) -> prove the
compiler accepts the recipe's flags -> scikit-build-core's PEP 517 hook with explicit CMake defines,
in a stable build folder per (arch, target), with ccache when present -> auditwheel repair ->
manifest + name -> deterministic archive. The build host's CPU is consulted only for "native".
The proven flags reach CMake as a flags record (`cpubuild.recipes_cmake`), with the compiler that
proved them: CMake refuses to configure with another compiler, so the flags built are the flags checked.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from cpubuild import env, manifest, naming, reproducible, wheel_variants
from cpubuild.features import AARCH64, ARCHES, X86_64
from cpubuild.recipes_cmake import Compiler, FlagsRecord, write_flags_record
from cpubuild.repair import RepairError, repair

CROSS_COMPILERS: Final = {AARCH64: "aarch64-linux-gnu-g++", X86_64: "x86_64-linux-gnu-g++"}
TOOLCHAIN_FILES: Final = {AARCH64: "cmake/toolchains/aarch64-linux-gnu.cmake"}
FLAGS_RECORD: Final = "cpubuild-flags.json"  # in the build folder
# Runs scikit-build-core's PEP 517 hook in a child process (its output goes to the log and the spinner).
_BACKEND: Final = (
    "import json, sys\n"
    "from scikit_build_core.build import build_wheel\n"
    "name = build_wheel(sys.argv[1], json.loads(sys.argv[2]))\n"
    "print('cpubuild-raw-wheel=' + name, flush=True)\n"
)


# What `cpubuild wheel` runs (import name -> distribution): the `build` extra of cpubuild.
# variantlib validates every variant wheel's variant.json before it is written.
BUILD_TOOLS: Final = {"scikit_build_core": "scikit-build-core", "cmake": "cmake", "ninja": "ninja",
                      "auditwheel": "auditwheel", "variantlib": "variantlib"}  # fmt: skip


def missing_build_tools() -> list[str]:
    """The distributions of the `build` extra that this Python cannot import."""
    import importlib.util

    def importable(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # ValueError: a module in sys.modules as None
            return False

    return [dist for module, dist in BUILD_TOOLS.items() if not importable(module)]


class WheelBuildError(Exception):
    """The wheel could not be built; `log` is the full build log when there is one."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


class UnknownRecipeError(WheelBuildError):
    """--isa names no recipe: a bad argument (exit 2), not a failed build."""


@dataclass(frozen=True)
class WheelTarget:
    arch: str
    isa: str  # a recipe name, or "all" for the portable wheel
    why: str = ""  # for --isa native: which host recipe was picked and why

    @property
    def slug(self) -> str:
        return f"{self.arch}-{self.isa}"


@dataclass(frozen=True)
class WheelResult:
    path: Path
    target: WheelTarget
    platform_tag: str
    build_info: dict[str, Any]
    variant: dict[str, Any] | None  # label, properties and who validated them; None for the portable wheel
    log: Path
    build_dir: Path
    seconds: float
    leaked_paths: list[tuple[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "wheel": str(self.path),
            "arch": self.target.arch,
            "isa": self.target.isa,
            "native_choice": self.target.why or None,
            "platform_tag": self.platform_tag,
            "size_bytes": self.path.stat().st_size,
            "seconds": round(self.seconds, 2),
            "log": str(self.log),
            "build_dir": str(self.build_dir),
            "leaked_paths": [list(p) for p in self.leaked_paths],
            "build_info": self.build_info,
            "variant": self.variant,
        }


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": X86_64, "arm64": AARCH64}.get(machine, machine)


def default_source() -> Path:
    """The source tree this cpubuild belongs to (build_tools/cpubuild/ -> repository root)."""
    return Path(__file__).resolve().parents[2]


def resolve_target(isa: str, arch: str | None, recipes_dir: Path | None = None) -> WheelTarget:
    """Turn --isa/--arch into a target; only "native" looks at this host."""
    from cpubuild.recipes import load_recipes

    arch = arch or host_arch()
    if arch not in ARCHES:
        raise WheelBuildError(f"--arch {arch} is not supported; use one of: {', '.join(ARCHES)}")
    recipes = load_recipes(recipes_dir)
    if isa == "native":
        from cpubuild.host.detect import detect_host
        from cpubuild.selection import select

        host = detect_host()
        if host.arch != arch:
            raise WheelBuildError(
                f"--isa native builds for this host, which is {host.arch}, not {arch}; "
                f"pass a recipe name (e.g. --isa {recipes.for_arch(arch)[-1].name}) to cross-build."
            )
        runnable = [v.recipe for v in select(host, recipes).verdicts if v.runnable]
        best = next((r for r in runnable if not wheel_variants.inexpressible(arch, r.features)), None)
        if best is None:
            raise WheelBuildError(f"no {arch} recipe can run on this host ({host.model_name})")
        this = f"this host ({host.model_name}, {host.microarchitecture})"
        why = f"{this} can run {best.name}, the best {arch} recipe"
        if runnable[0] is not best:
            why = (
                f"{this} can run {runnable[0].name}, which ships in the portable wheel only (no variant "
                f"property for it); {best.name} is the best tuned wheel for it"
            )
        return WheelTarget(arch, best.name, why)
    if isa == naming.PORTABLE:
        return WheelTarget(arch, isa)
    names = [r.name for r in recipes.for_arch(arch)]
    if isa not in names:
        raise UnknownRecipeError(
            f"no {arch} recipe named {isa!r}; known: {', '.join(names)}, plus 'all' (portable) and 'native'"
        )
    target = WheelTarget(arch, isa)
    variant_of(target, list(recipes.get(isa, arch).features))  # refused now, not after the build
    return target


def compiler_for(arch: str, explicit: str | None) -> str:
    from cpubuild.compiler import default_compiler

    if explicit or arch == host_arch():
        return default_compiler(explicit)
    return CROSS_COMPILERS[arch]


def check_compiler(
    target: WheelTarget, compiler: str, recipes_dir: Path | None = None, source: Path | None = None
) -> FlagsRecord:
    """Prove the compiler accepts every flag the target's recipes need (version-gated, probe-compiled).

    Returns the proven flags per variant and the compiler that proved them, for CMake to build with.
    """
    from cpubuild.compiler import CompilerError
    from cpubuild.flags import FlagsError, resolve_flags
    from cpubuild.recipes import load_recipes

    kernels = (source or default_source()) / "csrc" / "kernels"
    recipes = load_recipes(recipes_dir, kernels).for_arch(target.arch)
    chosen = recipes if target.isa == naming.PORTABLE else [r for r in recipes if r.name == target.isa]
    proven = {}
    for recipe in chosen:
        try:
            proven[recipe.name] = resolve_flags(recipe, compiler)
        except (CompilerError, FlagsError) as exc:
            raise WheelBuildError(str(exc)) from None
    if not proven:
        raise WheelBuildError(f"no {target.arch} recipe named {target.isa!r} to build")
    info = next(iter(proven.values())).compiler
    return FlagsRecord(
        target.arch, Compiler(info.family, info.version, info.path), {n: r.flags for n, r in proven.items()}
    )


def config_settings(
    target: WheelTarget, source: Path, build_dir: Path, compiler: str | None, recipes_dir: Path | None,
    flags_record: Path | None = None,
) -> dict[str, str]:  # fmt: skip
    """scikit-build-core settings: explicit CMake defines, never the build host's CPU.

    With `flags_record` (written by `write_flags_record`), CMake builds with the flags it holds.
    """
    settings = {
        "build-dir": str(build_dir),
        "cmake.define.CPULLM_VARIANTS": target.isa,
        "cmake.define.CPULLM_ARCH": target.arch,
        "cmake.define.Python3_EXECUTABLE": sys.executable,
        # The flags each file was compiled with, for anyone (and the tests) to check.
        "cmake.define.CMAKE_EXPORT_COMPILE_COMMANDS": "ON",
    }
    if flags_record is not None:
        settings["cmake.define.CPULLM_FLAGS_RECORD"] = str(flags_record)
    if recipes_dir is not None:
        settings["cmake.define.CPULLM_RECIPES_DIR"] = str(recipes_dir.resolve())
    if shutil.which("ccache"):
        settings["cmake.define.CMAKE_CXX_COMPILER_LAUNCHER"] = "ccache"
    if target.arch != host_arch():
        toolchain = TOOLCHAIN_FILES.get(target.arch)
        if toolchain is None:
            raise WheelBuildError(f"cross-building for {target.arch} from {host_arch()} is not set up")
        settings["cmake.define.CMAKE_TOOLCHAIN_FILE"] = str(source / toolchain)
    elif compiler:
        settings["cmake.define.CMAKE_CXX_COMPILER"] = shutil.which(compiler) or compiler
    return settings


_STEP = re.compile(r"^\s*(\*\*\* .*|\[\d+/\d+\] .*)$")
_ERROR = re.compile(r"(: (fatal )?error: |^CMake Error|undefined reference|^ninja: error)")


def first_error(log_text: str) -> str:
    """The first compiler/CMake error line in a build log (else its last non-empty line)."""
    lines = [line.rstrip() for line in log_text.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if _ERROR.search(line):
            # CMake puts the message on the following lines.
            if line.startswith("CMake Error") and index + 1 < len(lines):
                return f"{line.strip()} {lines[index + 1].strip()}"
            return line.strip()
    return lines[-1].strip() if lines else "(the build printed nothing)"


def _run_backend(
    source: Path, out: Path, settings: dict[str, str], env: dict[str, str], log: TextIO,
    on_step: Callable[[str], None],
) -> Path:  # fmt: skip
    command = [sys.executable, "-c", _BACKEND, str(out), json.dumps(settings)]
    log.write(f"$ (in {source}) scikit-build-core build_wheel {json.dumps(settings)}\n")
    log.flush()
    proc = subprocess.Popen(
        command, cwd=source, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert proc.stdout is not None
    name = None
    for line in proc.stdout:
        log.write(line)
        if line.startswith("cpubuild-raw-wheel="):
            name = line.split("=", 1)[1].strip()
        elif _STEP.match(line):
            on_step(line.strip().removeprefix("*** "))
    if proc.wait() != 0 or name is None:
        raise WheelBuildError("the build failed")
    return out / name


def _rename_dist_info(tree: Path, new: naming.WheelName) -> None:
    """Give the unpacked wheel its final name and version (dist-info folder and METADATA)."""
    old = next(tree.glob("*.dist-info"))
    target = tree / new.dist_info
    if old != target:
        old.rename(target)
    metadata = target / "METADATA"
    lines = metadata.read_text().split("\n")
    out = []
    for line in lines:
        if line.startswith("Name: "):
            line = f"Name: {new.distribution.replace('_', '-')}"
        elif line.startswith("Version: "):
            line = f"Version: {new.version}"
        out.append(line)
    metadata.write_text("\n".join(out))


def variant_of(target: WheelTarget, features: list[str]) -> tuple[str, wheel_variants.Properties] | None:
    """(label, properties) of the variant wheel for `target`; None for the portable wheel."""
    if target.isa == naming.PORTABLE:
        return None
    try:
        props = wheel_variants.properties(target.arch, features)
        return wheel_variants.label_for(target.isa, props), props
    except wheel_variants.VariantError as exc:
        raise WheelBuildError(f"the {target.isa} wheel cannot be a variant wheel: {exc}") from None


def write_variant_json(dist_info: Path, label: str, props: wheel_variants.Properties) -> dict[str, Any]:
    """Write *.dist-info/variant.json, validated; returns what `WheelResult.variant` reports."""
    doc = wheel_variants.document({label: props})
    try:
        validated = wheel_variants.validate_with_variantlib(doc, label)
    except wheel_variants.VariantError as exc:
        raise WheelBuildError(str(exc)) from None
    (dist_info / wheel_variants.VARIANT_JSON).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return {"label": label, "properties": props, "validated_with": validated}


_MAX_TABLE_BYTES: Final = 1 << 20  # a variant table is a few KiB; refuse to inflate more


def check_raw_wheel(raw_wheel: Path) -> None:
    """Refuse, with a sentence, anything that is not a wheel the engine's build produced."""
    what = "cpubuild finalize takes the wheel the scikit-build-core backend built (cpullm-*.whl)"
    if not raw_wheel.is_file():
        raise WheelBuildError(f"{raw_wheel} is not a file; {what}")
    try:
        naming.WheelName.parse(raw_wheel.name)
        with zipfile.ZipFile(raw_wheel) as archive:
            names = set(archive.namelist())
            table = {}
            if manifest.VARIANTS_PATH in names:
                if archive.getinfo(manifest.VARIANTS_PATH).file_size > _MAX_TABLE_BYTES:
                    raise ValueError(f"its {manifest.VARIANTS_PATH} is larger than {_MAX_TABLE_BYTES} bytes")
                table = json.loads(archive.read(manifest.VARIANTS_PATH))
    except (ValueError, OSError, zipfile.BadZipFile) as exc:  # BadZipFile: also a truncated archive
        raise WheelBuildError(f"{raw_wheel} is not a wheel ({exc}); {what}") from None
    variants = table.get("variants") if isinstance(table, dict) else None
    if not isinstance(variants, list) or not any(name.endswith(".dist-info/RECORD") for name in names):
        raise WheelBuildError(
            f"{raw_wheel} is not a cpullm engine wheel: it has no readable {manifest.VARIANTS_PATH} "
            f"or no .dist-info/RECORD; {what}"
        )


def _source_date_epoch(source: Path) -> int:
    try:
        return reproducible.source_date_epoch(source)
    except reproducible.SourceDateError as exc:
        raise WheelBuildError(str(exc)) from None


def finalize(
    raw_wheel: Path,
    target: WheelTarget,
    *,
    build_dir: Path,
    out_dir: Path,
    source: Path,
    log: TextIO,
    on_step: Callable[[str], None] = lambda _step: None,
) -> tuple[Path, str, dict[str, Any], list[tuple[str, str]], dict[str, Any] | None]:
    """Repair, add the manifest (and variant.json), name and re-pack a backend-built wheel.

    Returns (wheel, platform tag, manifest, leaked build paths, variant report or None).
    """
    check_raw_wheel(raw_wheel)
    epoch = _source_date_epoch(source)
    with tempfile.TemporaryDirectory(prefix="cpubuild-wheel-") as tmp_name:
        tmp = Path(tmp_name)
        on_step("auditwheel repair")
        try:
            repaired, tag = repair(raw_wheel, tmp / "repaired", target.arch, log)
        except RepairError as exc:
            raise WheelBuildError(str(exc)) from None
        on_step("writing the manifest and the final archive")
        tree = tmp / "tree"
        with zipfile.ZipFile(repaired) as archive:
            archive.extractall(tree)
        table = json.loads((tree / manifest.VARIANTS_PATH).read_text())
        built = sorted(v["name"] for v in table["variants"])
        if target.isa != naming.PORTABLE and built != [target.isa]:
            raise WheelBuildError(f"the wheel for {target.isa} contains variants {built}; expected only it")
        variant = variant_of(target, list(table["variants"][0]["features"]) if built else [])
        info = manifest.build_info(
            target=target.isa,
            table=table,
            toolchain=manifest.toolchain_from_build_dir(build_dir),
            source=reproducible.source_commit(source),
            source_date=reproducible.iso_date(epoch),
            variant_label=variant[0] if variant else None,
            platform_tag=tag,
        )
        (tree / manifest.MANIFEST_PATH).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        raw_name = naming.WheelName.parse(repaired.name)
        version = raw_name.version.split("+")[0]
        new = naming.WheelName(
            naming.BASE_NAME, version, raw_name.python, raw_name.abi, tag, variant[0] if variant else None
        )
        _rename_dist_info(tree, new)
        report = write_variant_json(tree / new.dist_info, *variant) if variant else None
        needles = sorted({str(source.resolve()), str(build_dir.resolve()), str(Path.home())})
        leaks = reproducible.leaked_paths(tree, needles)
        out = reproducible.write_wheel(tree, new.dist_info, out_dir / new.filename, epoch)
    return out, tag, info, leaks, report


def build(
    target: WheelTarget,
    *,
    source: Path | None = None,
    out_dir: Path,
    compiler: str | None = None,
    recipes_dir: Path | None = None,
    build_root: Path | None = None,
    on_step: Callable[[str], None] = lambda _step: None,
) -> WheelResult:
    """Build `target` into `out_dir`; raise WheelBuildError with the first error and the log's path."""
    start = time.perf_counter()
    source = (source or default_source()).resolve()
    build_root = (build_root or source / "build").resolve()
    build_dir = build_root / f"wheel-{target.slug}"
    log_path = build_root / "logs" / f"wheel-{target.slug}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    missing = missing_build_tools()
    if missing:
        raise WheelBuildError(
            f"building a wheel needs {', '.join(missing)}, which this Python lacks; "
            "install cpubuild with its build extra: pip install 'cpubuild[build]'"
        )
    on_step("checking the compiler accepts the recipe's flags")
    record = check_compiler(target, compiler_for(target.arch, compiler), recipes_dir, source)
    record_path = None
    if record is not None:
        record_path = build_dir / FLAGS_RECORD
        write_flags_record(record_path, record)
    # The compiler CMake uses is the one just checked (CMake refuses another when given the record).
    chosen = record.compiler.path if record is not None else env.text("CPUBUILD_CXX", compiler)
    settings = config_settings(target, source, build_dir, chosen, recipes_dir, record_path)
    child_env = dict(os.environ, SOURCE_DATE_EPOCH=str(_source_date_epoch(source)))
    if target.arch != host_arch():
        child_env["_PYTHON_HOST_PLATFORM"] = f"linux-{target.arch}"  # the wheel's platform tag
    with log_path.open("w") as log, tempfile.TemporaryDirectory(prefix="cpubuild-raw-") as raw_dir:
        try:
            on_step("configuring CMake")
            raw = _run_backend(source, Path(raw_dir), settings, child_env, log, on_step)
            path, tag, info, leaks, variant = finalize(
                raw, target, build_dir=build_dir, out_dir=out_dir.resolve(), source=source, log=log,
                on_step=on_step,
            )  # fmt: skip
        except WheelBuildError as exc:
            log.flush()
            detail = first_error(log_path.read_text(errors="replace"))
            raise WheelBuildError(f"{exc}: {detail}", log_path) from None
    seconds = time.perf_counter() - start
    return WheelResult(path, target, tag, info, variant, log_path, build_dir, seconds, leaks)
