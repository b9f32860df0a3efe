"""Every figure of a run summary against an independent recomputation from the exported equity and fills.

The expected values are plain numpy over the CSV that ``export`` writes, annualised with
bars-per-year constants written by hand (252 x 7, 260 x 24, 365.25 x 288), never through
``aitrader.training.metrics``. Runs on pandas 2.2 and the newest pandas (.ci/run).
"""

from __future__ import annotations

import io
import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from aitrader.trading.service import export_table
from aitrader.trading.session import RunOptions, run_session
from aitrader.trading.sources import replay_steps
from tests.model_world import deploy_small_model
from tests.unit.trading_helpers import config, series, spec

INITIAL = 100_000.0
# pandas < 3 reads CSV floats up to one ulp off unless asked for round-trip parsing (deprecated in 3)
EXACT: dict[str, str] = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}


def exchange_hours(sessions: int) -> pd.DatetimeIndex:
    """7 hourly bars (09:00..15:00 New York) on weekdays less the US federal holidays."""
    from pandas.tseries.holiday import USFederalHolidayCalendar

    days = pd.bdate_range("2021-01-04", periods=sessions + 20)
    days = days.difference(USFederalHolidayCalendar().holidays("2021-01-01", "2022-12-31"))[:sessions]
    stamps = [d + pd.Timedelta(hours=h) for d in days for h in range(9, 16)]
    return pd.DatetimeIndex(stamps, tz="America/New_York", name="timestamp")


def forex_hours(weeks: int) -> pd.DatetimeIndex:
    """24x5: Sunday 22:00 UTC to Friday 22:00 UTC."""
    sundays = pd.date_range("2021-01-03", periods=weeks, freq="W-SUN")
    return pd.DatetimeIndex([s + pd.Timedelta(hours=22 + h) for s in sundays for h in range(120)], tz="UTC",
                            name="timestamp")


def crypto_5m(n: int) -> pd.DatetimeIndex:
    return pd.date_range("2021-01-01", periods=n, freq="5min", tz="UTC", name="timestamp")


def frame(index: pd.DatetimeIndex, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(index)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = close * np.exp(rng.normal(0, 0.003, n))
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.005,
                         "low": np.minimum(open_, close) * 0.995, "close": close,
                         "volume": rng.uniform(1e5, 1e6, n)}, index=index)


def recompute(equity_csv: str, fills_csv: str, per_year: float) -> dict[str, float]:
    """The summary's figures by hand from the exported tables."""
    eq = pd.read_csv(io.StringIO(equity_csv), **EXACT)
    fills = pd.read_csv(io.StringIO(fills_csv), **EXACT)
    e = eq.sort_values("bar_index")["equity"].to_numpy(dtype=float)
    path = np.concatenate([[INITIAL], e])
    r = path[1:] / path[:-1] - 1.0
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    # traded notional per bar over the mean equity before each bar (path[i] is the equity before bar i)
    turnover = float((fills["quantity"].abs() * fills["price"]).sum()) / float(path[:-1].sum())
    return {
        "final_equity": float(e[-1]),
        "total_return": float(e[-1] / INITIAL - 1),
        "sharpe": float(r.mean() / r.std(ddof=1) * math.sqrt(per_year)),
        "sortino": float(r.mean() / downside * math.sqrt(per_year)),
        "max_drawdown": float(np.min(path / np.maximum.accumulate(path) - 1)),
        "turnover": float(turnover),
        "fees": float(fills["commission"].sum()),
        "fills": len(fills),
    }


def check(summary: dict, expected: dict[str, float]) -> None:
    for key in ("sharpe", "sortino", "total_return", "turnover", "fees"):
        assert summary[key] == pytest.approx(expected[key], rel=1e-9), key
    assert summary["max_drawdown"] == pytest.approx(expected["max_drawdown"], rel=1e-9, abs=1e-15)
    assert summary["final_equity"] == expected["final_equity"]
    assert summary["fills"] == expected["fills"]
    assert summary["max_drawdown"] < 0  # one sign convention: below the running peak is negative


def run(tmp_path: Path, name: str, frames: dict[str, pd.DataFrame]) -> dict:
    specs = [spec(sym, model_id=f"{sym.lower()}:v1", position_size=0.05) for sym in frames]
    return run_session(config(), specs, replay_steps(series(frames)), tmp_path / name, run_id=name,
                       opts=RunOptions(commit_every=50, handle_signals=False))


@pytest.mark.parametrize(("index", "kind", "per_year"), [
    (exchange_hours(60), "exchange", 252 * 7),
    (forex_hours(4), "forex", 260 * 24),
    (crypto_5m(2500), "crypto", 365.25 * 288),
], ids=["exchange_1h", "forex_1h", "crypto_5m"])
def test_summary_equals_a_recomputation_from_the_exported_equity_and_fills(tmp_path: Path, index, kind,
                                                                         per_year) -> None:
    summary = run(tmp_path, "r", {"AAA": frame(index, 1)})
    assert (summary["calendar"], summary["periods_per_year"]) == (kind, per_year)
    assert summary["fills"] > 5
    expected = recompute(export_table("r", "equity", runs_dir=str(tmp_path)),
                         export_table("r", "fills", runs_dir=str(tmp_path)), per_year)
    check(summary, expected)


