"""Loading: formats, column spellings, timestamps, adjusted close, multi-symbol, fingerprint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aitrader.data import (
    SAMPLE_SYMBOLS,
    bars_fingerprint,
    generate_bars,
    infer_interval,
    load_bars,
    load_sample,
    load_universe,
    write_bars,
)
from aitrader.errors import DataError

COLUMNS = ["open", "high", "low", "close", "volume"]


def assert_contract(df: pd.DataFrame) -> None:
    assert list(df.columns) == COLUMNS
    assert (df.dtypes == "float64").all()
    assert isinstance(df.index, pd.DatetimeIndex) and df.index.name == "timestamp"
    assert df.index.is_monotonic_increasing and df.index.is_unique
    assert {"symbol", "source", "repaired_rows"} <= set(df.attrs)


@pytest.mark.parametrize("name", ["bars.csv", "bars.csv.gz", "bars.parquet"])
def test_round_trip_formats(tmp_path: Path, name: str) -> None:
    bars = generate_bars(300, seed=3)
    path = write_bars(bars, tmp_path / name)
    loaded = load_bars(path)
    assert_contract(loaded)
    pd.testing.assert_frame_equal(loaded, bars, check_exact=False, rtol=1e-12, check_freq=False)
    assert loaded.attrs["symbol"] == "bars"
    assert not list(tmp_path.glob("*.tmp"))


def test_parquet_with_datetime_index_and_tz(tmp_path: Path) -> None:
    bars = generate_bars(50, freq="1h", tz="America/New_York")
    bars.to_parquet(tmp_path / "x.parquet")
    loaded = load_bars(tmp_path / "x.parquet")
    assert str(loaded.index.tz) == "America/New_York"
    assert bars_fingerprint(loaded) == bars_fingerprint(bars)


def test_column_spellings_and_adjusted_close(tmp_path: Path) -> None:
    path = tmp_path / "yahoo.csv"
    path.write_text(
        "Date,OPEN,High,low,Close,Adj Close,Volume\n"
        "2020-01-01,200,210,190,200,100,1000\n"  # before a 2:1 split
        "2020-01-02,101,105,99,102,102,2000\n"
    )
    bars = load_bars(path)
    assert bars.iloc[0].tolist() == [100.0, 105.0, 95.0, 100.0, 2000.0]  # volume x2: dollar volume kept
    assert bars.iloc[1].tolist() == [101.0, 105.0, 99.0, 102.0, 2000.0]
    path.write_text("datetime,o,h,l,c,adj_close,vol\n2020-01-01,2,2,2,2,1,10\n")
    assert load_bars(path).iloc[0].tolist() == [1.0, 1.0, 1.0, 1.0, 20.0]


@pytest.mark.parametrize(
    ("cells", "expected", "tz"),
    [
        (["2020-01-01", "2020-01-02"], ["2020-01-01", "2020-01-02"], None),
        (
            ["2020-01-01T09:30:00-05:00", "2020-01-01T09:31:00-05:00"],
            ["2020-01-01 14:30", "2020-01-01 14:31"],
            "UTC-05:00",
        ),
        (["2020-03-06T09:30:00-05:00", "2020-03-09T09:30:00-04:00"], ["2020-03-06 14:30", "2020-03-09 13:30"], "UTC"),
        (["1577836800", "1577836860"], ["2020-01-01 00:00", "2020-01-01 00:01"], "UTC"),
        (["1577836800000", "1577836860000"], ["2020-01-01 00:00", "2020-01-01 00:01"], "UTC"),
        (["20200101", "20200102"], ["2020-01-01", "2020-01-02"], None),
        (["01/02/2020", "01/03/2020"], ["2020-01-02", "2020-01-03"], None),
    ],
)
def test_timestamp_formats(tmp_path: Path, cells: list[str], expected: list[str], tz: str | None) -> None:
    path = tmp_path / "t.csv"
    path.write_text("time,open,high,low,close,volume\n" + "".join(f"{c},1,1,1,1,1\n" for c in cells))
    index = load_bars(path).index
    assert (str(index.tz) if index.tz else None) == tz
    assert index.unit == "ns"
    utc = index.tz_convert("UTC").tz_localize(None) if index.tz else index
    assert list(utc) == [pd.Timestamp(e) for e in expected]


def test_date_and_time_columns_are_combined(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("Date,Time,Open,High,Low,Close,Volume\n2020-01-02,09:30,1,1,1,1,1\n2020-01-02,09:31,1,1,1,1,1\n")
    assert list(load_bars(path).index) == [pd.Timestamp("2020-01-02 09:30"), pd.Timestamp("2020-01-02 09:31")]


def test_long_file_needs_a_symbol(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text(
        "ticker,timestamp,open,high,low,close,volume\n"
        "BBB,2020-01-01,1,1,1,1,1\nAAA,2020-01-01,2,2,2,2,2\nBBB,2020-01-02,1,1,1,1,1\n"
    )
    with pytest.raises(DataError, match=r"2 symbols in the file \(AAA, BBB\); pass symbol"):
        load_bars(path)
    bbb = load_bars(path, symbol="bbb")
    assert len(bbb) == 2 and bbb.attrs["symbol"] == "BBB"
    with pytest.raises(DataError, match="symbol 'CCC' not found; available: AAA, BBB"):
        load_bars(path, symbol="CCC")
    universe = load_universe(path)
    assert list(universe) == ["AAA", "BBB"] and len(universe["AAA"]) == 1


def test_long_file_row_numbers_are_file_rows(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text(
        "symbol,timestamp,open,high,low,close,volume\n"
        "A,2020-01-01,1,1,1,1,1\nB,2020-01-01,2,2,2,2,2\nA,2020-01-02,1,0.5,1,1,1\nB,2020-01-02,2,2,2,2,-2\n"
    )
    assert len(load_bars(path, symbol="B", repair=True)) == 1
    with pytest.raises(DataError) as info:
        load_universe(path)
    message = str(info.value)
    assert "long.csv [A]: row 3 (2020-01-02): high 0.5" in message
    assert "long.csv [B]: row 4 (2020-01-02): volume -2.0" in message


def test_directory_universe(tmp_path: Path) -> None:
    for i, sym in enumerate(["MSFT", "AAPL"]):
        write_bars(generate_bars(20, seed=i), tmp_path / f"{sym}.csv.gz")
    (tmp_path / "notes.txt.bak").write_text("ignored")
    universe = load_universe(tmp_path)
    assert list(universe) == ["AAPL", "MSFT"]
    assert universe["AAPL"].attrs["symbol"] == "AAPL"
    assert len(load_bars(tmp_path, symbol="msft")) == 20
    with pytest.raises(DataError, match=r"2 symbols in the directory \(AAPL, MSFT\)"):
        load_bars(tmp_path)
    write_bars(generate_bars(5), tmp_path / "AAPL.parquet")
    with pytest.raises(DataError, match="AAPL.csv.gz and AAPL.parquet are both symbol AAPL"):
        load_universe(tmp_path)


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no bar files in the directory"):
        load_universe(tmp_path)


def test_fingerprint() -> None:
    a = generate_bars(100, seed=1)
    assert bars_fingerprint(a) == bars_fingerprint(a.copy())
    assert len(bars_fingerprint(a)) == 64
    b = a.copy()
    b.iloc[50, 3] += 1e-9
    assert bars_fingerprint(b) != bars_fingerprint(a)
    us = a.copy()
    us.index = us.index.as_unit("us")
    assert bars_fingerprint(us) == bars_fingerprint(a)
    assert bars_fingerprint(a.tz_localize("UTC")) != bars_fingerprint(a)
    with pytest.raises(DataError, match="missing column"):
        bars_fingerprint(a.drop(columns="volume"))


def test_infer_interval() -> None:
    assert infer_interval(generate_bars(10, freq="5min").index) == pd.Timedelta("5min")
    idx = pd.DatetimeIndex(["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"])
    assert infer_interval(idx) == pd.Timedelta("1D")
    assert infer_interval(idx[:1]) is None


def test_sample() -> None:
    assert SAMPLE_SYMBOLS == ("AAPL", "MSFT", "IBM", "GOOG")
    bars = load_sample("AAPL")
    assert_contract(bars)
    assert len(bars) == 3270 and bars.index[0] == pd.Timestamp("2000-03-01")
    # Split-adjusted: AAPL's 2:1 split of 2005-02-28 leaves no jump in adjusted closes.
    jump = bars["close"].pct_change().abs()
    assert jump.max() < 0.55  # the largest raw move is the 2000-09-29 crash (-52%), no split halving
    assert jump.loc["2005-02-25":"2005-03-01"].max() < 0.1
    assert bars.loc["2013-03-01", "close"] == pytest.approx(56.137, rel=1e-3)
    assert len(load_sample("goog")) == 2148
    with pytest.raises(DataError, match="unknown sample symbol 'FB'; choose one of AAPL, MSFT, IBM, GOOG"):
        load_sample("FB")


@pytest.mark.shared_data
def test_shared_data(shared_data: Path) -> None:
    equity = load_universe(shared_data / "equity_1h")
    assert set(equity) == {"SPY", "AAPL", "IBM", "BAC", "AIG"}
    assert infer_interval(equity["SPY"].index) == pd.Timedelta("1h")
    assert equity["AAPL"]["close"].min() < 1  # old sub-dollar adjusted prices load fine
    crypto = load_bars(shared_data / "crypto_5m", symbol="ADA_BTC")
    assert infer_interval(crypto.index) == pd.Timedelta("5min")
    spy = load_bars(shared_data / "intraday_1m" / "SPY_2011_utc_barend.csv.gz")
    assert len(spy) == 31_757 and spy.attrs["symbol"] == "SPY_2011_utc_barend"


def test_load_a_long_file(tmp_path: Path) -> None:
    # Correctness only: load speed (about 0.1 s for these 200k rows) belongs in scripts/bench/, not in a test.
    bars = generate_bars(200_000, freq="1min")
    path = tmp_path / "big.csv"
    bars.to_csv(path)
    loaded = load_bars(path)
    assert len(loaded) == 200_000
    assert loaded.index.equals(bars.index.rename("timestamp"))
    assert np.allclose(loaded["close"].to_numpy(), bars["close"].to_numpy(), rtol=1e-12)


def test_unparseable_first_timestamp_warns_nothing() -> None:
    """pandas warns when it falls back to per-cell parsing; on a user's stderr that is only noise."""
    import warnings

    from aitrader.data._read import parse_timestamps

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parsed = parse_timestamps(pd.Series(["garbage", "2020-01-02", "2020-01-03"]))
    assert parsed.isna().tolist() == [True, False, False]
    assert [str(w.message) for w in caught] == []
