"""Hand-built runs for the monitoring tests: a synthetic market, a manifest baseline, a ledger.

The ledger follows the schema in docs/architecture.md table by table, so the monitor is tested
against the contract rather than against whatever the trading package happens to write.
Also holds the tests of the ledger reader itself.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from aitrader.errors import TradingError
from aitrader.monitoring.drift import make_baseline
from aitrader.monitoring.ledger import feature_matrix, read_ledger, resolve_run

FEATURES = ["ret_1", "volatility_20", "log_volume"]
COEF = np.array([0.3, 0.0, 0.0])

SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE cursors(symbol TEXT PRIMARY KEY, bar_index INTEGER, ts TEXT);
CREATE TABLE orders(id INTEGER PRIMARY KEY, ts TEXT, symbol TEXT, side TEXT, quantity REAL, status TEXT, reason TEXT);
CREATE TABLE fills(id INTEGER PRIMARY KEY, order_id INTEGER, ts TEXT, symbol TEXT, side TEXT, quantity REAL,
                   price REAL, commission REAL, slippage REAL);
CREATE TABLE positions(symbol TEXT PRIMARY KEY, quantity REAL, avg_price REAL, realised_pnl REAL);
CREATE TABLE equity(bar_index INTEGER, ts TEXT PRIMARY KEY, cash REAL, equity REAL);
CREATE TABLE events(id INTEGER PRIMARY KEY, ts TEXT, type TEXT, symbol TEXT, model_id TEXT, reason TEXT, payload TEXT);
CREATE TABLE predictions(id INTEGER PRIMARY KEY, ts TEXT, bar_index INTEGER, symbol TEXT, model_id TEXT, digest TEXT,
                         prediction REAL, confidence REAL, source TEXT, latency_us REAL, features TEXT,
                         outcome REAL, outcome_ts TEXT);
"""


def market(n: int, seed: int, *, vol: float = 0.01, volume_scale: float = 1.0) -> dict[str, np.ndarray]:
    """Features of a random-walk market and a forward return the model can partly predict."""
    rng = np.random.default_rng(seed)
    ret = rng.normal(0, vol, n + 20)
    volume = rng.lognormal(13, 0.3, n + 20) * volume_scale
    vol20 = pd.Series(ret).rolling(20).std().to_numpy()
    x = np.column_stack([ret, vol20, np.log(volume)])[20:]
    pred = x @ COEF
    outcome = pred + rng.normal(0, vol * 0.1, n)  # a good model: outcome close to the prediction
    return {"x": x, "pred": pred, "outcome": outcome}


def manifest_for(train: dict[str, np.ndarray]) -> dict[str, Any]:
    """A manifest whose baseline section is built from the 'training' market."""
    err = train["pred"] - train["outcome"]
    return {
        "format_version": 1,
        "target": {"name": "fwd_return_5", "horizon": 5, "task": "regression"},
        "features": {"names": FEATURES, "params": {}, "warmup": 20, "spec_hash": "x"},
        "metrics": {"holdout": {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2))),
                                "hit_rate": 0.9, "ic": 0.95, "rank_ic": 0.95}},
        "baseline": {
            "features": {name: make_baseline(train["x"][:, j]) for j, name in enumerate(FEATURES)},
            "prediction": make_baseline(train["pred"]),
            "holdout_mae": float(np.mean(np.abs(err))),
            "residual_std": float(np.std(err)),
            "holdout_hit_rate": float(np.mean(np.sign(train["pred"]) == np.sign(train["outcome"]))),
            "holdout_ic": float(np.corrcoef(train["pred"], train["outcome"])[0, 1]),
        },
    }


MODEL = {"model_id": "demo", "version": 1, "digest": "d" * 64}


