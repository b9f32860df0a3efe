"""Run statistics computed from the ledger (so a resumed run reports the same as an uninterrupted one).

Every performance figure goes through the one metrics module (``aitrader.training.metrics``):
per-bar simple returns of the equity curve (the first bar against the initial cash), Sharpe and
Sortino annualised with the ``periods_per_year`` of the traded bars' market calendar, max drawdown
as a negative fraction, turnover as the traded notional per bar over the mean equity (the equity
before each bar). The calendar is the one the run recorded in its meta when it started (``calendar``:
``{"kind", "periods_per_year"}``, from the replayed frames); a run without it (``--follow``, or
older ledgers) infers it from the equity table's own stamps. No figure depends on the stamps'
datetime resolution: the annualisation never turns stamps into epoch numbers.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from aitrader._util import pid_alive
from aitrader.trading.ledger import connect, equity_column, equity_stamps, prediction_count, unpack_text
from aitrader.training import metrics as M


def calendar_of(indexes: Any) -> dict[str, Any]:
    """``{"kind", "periods_per_year"}`` of the bars a run trades (the union of its frames' stamps).

    ``indexes``: one DatetimeIndex or an iterable of them (one per symbol). Recorded in the run's
    meta at its start so that the summary annualises with the traded bars' calendar.
    """
    import pandas as pd

    if isinstance(indexes, pd.DatetimeIndex):
        union = indexes
    else:
        parts = sorted((pd.DatetimeIndex(i) for i in indexes if len(i)), key=len, reverse=True)
        union = parts[0] if parts else pd.DatetimeIndex([])
        for other in parts[1:]:
            if (other.tz is None) != (union.tz is None):
                continue  # naive beside tz-aware stamps: the longest series decides
            if other.tz is not None and str(other.tz) != str(union.tz):
                other = other.tz_convert(union.tz)
            union = pd.DatetimeIndex(union.union(other))
    kind, per_year = M.market_calendar(union)
    return {"kind": kind, "periods_per_year": per_year}


def _recorded_calendar(meta: dict[str, Any]) -> dict[str, Any] | None:
    cal = meta.get("calendar")
    if not isinstance(cal, dict):
        return None
    try:
        per_year = float(cal["periods_per_year"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (per_year > 0 and np.isfinite(per_year)):
        return None
    return {"kind": str(cal.get("kind")), "periods_per_year": per_year}


INFER_FROM_LAST = 20_000  # stamps: two weeks of 1-minute bars, years of hourly ones


def _inferred_calendar(conn: sqlite3.Connection) -> dict[str, Any]:
    """The calendar of the equity table's last stamps (parsed to UTC: offsets may change with DST).

    Only the last :data:`INFER_FROM_LAST` stamps are read, so that ``status`` stays cheap on a long run.
    """
    import pandas as pd

    stamps = equity_stamps(conn, INFER_FROM_LAST)
    try:
        index = pd.DatetimeIndex(pd.to_datetime(pd.Series(stamps, dtype=object), utc=True, format="ISO8601"))
    except (ValueError, TypeError):
        index = pd.DatetimeIndex([])
    return calendar_of(index)


def performance(path: np.ndarray, periods_per_year: float, traded: float = 0.0,
                refill: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, Any]:
    """Final equity, total return, turnover (``traded``: the total absolute notional), annualised Sharpe and
    Sortino and max drawdown (negative) of the equity curve ``path`` = ``[initial, *equity]``
    (:func:`equity_curve`).

    ``path`` is consumed, so that a long run's summary holds one array of the run's length: once the
    figures that need the curve are read, its returns are written over it
    (:func:`aitrader.training.metrics.returns_over`) and the Sortino ratio is computed in them; then
    ``refill(path)`` writes the curve into it again (the summary reads the ledger's equity column a
    second time; None: a copy of the curve is kept for it) and the Sharpe ratio is computed in its
    returns. The same floats as separate curve, path and returns arrays."""
    initial = float(path[0])
    equity, before = path[1:], path[:-1]  # the equity before each bar is a view of the path
    if len(equity) == 0:
        return {"final": initial, "total_return": 0.0, "turnover": 0.0, "sharpe": 0.0, "sortino": None,
                "max_drawdown": 0.0}
    out: dict[str, Any] = {
        "final": float(equity[-1]), "total_return": float(equity[-1] / initial - 1.0),
        "turnover": M.turnover([traded], before), "max_drawdown": M.max_drawdown(equity, initial=initial),
    }
    if refill is None:
        kept = path.copy()

        def refill(into: np.ndarray) -> np.ndarray:
            into[:] = kept
            return into

    out["sortino"] = M.sortino_over(M.returns_over(path), periods_per_year)
    again = refill(path)
    if again is not path or float(again[0]) != initial:
        raise ValueError("refill must write the curve into the array it is given")
    out["sharpe"] = M.sharpe_over(M.returns_over(again), periods_per_year)
    return out


def equity_curve(conn: sqlite3.Connection, initial: float | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """The equity column in bar order: one blob per checkpoint (``equity_blocks``), so the summary of a
    long run (and ``status``) decodes a few blobs instead of a Python row per bar; an older ledger's
    ``equity`` rows come first. With ``initial``: ``[initial, *equity]``; with ``out``, written into it."""
    return equity_column(conn, lead=initial, out=out)


def _first_last_stamps(conn: sqlite3.Connection) -> list[str]:
    """The first and the last step's stamps (none when no step was recorded)."""
    first = conn.execute("SELECT ts FROM equity ORDER BY rowid LIMIT 1").fetchone()
    if first is None and conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'equity_blocks'"
    ).fetchone():
        block = conn.execute("SELECT n, ts FROM equity_blocks ORDER BY first_bar LIMIT 1").fetchone()
        first = (unpack_text(block[1], block[0])[0],) if block else None
    last = equity_stamps(conn, 1)
    return [str(first[0]), last[-1]] if first is not None and last else []


