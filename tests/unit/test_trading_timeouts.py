"""Prediction timeouts: CPU time in a speed-0 replay (deterministic under load), wall time when live.

Also the in-sample flag of each prediction row and the ``trade_from`` gate.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from trading_helpers import MANIFEST, MomentumPredictor, bars, config, series, spec  # noqa: E402

from aitrader.trading.ledger import decoded_copy, ledger_content  # noqa: E402
from aitrader.trading.session import RunOptions, run_session  # noqa: E402
from aitrader.trading.sources import replay_steps  # noqa: E402


class SleepyPredictor(MomentumPredictor):
    """Momentum, but every call sleeps past the timeout: wall time passes, almost no CPU time does."""

    def __init__(self, sleep_s: float) -> None:
        self.sleep_s = sleep_s

    def predict_one(self, x: np.ndarray) -> float:
        time.sleep(self.sleep_s)
        return super().predict_one(x)


# 10 ms of CPU: a sleeping call uses ~50 us, but a garbage collection or page faults inside one call
# once took it past a 2 ms budget in CI; the sleep stays 5x the timeout, so wall time is far past it.
TIMEOUT_MS = 10.0
SLEEP_S = 0.05  # 5x the timeout


def _run(tmp: Path, name: str, predictor, df: pd.DataFrame, **opts) -> dict:
    cfg = config(errors__prediction_timeout_ms=TIMEOUT_MS)
    return run_session(cfg, [spec(predictor=predictor)], replay_steps(series({"AAA": df})), tmp / name,
                       run_id=name, opts=RunOptions(commit_every=25, handle_signals=False, **opts))


def test_a_slow_predictor_at_speed_0_gives_the_same_ledger_as_a_fast_one(tmp_path: Path) -> None:
    df = bars(40, seed=4)
    fast = _run(tmp_path, "fast", MomentumPredictor(), df)
    slow = _run(tmp_path, "slow", SleepyPredictor(SLEEP_S), df)
    assert fast["errors"] == {} and slow["errors"] == {}
    assert slow["predictions"] == fast["predictions"] == 40 - 3  # 3 warm-up bars (MomentumStream)
    a = ledger_content(tmp_path / "fast" / "ledger.db")
    b = ledger_content(tmp_path / "slow" / "ledger.db")
    assert a == b  # latency_us (wall time) is the one column left out of the comparison
    with closing(decoded_copy(tmp_path / "slow" / "ledger.db")) as conn:
        (min_latency,) = conn.execute("SELECT MIN(latency_us) FROM predictions").fetchone()
    assert min_latency >= SLEEP_S * 1e6  # latency still records the wall time it took


def test_a_slow_predictor_times_out_when_live(tmp_path: Path) -> None:
    df = bars(12, seed=4)
    follow = _run(tmp_path, "follow", SleepyPredictor(SLEEP_S), df, live=True)
    paced = _run(tmp_path, "paced", SleepyPredictor(SLEEP_S), df, speed=1e12)  # --speed K: no real pacing
    for summary in (follow, paced):
        # every prediction was late: 3 in a row (max_consecutive_errors) disable the model
        assert summary["errors"] == {"timeout": 3} and summary["alerts"] == {"model_disabled": 1}
    with closing(decoded_copy(tmp_path / "follow" / "ledger.db")) as conn:
        sources = {s for (s,) in conn.execute("SELECT source FROM predictions")}
        detail = conn.execute("SELECT payload FROM events WHERE type = 'ML_ERROR' LIMIT 1").fetchone()[0]
    assert sources <= {"fallback_previous"} and "prediction took" in detail


def test_a_cpu_bound_predictor_still_times_out_at_speed_0(tmp_path: Path) -> None:
    class Busy(MomentumPredictor):
        def predict_one(self, x: np.ndarray) -> float:
            end = time.thread_time() + 3 * TIMEOUT_MS / 1000
            while time.thread_time() < end:
                pass
            return super().predict_one(x)

    summary = _run(tmp_path, "busy", Busy(), bars(8, seed=4))
    assert summary["errors"] == {"timeout": 3} and summary["alerts"] == {"model_disabled": 1}
    with sqlite3.connect(tmp_path / "busy" / "ledger.db") as conn:
        detail = conn.execute("SELECT payload FROM events WHERE type = 'ML_ERROR' LIMIT 1").fetchone()[0]
    assert "CPU time" in detail


def test_each_prediction_records_whether_its_bar_was_a_training_row(tmp_path: Path) -> None:
    df = bars(30, seed=6)
    # Trained on bars 2..14 (data.first .. split.final_train_last); bars from 17 on never seen.
    manifest = {**MANIFEST, "data": {"first": df.index[2].isoformat(), "last": df.index[29].isoformat()},
                "split": {"final_train_last": df.index[14].isoformat(), "holdout_first": df.index[17].isoformat()}}
    s = spec()
    s.manifest = manifest
    run_session(config(), [s], replay_steps(series({"AAA": df})), tmp_path / "r", run_id="r",
                opts=RunOptions(handle_signals=False))
    with closing(decoded_copy(tmp_path / "r" / "ledger.db")) as conn:
        got = conn.execute("SELECT bar_index, in_sample FROM predictions ORDER BY bar_index").fetchall()
    assert got == [(i, 1 if 2 <= i <= 14 else 0) for i in range(3, 30)]


def test_bars_before_trade_from_only_warm_the_features(tmp_path: Path) -> None:
    df = bars(30, seed=6)
    s = spec()
    s.trade_from = df.index[10].value / 1e9  # naive stamps count as UTC
    summary = run_session(config(), [s], replay_steps(series({"AAA": df})), tmp_path / "r", run_id="r",
                          opts=RunOptions(handle_signals=False))
    with closing(decoded_copy(tmp_path / "r" / "ledger.db")) as conn:
        first, n = conn.execute("SELECT MIN(bar_index), COUNT(*) FROM predictions").fetchone()
    assert (first, n) == (10, 20) and summary["bars"] == 30
    assert summary["in_sample_predictions"] == 0  # the fake manifest says nothing: unknown, not counted
