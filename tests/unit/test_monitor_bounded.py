"""``monitor`` in bounded memory (issue 11): the streamed pass equals the in-memory monitor, and each
streamed figure equals an independent oracle (scipy, numpy, a hand PSI)."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import ks_2samp, pearsonr, spearmanr

from aitrader.config import Monitoring
from aitrader.monitoring import stream as stream_mod
from aitrader.monitoring.drift import autocorrelation_time, ks_statistic, lag1_autocorrelation, make_baseline
from aitrader.monitoring.ledger import read_ledger
from aitrader.monitoring.monitor import monitor_ledger
from aitrader.monitoring.stream import DriftAccumulator, SeriesStats, monitor_run
from tests.unit.test_monitoring_support import MODEL, manifest_for, market, write_ledger

KS_SLACK = 1.0 / (100 * stream_mod.KS_GRID)  # the documented bound of the streamed KS


def assert_same_summary(got: Any, want: Any, path: str = "") -> None:
    """Equal up to float rounding; ``ks`` within the documented bound below the exact one."""
    if isinstance(want, dict):
        assert set(got) == set(want), path
        for k in want:
            if k == "ks" and want[k] is not None:
                assert want[k] - KS_SLACK - 1e-12 <= got[k] <= want[k] + 1e-12, f"{path}.ks {got[k]} vs {want[k]}"
            else:
                assert_same_summary(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_same_summary(a, b, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, float | int), path
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12, nan_ok=True), path
    else:
        assert got == want, path


def _multi_model_run(tmp_path: Path) -> Path:
    live = market(900, seed=11)
    live["x"][[3, 250, 401], 1] = np.nan
    sources = ["model"] * 900
    for i in (10, 11, 500):
        sources[i] = "fallback"
    other = {"model_id": "other:v1", "name": "other", "version": 1, "digest": "e" * 64}
    run = tmp_path / "runs" / "r1"
    write_ledger(run, live, sources=sources, models=[MODEL, other],
                 events=[{"type": "ML_ERROR", "reason": "timeout"}, {"type": "RISK_REJECTED", "reason": "max_pos"}],
                 equity=list(100_000 + 500 * np.sin(np.arange(900) / 30.0)))
    conn = sqlite3.connect(run / "ledger.db")
    rows = conn.execute("SELECT ts, bar_index, symbol, prediction, features, outcome FROM predictions "
                        "ORDER BY rowid LIMIT 40").fetchall()
    conn.executemany("INSERT INTO predictions (ts, bar_index, symbol, model_id, digest, prediction, features, "
                     "outcome, source, latency_us) VALUES (?,?,?,?,?,?,?,?, 'model', 90.0)",
                     [(t, b, s, other["model_id"], other["digest"], -p, f, o) for t, b, s, p, f, o in rows])
    conn.execute("UPDATE predictions SET features = '[1, 2' WHERE rowid = 77")  # damaged JSON: an all-NaN row
    conn.execute("ALTER TABLE predictions ADD COLUMN in_sample INTEGER")
    conn.execute("UPDATE predictions SET in_sample = 1 WHERE rowid < 6")
    conn.commit()
    conn.close()
    return run


@pytest.mark.parametrize("chunk", [7, 16_384])
def test_streamed_monitor_equals_the_in_memory_monitor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       chunk: int) -> None:
    run = _multi_model_run(tmp_path)
    monkeypatch.setattr(stream_mod, "CHUNK", chunk)
    manifest = manifest_for(market(3000, seed=0))
    first = manifest["features"]["names"][0]  # a regime feature (issue 16): live shares counted per chunk
    manifest["baseline"]["regimes"] = {first: {"kind": "vol_regime", "rule": "above_half", "regimes": 2,
                                               "shares": [0.9, 0.1], "rows": 3000}}
    for model_id in (MODEL["model_id"], "other:v1"):
        for window in (None, 60):
            want = monitor_ledger(read_ledger(run), manifest, Monitoring(), model_id=model_id, window=window,
                                  series=False).summary
            got = monitor_run(run, manifest, Monitoring(), model_id=model_id, window=window).summary
            assert_same_summary(json.loads(json.dumps(got, default=str)), json.loads(json.dumps(want, default=str)))
            (row,) = got["drift"]["regimes"]
            assert row["n"] >= 40 and row["live"] == pytest.approx([1.0, 0.0])  # the feature's values are < 0.5


def test_streamed_figures_equal_independent_oracles(tmp_path: Path) -> None:
    live = market(700, seed=5)
    run = write_ledger(tmp_path / "run", live, missing_outcomes=5)
    manifest = manifest_for(market(3000, seed=0))
    s = monitor_run(run, manifest, Monitoring(), window=50).summary
    p, y = live["pred"][:695], live["outcome"][:695]
    acc = s["accuracy"]["run"]
    assert acc["n"] == 695
    assert acc["mae"] == pytest.approx(np.abs(p - y).sum() / 695, rel=1e-12)
    assert acc["ic"] == pytest.approx(pearsonr(p, y)[0], rel=1e-9)
    assert acc["rank_ic"] == pytest.approx(spearmanr(p, y)[0], rel=1e-9)
    assert s["accuracy"]["window"]["rank_ic"] == pytest.approx(spearmanr(p[-50:], y[-50:])[0], rel=1e-9)
    lat_ms = (150.0 + np.arange(700) % 50) / 1000.0  # what write_ledger stores
    assert s["operational"]["latency_ms_p50"] == pytest.approx(np.median(lat_ms))
    assert s["operational"]["latency_ms_p99"] == pytest.approx(sorted(lat_ms)[691] + 0.01 * (sorted(lat_ms)[692]
                                                                                           - sorted(lat_ms)[691]))
    # PSI by hand: the live share of each baseline bin against the training share.
    name = manifest["features"]["names"][0]
    base = manifest["baseline"]["features"][name]
    col = live["x"][:, 0]
    edges = np.asarray(base["bin_edges"])
    live_counts = [np.sum(col < edges[0])] + [np.sum((col >= a) & (col < b)) for a, b in zip(edges[:-1], edges[1:],
                                                                                          strict=True)]
    live_counts.append(np.sum(col >= edges[-1]))
    e = np.maximum(np.asarray(base["counts"]) / np.sum(base["counts"]), 1e-4)
    a = np.maximum(np.asarray(live_counts) / len(col), 1e-4)
    row = next(r for r in s["drift"]["features"] if r["name"] == name)
    assert row["psi"] == pytest.approx(float(np.sum((a - e) * np.log(a / e))), rel=1e-9)


def test_binned_ks_is_within_its_bound_of_the_exact_ks() -> None:
    rng = np.random.default_rng(3)
    train = rng.normal(size=20_000)
    base = make_baseline(train)
    for shift, n in ((0.0, 5000), (0.3, 2000), (1.5, 800), (0.0, 37)):
        live = rng.normal(shift, 1.0, size=n)
        acc = DriftAccumulator(base, "x")
        for part in np.array_split(live, 7):
            acc.add(part)
        exact = ks_statistic(base["quantiles"], live)
        assert exact - KS_SLACK - 1e-12 <= acc.ks() <= exact + 1e-12
        # and the quantile reconstruction stays within a percentile of the sample KS (scipy)
        assert abs(exact - ks_2samp(live, train).statistic) <= 0.01 + 2.0 / math.sqrt(len(train))


@pytest.mark.parametrize("n, phi", [(2, 0.5), (50, 0.0), (3000, 0.6), (9000, 0.995)])
def test_series_stats_equal_the_whole_series_functions(n: int, phi: float) -> None:
    rng = np.random.default_rng(n)
    x = np.empty(n)
    x[0] = 5.0
    for t in range(1, n):
        x[t] = 5.0 + phi * (x[t - 1] - 5.0) + rng.normal()
    stats = SeriesStats(max_lag=256)
    for part in np.array_split(x, 13):
        stats.add(part)
    assert stats.rho() == pytest.approx(lag1_autocorrelation(x), rel=1e-9, abs=1e-12)
    if n >= 3:  # oracle: the sample correlation of consecutive pairs
        assert stats.rho() == pytest.approx(np.corrcoef(x[:-1], x[1:])[0, 1], rel=1e-9)
    want = autocorrelation_time(x)
    if phi < 0.9:  # Sokal's window ends within 256 lags: the same value
        assert stats.tau() == pytest.approx(want, rel=1e-7)
    else:  # the window is capped at 256 lags: the sum up to there, below the uncapped one here
        assert 1.0 <= stats.tau() < want


def test_peak_memory_does_not_follow_the_run_length(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run 8x longer (48 chunks instead of 6): the streamed pass allocates no more (tracemalloc: Python and
    numpy allocations)."""
    import tracemalloc

    monkeypatch.setattr(stream_mod, "CHUNK", 100)
    manifest = manifest_for(market(3000, seed=0))
    peaks = []
    for n in (600, 4800):
        run = write_ledger(tmp_path / f"r{n}", market(n, seed=2))
        tracemalloc.start()
        monitor_run(run, manifest, Monitoring())
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.2 * peaks[0], peaks


