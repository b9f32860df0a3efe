"""The tearsheet (aitrader/monitoring/tearsheet.py): figures against hand-computed constants, every
chart a valid PNG, notes instead of charts when data is missing, and a real run end to end.

Expected values are hand-computed (equity curves small enough to check on paper) or come from a
second formula (``metrics.hit_rate`` on each window for the vectorised rolling hit rate).
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import struct
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from aitrader.errors import AitraderError
from aitrader.monitoring import tearsheet as T
from aitrader.training import metrics as M
from tests.unit.test_monitoring_support import FEATURES, SCHEMA, manifest_for, market

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------ helpers
def images(page: str) -> dict[str, bytes]:
    """Every embedded PNG of the page, by its alt name (in page order)."""
    found = re.findall(r'<img alt="(\w+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return {name: base64.b64decode(b64) for name, b64 in found}


def check_png(name: str, data: bytes) -> None:
    import matplotlib.image as mpimg

    assert data[:8] == PNG_SIGNATURE, f"{name}: not a PNG signature"
    assert data[12:16] == b"IHDR", f"{name}: no IHDR chunk first"
    width, height = struct.unpack(">II", data[16:24])
    assert 300 <= width <= 2000 and 150 <= height <= 2500, f"{name}: {width}x{height}"
    pixels = mpimg.imread(BytesIO(data), format="png")
    assert pixels.shape[:2] == (height, width), name
    assert float(np.ptp(pixels[..., :3])) > 0.2, f"{name}: a blank picture"


def ledger(run: Path, *, equity: list[tuple[str, float]], fills: list[tuple[str, str, str, float, float]] = (),
           preds: list[tuple[str, str, float, float | None]] = (), meta: dict[str, Any] | None = None,
           features: np.ndarray | None = None) -> Path:
    """A ledger by the schema in docs/architecture.md. fills: (ts, symbol, side, qty, price);
    preds: (ts, symbol, prediction, outcome)."""
    run.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(run / "ledger.db")
    conn.executescript(SCHEMA)
    base = {"run_id": run.name, "status": "finished",
            "config": {"ml_trading": {"execution": {"initial_cash": equity[0][1]}}},
            "models": [{"model_id": "demo:v1", "name": "demo", "version": 1, "digest": "d" * 64, "symbol": "AAA"}]}
    items = {**base, **(meta or {})}.items()
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in items])
    conn.executemany("INSERT INTO equity VALUES (?, ?, ?, ?)", [(i, ts, 0.0, v) for i, (ts, v) in enumerate(equity)])
    conn.executemany("INSERT INTO fills (order_id, ts, symbol, side, quantity, price, commission, slippage) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     [(i, ts, s, side, q, p, 0.5, 0.25) for i, (ts, s, side, q, p) in enumerate(fills)])
    rows = []
    for i, (ts, sym, p, y) in enumerate(preds):
        x = json.dumps(list(map(float, features[i]))) if features is not None else None
        rows.append((ts, i, sym, "demo:v1", "d" * 64, p, 0.5, "model", 100.0, x, y))
    conn.executemany("INSERT INTO predictions (ts, bar_index, symbol, model_id, digest, prediction, confidence, "
                     "source, latency_us, features, outcome) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.commit()
    conn.close()
    return run


# ------------------------------------------------------------------------- figures by hand
def test_performance_figures_match_hand_computed_constants(tmp_path: Path) -> None:
    # 2020 is a leap year: 366 days = 1.0020534 years; equity 100 -> 80 -> 120.
    run = ledger(tmp_path / "r", equity=[("2020-01-01", 100.0), ("2020-07-01", 80.0), ("2021-01-01", 120.0)],
                 fills=[("2020-07-01", "AAA", "buy", 1.0, 50.0), ("2021-01-01", "AAA", "sell", 1.0, 60.0)],
                 preds=[("2020-01-01", "AAA", 0.1, 0.2)])
    data = T.read_run(run)
    assert data.start == 0 and data.initial == 100.0
    perf = T.performance(data.traded, data.initial, 2.0, fills=data.fills)
    assert perf["total_return"] == pytest.approx(0.2)
    assert perf["cagr"] == pytest.approx(0.19955175204308273)  # 1.2 ** (365.25 / 366) - 1
    assert perf["max_drawdown"] == pytest.approx(-0.2)
    assert perf["longest_drawdown"] == pd.Timedelta(days=366)  # peak 2020-01-01 .. recovery 2021-01-01
    assert perf["time_in_market"] == pytest.approx(1 / 3)  # held at the close of 2020-07-01 only
    assert perf["turnover"] == pytest.approx(110 / 280)  # (50 + 60) / (100 + 100 + 80)
    assert perf["fees"] == pytest.approx(1.0) and perf["slippage"] == pytest.approx(0.5)
    assert perf["fills"] == 2 and perf["round_trips"] == 1
    # returns 0 (against the initial cash), -0.2, +0.5: mean 0.1, sd 0.3605551, x sqrt(2)
    assert perf["sharpe"] == pytest.approx(0.1 / 0.36055513 * np.sqrt(2), rel=1e-6)


def test_cagr_needs_three_months() -> None:
    assert T._cagr(110.0, 100.0, 0.2) is None
    assert T._cagr(121.0, 100.0, 2.0) == pytest.approx(0.1)


def test_traded_period_starts_at_the_first_prediction(tmp_path: Path) -> None:
    days = pd.date_range("2021-01-01", periods=6, freq="D").strftime("%Y-%m-%d")
    run = ledger(tmp_path / "r", equity=[(d, v) for d, v in zip(days, [50.0, 50, 50, 50, 55, 45], strict=True)],
                 preds=[(days[3], "AAA", 0.1, 0.1), (days[4], "AAA", 0.1, -0.1)])
    data = T.read_run(run)
    assert data.start == 3 and list(data.traded) == [50.0, 55.0, 45.0]


def test_longest_drawdown_equals_a_bar_by_bar_walk() -> None:
    rng = np.random.default_rng(11)
    for trial in range(20):
        n = int(rng.integers(2, 60))
        values = 100 * np.cumprod(1 + rng.normal(0, 0.02, n))
        idx = pd.DatetimeIndex(pd.Timestamp("2022-01-01") + pd.to_timedelta(np.cumsum(rng.integers(1, 5, n)), "D"))
        dd = pd.Series(values, index=idx) / np.maximum.accumulate(np.concatenate(([100.0], values)))[1:] - 1
        best, start = pd.Timedelta(0), None  # the oracle: walk the bars, peak to recovery (or the end)
        for i, v in enumerate(dd):
            if v < -1e-12 and start is None:
                start = max(i - 1, 0)
            elif v >= -1e-12 and start is not None:
                best, start = max(best, idx[i] - idx[start]), None
        if start is not None:
            best = max(best, idx[-1] - idx[start])
        assert T._longest_drawdown(dd) == best, trial


def test_round_trips_count_closes_and_flips() -> None:
    fills = pd.DataFrame({"symbol": ["A"] * 5 + ["B"] * 2, "signed": [1.0, 1.0, -2.0, -1.0, 2.0, -3.0, 1.0]})
    # A: 0 -> 1 -> 2 -> 0 (close) -> -1 -> 1 (flip); B: 0 -> -3 -> -2 (still open)
    assert T._round_trips(fills) == 2


def test_buy_and_hold_splits_the_cash_equally() -> None:
    index = pd.DatetimeIndex(pd.to_datetime(["2022-01-03", "2022-01-04", "2022-01-05"]))
    closes = {"A": pd.Series([10.0, 12.0, 15.0], index=index), "B": pd.Series([20.0, 10.0, 30.0], index=index)}
    bh = T.buy_and_hold(closes, index, 1000.0)
    # 500 in A = 50 shares, 500 in B = 25 shares
    assert bh is not None and list(bh) == pytest.approx([1000.0, 850.0, 1500.0])


def test_monthly_returns_table_by_hand() -> None:
    idx = pd.DatetimeIndex(pd.to_datetime(["2020-01-15", "2020-01-31", "2020-02-10", "2020-02-28", "2021-03-05"]))
    table = T.monthly_returns(pd.Series([100.0, 110.0, 99.0, 121.0, 110.0], index=idx), 100.0)
    assert list(table.index) == [2020, 2021]
    assert table.loc[2020, 1] == pytest.approx(0.10) and table.loc[2020, 2] == pytest.approx(0.10)
    assert table.loc[2021, 3] == pytest.approx(110 / 121 - 1)
    assert np.isnan(table.loc[2020, 3]) and np.isnan(table.loc[2021, 1])
    assert table.loc[2020, "year"] == pytest.approx(0.21) and table.loc[2021, "year"] == pytest.approx(110 / 121 - 1)


def test_rolling_hit_rate_equals_metrics_hit_rate_on_each_window() -> None:
    rng = np.random.default_rng(3)
    p = rng.normal(size=200)
    y = np.round(rng.normal(size=200), 1)  # rounding makes exact zeros, which hit_rate leaves out
    y[:10] = 0.0
    got = T._rolling_hit_rate(p, y, 25)
    want = [M.hit_rate(y[i - 25:i], p[i - 25:i]) for i in range(25, 201)]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (np.isnan(g) and w is None) or g == pytest.approx(w)


# ------------------------------------------------------------------------------ the whole page
def _full_run(tmp_path: Path, n: int = 400) -> tuple[Path, dict[str, pd.DataFrame], dict[str, Any]]:
    from aitrader.data.synthetic import generate_bars

    bars = generate_bars(n, seed=4, start="2021-01-01", freq="1D")
    stamps = [ts.strftime("%Y-%m-%dT%H:%M:%S") for ts in bars.index]
    live = market(n - 20, seed=7)
    rng = np.random.default_rng(5)
    equity = 10_000 * np.cumprod(1 + rng.normal(0.0004, 0.004, n))
    equity[:20] = 10_000.0
    fills = [(stamps[i], "AAA", "buy" if k % 2 == 0 else "sell", 10.0, float(bars["close"].iloc[i]))
             for k, i in enumerate(range(25, n - 5, 15))]
    preds = [(stamps[20 + i], "AAA", float(live["pred"][i]), float(live["outcome"][i])) for i in range(n - 20)]
    run = ledger(tmp_path / "runs" / "full", equity=list(zip(stamps, equity.tolist(), strict=True)), fills=fills,
                 preds=preds, features=live["x"])
    manifest = manifest_for(market(3000, seed=0))
    manifest["importance"] = {"method": "gain", "features": dict(zip(FEATURES, [0.6, 0.3, 0.1], strict=True))}
    return run, {"AAA": bars}, manifest


def test_every_chart_is_a_valid_png(tmp_path: Path) -> None:
    run, bars, manifest = _full_run(tmp_path)
    out = T.write_tearsheet(tmp_path / "out" / "sheet.html", run_dir=run, manifest=manifest, bars=bars,
                            title="A <title>")
    page = out.read_text()
    pngs = images(page)
    assert list(pngs) == list(T.CHARTS)
    for name, data in pngs.items():
        check_png(name, data)
    assert "A &lt;title&gt;" in page and "<title>A &lt;title&gt;</title>" in page
    assert "Not drawn" not in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from the network
    for label in ("total return", "CAGR", "Sharpe", "Sortino", "max drawdown", "time in market", "turnover",
                  "fees", "round trips", "buy and hold"):
        assert label in page
    assert "volatility_20" in page  # the drift table, computed from the manifest's baseline
    assert not list((tmp_path / "out").glob(".*tmp"))


def test_missing_inputs_give_notes_not_errors(tmp_path: Path) -> None:
    run, _, _ = _full_run(tmp_path, n=120)
    page, drawn = T.render_tearsheet(run_dir=run, bars={})
    assert drawn == ["equity", "drawdown", "monthly", "rolling", "scatter"]
    for name in ("trades", "importance", "drift"):
        assert f'id="missing-{name}"' in page
    assert "needs the model&#x27;s manifest" in page


def test_a_run_without_equity_or_outcomes_still_renders(tmp_path: Path) -> None:
    stamp = "2024-01-01T10:00:00"
    run = ledger(tmp_path / "r", equity=[(stamp, 100.0)], preds=[(stamp, "AAA", 0.1, None)])
    page, drawn = T.render_tearsheet(run_dir=run, bars={})
    assert "rolling" not in drawn and "scatter" not in drawn
    assert "no prediction has a known outcome yet" in page
    with sqlite3.connect(run / "ledger.db") as conn:  # a run stopped before its first bar was recorded
        conn.execute("DELETE FROM equity")
    page, drawn = T.render_tearsheet(run_dir=run, bars={})
    assert drawn == [] and "No equity recorded yet" in page


def test_not_a_ledger_and_unwritable_target_are_clean_errors(tmp_path: Path) -> None:
    with pytest.raises(AitraderError, match="no ledger at"):
        T.write_tearsheet(tmp_path / "x.html", run_dir=tmp_path / "nope")
    run = ledger(tmp_path / "r", equity=[("2024-01-01", 100.0), ("2024-01-02", 101.0)])
    (tmp_path / "file").write_text("")
    with pytest.raises(AitraderError, match="cannot write report"):
        T.write_tearsheet(tmp_path / "file" / "x.html", run_dir=run, bars={})


def test_long_runs_are_thinned_and_busy_panels_zoomed(tmp_path: Path) -> None:
    n = T.MAX_LINE_POINTS * 3 + 7
    s = pd.Series(np.arange(n, dtype=float), index=pd.date_range("2020-01-01", periods=n, freq="5min"))
    thin = T._thin(s)
    assert len(thin) <= T.MAX_LINE_POINTS and thin.iloc[-1] == s.iloc[-1]
    dd = pd.Series(np.zeros(n), index=s.index)
    dd.iloc[1234] = -0.5
    assert T._thin(dd, "min").min() == -0.5  # the deepest point survives the thinning


# ---------------------------------------------------------------------------------- a real run
@pytest.mark.slow
def test_real_run_on_the_sample_shows_every_chart(in_tmp: Path) -> None:
    """train (small) -> register -> deploy -> paper-trade -> monitor --report: all charts, valid PNGs."""
    pytest.importorskip("bokeh_sampledata")
    from aitrader.cli.main import app

    (in_tmp / "config").mkdir()
    (in_tmp / "config" / "train.yaml").write_text(
        "data: {path: null, symbol: AAPL}\ntarget: {horizon: 5, task: regression}\n"
        "model: {kind: lightgbm, params: {n_estimators: 40}, random_state: 7}\n"
        "split: {n_folds: 3, embargo: 5, holdout: 0.2, min_train: 250}\n")
    cli = CliRunner()
    for args in (["train", "--out", "art", "--register", "aapl_lgbm", "--json"], ["deploy", "--model-id", "aapl_lgbm"],
                 ["paper-trade", "--run-id", "r1", "--json"]):
        result = cli.invoke(app, args)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
    result = cli.invoke(app, ["monitor", "--run", "r1", "--report", "out/monitor.html", "--json"])
    assert result.exit_code in (0, 3), result.stderr
    page = (in_tmp / "out" / "monitor.html").read_text()
    pngs = images(page)
    assert list(pngs) == list(T.CHARTS), re.findall(r'<p class="note"[^>]*>[^<]*', page)
    for name, data in pngs.items():
        check_png(name, data)
    assert "Monitor: " in page and "aapl" in page

    # the backtest path: any run folder plus the manifest, bars reloaded from the run's record
    from aitrader.training.manifest import read_manifest

    out = T.write_tearsheet(in_tmp / "bt.html", run_dir=in_tmp / "runs" / "r1", manifest=read_manifest(in_tmp / "art"))
    assert list(images(out.read_text())) == list(T.CHARTS)
