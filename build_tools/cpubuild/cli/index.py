"""`cpubuild index`: a static PEP 503/691 simple index (with PEP 825 variants.json) for a wheelhouse."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cpubuild.cli.common import fail, print_json


def register(app: typer.Typer) -> None:
    app.command("index")(index)


def index(
    wheelhouse: Annotated[Path, typer.Argument(metavar="WHEELHOUSE", help="Folder of wheels to index.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write simple/ into.")] = Path("index"),
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Write a static simple index (PEP 503 HTML + PEP 691 JSON) of WHEELHOUSE, with PEP 825 variants.json."""
    from cpubuild.index import IndexBuildError, build_index

    try:
        result = build_index(wheelhouse, out)
    except IndexBuildError as exc:
        fail(str(exc))
    if json_output:
        print_json(result.as_json())
        return
    simple = out / "simple"
    for project, files in result.projects.items():
        typer.echo(f"{project}:")
        for f in files:
            kind = (
                "variants.json" if f.is_variants_json else (f"variant {f.variant}" if f.variant else "plain")
            )
            typer.echo(f"  {f.filename} ({kind}, {f.size} bytes)")
    if result.variants:
        typer.echo(
            f"variants.json validated with: {result.validated_with or 'nothing (install cpubuild[variants])'}"
        )
    typer.echo(f"index: {simple}")
    typer.echo(f"serve it (e.g. python -m http.server -d {out}), then:")
    typer.echo("  pip install --index-url http://HOST:PORT/simple cpullm")