def test_streamed_monitor_on_a_block_ledger_written_by_paper_trade(tmp_path: Path) -> None:
    """A ledger in today's block format (predictions, outcomes and equity as checkpoint blocks), and
    the same run rewritten in the old one-row-per-prediction format: both read alike."""
    import shutil
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_trading_batch import NAMES, FirstFeature, replay
    from trading_helpers import bars, to_old_format

    from aitrader.features import FeaturePipeline

    df = bars(700, seed=4, freq="1h")
    replay(tmp_path, "blocks", df, "batch", FirstFeature(nan_below=-0.03))
    train = FeaturePipeline(NAMES).transform(bars(2000, seed=9, freq="1h")).dropna()
    manifest = {"target": {"horizon": 3, "task": "regression"}, "features": {"names": NAMES},
                "baseline": {"features": {n: make_baseline(train[n].to_numpy()) for n in NAMES},
                             "prediction": make_baseline(train["ret_1"].to_numpy())}}
    run = tmp_path / "blocks"
    old = tmp_path / "old"
    shutil.copytree(run, old)
    to_old_format(old / "ledger.db")
    want = monitor_ledger(read_ledger(run), manifest, Monitoring(), series=False).summary
    assert want["operational"]["predictions"] > 600 and want["accuracy"]["run"]["n"] > 600
    for folder in (run, old):
        got = monitor_run(folder, manifest, Monitoring()).summary
        got["run_dir"], got["run_id"] = want["run_dir"], want["run_id"]
        assert_same_summary(json.loads(json.dumps(got, default=str)), json.loads(json.dumps(want, default=str)))


def test_a_damaged_block_is_one_clean_error(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_trading_batch import FirstFeature, replay
    from trading_helpers import bars

    from aitrader.errors import TradingError

    replay(tmp_path, "run", bars(300, seed=4, freq="1h"), "batch", FirstFeature())
    conn = sqlite3.connect(tmp_path / "run" / "ledger.db")
    conn.execute("UPDATE prediction_blocks SET prediction = x'00ff' WHERE first_id = "
                 "(SELECT MAX(first_id) FROM prediction_blocks)")
    conn.commit()
    conn.close()
    names = ["ret_1", "ret_5", "sma_ratio_10", "rsi_14"]
    flat = make_baseline(np.linspace(-1, 1, 200))
    manifest = {"target": {"horizon": 3}, "features": {"names": names},
                "baseline": {"features": dict.fromkeys(names, flat), "prediction": flat}}
    with pytest.raises(TradingError, match=r"cannot read ledger .*ledger\.db: .*the file is damaged"):
        monitor_run(tmp_path / "run", manifest, Monitoring())
