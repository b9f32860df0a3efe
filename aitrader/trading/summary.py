"""Run statistics computed from the ledger (so a resumed run reports the same as an uninterrupted one)."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from aitrader._util import pid_alive
from aitrader.trading.ledger import connect

SECONDS_PER_YEAR = 365.25 * 86400


def performance(ts_epoch: np.ndarray, equity: np.ndarray, initial: float) -> dict[str, float | None]:
    """Total return, annualised Sharpe (bars per year estimated from the data's own span), max drawdown."""
    if len(equity) == 0:
        return {"total_return": 0.0, "sharpe": None, "max_drawdown": 0.0}
    total = float(equity[-1] / initial - 1.0)
    path = np.concatenate([[initial], equity])
    rets = path[1:] / path[:-1] - 1.0
    sharpe = None
    span = float(ts_epoch[-1] - ts_epoch[0]) if len(ts_epoch) > 1 else 0.0
    sd = float(rets.std(ddof=1)) if len(rets) > 2 else 0.0
    if span > 0 and sd > 0:
        per_year = (len(ts_epoch) - 1) / (span / SECONDS_PER_YEAR)
        sharpe = float(rets.mean() / sd * math.sqrt(per_year))
    peak = np.maximum.accumulate(path)
    max_dd = float(((path - peak) / peak).min())
    return {"total_return": total, "sharpe": sharpe, "max_drawdown": max_dd}


def equity_curve(conn: sqlite3.Connection) -> np.ndarray:
    """The equity column in bar order, from the ledger's ``equity_chunks`` copy when it is whole.

    Each checkpoint also stores its equity values as one float64 blob, in the same transaction as
    the rows: reading a few blobs instead of a Python row per bar makes the summary of a long run
    (and ``status``) cost almost nothing. The blobs are used only when they cover exactly bars
    0..max(bar_index) (a ledger from before they existed has none); else the rows are read.
    """
    (last,) = conn.execute("SELECT MAX(bar_index) FROM equity").fetchone()
    if last is None:
        return np.empty(0)
    try:
        chunks = conn.execute("SELECT first_bar, equity FROM equity_chunks ORDER BY first_bar").fetchall()
    except sqlite3.OperationalError:  # no such table: an older ledger
        chunks = []
    parts, expected = [], 0
    for first, blob in chunks:
        if first != expected:
            break
        part = np.frombuffer(blob, dtype="<f8")
        parts.append(part)
        expected += len(part)
    if parts and expected == last + 1:
        return np.concatenate(parts).astype(float)
    # rowid order is bar_index order (bar_index is the rowid): no sort needed.
    return np.array([e for (e,) in conn.execute("SELECT equity FROM equity ORDER BY rowid")], dtype=float)


def _grouped(conn: Any, sql: str, event_type: str) -> dict[str, int]:
    return {str(k): int(n) for k, n in conn.execute(sql, (event_type,))}


def summarise(run_dir: Path) -> dict[str, Any]:
    """The final summary of a run (also what ``status`` builds on)."""
    import pandas as pd

    conn = connect(run_dir / "ledger.db", readonly=True)
    try:
        meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        state = meta.get("state") or {}
        initial = float(meta["config"]["ml_trading"]["execution"]["initial_cash"])
        # Only the values and the first and last stamps: performance() needs the span, not every stamp.
        values = equity_curve(conn)
        first_last = conn.execute(
            "SELECT * FROM (SELECT ts FROM equity ORDER BY rowid LIMIT 1) "
            "UNION ALL SELECT * FROM (SELECT ts FROM equity ORDER BY rowid DESC LIMIT 1)"
        ).fetchall()
        n_pred = conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
        try:  # predictions on bars the model was trained on (None: a ledger from before the column)
            n_in_sample = conn.execute("SELECT COUNT(*) FROM predictions WHERE in_sample = 1").fetchone()[0]
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
    finally:
        conn.close()
    stamps = [t for (t,) in first_last]
    epochs = np.empty(0)
    if len(values):  # the bar count and the span is all performance() reads from the stamps
        ends = pd.to_datetime(pd.Series(stamps, dtype=object), utc=True, format="ISO8601").astype("int64") / 1e9
        epochs = np.full(len(values), float(ends.iloc[0]))
        epochs[-1] = float(ends.iloc[-1])
    perf = performance(epochs, values, initial)
    final = float(values[-1]) if len(values) else initial
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
        "final_equity": final,
        "total_return": perf["total_return"],
        "sharpe": perf["sharpe"],
        "max_drawdown": perf["max_drawdown"],
        "turnover": float(fills[2]) / float(values.mean()) if len(values) and values.mean() > 0 else 0.0,
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
