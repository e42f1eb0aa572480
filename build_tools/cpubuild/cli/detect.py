"""`cpubuild detect`: this host's CPU, usable features and cores, and which recipes it can run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from cpubuild.cli.common import RECIPES_OPTION, fail, print_json


def register(app: typer.Typer) -> None:
    app.command("detect")(detect)


def detect(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the JSON document (schema in README).")
    ] = False,
    recipes_dir: Annotated[Path | None, RECIPES_OPTION] = None,
    machine: Annotated[
        Path | None,
        typer.Option(
            "--machine", help="Probe a recorded machine (TOML, see tests/fixtures/cpuinfo), not this host."
        ),
    ] = None,
) -> None:
    """Probe this CPU: features the OS lets us use, usable cores, and the best recipe."""
    from cpubuild.host.detect import ProbeError, detect_host, host_from_inputs, inputs_from_machine_file
    from cpubuild.recipes import RecipeError, load_recipes
    from cpubuild.report import detect_document
    from cpubuild.selection import select

    try:
        start = time.perf_counter()
        host = host_from_inputs(inputs_from_machine_file(machine)) if machine else detect_host()
        probe_seconds = time.perf_counter() - start
        selection = select(host, load_recipes(recipes_dir))
    except (ProbeError, RecipeError) as exc:
        fail(str(exc))
    document = detect_document(selection, round(probe_seconds, 6))
    if json_output:
        print_json(document)
    else:
        _print_tables(document)


def _print_tables(document: dict) -> None:  # type: ignore[type-arg]
    from rich.console import Console
    from rich.table import Table

    from cpubuild.features import FEATURES

    console = Console()
    host = document["host"]
    facts = Table(title="Host", show_header=False, title_justify="left")
    facts.add_column("fact", style="bold")
    facts.add_column("value")
    cores = host["cores"]
    quota = (
        "no cgroup CPU limit"
        if cores["cgroup_quota"] is None
        else (f"cgroup quota {cores['cgroup_quota']:g} CPUs ({cores['quota_source']})")
    )
    rows = [
        ("arch", host["arch"]),
        ("vendor", host["vendor"]),
        ("model", host["model_name"]),
        ("microarchitecture", host["microarchitecture"]),
        ("psABI level", host["psabi_level"] or "n/a"),
        ("usable cores", f"{host['usable_cores']} (affinity {cores['affinity']}, {quota})"),
    ]
    if host["xcr0"] is not None:
        rows.append(("XCR0", host["xcr0"]))
    if host["amx_permission"] is not None:
        rows.append(("AMX permission", host["amx_permission"]))
    if host["hwcap"] is not None:
        rows.append(("HWCAP / HWCAP2", f"{host['hwcap']} / {host['hwcap2']}"))
    rows.append(("probe time", f"{document['probe_seconds'] * 1000:.1f} ms"))
    for fact, value in rows:
        facts.add_row(fact, str(value))
    console.print(facts)
    for note in host["notes"]:
        console.print(f"[yellow]note:[/] {note}")

    features = document["features"]
    unusable = {item["name"]: item["reason"] for item in features["unusable"]}
    table = Table(title="Features", title_justify="left")
    table.add_column("feature")
    table.add_column("status")
    table.add_column("meaning / reason")
    for name, meaning in FEATURES[host["arch"]].items():
        if name in features["usable"]:
            table.add_row(name, "[green]usable[/]", meaning)
        elif name in unusable:
            table.add_row(name, "[yellow]present, unusable[/]", unusable[name])
        else:
            table.add_row(name, "[dim]absent[/]", meaning)
    console.print(table)

    recipes = Table(title=f"Recipes ({host['arch']})", title_justify="left")
    recipes.add_column("recipe")
    recipes.add_column("priority", justify="right")
    recipes.add_column("runnable")
    recipes.add_column("why not")
    for recipe in document["recipes"]:
        mark = "[green]yes[/]" if recipe["runnable"] else "[red]no[/]"
        name = f"[bold]{recipe['name']}[/]" if recipe["name"] == document["best"] else recipe["name"]
        recipes.add_row(name, str(recipe["priority"]), mark, recipe["why_not"] or "")
    console.print(recipes)
    if document["best"]:
        console.print(f"Best recipe: [bold green]{document['best']}[/]")
    else:
        console.print("[red]No recipe can run on this host.[/]")
