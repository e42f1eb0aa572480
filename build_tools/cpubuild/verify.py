"""`cpubuild verify WHEEL`: install a wheel into a fresh environment and prove it runs here.

Same-arch wheels: a new temporary venv, `pip install WHEEL` (dependencies from the index, through
pip's cache), then `python -m cpullm info --json --selftest` from outside the source tree: import,
variant choice, kernel self-test. Other-arch wheels: the wheel unpacked on PYTHONPATH and the same
command run by that arch's Python under qemu-user (see scripts/arm64-python.sh for an arm64 sysroot).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cpubuild import manifest
from cpubuild.wheel import host_arch

INFO_COMMAND: Final = ("-m", "cpullm", "info", "--json", "--selftest")
GENERATION_PROMPT: Final = "The capital of France is"
GENERATION_TOKENS: Final = 8
_TIMEOUT_S: Final = 600


class VerifyError(Exception):
    """The wheel could not even be set up for verification (bad file, no emulator, pip failed)."""


@dataclass
class VerifyReport:
    wheel: Path
    arch: str
    how: str  # "venv" or "qemu-aarch64 ..."
    ok: bool = False
    variant: str | None = None
    reason: str | None = None
    selftest: dict[str, Any] | None = None
    generation: str = "not run"
    error: str | None = None
    steps: list[str] = field(default_factory=list)
    seconds: float = 0.0
    info: dict[str, Any] | None = None
    refused: bool = False  # this CPU cannot run the wheel, and the import said so cleanly

    def as_json(self) -> dict[str, Any]:
        return {
            "wheel": str(self.wheel), "arch": self.arch, "how": self.how, "ok": self.ok,
            "variant": self.variant, "reason": self.reason, "selftest": self.selftest,
            "generation": self.generation, "error": self.error, "steps": self.steps,
            "seconds": round(self.seconds, 2), "info": self.info, "refused": self.refused,
        }  # fmt: skip


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus what would make the test use something other than the wheel."""
    drop = {"PYTHONPATH", "PYTHONHOME", "CPULLM_LIB_DIR", "VIRTUAL_ENV"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


def _run(report: VerifyReport, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    report.steps.append(" ".join(command))
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT_S, **kwargs)
    except subprocess.TimeoutExpired:
        raise VerifyError(f"timed out after {_TIMEOUT_S} s: {' '.join(command)}") from None


def _read_info(report: VerifyReport, done: subprocess.CompletedProcess[str]) -> None:
    try:
        info = json.loads(done.stdout)
    except ValueError:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        report.error = f"`python -m cpullm info` failed (exit {done.returncode}): " + (
            lines[-1].strip() if lines else "no output"
        )
        return
    report.info = info
    report.variant = info.get("variant")
    report.reason = info.get("reason")
    report.selftest = info.get("selftest")
    if info.get("error"):
        report.error = info["error"]
    elif report.selftest and report.selftest.get("passed") is False:
        report.error = f"the kernel self-test failed: {report.selftest.get('report', '').strip()}"
    report.ok = done.returncode == 0 and report.variant is not None and report.error is None


def _refused_cleanly(report: VerifyReport, python: list[str], env: dict[str, str], cwd: Path) -> bool:
    """True when no variant of the wheel can run here and `import cpullm` says so with an ImportError."""
    info = report.info or {}
    candidates = info.get("candidates") or []
    if info.get("variant") is not None or not candidates or any(c["runnable"] for c in candidates):
        return False
    done = _run(report, [*python, "-c", "import cpullm"], cwd=cwd, env=env)
    return done.returncode == 1 and "VariantError" in done.stderr


def short_generation(
    report: VerifyReport, python: list[str], env: dict[str, str], cwd: Path, model: Path | None
) -> tuple[bool, str]:
    """A short greedy completion with the installed engine: (it worked, what to report).

    `model` None means the engine's default model (fetched once from PyPI and cached by cpullm).
    An engine without a `generate` command reports that instead of failing.
    """
    command = [*python, "-m", "cpullm", "generate", *([str(model)] if model else [])]
    command += ["-p", GENERATION_PROMPT, "-n", str(GENERATION_TOKENS), "--temperature", "0", "--json"]
    done = _run(report, command, cwd=cwd, env=env)
    if done.returncode != 0 and "invalid choice: 'generate'" in done.stderr:
        return True, "not available in this engine version"
    try:
        answer = json.loads(done.stdout)
        text = answer["text"]
    except (ValueError, KeyError, TypeError):
        lines = [line for line in done.stderr.splitlines() if line.strip()] or ["(no output)"]
        return False, f"`cpullm generate` failed (exit {done.returncode}): {lines[-1].strip()}"
    speed = answer.get("decode_tokens_per_s")
    detail = f"{answer.get('completion_tokens')} tokens" + (f", {speed:.1f} tokens/s" if speed else "")
    return True, f"{GENERATION_PROMPT!r} -> {text!r} ({detail}, variant {answer.get('variant')})"


def _qemu(arch: str, wheel: Path) -> str:
    qemu = shutil.which(f"qemu-{arch}")
    if qemu is None:
        raise VerifyError(f"verifying {wheel.name} needs qemu-{arch}; install qemu-user")
    return qemu


def _finish(
    report: VerifyReport, python: list[str], env: dict[str, str], tmp: Path, allow_refusal: bool
) -> None:
    """Run `cpullm info --selftest` with `python` (a command: maybe qemu + interpreter) and judge it."""
    _read_info(report, _run(report, [*python, *INFO_COMMAND], cwd=tmp, env=env))
    if not report.ok and allow_refusal and _refused_cleanly(report, python, env, tmp):
        report.ok, report.refused = True, True
        report.generation = "not run: this CPU cannot run the wheel (refused at import, as it must be)"


def _pip_installable(wheel: Path, tmp: Path) -> Path:
    """`wheel`, or for a PEP 825 variant wheel a copy without the label: pip refuses such a file name."""
    from cpubuild.naming import WheelName

    try:
        name = WheelName.parse(wheel.name)
    except ValueError:
        return wheel  # pip says what is wrong with the name
    if name.variant is None:
        return wheel
    staged = tmp / "staged" / name.plain_filename
    staged.parent.mkdir(exist_ok=True)
    shutil.copyfile(wheel, staged)
    return staged


def _verify_in_venv(
    report: VerifyReport,
    wheel: Path,
    tmp: Path,
    *,
    with_deps: bool,
    allow_refusal: bool,
    cpu: str | None,
    generate: bool,
    model: Path | None,
) -> None:
    venv = tmp / "venv"
    done = _run(report, [sys.executable, "-m", "venv", "--without-pip", str(venv)])
    if done.returncode != 0:
        raise VerifyError(f"could not create a virtual environment: {done.stderr.strip()}")
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--disable-pip-version-check"]
    if not with_deps:
        pip.append("--no-deps")
    done = _run(report, [*pip, str(_pip_installable(wheel, tmp))], env=_clean_env())
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()] or ["(no output)"]
        raise VerifyError(f"pip could not install {wheel.name}: {lines[-1].strip()}")
    env = _clean_env()
    command = [str(python)]
    if cpu:
        command = [_qemu(report.arch, wheel), "-cpu", cpu, str(python)]
        report.how = f"venv, under qemu-{report.arch} -cpu {cpu}"
    _finish(report, command, env, tmp, allow_refusal)
    if report.refused or not report.ok:
        return
    if not generate:
        report.generation = "not run (--no-generate)"
    elif not with_deps:
        report.generation = "not run (--no-deps: the engine's dependencies are not installed)"
    elif cpu:
        report.generation = "not run under emulation (too slow)"
    else:
        worked, report.generation = short_generation(report, command, env, tmp, model)
        if not worked:
            report.ok, report.error = False, report.generation


