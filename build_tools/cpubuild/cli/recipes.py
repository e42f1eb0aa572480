"""`cpubuild recipes`: list the build targets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cpubuild.cli.common import RECIPES_OPTION, fail, print_json


def register(app: typer.Typer) -> None:
    app.command("recipes")(recipes)


def recipes(
    arch: Annotated[
        str | None, typer.Option("--arch", help="Only this architecture (x86_64 or aarch64).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    recipes_dir: Annotated[Path | None, RECIPES_OPTION] = None,
) -> None:
    """List the recipes (build targets), validated against the schema."""
    from cpubuild.features import ARCHES
    from cpubuild.recipes import RecipeError, load_recipes
    from cpubuild.report import SCHEMA_VERSION, recipe_document

    if arch is not None and arch not in ARCHES:
        fail(f"unknown architecture {arch!r}; use one of {', '.join(ARCHES)}", code=2)
    try:
        recipe_set = load_recipes(recipes_dir)
    except RecipeError as exc:
        fail(str(exc))
    chosen = [r for r in recipe_set.all() if arch is None or r.arch == arch]
    if json_output:
        print_json({"schema_version": SCHEMA_VERSION, "recipes": [recipe_document(r) for r in chosen]})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Recipes in {recipe_set.directory}", title_justify="left")
    for column in ("arch", "recipe", "priority", "parent", "adds features", "description"):
        table.add_column(column)
    for recipe in chosen:
        table.add_row(
            recipe.arch, recipe.name, str(recipe.priority), recipe.parent or "",
            " ".join(recipe.own_features), recipe.description,
        )  # fmt: skip
    Console().print(table)
