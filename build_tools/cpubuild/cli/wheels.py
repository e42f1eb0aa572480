"""`cpubuild wheel / finalize / verify / install / matrix`: the wheel factory's commands."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cpubuild import env
from cpubuild.cli.common import RECIPES_OPTION, env_help, fail, print_json


def register(app: typer.Typer) -> None:
    app.command("wheel")(wheel)
    app.command("finalize")(finalize)
    app.command("verify")(verify)
    app.command("install")(install)
    app.command("matrix")(matrix)


# The CPUBUILD_* variables behind these options are read by `cpubuild.env` (flag > variable > default).
ISA_OPTION = typer.Option(
    "--isa", help=env_help(
        "Required: a recipe name (e.g. avx512_bf16), 'all' for the portable wheel, or 'native' for this "
        "host's best.", "CPUBUILD_ISA",
    ),
)  # fmt: skip
ARCH_OPTION = typer.Option(
    "--arch", help=env_help("x86_64 or aarch64 (default: this host's).", "CPUBUILD_ARCH")
)
# Removed (see cpubuild.naming): kept hidden so a script passing it gets the reason, not "no such option".
STYLE_OPTION = typer.Option("--name-style", hidden=True, help="Removed.")
OUT_OPTION = typer.Option("--out", help="Folder for the finished wheel.")
JSON_OPTION = typer.Option("--json", help="Print the result as JSON.")


def _no_style(name_style: str | None) -> None:
    from cpubuild.naming import REMOVED_STYLES_MESSAGE

    if name_style is not None:
        fail(REMOVED_STYLES_MESSAGE, code=2)


def _variant_line(variant: dict[str, Any]) -> str:
    props = [
        f"{namespace} :: {feature} :: {value}"
        for namespace, features in variant["properties"].items()
        for feature, values in features.items()
        for value in values
    ]
    checked = variant["validated_with"] or "not validated: install cpubuild[variants]"
    return f"{variant['label']} ({'; '.join(props) or 'no properties: the null variant'}; {checked})"


def _isa(isa: str | None) -> str:
    isa = env.text("CPUBUILD_ISA", isa)
    if isa is None:
        fail("--isa is required: a recipe name, 'all' or 'native' (or set CPUBUILD_ISA)", code=2)
    return isa


def wheel(
    isa: Annotated[str | None, ISA_OPTION] = None,
    arch: Annotated[str | None, ARCH_OPTION] = None,
    name_style: Annotated[str | None, STYLE_OPTION] = None,
    out: Annotated[Path, OUT_OPTION] = Path("wheelhouse"),
    json_output: Annotated[bool, JSON_OPTION] = False,
    compiler: Annotated[
        str | None, typer.Option("--compiler", help=env_help("C++ compiler (default: c++).", "CPUBUILD_CXX"))
    ] = None,
    source: Annotated[
        Path | None, typer.Option("--source", help="Engine source tree (default: this cpubuild's checkout).")
    ] = None,
    recipes_dir: Annotated[Path | None, RECIPES_OPTION] = None,
) -> None:
    """Build the engine for one recipe (or --isa all / native) into a repaired, named wheel."""
    from rich.console import Console

    from cpubuild.recipes import RecipeError
    from cpubuild.wheel import UnknownRecipeError, WheelBuildError, build, resolve_target

    console = Console(stderr=True)
    _no_style(name_style)
    isa = _isa(isa)
    try:
        target = resolve_target(isa, env.text("CPUBUILD_ARCH", arch), recipes_dir)
    except UnknownRecipeError as exc:
        fail(str(exc), code=2)  # a bad argument, as for `cpubuild flags --isa`
    except (WheelBuildError, RecipeError) as exc:
        fail(str(exc))
    try:
        if target.why:
            console.print(f"--isa native: {target.why}")
        with console.status(f"building the {target.isa} wheel for {target.arch}") as status:

            def on_step(step: str) -> None:
                status.update(f"[{target.slug}] {step}")

            result = build(
                target, source=source, out_dir=out, compiler=compiler,
                recipes_dir=recipes_dir, on_step=on_step,
            )  # fmt: skip
    except (WheelBuildError, RecipeError) as exc:
        log = getattr(exc, "log", None)
        fail(f"{exc}" + (f"\nfull build log: {log}" if log else ""))
    if json_output:
        print_json(result.as_json())
    else:
        typer.echo(f"wheel:  {result.path}")
        typer.echo(f"target: {target.arch} {target.isa}; platform tag reached: {result.platform_tag}")
        if result.variant:
            typer.echo(f"variant: {_variant_line(result.variant)}")
        typer.echo(f"built in {result.seconds:.1f} s; log: {result.log}")
    for name, needle in result.leaked_paths:
        typer.echo(f"warning: {name} contains the build path {needle}", err=True)


def finalize(
    raw_wheel: Annotated[Path, typer.Argument(help="A wheel the scikit-build-core backend produced.")],
    isa: Annotated[str | None, ISA_OPTION] = None,
    arch: Annotated[str | None, ARCH_OPTION] = None,
    name_style: Annotated[str | None, STYLE_OPTION] = None,
    out: Annotated[Path, OUT_OPTION] = Path("wheelhouse"),
    build_dir: Annotated[
        Path | None,
        typer.Option("--build-dir", help="Its CMake build folder (default: build/wheel-ARCH-ISA)."),
    ] = None,
    source: Annotated[Path, typer.Option("--source", help="The engine source tree.")] = Path("."),
) -> None:
    """Repair, add the manifest to, name and re-pack a raw wheel (cibuildwheel's repair step)."""
    from cpubuild.naming import PORTABLE
    from cpubuild.wheel import WheelBuildError, WheelTarget, host_arch
    from cpubuild.wheel import finalize as do_finalize

    _no_style(name_style)
    isa = _isa(isa)
    arch = env.text("CPUBUILD_ARCH", arch) or host_arch()
    if isa == "native":
        fail("finalize needs the recipe the wheel was built from, not 'native'", code=2)
    build_dir = build_dir or source / "build" / f"wheel-{arch}-{isa}"
    target = WheelTarget(arch, isa if isa else PORTABLE)
    # auditwheel's output is kept back: its failure comes as one line in the error, without its traceback.
    log = io.StringIO()
    try:
        path, tag, _info, leaks, variant = do_finalize(
            raw_wheel.resolve(), target, build_dir=build_dir.resolve(), out_dir=out.resolve(),
            source=source.resolve(), log=log,
        )  # fmt: skip
    except WheelBuildError as exc:
        fail(str(exc))
    typer.echo(f"wheel: {path} ({tag})")
    if variant:
        typer.echo(f"variant: {_variant_line(variant)}")
    for name, needle in leaks:
        typer.echo(f"warning: {name} contains the build path {needle}", err=True)


def verify(
    wheel_path: Annotated[Path, typer.Argument(metavar="WHEEL", help="The wheel to verify.")],
    json_output: Annotated[bool, JSON_OPTION] = False,
    no_deps: Annotated[
        bool, typer.Option("--no-deps", help="Do not install the engine's dependencies (offline check).")
    ] = False,
    sysroot: Annotated[
        Path | None,
        typer.Option("--sysroot", help="For another arch's wheel: a sysroot with its Python (qemu-user)."),
    ] = None,
    allow_refusal: Annotated[
        bool,
        typer.Option(
            "--allow-refusal", help="Pass a wheel this CPU cannot run if its import refuses it cleanly (CI)."
        ),
    ] = False,
    cpu: Annotated[
        str | None,
        typer.Option("--cpu", help="Run under qemu-user -cpu CPU (e.g. Haswell, cortex-a76) as if on it."),
    ] = None,
    no_generate: Annotated[
        bool, typer.Option("--no-generate", help="Skip the short generation with the default model.")
    ] = False,
    model: Annotated[
        Path | None, typer.Option("--model", help="GGUF model for the short generation (default: cpullm's).")
    ] = None,
) -> None:
    """Install WHEEL into a fresh environment, import it, run the kernel self-test, report the variant."""
    from cpubuild.verify import VerifyError
    from cpubuild.verify import verify as do_verify

    try:
        report = do_verify(
            wheel_path, with_deps=not no_deps, sysroot=sysroot, allow_refusal=allow_refusal, cpu=cpu,
            generate=not no_generate, model=model,
        )  # fmt: skip
    except VerifyError as exc:
        fail(str(exc))
    if json_output:
        print_json(report.as_json())
    else:
        typer.echo(
            f"{'OK' if report.ok else 'FAILED'}: {report.wheel.name} ({report.how}, {report.seconds:.1f} s)"
        )
        if report.variant:
            typer.echo(f"variant loaded: {report.variant} ({report.reason})")
        if report.refused:
            typer.echo(f"refused at import, as it must be on this CPU: {report.error}")
        if report.selftest:
            st = report.selftest
            state = "passed" if st.get("passed") else ("FAILED" if st.get("ran") else "not run")
            last = (str(st.get("report", "")).strip().splitlines() or [""])[-1]
            typer.echo(f"kernel self-test: {state}: {last}")
        typer.echo(f"generation: {report.generation}")
        if report.error and not report.refused:
            typer.echo(f"error: {report.error}", err=True)
    if not report.ok:
        raise typer.Exit(1)


def install(
    wheelhouse: Annotated[Path, typer.Option("--wheelhouse", help="Folder of cpullm wheels.")] = Path(
        "wheelhouse"
    ),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Explain the choice; install nothing.")] = False,
    python: Annotated[
        str | None,
        typer.Option("--python", help="Install into this Python's environment (default: this one)."),
    ] = None,
    no_deps: Annotated[
        bool, typer.Option("--no-deps", help="Do not install the engine's dependencies.")
    ] = False,
    json_output: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Pick the best wheel for this host in a folder, explain the choice, and install it."""
    import tempfile

    from cpubuild import install as chooser
    from cpubuild.install import InstallError

    host = chooser.detect_host_view()
    try:
        best, judged = chooser.choose(wheelhouse, host)
        with tempfile.TemporaryDirectory(prefix="cpubuild-install-") as staging:
            wheel = best.path if dry_run else chooser.installable(best, Path(staging))
            python = python or sys.executable
            commands = chooser.install_commands(best, python, with_deps=not no_deps, wheel=wheel)
            if not dry_run:
                chooser.run_commands(commands)
    except InstallError as exc:
        fail(str(exc))
    if json_output:
        print_json(
            {
                "chosen": str(best.path), "variant": best.best_variant, "installed": not dry_run,
                "commands": commands,
                "wheels": [{"wheel": c.path.name, "fits": c.fits, "why": c.why} for c in judged],
            }
        )  # fmt: skip
        return
    for cand in judged:
        mark = "->" if cand is best else "  "
        typer.echo(f"{mark} {cand.path.name}: {cand.why}")
    typer.echo(f"chosen: {best.path.name} (loads {best.best_variant} on this host)")
    for command in commands:
        typer.echo(f"{'would run' if dry_run else 'ran'}: {' '.join(command)}")


def matrix(
    json_output: Annotated[bool, JSON_OPTION] = False,
    recipes_dir: Annotated[Path | None, RECIPES_OPTION] = None,
) -> None:
    """Print the CI build jobs (arch x recipe + the portable wheel per arch) as a GitHub Actions matrix."""
    from cpubuild.matrix import github_matrix

    document = github_matrix(recipes_dir)
    if json_output:
        # One line: the workflow writes it to $GITHUB_OUTPUT.
        typer.echo(json.dumps(document, separators=(",", ":")))
        return
    for job in document["include"]:
        typer.echo(f"{job['name']:<24} runner {job['runner']:<18} cibuildwheel {job['cibw_build']}")
