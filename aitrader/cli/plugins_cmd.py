"""CLI command ``aitrader plugins``: the installed plug-ins and whether each one loads."""

from __future__ import annotations

import typer

from aitrader.cli._output import console, print_json


def plugins_cmd(
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when any plug-in is broken (for CI)."),
    json_out: bool = typer.Option(False, "--json", help="Print exactly one JSON document on stdout."),
) -> None:
    """List the feature kinds, model kinds and strategies installed packages add (docs/plugins.md)."""
    from aitrader import plugins

    rows = plugins.report()
    if json_out:
        print_json({"plugins": rows})
    else:
        from rich.table import Table

        table = Table(title=f"{len(rows)} plug-ins (entry-point groups {', '.join(plugins.GROUPS.values())})")
        for col in ("group", "name", "distribution", "version", "entry point", "status"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(r["group"], r["name"], r["distribution"], r["version"], r["entry_point"],
                          r["status"] if r["error"] is None else f"broken: {r['error']}")
        console().print(table)
    if strict and any(r["error"] for r in rows):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach this module's command to the root app."""
    app.command("plugins")(plugins_cmd)
