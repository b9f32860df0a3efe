"""``aitrader backtest``: a paper-trade replay of a model's unseen bars, with a performance report.

The replay IS :func:`aitrader.trading.service.paper_trade` (same engine, execution model, costs and
window rules), run into a temporary ledger that is deleted afterwards, or into ``--out-run RUN_ID``
to keep it. So a backtest and a paper-trade of the same window agree to the cent.

The report covers the traded bars only (from the first bar the models may trade, i.e. after the
feature warm-up): the strategy beside buy-and-hold of the same bars. Buy-and-hold starts with the
same initial cash (split evenly over the traded symbols) and buys once, at the open of the bar after
the first traded bar (the earliest fill an order of the strategy can get), with the same slippage
and commission, then holds to the end (marked at each close). Formulas: docs/metrics.md.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aitrader.trading.ledger import LEDGER_NAME, read_table

QTY_DECIMALS = 8  # as the paper broker


def run_backtest(*, models: list[str] | None, data: list[str] | None, config_path: str | None = None,
                 registry_root: str | None = None, start: str | None = None, end: str | None = None,
                 allow_in_sample: bool = False, allow_symbol_mismatch: bool = False,
                 out_run: str | None = None, runs_dir: str = "runs", view: str = "none",
                 report: str | None = None, books: str | dict[str, str] | None = None) -> dict[str, Any]:
    """Replay, then report: ``{"run": paper-trade summary, "performance": {...}, "trades": [...]}``.

    ``report``: also write the HTML tearsheet there (:func:`aitrader.monitoring.tearsheet.write_tearsheet`,
    the same report as ``monitor --report``), from the replay's ledger before a temporary one is removed."""
    from aitrader.trading.service import paper_trade, run_trades

    collect: dict[str, Any] = {}
    tmp = None if out_run else tempfile.mkdtemp(prefix="aitrader-backtest-")
    try:
        summary = paper_trade(
            config_path=config_path, data=data, run_id=out_run or "backtest", state_dir=tmp,
            registry_root=registry_root, runs_dir=runs_dir, view=view, start=start, end=end,
            allow_in_sample=allow_in_sample, models=models, allow_symbol_mismatch=allow_symbol_mismatch,
            collect=collect, books=books,
        )
        run_dir = Path(summary["state_dir"])
        trades = run_trades(run_dir, collect.get("frames"))
        perf = performance_report(run_dir, collect, summary, trades)
        if report is not None:
            from aitrader.monitoring.tearsheet import write_tearsheet

            specs = collect.get("specs") or []
            write_tearsheet(Path(report), run_dir=run_dir, manifest=specs[0].manifest if specs else None,
                            bars=collect.get("frames"),
                            title="backtest " + ", ".join(f"{s.model_id} ({s.symbol})" for s in specs))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if tmp is not None:
        summary = {**summary, "state_dir": None}
    models = [f"{s.model_id} ({s.symbol})" for s in collect.get("specs") or []]
    return {"models": models, "run": summary, "kept": out_run is not None, "performance": perf,
            "trades": _records(trades), "report": report}


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in df.to_dict(orient="records"):
        out.append({str(k): (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return out


def performance_report(run_dir: Path, collect: dict[str, Any], summary: dict[str, Any],
                       trades: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """``{"strategy": {...}, "buy_and_hold": {...}}`` over the traded bars of a finished replay."""
    from aitrader.trading.session import to_epoch

    initial = float(summary["initial_cash"])
    costs = summary["costs"]
    periods = float(collect["calendar"]["periods_per_year"])
    _, rows = read_table(run_dir / LEDGER_NAME, "equity")
    first = min((t for t in collect["trade_from"].values() if t is not None), default=None)
    stamps = [str(r[1]) for r in rows]
    epochs = np.array([to_epoch(t) or 0.0 for t in stamps])
    keep = epochs >= first if first is not None else np.ones(len(rows), dtype=bool)
    stamps = [t for t, k in zip(stamps, keep, strict=True) if k]
    epochs = epochs[keep]
    equity = np.array([float(r[3]) for r in rows], dtype=np.float64)[keep]

    _, fill_rows = read_table(run_dir / LEDGER_NAME, "fills")
    fills = pd.DataFrame.from_records(fill_rows, columns=["id", "order_id", "ts", "symbol", "side", "quantity",
                                                          "price", "commission", "slippage"])
    positions = _positions(fills, epochs)
    traded = float((fills["quantity"] * fills["price"]).abs().sum()) if len(fills) else 0.0
    strategy = curve_stats(equity, stamps, initial, periods, positions, traded,
                           float(fills["commission"].sum()) if len(fills) else 0.0)
    strategy.update(trade_stats(trades))
    strategy["final_equity"] = float(equity[-1]) if equity.size else initial

    bench, bench_pos, bench_traded, bench_fees = buy_and_hold(
        collect["frames"], collect["trade_from"], epochs, initial,
        float(costs["commission_bps"]), float(costs["slippage_bps"]))
    hold = curve_stats(bench, stamps, initial, periods, bench_pos, bench_traded, bench_fees)
    hold.update({"trades": 0, "win_rate": None, "profit_factor": None, "avg_trade_return": None,
                 "avg_trade_duration": None, "avg_trade_bars": None,
                 "final_equity": float(bench[-1]) if bench.size else initial})
    return {"strategy": strategy, "buy_and_hold": hold,
            "window": {"first_bar": stamps[0] if stamps else None, "last_bar": stamps[-1] if stamps else None,
                       "bars": len(stamps), "periods_per_year": periods, "costs": costs}}


def _positions(fills: pd.DataFrame, epochs: np.ndarray) -> np.ndarray:
    """Gross position (sum of |quantity| over symbols) held after each bar's fills."""
    from aitrader.trading.session import to_epoch

    gross = np.zeros(len(epochs))
    if not len(fills):
        return gross
    for _, grp in fills.groupby("symbol", sort=True):
        signed = np.where(grp["side"].str.lower() == "buy", 1.0, -1.0) * grp["quantity"].to_numpy(float)
        held = np.round(np.cumsum(signed), QTY_DECIMALS)
        at = np.array([to_epoch(t) or 0.0 for t in grp["ts"]])
        idx = np.searchsorted(at, epochs, side="right") - 1
        gross += np.where(idx >= 0, np.abs(held[np.maximum(idx, 0)]), 0.0)
    return gross


def buy_and_hold(frames: dict[str, pd.DataFrame], trade_from: dict[str, float | None], epochs: np.ndarray,
                 initial: float, commission_bps: float, slippage_bps: float
                 ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Equity, position, traded notional and fees of buying each symbol once (see the module doc)."""
    from aitrader.trading.session import to_epoch

    share = initial / max(1, len(frames))
    total = np.zeros(len(epochs))
    held = np.zeros(len(epochs))
    traded = fees = 0.0
    for sym, df in sorted(frames.items()):
        bar_epochs = np.array([to_epoch(t) or 0.0 for t in df.index])
        start = trade_from.get(sym)
        i0 = int(np.searchsorted(bar_epochs, start, side="left")) if start is not None else 0
        values = np.full(len(df), share)
        qty = 0.0
        if i0 + 1 < len(df):
            price = float(df["open"].iloc[i0 + 1]) * (1.0 + slippage_bps / 1e4)
            qty = math.floor(share / (price * (1.0 + commission_bps / 1e4)) * 10**QTY_DECIMALS) / 10**QTY_DECIMALS
            commission = qty * price * commission_bps / 1e4
            cash = share - qty * price - commission
            closes = df["close"].to_numpy(float)
            values[i0 + 1:] = cash + qty * closes[i0 + 1:]
            traded += qty * price
            fees += commission
        pos = np.zeros(len(df))
        pos[i0 + 1:] = qty
        idx = np.searchsorted(bar_epochs, epochs, side="right") - 1
        total += np.where(idx >= 0, values[np.maximum(idx, 0)], share)
        held += np.where(idx >= 0, pos[np.maximum(idx, 0)], 0.0)
    return total, held, traded, fees


def curve_stats(equity: np.ndarray, stamps: list[str], initial: float, periods: float, positions: np.ndarray,
                traded: float, fees: float) -> dict[str, Any]:
    """Return, CAGR, Sharpe, Sortino, drawdown (depth, bars, calendar time), exposure, turnover, fees."""
    from aitrader.training import metrics as M

    rets = M.simple_returns(equity, initial=initial)
    bars, first, last = M.drawdown_duration(equity, initial=initial)
    dd_time = None
    if bars:
        peak = stamps[first - 1] if first > 0 else stamps[0]
        dd_time = short_duration(pd.Timestamp(stamps[last]) - pd.Timestamp(peak))
    before = np.concatenate(([initial], equity[:-1])) if equity.size else equity
    return {
        "total_return": float(equity[-1] / initial - 1.0) if equity.size else 0.0,
        "cagr": M.cagr(equity, initial, periods),
        "sharpe": M.sharpe_ratio(rets, periods),
        "sortino": M.sortino_ratio(rets, periods),
        "max_drawdown": M.max_drawdown(equity, initial=initial),
        "max_drawdown_bars": bars,
        "max_drawdown_duration": dd_time,
        "exposure": M.exposure(positions),
        "turnover": M.turnover([traded], before),
        "fees": fees,
    }


def trade_stats(trades: pd.DataFrame) -> dict[str, Any]:
    """Number of round trips, win rate, profit factor, average return, duration and bars."""
    from aitrader.training import metrics as M

    n = len(trades)
    pnl = trades["pnl"].to_numpy(float) if n else np.empty(0)
    durations = pd.to_timedelta(trades["duration"]) if n else None
    bars = pd.to_numeric(trades["bars"], errors="coerce") if n else None
    return {
        "trades": n,
        "win_rate": M.win_rate(pnl),
        "profit_factor": M.profit_factor(pnl),
        "avg_trade_return": float(trades["return"].mean()) if n else None,
        "avg_trade_duration": short_duration(durations.mean()) if durations is not None else None,
        "avg_trade_bars": float(bars.mean()) if bars is not None and bars.notna().any() else None,
    }


def short_duration(value: Any) -> str:
    """A time span rounded to the second: ``3 days``, ``1 days 04:30:00``, ``12:58:12``."""
    text = str(pd.Timedelta(value).round("s"))
    return text.removesuffix(" 00:00:00").removeprefix("0 days ")
