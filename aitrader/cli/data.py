"""CLI commands: ``aitrader data check`` and ``aitrader data sample``."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import typer

from aitrader.cli._output import console, print_json


class SampleSymbol(StrEnum):
    """Symbols of the built-in sample (``aitrader.data.sample.SAMPLE_SYMBOLS``; a test keeps them equal)."""

    AAPL = "AAPL"
    MSFT = "MSFT"
    IBM = "IBM"
    GOOG = "GOOG"


data_app = typer.Typer(help="Inspect bar files and write the built-in sample.", no_args_is_help=True)


@data_app.command("check")
def check_command(
    path: str = typer.Argument(..., help="Bar file (.csv, .csv.gz, .parquet) or a directory of them."),
    symbol: str | None = typer.Option(None, "--symbol", "-s", help="Only this symbol of a long file or directory."),
    repair: bool = typer.Option(
        False,
        "--repair",
        help="Report what remains after repairing (drop bad rows, "
        "sort, keep the last duplicate); valid when something usable is left.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON document."),
) -> None:
    """Report rows, span, bar interval, gaps, problems and warnings of bar data; exit 1 when invalid.

    Warnings (suspected unadjusted splits, quantised prices) do not make data invalid.
    """
    from aitrader.data.report import check_bars

    report = check_bars(path, repair=repair, symbol=symbol).to_dict()
    if as_json:
        print_json(report)
    else:
        _render_check(report)
    if not report["valid"]:
        n = len(report["problems"]) + sum(len(s["problems"]) for s in report["symbols"])
        # A file that cannot be read at all (corrupt archive, device, bad header) is not repairable.
        fix = "fix the file" if report["problems"] else "fix them or pass --repair"
        typer.echo(f"error: {path} is invalid: {n} problem(s); {fix}", err=True)
        raise typer.Exit(1)


@data_app.command("sample")
def sample_command(
    symbol: SampleSymbol = typer.Option(SampleSymbol.AAPL, "--symbol", "-s", case_sensitive=False,
                                        help="Sample symbol."),
    out: str | None = typer.Option(
        None, "--out", "-o", help="Output file (.csv, .csv.gz or .parquet); default: data/sample_<SYMBOL>.csv."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as one JSON document."),
) -> None:
    """Write the built-in real sample (split-adjusted daily bars 2000-2013), offline."""
    from aitrader.data.sample import write_sample

    written = write_sample(symbol.value, out)
    if as_json:
        print_json(written)
    else:
        console().print(
            f"wrote {written['rows']} {written['symbol']} bars ({str(written['first'])[:10]} .. "
            f"{str(written['last'])[:10]}) to {written['path']}"
        )


def _short(stamp: str | None) -> str:
    """ISO stamp for a table: dates without their midnight time."""
    if stamp is None:
        return "-"
    date, _, time = stamp.partition("T")
    return date if time in ("", "00:00:00") else f"{date} {time.removesuffix(':00')}"


def _td(text: str | None) -> str:
    """Compact duration: ``1 days 00:00:00`` -> ``1d``, ``0 days 00:05:00`` -> ``5m``."""
    import pandas as pd

    if text is None:
        return "-"
    c = pd.Timedelta(text).components
    parts = [f"{v}{u}" for v, u in zip((c.days, c.hours, c.minutes, c.seconds), "dhms", strict=True) if v]
    return "".join(parts) or "0s"


def _render_check(report: dict[str, Any]) -> None:
    # No progress bar: checking a million rows takes about a second.
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(report["path"]), box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  collapse_padding=True)
    # Every column may wrap (stamps at the space between date and time) so that 80 columns fit all.
    for col in ("symbol", "rows", "first", "last", "every", "gaps", "max gap", "issues"):
        table.add_column(col, overflow="fold", min_width=10 if col in ("first", "last") else len(col))
    for s in report["symbols"]:
        rows = f"{s['rows']}" + (f" ({s['usable_rows']} usable)" if s["usable_rows"] != s["rows"] else "")
        table.add_row(
            escape(s["symbol"]),
            rows,
            _short(s["first"]),
            _short(s["last"]),
            _td(s["interval"]),
            str(s["gaps"]["count"]),
            _td(s["gaps"]["largest"]),
            str(len(s["problems"])),
        )
    out = console()
    out.print(table)
    for s in report["symbols"]:
        if s["session"]:
            sess = s["session"]
            stamped = {"start": "at their start", "end": "at their END"}.get(sess["stamps"])
            out.print(f"{escape(s['symbol'])}: trading days run {sess['first_bar']} .. {sess['last_bar']} "
                      f"({s['tz'] or 'no time zone'}), {s['session_breaks']} overnight/weekend breaks (not gaps)"
                      + (f"; bars look stamped {stamped}" if stamped else ""), soft_wrap=True)
    for p in report["problems"] + [p for s in report["symbols"] for p in s["problems"]]:
        out.print(f"[red]{p['rule']}[/red] {escape(p['message'])}", soft_wrap=True)
    warnings = [w for s in report["symbols"] for w in s["warnings"]]
    for w in warnings:
        out.print(f"[yellow]warning {w['rule']}[/yellow] {escape(w['message'])}", soft_wrap=True)
    if report["valid"]:
        n = len(warnings)
        out.print("valid" + (" after repair" if report["repair"] else "")
                  + (f", {n} warning{'s' if n > 1 else ''}" if n else ""))


def register(app: typer.Typer) -> None:
    """Attach the ``data`` sub-app to the root app."""
    app.add_typer(data_app, name="data")
