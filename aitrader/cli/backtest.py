"""CLI command ``backtest``: replay a model's unseen bars through the paper-trade engine and report.

Logic in :mod:`aitrader.trading.backtest`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import typer

from aitrader.cli._exit import skip_final_collections
from aitrader.cli._output import console
from aitrader.cli.trade import JSON_HELP, MISMATCH_HELP, MODEL_HELP, RUNS_HELP, WORKERS_HELP

if TYPE_CHECKING:
    from aitrader.trading.backtest import Backtest

ROWS = (
    ("total_return", "Total return", "pct"), ("cagr", "CAGR", "pct"), ("sharpe", "Sharpe", "num"),
    ("sortino", "Sortino", "num"), ("max_drawdown", "Max drawdown", "pct"),
    ("max_drawdown_bars", "Max drawdown duration (bars)", "int"),
    ("max_drawdown_duration", "Max drawdown duration (time)", "str"), ("exposure", "Exposure", "pct"),
    ("turnover", "Turnover (per bar)", "num4"), ("fees", "Fees", "money"), ("trades", "Trades", "int"),
    ("win_rate", "Win rate", "pct"), ("profit_factor", "Profit factor", "num"),
    ("avg_trade_return", "Average trade return", "pct"), ("avg_trade_duration", "Average trade duration", "str"),
    ("avg_trade_bars", "Average trade bars", "num"), ("final_equity", "Final equity", "money"),
)
TRADE_COLS = (("entry_ts", "entry"), ("exit_ts", "exit"), ("side", "side"), ("quantity", "qty"),
              ("pnl", "P&L"), ("return", "return"), ("bars", "bars"), ("mae", "MAE"), ("mfe", "MFE"))
MAX_TRADE_ROWS = 20


def backtest_cmd(
    model: list[str] = typer.Option(None, "--model", help=MODEL_HELP),
    data: list[str] = typer.Option(
        None, "--data", help="Bars: a file, a directory (one file per symbol) or SYMBOL=PATH; repeatable. "
        "Default: the built-in sample after the model's training period."),
    start: str | None = typer.Option(
        None, "--from", help="Trade from this date/time on (default: the model's first unseen bar)."),
    end: str | None = typer.Option(None, "--to", help="Trade up to this date/time (a date: the whole day)."),
    allow_in_sample: bool = typer.Option(
        False, "--allow-in-sample", help="Allow trading bars the model was trained on."),
    allow_symbol_mismatch: bool = typer.Option(False, "--allow-symbol-mismatch", help=MISMATCH_HELP),
    config: str | None = typer.Option(
        None, "--config", help="Trading config: costs, sizing, risk limits (default: config/ml_trading_config.yaml)."),
    out_run: str | None = typer.Option(
        None, "--out-run", help="Keep the replay's ledger as this run (RUNS_DIR/RUN_ID; default: none kept)."),
    runs_dir: str = typer.Option("runs", "--runs-dir", help=RUNS_HELP),
    registry: str | None = typer.Option(
        None, "--registry", envvar="AITRADER_REGISTRY", show_envvar=False,
        help="Registry root folder (default: $AITRADER_REGISTRY, else ./models)."),
    report: str | None = typer.Option(
        None, "--report", help="Also write the HTML tearsheet (equity vs buy-and-hold, drawdown, monthly returns, "
        "trades on price, rolling IC, importance, drift) to this file."),
    book: list[str] = typer.Option(None, "--book", help="Order-book snapshots for models with book features: "
                                   "SYMBOL=PATH (repeatable) or one PATH (docs/orderbook.md)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    workers: str = typer.Option("auto", "--workers", help=WORKERS_HELP),
) -> None:
    """Backtest models on their unseen bars with the paper-trade engine: performance vs buy-and-hold, trades."""
    from aitrader._memory import settle_for_long_run
    from aitrader.features.book import parse_book_options
    from aitrader.trading.backtest import backtest

    settle_for_long_run()
    view = "live" if sys.stdout.isatty() and not json_out else "none"
    result = backtest(models=model or None, data=data or None, config_path=config, registry_root=registry,
                      start=start, end=end, allow_in_sample=allow_in_sample,
                      allow_symbol_mismatch=allow_symbol_mismatch, out_run=out_run, runs_dir=runs_dir, view=view,
                      report=report, books=parse_book_options(book), workers=workers)
    if json_out:
        print_backtest_json(result)
    else:
        _render(result)
    skip_final_collections()  # its ledger, registry, bar files and report are closed (cli/_exit.py)


_HOLE = "\x00trades\x00"  # a string no report holds: where the trades' text goes


def print_backtest_json(result: Backtest) -> None:
    """``print_json(result.as_dict())``, the same text, with the trades' text written from their columns
    (:func:`aitrader.trading.trips.trades_text_parts`: no record dict per trade, a piece of trades at a time)."""
    from aitrader._json import to_json
    from aitrader.trading.trips import trades_text_parts

    hole = to_json(_HOLE)
    doc = to_json({"models": result.models, "run": result.run, "kept": result.kept,
                   "performance": result.performance, "trades": _HOLE, "report": result.report})
    head, tail = doc.split(hole, 1)  # written around the trades' text: no copy of a document of ~450 bytes a trade
    sys.stdout.write(head)
    for part in trades_text_parts(result.trades, *result.excursion):  # a piece of trades at a time
        sys.stdout.write(part)
    for part in (tail, "\n"):
        sys.stdout.write(part)
    sys.stdout.flush()


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{value * 100:,.2f}%"
    if kind == "num":
        return f"{value:,.2f}"
    if kind == "num4":
        return f"{value:,.4f}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "money":
        return f"{value:,.2f}"
    return str(value)


def _render(result: Backtest) -> None:
    """The tables: the figures, then the last :data:`MAX_TRADE_ROWS` trades (only their records are built)."""
    from rich import box
    from rich.table import Table

    perf, run = result.performance, result.run
    window = perf["window"]
    out = console()
    title = (f"backtest {', '.join(result.models or [])}: "
             f"{window['first_bar']} .. {window['last_bar']} ({window['bars']:,} bars)")
    t = Table(title=title, box=box.SIMPLE_HEAD)
    t.add_column("metric")
    t.add_column("strategy", justify="right")
    t.add_column("buy & hold", justify="right")
    for key, label, kind in ROWS:
        t.add_row(label, _fmt(perf["strategy"].get(key), kind), _fmt(perf["buy_and_hold"].get(key), kind))
    out.print(t)
    total = len(result.trades)
    if total:
        shown = f", last {MAX_TRADE_ROWS}" if total > MAX_TRADE_ROWS else ""
        tt = Table(box=box.SIMPLE_HEAD, title=f"trades ({total}{shown})")
        for _, label in TRADE_COLS:
            tt.add_column(label, justify="left" if label in ("entry", "exit", "side") else "right", no_wrap=True)
        for tr in result.trade_records(last=MAX_TRADE_ROWS):
            tt.add_row(*(_trade_cell(key, tr.get(key)) for key, _ in TRADE_COLS))
        out.print(tt)
    costs = window["costs"]
    kept = f"; ledger kept in {run['state_dir']}" if result.kept else ""
    out.print(f"costs: {costs['commission_bps']:g} bps commission + {costs['slippage_bps']:g} bps slippage per side "
              f"({costs['asset_class']}){kept}")
    if result.report:
        out.print(f"report: {result.report}")


def _trade_cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in ("return", "mae", "mfe"):
        return f"{value * 100:,.2f}%"
    if key in ("pnl", "entry_price", "exit_price"):
        return f"{value:,.2f}"
    if key == "quantity":
        return f"{value:,.4g}"
    if key in ("entry_ts", "exit_ts"):
        return _short_ts(str(value))
    return str(value)


def _short_ts(value: str) -> str:
    """``2024-01-02 14:00`` (seconds and zone dropped: the table must fit 100 columns)."""
    import pandas as pd

    try:
        return str(pd.Timestamp(value).strftime("%Y-%m-%d %H:%M"))
    except (TypeError, ValueError):
        return value


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("backtest")(backtest_cmd)