def _verify_emulated(
    report: VerifyReport, wheel: Path, tmp: Path, sysroot: Path | None, allow_refusal: bool, cpu: str | None
) -> None:
    qemu = _qemu(report.arch, wheel)
    sysroot = sysroot.resolve() if sysroot else None
    python = sysroot / "usr" / "bin" / "python3.11" if sysroot else None
    if python is None or not python.exists():
        raise VerifyError(
            f"{wheel.name} is for {report.arch}: pass --sysroot with a {report.arch} Python "
            "(create one with scripts/arm64-python.sh, then --sysroot build/arm64-sysroot)"
        )
    site = tmp / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    cpu_args = ["-cpu", cpu] if cpu else []
    report.how = f"qemu-{report.arch}" + (f" -cpu {cpu}" if cpu else "") + f" with {python}"
    command = [qemu, *cpu_args, "-L", str(sysroot), str(python)]
    report.generation = "not run under emulation"
    _finish(report, command, _clean_env(PYTHONPATH=str(site)), tmp, allow_refusal)


def verify(
    wheel: Path,
    *,
    with_deps: bool = True,
    sysroot: Path | None = None,
    allow_refusal: bool = False,
    cpu: str | None = None,
    generate: bool = True,
    model: Path | None = None,
) -> VerifyReport:
    """Install `wheel` somewhere fresh and run its import, variant choice and self-test.

    `allow_refusal` (for CI runners older than the wheel's target): a wheel this CPU cannot run passes
    when `import cpullm` refuses it with the ImportError that names the missing features.
    `cpu`: run under `qemu-<arch> -cpu CPU` (e.g. Haswell, cortex-a76), as if on that processor.
    `generate`: also complete a short prompt with `model` (default: the engine's default model), when
    the dependencies are installed and nothing is emulated.
    """
    start = time.perf_counter()
    wheel = wheel.resolve()
    if not wheel.is_file():
        raise VerifyError(f"{wheel} does not exist; build one with `cpubuild wheel`")
    try:
        arch = manifest.read_from_wheel(wheel)["arch"]
    except manifest.ManifestError as exc:
        raise VerifyError(str(exc)) from None
    report = VerifyReport(wheel, arch, "venv")
    with tempfile.TemporaryDirectory(prefix="cpubuild-verify-") as tmp:
        if arch == host_arch():
            _verify_in_venv(
                report, wheel, Path(tmp), with_deps=with_deps, allow_refusal=allow_refusal, cpu=cpu,
                generate=generate, model=model.resolve() if model else None,
            )  # fmt: skip
        else:
            _verify_emulated(report, wheel, Path(tmp), sysroot, allow_refusal, cpu)
    report.seconds = time.perf_counter() - start
    return report
