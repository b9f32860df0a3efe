"""CLI commands: ``aitrader features list`` and ``aitrader features build``."""

from __future__ import annotations

from enum import StrEnum

import typer

from aitrader.cli._output import console, print_json

features_app = typer.Typer(help="List the feature registry and compute feature files.", no_args_is_help=True)



class Group(StrEnum):
    """Feature groups (the same as ``aitrader.features.registry.GROUPS``; a test keeps them equal)."""

    price = "price"
    volume = "volume"
    indicator = "indicator"
    signal = "signal"
    ml = "ml"
    book = "book"


class Mode(StrEnum):
    """Evaluator used by ``features build``."""

    batch = "batch"
    streaming = "streaming"


_CONFIG_HELP = "features.yaml to use (default: ./config/features.yaml, else the packaged one)."


@features_app.command("list")
def list_command(
    group: Group | None = typer.Option(None, "--group", "-g", help="Only this group."),
    config: str | None = typer.Option(None, "--config", help=_CONFIG_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the features as one JSON document."),
) -> None:
    """Show every feature: name, group, aliases, parameters, warm-up and description."""
    from rich.table import Table

    from aitrader.features.registry import FeatureRegistry

    registry = FeatureRegistry.load(config)
    specs = [registry.spec(n) for n in registry.names(group.value if group else None)]
    if as_json:
        print_json({"source": registry.source, "default": registry.default_names(),
                    "features": [s.to_dict() for s in specs]})
        return
    table = Table(title=f"{len(specs)} features ({registry.source}); * = default model set")
    for col in ("name", "group", "aliases", "params", "warm-up", "description"):
        table.add_column(col, overflow="fold")
    for s in specs:
        params = ", ".join(f"{k}={v}" for k, v in s.params.items())
        table.add_row(s.name + (" *" if s.default else ""), s.group, ", ".join(s.aliases), params,
                      str(s.warmup), s.description)
    console().print(table)


@features_app.command("build")
def build_command(
    data: str = typer.Option(..., "--data", "-d", help="Bar file (.csv, .csv.gz, .parquet) of one symbol."),
    out: str = typer.Option(..., "--out", "-o", help="Output parquet file (written atomically)."),
    features: str | None = typer.Option(None, "--features", "-f", help="Comma-separated names or aliases "
                                        "(default: the default model set)."),
    mode: Mode = typer.Option(Mode.batch, "--mode", help="batch (vectorised) or streaming (bar by bar, as live)."),
    symbol: str | None = typer.Option(None, "--symbol", "-s", help="Symbol to take from a multi-symbol file."),
    repair: bool = typer.Option(False, "--repair", help="Drop invalid rows, sort, keep the last duplicate "
                                "(as `data check --repair`) instead of refusing the data."),
    config: str | None = typer.Option(None, "--config", help=_CONFIG_HELP),
    book: list[str] = typer.Option(None, "--book", help="Order-book snapshots for book features: PATH or "
                                   "SYMBOL=PATH (docs/orderbook.md)."),
    as_json: bool = typer.Option(False, "--json", help="Print a summary as one JSON document."),
) -> None:
    """Compute features over a bar file and write them to parquet (index timestamp, NaN during warm-up)."""
    from aitrader.features.book import parse_book_options
    from aitrader.features.build import build_features

    names = [n.strip() for n in features.split(",") if n.strip()] if features else None
    summary = build_features(data, out, names=names, mode=mode.value, symbol=symbol, registry_path=config,
                             repair=repair, book=parse_book_options(book))
    if as_json:
        print_json(summary)
    else:
        console().print(f"wrote {summary['rows']} rows x {len(summary['features'])} features to {summary['out']} "
                        f"({summary['mode']}, {summary['seconds']:.2f} s; {summary['complete_rows']} rows past "
                        f"the {summary['warmup']}-bar warm-up)")


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.add_typer(features_app, name="features")