def _grouped(conn: Any, sql: str, event_type: str) -> dict[str, int]:
    return {str(k): int(n) for k, n in conn.execute(sql, (event_type,))}


def summarise(run_dir: Path) -> dict[str, Any]:
    """The final summary of a run (also what ``status`` builds on)."""
    conn = connect(run_dir / "ledger.db", readonly=True)
    try:
        conn.execute("BEGIN")  # one snapshot of a ledger still being written: every read below agrees
        meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        state = meta.get("state") or {}
        initial = float(meta["config"]["ml_trading"]["execution"]["initial_cash"])
        path = equity_curve(conn, initial)
        calendar = _recorded_calendar(meta) or _inferred_calendar(conn)
        first_last = _first_last_stamps(conn)
        n_pred = prediction_count(conn)
        try:  # predictions on bars the model was trained on (None: a ledger from before the column)
            n_in_sample: int | None = prediction_count(conn, where_in_sample=True)
        except sqlite3.OperationalError:
            n_in_sample = None
        n_orders = conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
        fills = conn.execute("SELECT COUNT(*), COALESCE(SUM(commission), 0), "
                             "COALESCE(SUM(ABS(quantity * price)), 0) FROM fills").fetchone()
        by_reason = "SELECT reason, COUNT(*) FROM events WHERE type = ? GROUP BY 1 ORDER BY 1"
        rejections = _grouped(conn, by_reason, "RISK_REJECTED")
        errors = _grouped(conn, by_reason, "ML_ERROR")
        alerts = _grouped(conn, by_reason, "ALERT")
        positions = [
            {"symbol": s, "quantity": q, "avg_price": a, "realised_pnl": r}
            for s, q, a, r in conn.execute("SELECT symbol, quantity, avg_price, realised_pnl FROM positions ORDER BY 1")
        ]
        cursors = {s: {"bar_index": i, "ts": t} for s, i, t in conn.execute("SELECT * FROM cursors ORDER BY 1")}
        perf = performance(path, calendar["periods_per_year"], float(fills[2]),
                           refill=lambda into: equity_curve(conn, initial, out=into))
        del path  # its returns now
    finally:
        conn.close()
    stamps = first_last
    slots = state.get("slots", {})
    status = meta.get("status")
    if status == "running" and not pid_alive(meta.get("pid")):
        status = "stopped"  # killed: the ledger still says running but nobody runs it
    return {
        "run_id": meta.get("run_id"),
        "state_dir": str(run_dir),
        "status": status,
        "bars": int(state.get("bars", 0)),
        "predictions": int(n_pred),
        "in_sample_predictions": n_in_sample,
        "signals": int(sum(s.get("n_signals", 0) for s in slots.values())),
        "orders": int(n_orders),
        "fills": int(fills[0]),
        "rejections": rejections,
        "errors": errors,
        "alerts": alerts,
        "initial_cash": initial,
        "final_equity": perf["final"],
        "total_return": perf["total_return"],
        "sharpe": perf["sharpe"],
        "sortino": perf["sortino"],
        "max_drawdown": perf["max_drawdown"],
        "turnover": perf["turnover"],
        "calendar": calendar["kind"],
        "periods_per_year": calendar["periods_per_year"],
        "fees": float(fills[1]),
        "cursor": cursors,
        "positions": positions,
        "models": [
            {"key": k, "enabled": not v.get("disabled", False), "consecutive_errors": v.get("consecutive_errors", 0)}
            for k, v in sorted(slots.items())
        ],
        "first_ts": stamps[0] if stamps else None,
        "last_ts": stamps[-1] if stamps else None,
    }
