"""Helpers shared by the `cpubuild` commands: error exits and JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer

# --recipes DIR, shared by every command that reads recipes (flag > $CPUBUILD_RECIPES > repo's recipes/).
RECIPES_OPTION = typer.Option(
    "--recipes", envvar="CPUBUILD_RECIPES", help="Folder of recipes/<arch>/<name>.toml.", show_envvar=True
)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` to stderr and exit with `code` (no traceback)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def print_json(document: dict[str, Any]) -> None:
    """Write `document` to stdout as indented JSON."""
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
