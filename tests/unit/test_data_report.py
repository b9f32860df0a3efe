"""check_bars: stats, gap rules, per-symbol reports, JSON-ready dicts."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from aitrader.data import check_bars, generate_bars, write_bars
from aitrader.data.report import gap_stats, session_shape
from aitrader.data.sample import sample_path


def idx(stamps: list[str]) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(stamps)).as_unit("ns")


def test_daily_gaps_ignore_weekends() -> None:
    days = pd.bdate_range("2020-01-01", "2020-03-31")
    assert gap_stats(days, pd.Timedelta("1D")).count == 0
    holed = days.delete(slice(20, 26))  # six business days missing
    stats = gap_stats(holed, pd.Timedelta("1D"))
    assert (stats.count, stats.market) == (1, "daily")
    assert stats.largest == pd.Timedelta("9D")  # 2020-01-28 -> 2020-02-06


def test_continuous_market_counts_every_missing_bar() -> None:
    bars = pd.date_range("2020-01-01", periods=5000, freq="5min")
    stats = gap_stats(bars.delete([100, 2000, 2001]), pd.Timedelta("5min"))
    assert (stats.market, stats.count, stats.largest) == ("continuous", 2, pd.Timedelta("15min"))


def test_session_market_separates_overnight_breaks() -> None:
    sessions = [pd.date_range(f"{d} 09:30", f"{d} 15:30", freq="1h") for d in pd.bdate_range("2020-01-06", periods=10)]
    index = sessions[0].append(sessions[1:])
    stats = gap_stats(index, pd.Timedelta("1h"))
    assert (stats.market, stats.count, stats.session_breaks) == ("session", 0, 9)
    stats = gap_stats(index.delete(3), pd.Timedelta("1h"))  # a missing bar mid-session
    assert (stats.count, stats.largest) == (1, pd.Timedelta("2h"))


def test_session_crossing_utc_midnight_is_one_day() -> None:
    # Extended hours 09:00-00:59 UTC: the overnight break falls inside a UTC calendar day.
    days = pd.bdate_range("2020-01-06", periods=10)
    index = pd.DatetimeIndex([]).as_unit("ns")
    for d in days:
        index = index.append(pd.date_range(d + pd.Timedelta("9h"), d + pd.Timedelta("24h 59min"), freq="1min"))
    stats = gap_stats(index, pd.Timedelta("1min"))
    assert (stats.market, stats.count, stats.session_breaks) == ("session", 0, 9)


def _us_session(step: str, shift: str = "0min") -> pd.DatetimeIndex:
    """Regular US sessions 14:30-21:00 UTC of 10 days, bars of ``step`` stamped at start (+ ``shift``)."""
    index = pd.DatetimeIndex([]).as_unit("ns")
    for d in pd.bdate_range("2020-01-06", periods=10):
        bars = pd.date_range(d + pd.Timedelta("14h30min"), d + pd.Timedelta("21h") - pd.Timedelta(step), freq=step)
        index = pd.DatetimeIndex(index.append(bars + pd.Timedelta(shift)))
    return index


@pytest.mark.parametrize("step", ["1min", "5min", "15min"])
def test_stamp_convention_start_or_end(step: str) -> None:
    start = session_shape(_us_session(step), pd.Timedelta(step))
    assert (start.first_bar, start.stamps) == ("14:30", "start")
    end = session_shape(_us_session(step, shift=step), pd.Timedelta(step))
    assert (end.first_bar, end.last_bar, end.stamps) == (f"14:{30 + pd.Timedelta(step).seconds // 60:02d}",
                                                         "21:00", "end")
    # Stamps at neither convention (bars offset by 7 minutes) or bars of an hour: no guess.
    assert session_shape(_us_session(step, shift="7min"), pd.Timedelta(step)).stamps == "unknown"
    assert session_shape(_us_session("1h"), pd.Timedelta("1h")).stamps == "unknown"


def test_report_of_a_valid_file(tmp_path: Path) -> None:
    path = write_bars(generate_bars(100, freq="1h", tz="UTC"), tmp_path / "X.csv")
    report = check_bars(path)
    assert report.valid and report.rows == 100
    d = json.loads(json.dumps(report.to_dict()))
    sym = d["symbols"][0]
    assert sym["symbol"] == "X" and sym["interval"] == "0 days 01:00:00" and sym["tz"] == "UTC"
    assert sym["first"] == "2020-01-01T00:00:00+00:00" and sym["span"] == "4 days 03:00:00"
    assert sym["gaps"] == {"count": 0, "largest": None, "first_at": None}


def test_report_of_a_broken_file_and_repair(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n2020-01-02,1,1,1,1,1\n2020-01-01,1,1,1,1,1\n2020-01-03,1,0.5,1,1,1\n"
    )
    report = check_bars(path)
    assert not report.valid
    sym = report.to_dict()["symbols"][0]
    assert [p["rule"] for p in sym["problems"]] == ["unsorted", "high_low"]
    assert sym["problems"][0] == {
        "rule": "unsorted",
        "row": 2,
        "timestamp": "2020-01-01",
        "message": "b.csv: row 2 (2020-01-01): timestamp is earlier than 2020-01-02 on row 1; "
        "sort the file by timestamp or pass --repair to sort it",
        "count": 1,
    }
    assert (sym["rows"], sym["usable_rows"]) == (3, 2)
    repaired = check_bars(path, repair=True)
    assert repaired.valid and repaired.symbols[0].repaired_rows == 2


def test_sample_report_per_symbol() -> None:
    report = check_bars(sample_path())
    assert report.valid
    assert [s.symbol for s in report.symbols] == ["AAPL", "FB", "GOOG", "IBM", "MSFT"]
    aapl = report.symbols[0]
    assert aapl.gaps.count == 3  # 9/11 closure (and two other > 4-day closures)
    only = check_bars(sample_path(), symbol="ibm")
    assert [s.symbol for s in only.symbols] == ["IBM"]


@pytest.mark.shared_data
def test_shared_data_reports(shared_data: Path) -> None:
    crypto = check_bars(shared_data / "crypto_5m" / "ADA_BTC.csv.gz").symbols[0]
    assert crypto.gaps.market == "continuous" and crypto.gaps.count > 0
    equity = check_bars(shared_data / "equity_1h", symbol="SPY").symbols[0]
    assert equity.gaps.market == "session" and equity.gaps.session_breaks > 5000
    assert equity.gaps.count < 10  # only multi-day closures such as 9/11
    spy_min = check_bars(shared_data / "intraday_1m" / "SPY_2011_utc_barend.csv.gz").symbols[0]
    assert spy_min.gaps.market == "session"
    assert spy_min.gaps.largest is not None and spy_min.gaps.largest > pd.Timedelta("20D")  # February is absent
    # The README says this file stamps bars at their END (UTC): 04:00-20:00 New York = 09:01 .. 01:00.
    assert spy_min.session is not None
    assert spy_min.session.to_dict() == {"first_bar": "09:01", "last_bar": "01:00", "stamps": "end"}
    assert equity.session is not None and equity.session.to_dict() == {
        "first_bar": "09:00", "last_bar": "15:00", "stamps": "unknown"}  # hourly bars: no guess
    assert crypto.session is None  # a market that never closes has no sessions
