"""The `cpubuild` command line (typer + rich).

Each command lives in its own module that defines `register(app: typer.Typer) -> None` and adds its
command(s) there with `@app.command(...)`. To add a command (for example `cpubuild wheel`), write
such a module and append its dotted name to COMMAND_MODULES; nothing else changes. Keep heavy
imports inside the command functions so `cpubuild --help` stays fast, report failures with
`cli.common.fail()` (a sentence, exit code 1, no traceback), and read settings with the one
precedence: command-line flag > CPUBUILD_* environment variable > default, through `cpubuild.env`
(the registry of CPUBUILD_* variables; a new variable is a row there, never a bare os.environ read).
"""

from __future__ import annotations

import importlib
from typing import Annotated, Final

import typer

from cpubuild import __version__

app = typer.Typer(
    name="cpubuild",
    help="Probe this CPU, pick a build recipe and its compiler flags, and build tuned cpullm wheels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help and usage errors: no boxes, no "<bool>" metavar on flags, greppable in CI logs.
    rich_markup_mode=None,
)

COMMAND_MODULES: Final = (
    "cpubuild.cli.detect",
    "cpubuild.cli.recipes",
    "cpubuild.cli.flags",
    "cpubuild.cli.wheels",
    "cpubuild.cli.index",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cpubuild {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Probe this CPU, pick a build recipe and its compiler flags, and build tuned cpullm wheels."""
    from cpubuild import env

    for warning in env.unknown():
        typer.echo(f"warning: {warning}", err=True)


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