def test_two_symbols_summary_matches_the_recomputation(tmp_path: Path) -> None:
    index = exchange_hours(50)
    summary = run(tmp_path, "r", {"AAA": frame(index, 2), "BBB": frame(index[7:], 3)})
    expected = recompute(export_table("r", "equity", runs_dir=str(tmp_path)),
                         export_table("r", "fills", runs_dir=str(tmp_path)), 252 * 7)
    check(summary, expected)


@pytest.mark.parametrize("unit", ["s", "ms", "us"])
def test_the_summary_does_not_depend_on_the_datetime_resolution(tmp_path: Path, unit: str) -> None:
    # The pandas-3 bug: ISO stamps parsed to microseconds made the Sharpe sqrt(1000)x too large.
    index = exchange_hours(40)
    ns = run(tmp_path, "ns", {"AAA": frame(index.as_unit("ns"), 4)})
    other = run(tmp_path, unit, {"AAA": frame(index.as_unit(unit), 4)})
    keep = ("sharpe", "sortino", "max_drawdown", "turnover", "total_return", "periods_per_year", "calendar")
    assert {k: other[k] for k in keep} == {k: ns[k] for k in keep}


def test_the_calendar_recorded_at_the_start_is_used(tmp_path: Path) -> None:
    from aitrader.trading.summary import summarise

    inferred = run(tmp_path, "r", {"AAA": frame(crypto_5m(2000), 5)})
    with sqlite3.connect(tmp_path / "r" / "ledger.db") as conn:
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('calendar', ?)",
                     (json.dumps({"kind": "exchange", "periods_per_year": 252.0}),))
    recorded = summarise(tmp_path / "r")
    assert (recorded["calendar"], recorded["periods_per_year"]) == ("exchange", 252.0)
    assert recorded["sharpe"] == pytest.approx(inferred["sharpe"] * math.sqrt(252 / (365.25 * 288)), rel=1e-12)
    with sqlite3.connect(tmp_path / "r" / "ledger.db") as conn:  # a broken record falls back to inference
        conn.execute("UPDATE meta SET value = ? WHERE key = 'calendar'", (json.dumps({"kind": "x"}),))
    assert summarise(tmp_path / "r")["sharpe"] == inferred["sharpe"]


def test_calendar_of_several_symbols_is_the_union() -> None:
    from aitrader.trading.summary import calendar_of

    hours = exchange_hours(30)
    assert calendar_of([hours[:70], hours[50:]]) == {"kind": "exchange", "periods_per_year": 1764.0}
    assert calendar_of([hours, hours.tz_convert("UTC")]) == {"kind": "exchange", "periods_per_year": 1764.0}
    assert calendar_of(crypto_5m(3000)) == {"kind": "crypto", "periods_per_year": 105192.0}
    assert calendar_of([]) == {"kind": "exchange", "periods_per_year": 252.0}


# ---------------------------------------------------------------------------- through the CLI
CONFIG = """
ml_trading:
  models:
    - {model_id: syn_lgbm, symbol: SYN, min_confidence: 0.5, position_size: 0.05}
  errors: {prediction_timeout_ms: 5000}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 20-tree LightGBM trained on exchange-hour bars, deployed; the bars after its training rows."""
    from aitrader.data.synthetic import generate_bars

    base = tmp_path_factory.mktemp("summary_cli")
    index = exchange_hours(220)
    bars = generate_bars(len(index), seed=3, signal=0.3)
    bars.index = index
    registry = deploy_small_model(base, bars, name="syn_lgbm", n_estimators=20)
    data = base / "SYN.csv"
    bars.iloc[1000:].rename_axis("timestamp").to_csv(data)
    config_path = base / "trading.yaml"
    config_path.write_text(CONFIG)
    return {"registry": registry, "data": data, "config": config_path}


def test_paper_trade_and_status_figures_equal_the_recomputation_from_export(in_tmp: Path, world) -> None:
    from aitrader.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["paper-trade", "--config", str(world["config"]), "--registry",
                                 str(world["registry"]), "--data", str(world["data"]), "--run-id", "r", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    # the run recorded its calendar at the start: 7 hourly bars a session on an exchange
    conn = sqlite3.connect("runs/r/ledger.db")
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    finally:
        conn.close()
    assert json.loads(meta["calendar"]) == {"kind": "exchange", "periods_per_year": 1764.0}
    assert doc["fills"] > 0
    equity = runner.invoke(app, ["export", "r", "equity"])
    fills = runner.invoke(app, ["export", "r", "fills"])
    assert equity.exit_code == 0 and fills.exit_code == 0
    expected = recompute(equity.stdout, fills.stdout, 252 * 7)
    check(doc, expected)
    status = json.loads(runner.invoke(app, ["status", "r", "--json"]).stdout)
    check(status, expected)


def test_calendar_of_naive_beside_aware_stamps_is_the_longest_series() -> None:
    from aitrader.trading.summary import calendar_of

    hours = exchange_hours(30)
    assert calendar_of([hours, crypto_5m(100).tz_localize(None)]) == {"kind": "exchange", "periods_per_year": 1764.0}
