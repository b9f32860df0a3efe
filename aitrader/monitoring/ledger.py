"""Read-only access to a paper-trading run's ledger (``runs/RUN_ID/ledger.db``).

The schema is the contract in docs/architecture.md (tables meta, predictions, events, equity...).
The ledger is opened read-only (``mode=ro``) so that monitoring a live run never blocks or
modifies the trader, and a missing file is an error rather than a new empty database.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aitrader.errors import TradingError
from aitrader.trading.ledger import PREDICTION_COLUMNS, equity_rows, ledger_state, prediction_rows, validate_run_id

LEDGER_NAME = "ledger.db"
DEFAULT_RUNS_DIR = "runs"


def resolve_run(runs_dir: str | Path = DEFAULT_RUNS_DIR, run_id: str | None = None) -> Path:
    """The folder of ``run_id``, or of the most recently modified run when ``run_id`` is None."""
    root = Path(runs_dir)
    if run_id is not None:
        run = root / validate_run_id(run_id, "--run")
        state = ledger_state(run / LEDGER_NAME)
        if state == "empty":
            raise TradingError(f"run {run_id!r} was stopped before it started (its ledger is empty); start it again "
                               f"with aitrader paper-trade --run-id {run_id}, or pass another --run")
        if state == "missing":
            recent = _started_runs(root)
            recent.sort(key=lambda p: ((p / LEDGER_NAME).stat().st_mtime, p.name), reverse=True)
            hint = f"; recent runs: {', '.join(p.name for p in recent[:5])}" if recent else ""
            raise TradingError(
                f"run {run_id!r} not found: no {run / LEDGER_NAME}{hint}; pass an existing --run, "
                "or --latest, or point --runs-dir at the folder holding the runs"
            )
        return run
    runs = _started_runs(root)
    if not runs:
        raise TradingError(
            f"no runs found under {root}/ (no */{LEDGER_NAME}); start one with `aitrader paper-trade` "
            "or pass --runs-dir"
        )
    # The ledger is written on every bar, so its mtime says which run was active last.
    return max(runs, key=lambda p: ((p / LEDGER_NAME).stat().st_mtime, p.name))


def _started_runs(root: Path) -> list[Path]:
    """Run folders under ``root`` whose ledger holds a run (a run killed before its first commit is skipped)."""
    runs = [p.parent for p in root.glob(f"*/{LEDGER_NAME}")] if root.is_dir() else []
    return [p for p in runs if ledger_state(p / LEDGER_NAME) != "empty"]


@dataclass
class Ledger:
    """What monitoring needs from one run, already decoded."""

    run_dir: Path
    meta: dict[str, Any]
    predictions: pd.DataFrame  # the predictions table, ts parsed
    events: pd.DataFrame  # persisted events (ML_ERROR, RISK_REJECTED, ALERT), payload decoded
    equity: pd.DataFrame  # bar_index, ts, cash, equity
    tables: set[str] = field(default_factory=set)

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id") or self.run_dir.name)

    @property
    def models(self) -> list[dict[str, Any]]:
        models = self.meta.get("models") or []
        return [m for m in models if isinstance(m, dict)]


def _decode(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value  # a plain string stored without JSON quoting


def _read_table(conn: sqlite3.Connection, name: str, tables: set[str], columns: list[str]) -> pd.DataFrame:
    if name not in tables:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    cur = conn.execute(f"SELECT * FROM {name} ORDER BY rowid")
    cols = [d[0] for d in cur.description]
    return pd.DataFrame(cur.fetchall(), columns=cols, dtype=object)


def read_ledger(run_dir: str | Path) -> Ledger:
    """Load the meta, predictions, events and equity tables of one run."""
    run = Path(run_dir)
    path = run / LEDGER_NAME
    if not path.is_file():
        raise TradingError(f"no ledger at {path}; pass the folder of a paper-trade run")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        raise TradingError(f"cannot open ledger {path}: {exc}; check the file's permissions") from exc
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables or "predictions" not in tables:
            raise TradingError(
                f"{path} is not an aitrader ledger (tables found: {sorted(tables) or 'none'}; "
                "expected meta and predictions); pass the folder of a paper-trade run"
            )
        meta = {k: _decode(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        # Both storage formats (old table rows with JSON features, columnar blocks) decoded alike;
        # features are lists of floats (or None, or a damaged row's text).
        preds = pd.DataFrame(prediction_rows(conn), columns=list(PREDICTION_COLUMNS), dtype=object)
        events = _read_table(conn, "events", tables, ["ts", "type", "symbol", "model_id", "reason", "payload"])
        equity = pd.DataFrame(equity_rows(conn), columns=["bar_index", "ts", "cash", "equity"], dtype=object)
    except (sqlite3.DatabaseError, zlib.error, ValueError) as exc:
        raise TradingError(f"cannot read ledger {path}: {exc}; the file is damaged or not SQLite") from exc
    finally:
        conn.close()
    for col in ("prediction", "confidence", "latency_us", "outcome"):
        if col in preds.columns:
            preds[col] = pd.to_numeric(preds[col], errors="coerce").astype(float)
    if "payload" in events.columns:
        events["payload"] = events["payload"].map(_decode)
    if len(equity):
        equity["equity"] = pd.to_numeric(equity["equity"], errors="coerce").astype(float)
        equity["ts"] = pd.to_datetime(equity["ts"], utc=True, format="ISO8601")
        equity = equity.sort_values("ts").reset_index(drop=True)
    return Ledger(run_dir=run, meta=meta, predictions=preds, events=events, equity=equity, tables=tables)


def feature_matrix(features: pd.Series, n_features: int) -> np.ndarray:
    """The predictions' ``features`` (lists of floats, or the old format's JSON text) as a float matrix (null -> NaN).

    Rows whose list has the wrong length (another model version) or is missing become all-NaN, so
    they count as unavailable rather than silently shifting columns.
    """
    raw = features.tolist()
    out = np.full((len(raw), n_features), np.nan)
    text = [r for r in raw if isinstance(r, str)]
    if not text:  # decoded rows (lists of floats, None): no JSON to parse
        rows = raw
    else:
        try:  # one parse of the whole column is ~10x faster than a json.loads per row
            parsed = iter(json.loads("[" + ",".join(r if r.strip() else "null" for r in text) + "]"))
            rows = [next(parsed) if isinstance(r, str) else r for r in raw]
        except ValueError:  # a damaged row: decode row by row so the others still count
            rows = [_decode(r) for r in raw]
    good = [i for i, v in enumerate(rows) if isinstance(v, list) and len(v) == n_features]
    if good:
        # dtype=float turns JSON null (None) into NaN; a non-numeric entry fails the row below.
        try:
            out[good] = np.array([rows[i] for i in good], dtype=float)
        except (TypeError, ValueError):
            for i in good:
                try:
                    out[i] = np.array(rows[i], dtype=float)
                except (TypeError, ValueError):
                    continue
    return out
