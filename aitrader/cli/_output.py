"""Rendering helpers shared by the commands: one JSON document on stdout, rich on the terminal.

Kept free of heavy imports: numpy/pandas values are converted by duck typing. Human output is
aligned tables with formatted numbers (money with thousands separators and 2 decimals, ratios as
percentages, counts as integers), never a Python repr; ``--json`` is the machine form.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from aitrader._json import to_json

if TYPE_CHECKING:  # rich is imported by the helpers that draw: `--json`, `export` and `status --json` need none
    from rich.console import Console

__all__ = ["console", "err_console", "fmt_count", "fmt_money", "fmt_num", "fmt_pct", "print_json",
           "render_run_summary", "status", "to_json"]


def print_json(obj: Any) -> None:
    """Print exactly one JSON document on stdout."""
    sys.stdout.write(to_json(obj) + "\n")
    sys.stdout.flush()


def console() -> Console:
    """Console for human output (stdout)."""
    from rich.console import Console

    return Console(highlight=False)


def err_console() -> Console:
    """Console for progress bars and notes (stderr), so stdout stays clean for pipes."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@contextlib.contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner with ``message`` on stderr while a slow step runs, only when stderr is a terminal
    (a pipe, a cron log or ``--json`` consumer sees nothing); it disappears when the step ends."""
    if not sys.stderr.isatty():
        yield
        return
    with err_console().status(message, spinner="dots"):
        yield


# ------------------------------------------------------------------------------------ numbers


def _real(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:  # numpy scalars
            value = float(value)
        except (TypeError, ValueError):
            return None
    value = float(value)
    return value if math.isfinite(value) else None


def fmt_money(value: Any) -> str:
    """``99,986.20``; '-' for a missing or non-finite value."""
    v = _real(value)
    return "-" if v is None else f"{v:,.2f}"


def fmt_pct(value: Any, digits: int = 2) -> str:
    """A fraction as a signed percentage: ``-0.0025`` -> ``-0.25%``."""
    v = _real(value)
    return "-" if v is None else f"{v * 100:+.{digits}f}%"


def fmt_num(value: Any, digits: int = 3) -> str:
    """A ratio rounded to ``digits`` decimals; '-' when missing."""
    v = _real(value)
    return "-" if v is None else f"{v:.{digits}f}"


def fmt_count(value: Any) -> str:
    v = _real(value)
    return "-" if v is None else f"{int(v):,}"


def fmt_qty(value: Any) -> str:
    """A quantity: up to 6 significant decimals, no exponent for ordinary sizes."""
    v = _real(value)
    return "-" if v is None else f"{v:,.6g}" if abs(v) >= 1e6 else f"{v:.6g}"


def fmt_price(value: Any) -> str:
    """A price: 2 decimals from 1 up, 4 significant digits below (a 0.00012 coin is not 0.00)."""
    v = _real(value)
    if v is None:
        return "-"
    return f"{v:,.2f}" if abs(v) >= 1 else f"{v:.4g}"


def fmt_counts(counts: Any) -> str:
    """``{"max_positions": 3, "stale": 1}`` -> ``max_positions 3, stale 1``; '-' when empty."""
    if not isinstance(counts, Mapping) or not counts:
        return "-"
    return ", ".join(f"{k} {fmt_count(n)}" for k, n in counts.items())


# ------------------------------------------------------------------------------------ run summary


def render_run_summary(summary: Mapping[str, Any], title: str) -> None:
    """paper-trade / status: a header line, performance and activity side by side, then positions
    and models as tables (readable at 100 columns)."""
    from rich import box
    from rich.columns import Columns
    from rich.table import Table
    from rich.text import Text

    out = console()
    out.print(Text.assemble((f"{title}: run {summary.get('run_id')}", "bold"), f" ({summary.get('status')})  ",
                            (str(summary.get("state_dir") or ""), "dim")), soft_wrap=True)
    first, last = summary.get("first_ts"), summary.get("last_ts")
    if first or last:
        out.print(f"bars {fmt_count(summary.get('bars'))}: {first or '-'} .. {last or '-'}", soft_wrap=True,
                  markup=False)

    def kv(heading: str, rows: list[tuple[str, str]]) -> Table:
        t = Table(title=heading, title_justify="left", box=box.SIMPLE_HEAD, show_header=False, padding=(0, 1))
        t.add_column("", style="dim", no_wrap=True)
        t.add_column("", justify="right", no_wrap=True)
        for k, v in rows:
            t.add_row(k, v)
        return t

    cost = summary.get("costs")
    costs: Mapping[str, Any] = cost if isinstance(cost, Mapping) else {}
    cost_text = "-"
    if costs:
        bps = (_real(costs.get("commission_bps")) or 0.0) + (_real(costs.get("slippage_bps")) or 0.0)
        cost_text = f"{bps:g} bps ({costs.get('asset_class', '-')})"
    perf = kv("performance", [
        ("initial cash", fmt_money(summary.get("initial_cash"))),
        ("final equity", fmt_money(summary.get("final_equity"))),
        ("total return", fmt_pct(summary.get("total_return"))),
        ("Sharpe", fmt_num(summary.get("sharpe"), 2)),
        ("Sortino", fmt_num(summary.get("sortino"), 2)),
        ("max drawdown", fmt_pct(summary.get("max_drawdown"))),
        ("turnover", fmt_num(summary.get("turnover"), 4)),
        ("fees", fmt_money(summary.get("fees"))),
        ("costs", cost_text),
    ])
    in_sample = summary.get("in_sample_predictions")
    preds = fmt_count(summary.get("predictions")) + (f" ({fmt_count(in_sample)} in-sample)" if in_sample else "")
    activity = kv("activity", [
        ("predictions", preds),
        ("signals", fmt_count(summary.get("signals"))),
        ("orders", fmt_count(summary.get("orders"))),
        ("fills", fmt_count(summary.get("fills"))),
        ("rejections", fmt_counts(summary.get("rejections"))),
        ("errors", fmt_counts(summary.get("errors"))),
        ("alerts", fmt_counts(summary.get("alerts"))),
    ])
    out.print(Columns([perf, activity], padding=(0, 4)))

    cursor = summary.get("cursor")
    cursors: Mapping[str, Any] = cursor if isinstance(cursor, Mapping) else {}
    positions = {str(p.get("symbol")): p for p in summary.get("positions") or [] if isinstance(p, Mapping)}
    symbols = sorted(set(cursors) | set(positions))
    if symbols:
        t = Table(title="positions", title_justify="left", box=box.SIMPLE_HEAD)
        for col in ("symbol", "quantity", "avg price", "realised P&L", "last bar", "at"):
            t.add_column(col, justify="left" if col in ("symbol", "at") else "right", no_wrap=True)
        for sym in symbols:
            p, c = positions.get(sym, {}), cursors.get(sym) or {}
            qty = p.get("quantity")
            t.add_row(Text(sym), fmt_qty(qty) if qty else "flat", fmt_price(p.get("avg_price")) if qty else "-",
                      fmt_money(p.get("realised_pnl")), fmt_count(c.get("bar_index")), Text(str(c.get("ts") or "-")))
        out.print(t)
    models = [m for m in summary.get("models") or [] if isinstance(m, Mapping)]
    if models:
        t = Table(title="models", title_justify="left", box=box.SIMPLE_HEAD)
        for col in ("model", "state", "consecutive errors"):
            t.add_column(col, justify="right" if col == "consecutive errors" else "left")
        for m in models:
            state = "enabled" if m.get("enabled", True) else "[red]disabled[/red]"
            t.add_row(Text(str(m.get("key"))), state, fmt_count(m.get("consecutive_errors")))
        out.print(t)
