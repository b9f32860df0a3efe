"""``data check`` warnings (issue 9, item 10): suspected unadjusted splits and quantised prices.

Both leave the data valid (exit 0) and list the rows; ``load_bars`` logs them (the train path).
Expected moves, shares and stamps are computed by hand from how each file is built.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.data import check_bars, load_bars

runner = CliRunner()


def frame(close: list[float], volume: list[float] | None = None, start: str = "2021-01-04") -> pd.DataFrame:
    """Daily bars with open = close, high/low 1% around it."""
    c = np.asarray(close, dtype="float64")
    v = np.asarray(volume if volume is not None else [1000.0] * len(c), dtype="float64")
    index = pd.date_range(start, periods=len(c), freq="D", name="timestamp")
    return pd.DataFrame({"open": c, "high": c * 1.01, "low": c * 0.99, "close": c, "volume": v}, index=index)


def wobble(n: int, level: float) -> list[float]:
    """n closes that never repeat: level, level*1.001, level*0.999, level*1.002, ..."""
    return [level * (1 + 0.001 * ((k % 5) - 2) + 0.0001 * k) for k in range(n)]


def write(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path)
    return path


def warnings_of(path: Path) -> list[dict]:
    report = check_bars(path)
    assert report.valid
    return [w.to_dict() for s in report.symbols for w in s.warnings]


def test_unadjusted_two_for_one_split_without_volume_move(tmp_path: Path) -> None:
    # 30 bars near 100, then the same pattern halved: bar 29 closes at 100 * (1 + 0.002 + 0.0029) = 100.49,
    # bar 30 at 100 * (1 - 0.002 + 0.003) / 2 = 50.05
    closes = wobble(30, 100.0) + [c / 2 for c in wobble(60, 100.0)[30:]]
    path = write(frame(closes), tmp_path / "XYZ.csv")
    (warning,) = warnings_of(path)
    assert warning["rule"] == "suspected_split" and warning["count"] == 1
    (row,) = warning["rows"]
    assert row["timestamp"] == "2021-02-03T00:00:00"  # 2021-01-04 + 30 days
    assert row["previous_close"] == pytest.approx(100.49) and row["close"] == pytest.approx(50.05)
    assert row["move"] == pytest.approx(50.05 / 100.49 - 1, abs=1e-6)  # -0.501940
    assert row["looks_like"] == "2-for-1 split"
    assert row["volume_ratio"] == 1.0
    assert "2021-02-03 -50.2% (a 2-for-1 split? volume x1.00: only prices jump)" in warning["message"]


def test_unadjusted_split_with_volume_split_too(tmp_path: Path) -> None:
    closes = wobble(40, 90.0) + [c / 3 for c in wobble(80, 90.0)[40:]]
    volume = [1000.0] * 40 + [3000.0] * 40
    (warning,) = warnings_of(write(frame(closes, volume), tmp_path / "XYZ.csv"))
    (row,) = warning["rows"]
    assert row["looks_like"] == "3-for-1 split" and row["volume_ratio"] == 3.0
    assert "volume x3.00: shares split too" in warning["message"]


def test_reverse_splits_and_several_rows(tmp_path: Path) -> None:
    # 1-for-10 reverse split at bar 25 (+900%), then a 4-for-1 split at bar 60 (-75%).
    base = wobble(90, 2.0)
    closes = base[:25] + [c * 10 for c in base[25:60]] + [c * 10 / 4 for c in base[60:]]
    (warning,) = warnings_of(write(frame(closes), tmp_path / "XYZ.csv"))
    assert warning["count"] == 2
    assert [r["looks_like"] for r in warning["rows"]] == ["1-for-10 reverse split", "4-for-1 split"]
    assert [r["timestamp"][:10] for r in warning["rows"]] == ["2021-01-29", "2021-03-05"]
    moves = [r["move"] for r in warning["rows"]]
    assert moves[0] == pytest.approx(10 * base[25] / base[24] - 1, abs=1e-6)
    assert moves[1] == pytest.approx(base[60] / (4 * base[59]) - 1, abs=1e-6)


@pytest.mark.parametrize(
    "ratio",
    [0.481, 0.523, 0.454, 0.591, 1.502, 1.441, 0.6667, 1.9],
    ids=["AAPL 2000 -51.9%", "-47.7%", "AIG -54.6%", "-40.9%", "AIG +50.2%", "+44.1%", "3-for-2", "+90%"],
)
def test_genuine_large_moves_are_not_splits(tmp_path: Path, ratio: float) -> None:
    # Real one-bar moves of the equity_1h data and the bokeh sample, more than 1.5% from 1/k or k.
    closes = wobble(30, 50.0) + [c * ratio for c in wobble(60, 50.0)[30:]]
    assert warnings_of(write(frame(closes), tmp_path / "XYZ.csv")) == []


def test_ratio_tolerance_edges(tmp_path: Path) -> None:
    flat = [100.0 + 0.01 * k for k in range(20)]
    inside = flat + [flat[-1] * 0.5 * 1.014] + [flat[-1] * 0.5 * 1.014 + 0.01 * k for k in range(1, 20)]
    outside = flat + [flat[-1] * 0.5 * 1.016] + [flat[-1] * 0.5 * 1.016 + 0.01 * k for k in range(1, 20)]
    assert [w["rule"] for w in warnings_of(write(frame(inside), tmp_path / "in.csv"))] == ["suspected_split"]
    assert warnings_of(write(frame(outside), tmp_path / "out.csv")) == []


def test_an_adjusted_close_column_means_no_split_warning(tmp_path: Path) -> None:
    closes = wobble(30, 100.0) + [c / 2 for c in wobble(60, 100.0)[30:]]
    df = frame(closes)
    df["adj_close"] = [c / 2 for c in closes[:30]] + closes[30:]
    path = write(df, tmp_path / "XYZ.csv")
    assert warnings_of(path) == []
    bars = load_bars(path)
    assert bars["close"].iloc[29] == pytest.approx(closes[29] / 2)


def test_quantised_prices(tmp_path: Path) -> None:
    # 101 closes, 100 returns: pattern of 100 returns with exactly 53 zeros.
    closes = [10.0]
    for k in range(100):
        closes.append(closes[-1] if k % 100 < 53 else closes[-1] + (0.01 if k % 2 else -0.01))
    (warning,) = warnings_of(write(frame(closes), tmp_path / "MSFT.csv"))
    assert warning["rule"] == "quantised_prices" and warning["count"] == 53
    assert "53.0% of close-to-close returns are exactly zero (53 of 100, 2021-01-05 .. 2021-02-26" in warning["message"]
    assert "smallest price step 0.01" in warning["message"]
    assert [r["timestamp"][:10] for r in warning["rows"][:2]] == ["2021-01-05", "2021-01-06"]
    assert all(r["move"] == 0.0 for r in warning["rows"])


def test_few_zero_returns_are_fine(tmp_path: Path) -> None:
    closes = [10.0]
    for k in range(100):  # 20 zeros of 100: at the threshold, not above it
        closes.append(closes[-1] if k % 5 == 0 else closes[-1] * (1.01 if k % 2 else 0.995))
    assert warnings_of(write(frame(closes), tmp_path / "A.csv")) == []
    assert warnings_of(write(frame([10.0] * 20), tmp_path / "short.csv")) == []  # under 30 returns: no verdict


def test_data_check_cli_shows_warnings_and_exits_0(tmp_path: Path) -> None:
    closes = wobble(30, 100.0) + [c / 2 for c in wobble(60, 100.0)[30:]]
    path = write(frame(closes), tmp_path / "XYZ.csv")
    result = runner.invoke(app, ["data", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "warning suspected_split" in result.stdout and "2021-02-03 -50.2%" in result.stdout
    assert "valid, 1 warning" in result.stdout
    assert result.stderr == ""
    result = runner.invoke(app, ["data", "check", str(path), "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["valid"] is True
    (warning,) = doc["symbols"][0]["warnings"]
    assert warning["rows"][0]["timestamp"] == "2021-02-03T00:00:00"


def test_load_bars_logs_the_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    closes = wobble(30, 100.0) + [c / 2 for c in wobble(60, 100.0)[30:]]
    path = write(frame(closes), tmp_path / "XYZ.csv")
    with caplog.at_level(logging.WARNING, logger="aitrader"):
        bars = load_bars(path)
    assert len(bars) == 60
    assert "XYZ.csv: 1 one-bar move at a split ratio and no adjusted close column" in caplog.text
    # On the CLI the warning reaches stderr while the command succeeds.
    result = runner.invoke(app, ["features", "build", "--data", str(path), "--out", str(tmp_path / "f.parquet")])
    assert result.exit_code == 0, result.output
    assert "one-bar move at a split ratio" in result.stderr


@pytest.mark.shared_data
def test_real_hourly_bars_unadjusted_by_hand(shared_data: Path, tmp_path: Path) -> None:
    """Real adjusted AAPL hourly bars carry no warning; un-adjusting a 2-for-1 split at a session
    open (prices before it x2, volume /2) is found at exactly that bar."""
    source = shared_data / "equity_1h" / "AAPL.csv.gz"
    bars = load_bars(source).iloc[-3000:]
    assert check_bars(source).symbols[0].warnings == []
    split_at = bars.index[bars.index.normalize() != bars.index.normalize().to_series().shift().to_numpy()][200]
    before = bars.index < split_at
    raw = bars.copy()
    raw.loc[before, ["open", "high", "low", "close"]] *= 2
    raw.loc[before, "volume"] /= 2
    path = tmp_path / "AAPL.csv"
    raw.to_csv(path)
    (warning,) = warnings_of(path)
    (row,) = warning["rows"]
    assert pd.Timestamp(row["timestamp"]) == split_at
    pos = bars.index.get_loc(split_at)
    assert row["move"] == pytest.approx(bars["close"].iloc[pos] / (2 * bars["close"].iloc[pos - 1]) - 1, abs=1e-6)
    assert "shares split too" in warning["message"]


@pytest.mark.parametrize(("decimals", "warned"), [(3, True), (4, False)])
def test_real_sample_rounded_like_old_split_adjusted_prices(tmp_path: Path, decimals: int, warned: bool) -> None:
    """MSFT daily bars divided by 288 (its splits since 1986) and rounded: 3 decimals leave a
    third of the returns at exactly zero, 4 decimals under 5%."""
    from aitrader.data.sample import load_sample

    bars = load_sample("MSFT")
    prices = ["open", "high", "low", "close"]
    bars[prices] = (bars[prices] / 288).round(decimals)
    path = write(bars, tmp_path / "MSFT.csv")
    close = bars["close"].to_numpy()
    zeros = int((close[1:] == close[:-1]).sum())  # the oracle: counted directly
    found = warnings_of(path)
    if warned:
        (warning,) = found
        assert warning["rule"] == "quantised_prices" and warning["count"] == zeros
        assert f"{zeros / (len(close) - 1):.1%} of close-to-close returns are exactly zero" in warning["message"]
        assert "smallest price step 0.001 " in warning["message"]
    else:
        assert zeros / (len(close) - 1) < 0.2 and found == []
