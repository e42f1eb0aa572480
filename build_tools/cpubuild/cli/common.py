"""Helpers shared by the `cpubuild` commands: error exits and JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer


def env_help(text: str, name: str) -> str:
    """An option's help naming the CPUBUILD_* variable that stands in for it (read by `cpubuild.env`).

    Parentheses, not brackets: typer's rich help would take "[...]" for markup and drop it.
    """
    return f"{text} (env var: {name})"


# --recipes DIR, shared by every command that reads recipes (flag > $CPUBUILD_RECIPES > repo's recipes/).
RECIPES_OPTION = typer.Option(
    "--recipes", help=env_help("Folder of recipes/<arch>/<name>.toml.", "CPUBUILD_RECIPES")
)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` to stderr and exit with `code` (no traceback)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def print_json(document: dict[str, Any]) -> None:
    """Write `document` to stdout as indented JSON."""
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
