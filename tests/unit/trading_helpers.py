"""Fakes shared by the trading tests: a momentum feature stream, scripted predictors, synthetic bars."""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aitrader.config import TradingConfig
from aitrader.trading.session import ModelSpec
from aitrader.trading.sources import BarSeries

MANIFEST: dict[str, Any] = {
    "target": {"horizon": 3, "task": "regression"},
    "baseline": {"prediction": {"quantiles": list(np.linspace(-0.02, 0.02, 101))}, "residual_std": 0.02},
}


class MomentumStream:
    """Features: [3-bar return, 1-bar return]; NaN for the first 3 bars. Bounded (deque)."""

    def __init__(self) -> None:
        self.closes: deque[float] = deque(maxlen=4)
        self.row = np.empty(2)

    def update(self, ts: Any, o: float, h: float, l: float, c: float, v: float) -> np.ndarray:  # noqa: E741
        self.closes.append(c)
        if len(self.closes) < 4:
            self.row[:] = math.nan
        else:
            self.row[0] = c / self.closes[0] - 1.0
            self.row[1] = c / self.closes[-2] - 1.0
        return self.row


class MomentumPredictor:
    """Predicts the 3-bar return itself (a stand-in for a trained model)."""

    def predict_one(self, x: np.ndarray) -> float:
        return float(x[0])


class ScriptedPredictor:
    """Raises / returns NaN on chosen calls (1-based), otherwise momentum."""

    def __init__(self, fail: dict[int, str]) -> None:
        self.fail = fail
        self.calls = 0

    def predict_one(self, x: np.ndarray) -> float:
        self.calls += 1
        kind = self.fail.get(self.calls)
        if kind == "raise":
            raise RuntimeError("boom")
        if kind == "nan":
            return math.nan
        return float(x[0])


def bars(n: int = 300, seed: int = 1, start: str = "2021-01-04", freq: str = "1D") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = close * np.exp(rng.normal(0, 0.005, n))
    high = np.maximum(open_, close) * 1.01
    low = np.minimum(open_, close) * 0.99
    idx = pd.date_range(start, periods=n, freq=freq, name="timestamp")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                         "volume": rng.uniform(1e5, 1e6, n)}, index=idx)


def config(**over: Any) -> TradingConfig:
    raw: dict[str, Any] = {
        "ml_trading": {
            "models": [{"model_id": "m", "symbol": "AAA", "min_confidence": 0.6, "position_size": 0.05}],
            "risk_limits": {"max_ml_position_size": 0.1, "max_ml_positions": 5, "daily_ml_loss_limit": 0.5},
            "execution": {"initial_cash": 100_000, "commission_bps": 1.0, "slippage_bps": 2.0, "allow_short": True},
            "errors": {"prediction_timeout_ms": 1000, "fallback": "previous", "max_consecutive_errors": 3,
                       "previous_max_bars": 2},
            "feature_pipeline": {"buffer_size": 50},
        }
    }
    for path, value in over.items():
        node = raw["ml_trading"]
        *parents, last = path.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return TradingConfig.model_validate(raw)


def spec(symbol: str = "AAA", model_id: str = "m:v1", predictor: Any = None, **kw: Any) -> ModelSpec:
    return ModelSpec(model_id=model_id, symbol=symbol, digest="d" * 8, predictor=predictor or MomentumPredictor(),
                     stream=MomentumStream(), manifest=MANIFEST, min_confidence=kw.pop("min_confidence", 0.6),
                     position_size=kw.pop("position_size", 0.05), **kw)


def series(frames: dict[str, pd.DataFrame]) -> list[BarSeries]:
    return [BarSeries.from_frame(s, df) for s, df in frames.items()]


def ledger_path(run_dir: Path) -> Path:
    return run_dir / "ledger.db"


def to_old_format(db: Path, *, equity_schema: str = "bar_index INTEGER PRIMARY KEY, ts TEXT, cash REAL, equity REAL",
                  chunks: bool = True) -> None:
    """Rewrite a ledger into the layout written before the columnar blocks: one predictions row per
    prediction (features as JSON text, outcome and outcome_ts columns), one equity row per step (and
    the ``equity_chunks`` float64 copy when ``chunks``); the block tables dropped."""
    import sqlite3
    from contextlib import closing

    from aitrader.trading.ledger import PREDICTION_COLUMNS, decoded_copy, pack_floats

    with closing(decoded_copy(db)) as mem:
        preds = mem.execute(f"SELECT {', '.join(PREDICTION_COLUMNS)} FROM predictions ORDER BY id").fetchall()
        equity = mem.execute("SELECT bar_index, ts, cash, equity FROM equity ORDER BY bar_index").fetchall()
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.executescript(
            "DROP TABLE prediction_blocks; DROP TABLE outcome_blocks; DROP TABLE equity_blocks;"
            "DELETE FROM predictions;"
            f"DROP TABLE equity; CREATE TABLE equity ({equity_schema}); DELETE FROM equity_chunks;"
        )
        if not chunks:
            conn.execute("DROP TABLE equity_chunks")
        conn.executemany(f"INSERT INTO predictions ({', '.join(PREDICTION_COLUMNS)}) VALUES "
                         f"({', '.join('?' * len(PREDICTION_COLUMNS))})", preds)
        conn.executemany("INSERT INTO equity (bar_index, ts, cash, equity) VALUES (?, ?, ?, ?)", equity)
        if chunks and equity:
            conn.execute("INSERT INTO equity_chunks VALUES (?, ?)", (0, pack_floats([r[3] for r in equity])))


class FirstFeature:
    """Predicts the first feature (ret_1, the same float in both evaluators); raises above
    ``raise_above``, returns NaN below ``nan_below``: by value, so on the same bars on both routes.
    A batch holding a raising row raises as a whole (the route must then go row by row)."""

    def __init__(self, raise_above: float = math.inf, nan_below: float = -math.inf) -> None:
        self.raise_above = raise_above
        self.nan_below = nan_below

    def _one(self, v: float) -> float:
        if v > self.raise_above:
            raise RuntimeError(f"boom at {v:.4f}")
        return math.nan if v < self.nan_below else v

    def predict_one(self, x: np.ndarray) -> float:
        return self._one(float(x[0]))

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        return np.array([self._one(float(v)) for v in X[:, 0]])
