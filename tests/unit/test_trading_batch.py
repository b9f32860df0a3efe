"""The batch route of a speed-0 replay against the per-bar streaming route: same orders, fills, equity.

The streaming route (``ml_trading.replay: streaming``) is the oracle: the per-bar path of live runs,
tested on its own in test_trading_engine.py. Errors, NaN predictions and fallbacks land on the same
bars; a resumed batch replay equals the uninterrupted one; on real bars from ../shared/data a small
LightGBM trained in the test gives the same orders, fills and final equity (to the cent) both ways.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from trading_helpers import MANIFEST, FirstFeature, bars, config, series, spec  # noqa: E402

from aitrader.errors import ConfigError  # noqa: E402
from aitrader.features import FeaturePipeline  # noqa: E402
from aitrader.trading.batch import BatchFeed, use_batch  # noqa: E402
from aitrader.trading.ledger import connect, ledger_content  # noqa: E402
from aitrader.trading.session import ModelSpec, RunOptions, run_session  # noqa: E402
from aitrader.trading.sources import replay_steps  # noqa: E402
from tests.model_world import deploy_small_model  # noqa: E402

NAMES = ["ret_1", "ret_5", "sma_ratio_10", "rsi_14"]
CENT = 0.005


def real_spec(predictor: Any, symbol: str = "AAA") -> ModelSpec:
    pipeline = FeaturePipeline(NAMES)
    return ModelSpec(model_id="m:v1", symbol=symbol, digest="d" * 8, predictor=predictor, stream=pipeline.stream(500),
                     manifest={**MANIFEST, "features": pipeline.contract()}, min_confidence=0.6, position_size=0.05)


def replay(tmp: Path, name: str, df: pd.DataFrame, route: str, predictor: Any, *, resume: bool = False,
           opts: RunOptions | None = None, **over: Any) -> dict[str, Any]:
    cfg = config(replay=route, **over)
    opts = opts or RunOptions(commit_every=50, handle_signals=False)
    return run_session(cfg, [real_spec(predictor)], replay_steps(series({"AAA": df})), tmp / name, run_id=name,
                       opts=opts, resume=resume)


def meta(run_dir: Path, key: str) -> Any:
    import json

    conn = connect(run_dir / "ledger.db", readonly=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    finally:
        conn.close()
    return json.loads(row[0]) if row else None


def trading_tables(run_dir: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Everything but meta (which records the route and the config's replay setting)."""
    content = ledger_content(run_dir / "ledger.db")
    content.pop("meta")
    return content


@pytest.mark.parametrize("fallback", ["previous", "rule", "skip"])
def test_batch_route_equals_streaming_with_errors_nan_and_fallbacks(tmp_path: Path, fallback: str) -> None:
    df = bars(400, seed=21)
    model = FirstFeature(raise_above=0.03, nan_below=-0.035)
    replay(tmp_path, "b", df, "batch", model, errors__fallback=fallback, errors__max_consecutive_errors=50)
    replay(tmp_path, "s", df, "streaming", model, errors__fallback=fallback, errors__max_consecutive_errors=50)
    assert meta(tmp_path / "b", "route") == "batch"
    assert meta(tmp_path / "s", "route") == "streaming"
    b, s = trading_tables(tmp_path / "b"), trading_tables(tmp_path / "s")
    assert b["fills"] and b["predictions"]
    assert any("ML_ERROR" in map(str, e) for e in b["events"]), "the scripted model must have failed"
    assert b == s


def test_batch_route_disables_a_model_like_the_streaming_route(tmp_path: Path) -> None:
    df = bars(300, seed=22)
    model = FirstFeature(raise_above=0.01)  # frequent errors: max_consecutive_errors 3 disables it
    replay(tmp_path, "b", df, "batch", model)
    replay(tmp_path, "s", df, "streaming", model)
    b, s = trading_tables(tmp_path / "b"), trading_tables(tmp_path / "s")
    assert any("model_disabled" in map(str, e) for e in b["events"])
    assert b == s


