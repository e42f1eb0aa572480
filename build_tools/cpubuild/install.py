"""`cpubuild install`: pick the best wheel in a folder for this host, explain why, and install it.

Each wheel is judged by its manifest (`cpullm/_build_info.json`, or its variant table): it fits when
its tags suit this Python and at least one of its variants needs only features this host can use.
Among fitting wheels the one whose best runnable variant has the highest priority wins; at equal
priority a tuned wheel beats the portable one (smaller, same code), then the newer version wins.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.tags import Tag, sys_tags
from packaging.version import InvalidVersion, Version

from cpubuild import manifest, naming


class InstallError(Exception):
    """No wheel fits, or pip failed."""


@dataclass(frozen=True)
class HostView:
    """What `install` needs to know about a host (from `cpubuild.host.detect.HostInfo` or a test)."""

    arch: str
    usable: frozenset[str]
    unusable: dict[str, str] = field(default_factory=dict)  # feature -> why the OS does not allow it

    def missing(self, features: list[str]) -> list[str]:
        lacking = [f for f in features if f not in self.usable]
        return [f"{f} ({self.unusable[f]})" if f in self.unusable else f for f in lacking]


@dataclass
class Candidate:
    path: Path
    name: naming.WheelName
    info: dict[str, Any]
    fits: bool = False
    best_variant: str | None = None
    priority: int = -1
    why: str = ""

    @property
    def portable(self) -> bool:
        return bool(self.info.get("portable"))

    def version(self) -> Version:
        try:
            return Version(self.name.version)
        except InvalidVersion:
            return Version("0")


def _tags_fit(name: naming.WheelName, supported: set[Tag]) -> bool:
    return any(
        Tag(py, abi, plat) in supported
        for py in name.python.split(".")
        for abi in name.abi.split(".")
        for plat in name.platform.split(".")
    )


def judge(path: Path, host: HostView, supported: set[Tag] | None) -> Candidate:
    """Read one wheel and decide whether (and how well) it runs on `host`."""
    name = naming.WheelName.parse(path.name)
    info = manifest.read_from_wheel(path)
    cand = Candidate(path, name, info)
    if info.get("arch") != host.arch:
        cand.why = f"built for {info.get('arch')}, this host is {host.arch}"
        return cand
    if supported is not None and not _tags_fit(name, supported):
        cand.why = f"its tags ({name.python}-{name.abi}-{name.platform}) do not suit this Python"
        return cand
    variants = sorted(info.get("variants", []), key=lambda v: -int(v["priority"]))
    runnable = [v for v in variants if not host.missing(list(v["features"]))]
    if not runnable:
        needs = "; ".join(
            f"{v['name']} needs {', '.join(host.missing(list(v['features'])))}" for v in variants
        )
        cand.why = f"this CPU cannot run it: {needs}"
        return cand
    cand.fits, cand.best_variant, cand.priority = True, runnable[0]["name"], int(runnable[0]["priority"])
    kind = f"tuned for {cand.best_variant}"
    if cand.portable:
        kind = f"portable wheel, would load {cand.best_variant}"
    cand.why = f"runs here ({kind}, priority {cand.priority})"
    return cand


def choose(
    wheelhouse: Path, host: HostView, supported: set[Tag] | None = None
) -> tuple[Candidate, list[Candidate]]:
    """The best wheel in `wheelhouse` for `host`, and every wheel judged (best first)."""
    if supported is None and host.arch == _this_arch():
        supported = set(sys_tags())
    wheels = sorted(wheelhouse.glob("*.whl"))
    if not wheels:
        raise InstallError(
            f"{wheelhouse} holds no wheels; build one with `cpubuild wheel --isa native --out {wheelhouse}`"
        )
    judged = []
    for path in wheels:
        try:
            judged.append(judge(path, host, supported))
        except (ValueError, manifest.ManifestError) as exc:
            cand = Candidate(path, naming.WheelName("?", "0", "?", "?", "?"), {})
            cand.why = f"skipped: {exc}"
            judged.append(cand)
    judged.sort(key=lambda c: (c.fits, c.priority, not c.portable, c.version()), reverse=True)
    best = judged[0]
    if not best.fits:
        reasons = "\n".join(f"  {c.path.name}: {c.why}" for c in judged)
        raise InstallError(
            f"none of the {len(judged)} wheel(s) in {wheelhouse} can run on this host ({host.arch}):\n"
            f"{reasons}\nBuild one for this machine with `cpubuild wheel --isa native`, "
            "or add the portable wheel (--isa all)."
        )
    return best, judged


def _this_arch() -> str:
    from cpubuild.wheel import host_arch

    return host_arch()


def detect_host_view() -> HostView:
    from cpubuild.host.detect import detect_host

    host = detect_host()
    return HostView(host.arch, frozenset(host.usable_features), dict(host.unusable))


def installed_flavours(python: str) -> list[str]:
    """cpullm distributions installed in `python`'s environment (cpullm, cpullm-avx512, ...)."""
    code = (
        "import importlib.metadata as m\n"
        "names = {d.metadata['Name'] for d in m.distributions()}\n"
        "ours = [n for n in names if n and n.lower().replace('_', '-').split('-')[0] == 'cpullm']\n"
        "print('\\n'.join(sorted(ours)))"
    )
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    return [line for line in done.stdout.splitlines() if line.strip()]


def installable(best: Candidate, folder: Path) -> Path:
    """`best` as pip accepts a local file: a variant wheel is copied into `folder` without its label.

    pip (no variant support) refuses a file name with a PEP 825 label; the choice the label serves is
    made here, so the plain name installs the same content (variant.json stays in its dist-info).
    """
    if best.name.variant is None:
        return best.path
    staged = folder / best.name.plain_filename
    shutil.copyfile(best.path, staged)
    return staged


def install_commands(
    best: Candidate, python: str, with_deps: bool, wheel: Path | None = None
) -> list[list[str]]:
    """pip commands that install `best` (from `wheel`, see `installable`) over any other cpullm flavour."""
    own = best.name.distribution.replace("_", "-").lower()
    others = [n for n in installed_flavours(python) if n.replace("_", "-").lower() != own]
    pip = [sys.executable, "-m", "pip", "--python", python]
    commands = []
    if others:
        commands.append([*pip, "uninstall", "-y", *others])
    # Replace the cpullm files even at an equal version (a rebuilt wheel), without reinstalling the
    # dependencies; then let pip add whatever dependencies are missing.
    install = [*pip, "install", "--disable-pip-version-check"]
    path = str(wheel or best.path)
    commands.append([*install, "--force-reinstall", "--no-deps", path])
    if with_deps:
        commands.append([*install, path])
    return commands


def run_commands(commands: list[list[str]]) -> None:
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()] or ["(no output)"]
            raise InstallError(f"`{' '.join(command)}` failed: {lines[-1].strip()}")
