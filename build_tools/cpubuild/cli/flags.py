"""`cpubuild flags`: the compiler flags of a recipe, proven by compiling a probe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cpubuild.cli.common import RECIPES_OPTION, env_help, fail, print_json


def register(app: typer.Typer) -> None:
    app.command("flags")(flags)


def flags(
    isa: Annotated[str, typer.Option("--isa", help="Recipe name, e.g. avx2, avx512_bf16, amx, sve.")],
    compiler: Annotated[
        str | None,
        typer.Option("--compiler", help=env_help("C++ compiler to check (default: c++).", "CPUBUILD_CXX")),
    ] = None,
    arch: Annotated[
        str | None, typer.Option("--arch", help="The recipe's architecture, if the name is ambiguous.")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of the flags line.")
    ] = False,
    recipes_dir: Annotated[Path | None, RECIPES_OPTION] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir", help=env_help("Probe cache (default: ~/.cache/cpubuild).", "CPUBUILD_CACHE_DIR")
        ),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Compile the probe even if a cached success exists.")
    ] = False,
) -> None:
    """Print the flags recipe ISA uses with this compiler, after checking the compiler accepts them."""
    from cpubuild.compiler import CompilerError, default_compiler
    from cpubuild.flags import FlagsError, resolve_flags
    from cpubuild.recipes import RecipeError, load_recipes
    from cpubuild.report import SCHEMA_VERSION

    try:
        recipe = load_recipes(recipes_dir).get(isa, arch)
        result = resolve_flags(recipe, default_compiler(compiler), cache_dir, use_cache=not no_cache)
    except KeyError as exc:
        fail(str(exc.args[0]), code=2)
    except (RecipeError, CompilerError, FlagsError) as exc:
        fail(str(exc))
    if json_output:
        print_json(
            {
                "schema_version": SCHEMA_VERSION,
                "isa": recipe.name,
                "arch": recipe.arch,
                "compiler": {
                    "command": result.compiler.command,
                    "path": result.compiler.path,
                    "family": result.compiler.family,
                    "version": result.compiler.version,
                    "target": result.compiler.target,
                },
                "flags": list(result.flags),
                "probe_cached": result.cached,
            }
        )
    else:
        typer.echo(" ".join(result.flags))