def test_resumed_batch_replay_equals_the_uninterrupted_one(tmp_path: Path) -> None:
    df = bars(400, seed=23)
    model = FirstFeature(raise_above=0.03, nan_below=-0.035)
    replay(tmp_path, "full", df, "batch", model)
    part = replay(tmp_path, "part", df, "batch", model,
                  opts=RunOptions(commit_every=13, max_bars=157, handle_signals=False))
    assert part["status"] == "stopped"
    replay(tmp_path, "part", df, "batch", model, resume=True)
    assert ledger_content(tmp_path / "part" / "ledger.db") == ledger_content(tmp_path / "full" / "ledger.db")


def test_models_without_batch_prediction_stream(tmp_path: Path) -> None:
    """A predictor with only predict_one (or a stream without a feature contract) takes the streaming route."""
    run_session(config(), [spec()], replay_steps(series({"AAA": bars(120)})), tmp_path / "r", run_id="r",
                opts=RunOptions(handle_signals=False))
    assert meta(tmp_path / "r", "route") == "streaming"


def test_only_speed_zero_replays_take_the_batch_route() -> None:
    assert use_batch("batch", speed=0.0, live=False)
    assert not use_batch("streaming", speed=0.0, live=False)
    assert not use_batch("batch", speed=10.0, live=False)
    assert not use_batch("batch", speed=0.0, live=True)
    assert not use_batch("batch", speed=0.0, live=False, swap=object())


def test_latency_is_the_batch_time_amortised_over_its_rows() -> None:
    ticks = iter([10.0, 10.5, 20.0, 21.0])  # two chunks: 0.5 s over 4 ready rows, 1 s over 2
    rows = np.arange(14, dtype=float).reshape(7, 2)
    rows[1, 0] = np.nan  # not ready: skipped, not predicted
    feed = BatchFeed.from_matrix(rows, FirstFeature(), clock=lambda: next(ticks), chunk=5)
    assert feed.prediction(0) == (0.0, 0.5e6 / 4, None)
    assert feed.prediction(4)[1] == 0.5e6 / 4
    assert math.isnan(feed.preds[1]) and not feed.row(1)[1]
    assert feed.prediction(5) == (10.0, 1e6 / 2, None)  # the chunk from bar 5: bars 5 and 6
    assert feed.prediction(6) == (12.0, 1e6 / 2, None)


def test_a_failing_batch_is_predicted_row_by_row() -> None:
    rows = np.array([[0.01, 0.0], [0.05, 0.0], [-0.05, 0.0], [0.02, 0.0]])
    feed = BatchFeed.from_matrix(rows, FirstFeature(raise_above=0.03, nan_below=-0.04), clock=lambda: 0.0)
    assert feed.prediction(0) == (0.01, 0.0, None)
    raw, _, error = feed.prediction(1)
    assert math.isnan(raw) and error == "RuntimeError: boom at 0.0500"
    assert math.isnan(feed.prediction(2)[0]) and feed.prediction(2)[2] is None
    assert feed.prediction(3)[0] == 0.02


def test_replay_setting_is_bounded(tmp_path: Path) -> None:
    from aitrader.config import load_trading_config

    path = tmp_path / "t.yaml"
    path.write_text("ml_trading:\n  replay: fast\n")
    with pytest.raises(ConfigError, match="replay"):
        load_trading_config(str(path))
    path.write_text("ml_trading:\n  replay: streaming\n")
    assert load_trading_config(str(path)).ml_trading.replay == "streaming"


# ---------------------------------------------------------------------------- a trained model, whole command
TRADING = """\
ml_trading:
  models:
    - {{model_id: {name}, symbol: {symbol}, min_confidence: 0.5, position_size: 0.05}}
  replay: {route}
"""


def paper(tmp: Path, registry: Path, data: Path, name: str, symbol: str, route: str) -> tuple[dict, Path]:
    from aitrader.trading.service import paper_trade

    cfg = tmp / f"{route}.yaml"
    cfg.write_text(TRADING.format(name=name, symbol=symbol, route=route))
    summary = paper_trade(config_path=str(cfg), data=[str(data)], registry_root=str(registry),
                          runs_dir=str(tmp / "runs"), run_id=route)
    return summary, tmp / "runs" / route