def write_ledger(
    run_dir: Path,
    live: dict[str, np.ndarray],
    *,
    pred: np.ndarray | None = None,
    sources: list[str] | None = None,
    events: list[dict[str, Any]] | None = None,
    equity: list[float] | None = None,
    models: list[dict[str, Any]] | None = None,
    missing_outcomes: int = 5,
    model: dict[str, Any] | None = None,
    start: str = "2024-01-01",
) -> Path:
    """A ledger with one prediction per bar; the last ``missing_outcomes`` have no outcome yet."""
    run_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(run_dir / "ledger.db")
    conn.executescript(SCHEMA)
    model = model or MODEL
    meta = {"run_id": run_dir.name, "config": {}, "models": models or [model], "status": "running",
            "started_at": "2024-01-01T00:00:00+00:00", "updated_at": "2024-03-01T00:00:00+00:00"}
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
    x, outcome = live["x"], live["outcome"]
    pred = live["pred"] if pred is None else pred
    n = len(x)
    ts = pd.date_range(start, periods=n, freq="1h", tz="UTC")
    rows = []
    for i in range(n):
        known = i < n - missing_outcomes
        feats = [None if not np.isfinite(v) else float(v) for v in x[i]]
        rows.append((ts[i].isoformat(), i, "AAPL", model["model_id"], model["digest"], float(pred[i]), 0.8,
                     sources[i] if sources else "model", 150.0 + i % 50, json.dumps(feats),
                     float(outcome[i]) if known and np.isfinite(outcome[i]) else None,
                     ts[min(i + 5, n - 1)].isoformat() if known else None))
    conn.executemany("INSERT INTO predictions (ts, bar_index, symbol, model_id, digest, prediction, confidence, "
                     "source, latency_us, features, outcome, outcome_ts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    for e in events or []:
        conn.execute("INSERT INTO events (ts, type, symbol, model_id, reason, payload) VALUES (?,?,?,?,?,?)",
                     (e.get("ts", ts[0].isoformat()), e["type"], "AAPL", e.get("model_id", model["model_id"]),
                      e.get("reason"), json.dumps(e.get("payload", {}))))
    eq = equity if equity is not None else list(100_000 + np.arange(n) * 10.0)
    conn.executemany("INSERT INTO equity VALUES (?, ?, ?, ?)",
                     [(i, ts[i].isoformat(), 50_000.0, float(v)) for i, v in enumerate(eq)])
    conn.commit()
    conn.close()
    return run_dir


# ------------------------------------------------------------------------- ledger reader tests


def test_read_ledger_decodes_meta_predictions_and_equity(tmp_path: Path) -> None:
    live = market(50, seed=1)
    write_ledger(tmp_path / "r1", live, events=[{"type": "ML_ERROR", "reason": "timeout"}])
    ledger = read_ledger(tmp_path / "r1")
    assert ledger.run_id == "r1"
    assert ledger.models == [MODEL]
    assert len(ledger.predictions) == 50
    assert ledger.predictions["outcome"].isna().sum() == 5
    assert ledger.events["payload"].iloc[0] == {}
    assert str(ledger.equity["ts"].dt.tz) == "UTC"
    m = feature_matrix(ledger.predictions["features"], 3)
    assert m.shape == (50, 3)
    assert np.isnan(m[:, 1]).sum() == 0
    np.testing.assert_allclose(m[:, 0], live["x"][:, 0])


def test_feature_matrix_wrong_length_rows_are_unavailable() -> None:
    m = feature_matrix(pd.Series(["[1, 2]", "[1, null, 3]", None, "[4, 5, 6]"]), 3)
    assert np.isnan(m[0]).all() and np.isnan(m[2]).all()
    assert np.isnan(m[1, 1]) and m[1, 2] == 3
    assert m[3].tolist() == [4, 5, 6]


def test_resolve_run_latest_and_errors(tmp_path: Path) -> None:
    import os

    write_ledger(tmp_path / "a", market(30, 1))
    write_ledger(tmp_path / "b", market(30, 2))
    os.utime(tmp_path / "a" / "ledger.db", (2e9, 2e9))
    assert resolve_run(tmp_path).name == "a"
    assert resolve_run(tmp_path, "b").name == "b"
    with pytest.raises(TradingError, match="run 'zz' not found"):
        resolve_run(tmp_path, "zz")
    with pytest.raises(TradingError, match="no runs found"):
        resolve_run(tmp_path / "empty")


def test_read_ledger_rejects_a_non_ledger(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    sqlite3.connect(tmp_path / "x" / "ledger.db").execute("CREATE TABLE t(a)").connection.close()
    with pytest.raises(TradingError, match="not an aitrader ledger"):
        read_ledger(tmp_path / "x")
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "ledger.db").write_text("not sqlite at all, just text " * 40)
    with pytest.raises(TradingError, match="damaged or not SQLite"):
        read_ledger(tmp_path / "y")