def both_routes(tmp: Path, df: pd.DataFrame, symbol: str, train_rows: int) -> tuple[dict, dict, Path, Path]:
    from aitrader.data import write_bars

    registry = deploy_small_model(tmp, df, name="m", train_rows=train_rows, symbol=symbol)
    data = tmp / f"{symbol}.csv"
    write_bars(df, data)
    b, b_dir = paper(tmp, registry, data, "m", symbol, "batch")
    s, s_dir = paper(tmp, registry, data, "m", symbol, "streaming")
    assert meta(b_dir, "route") == "batch" and meta(s_dir, "route") == "streaming"
    return b, s, b_dir, s_dir


def test_identical_ledgers_on_synthetic_minute_bars(tmp_path: Path) -> None:
    from aitrader.data.synthetic import generate_bars

    df = generate_bars(3000, seed=31, signal=0.3, freq="1min")
    b, s, b_dir, s_dir = both_routes(tmp_path, df, "SYN", 1500)
    assert b["fills"] > 10 and b["predictions"] > 1000
    assert trading_tables(b_dir) == trading_tables(s_dir)


@pytest.mark.parametrize(("path", "symbol", "last", "train_rows"), [
    ("equity_1h/SPY.csv.gz", "SPY", 20_000, 4000),
    ("crypto_5m/ETH_BTC.csv.gz", "ETH_BTC", None, 2500),
])
def test_same_orders_fills_and_equity_on_real_data(tmp_path: Path, shared_data: Path, path: str, symbol: str,
                                                   last: int | None, train_rows: int) -> None:
    from aitrader.data import load_bars

    df = load_bars(shared_data / path)
    if last is not None:
        df = df.iloc[-last:]
    df.attrs = {}
    b, s, b_dir, s_dir = both_routes(tmp_path, df, symbol, train_rows)
    bt, st = trading_tables(b_dir), trading_tables(s_dir)
    assert len(bt["fills"]) > 5
    assert bt["orders"] == st["orders"]
    assert bt["fills"] == st["fills"]
    assert abs(b["final_equity"] - s["final_equity"]) < CENT
    # (id, ts, bar_index, symbol, model_id, digest, prediction, confidence, source, ...): the same rows,
    # predictions equal up to the float rounding of the two feature evaluators
    assert [(p[:6], p[8]) for p in bt["predictions"]] == [(p[:6], p[8]) for p in st["predictions"]]
    np.testing.assert_allclose([p[6] for p in bt["predictions"]], [p[6] for p in st["predictions"]],
                               rtol=1e-6, atol=1e-12)


def test_feature_chunks_are_read_in_order_and_hold_one_chunk() -> None:
    """Chunks of 3 bars: bar 4 is row 1 of the second chunk; the first chunk is let go."""
    rows = np.arange(16, dtype=float).reshape(8, 2)
    chunks = [(0, rows[0:3]), (3, rows[3:6]), (6, rows[6:8])]
    feed = BatchFeed(chunks, FirstFeature(), clock=lambda: 0.0)
    assert feed.prediction(1)[0] == 2.0
    assert feed.prediction(4)[0] == 8.0 and feed.first == 3 and len(feed.rows) == 3
    assert feed.row(7)[0].tolist() == [14.0, 15.0]
    with pytest.raises(IndexError):
        feed.row(2)
    with pytest.raises(IndexError):
        feed.row(8)


def test_small_chunks_change_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Feature chunks of the smallest size compute_chunked allows and 7-row prediction batches: the
    same ledger as the streaming route, and a resume in the middle of a chunk equals the full run."""
    import aitrader.trading.batch as batch_mod

    monkeypatch.setattr(batch_mod, "FEATURE_CHUNK", 1)
    monkeypatch.setattr(batch_mod, "PREDICT_CHUNK", 7)
    df = bars(900, seed=24)
    model = FirstFeature(raise_above=0.03, nan_below=-0.035)
    replay(tmp_path, "full", df, "batch", model)
    replay(tmp_path, "s", df, "streaming", model)
    assert trading_tables(tmp_path / "full") == trading_tables(tmp_path / "s")
    replay(tmp_path, "part", df, "batch", model, opts=RunOptions(commit_every=11, max_bars=413, handle_signals=False))
    replay(tmp_path, "part", df, "batch", model, resume=True)
    assert ledger_content(tmp_path / "part" / "ledger.db") == ledger_content(tmp_path / "full" / "ledger.db")
