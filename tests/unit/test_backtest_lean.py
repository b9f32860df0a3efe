"""The parts of backtest's report that hold no array of the run's length beside one, against the
whole-array formulas they replace.

Oracles: the texts themselves and ``pd.Timestamp`` for the fills' stamps held as numbers
(``StampColumn``); hand-written columns for the recorder fed by hand; ``np.searchsorted`` over the
whole bar epochs (``rows_at``); the close column indexed whole (``CloseReader``); the whole-path
``drawdown_duration`` main had (frozen below); ``tests/backtest_oracle.curve_stats`` over whole arrays
(``curve_stats_over``); the RSS of a process before and after (``release_free_memory``).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aitrader.trading.backtest as B
import aitrader.trading.trips as T
from aitrader.trading.events import Fill
from aitrader.trading.sources import BarSeries, _format_ns
from aitrader.training import metrics as M
from tests.backtest_oracle import curve_stats

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ StampColumn
def texts_of(index: pd.DatetimeIndex, whole: bool) -> list[str]:
    utc = index.tz_convert("UTC").tz_localize(None) if index.tz is not None else index
    texts = _format_ns(utc.as_unit("ns").asi8, "+00:00" if index.tz is not None else "", whole)
    assert texts[0].startswith(str(utc[0].date()))  # real dates (pandas 3 makes ranges in us)
    return texts


CASES = {
    "naive": texts_of(pd.date_range("2024-03-09 22:00", periods=23, freq="17min"), True),
    "naive, microseconds": texts_of(pd.date_range("2024-03-09 22:00", periods=23, freq="1500ms"), False),
    "naive, whole written with microseconds": texts_of(pd.date_range("2024-01-01", periods=23, freq="1h"), False),
    "utc": texts_of(pd.date_range("2024-03-09 22:00", periods=23, freq="1h", tz="America/New_York"), True),
    "other offsets": [t.isoformat() for t in pd.date_range("2024-03-09 22:00", periods=23, freq="1h",
                                                           tz="America/New_York")],
    "space separator": [str(t) for t in pd.date_range("2024-01-01", periods=23, freq="1h")],
    "not stamps": [f"bar {i}" for i in range(23)],
}


@pytest.mark.parametrize("case", list(CASES))
def test_stamp_column_gives_back_the_texts(case: str) -> None:
    texts = CASES[case]
    col = T.StampColumn()
    for lo in range(0, len(texts), 5):  # pieces of 5, the last of 3
        col.add(list(texts[lo:lo + 5]))
    assert len(col) == len(texts) and list(col) == texts and col == texts and texts == col
    assert col[0] == texts[0] and col[-1] == texts[-1] and col[3:17:4] == texts[3:17:4]
    rows = [22, 0, 5, 4, 5, 13]
    assert col.take(rows) == [texts[i] for i in rows] == T.stamp_texts(col, np.array(rows))
    assert col != texts[:-1] and col != [*texts[:-1], "x"]
    with pytest.raises(IndexError):
        col[len(texts)]
    numbers = col.ns()
    if case in ("other offsets", "space separator", "not stamps"):  # held as the strings themselves
        assert numbers is None
    else:
        assert numbers is not None
        ns, aware = numbers
        assert aware == (case == "utc")
        assert ns.tolist() == [pd.Timestamp(t).value for t in texts]


def test_stamp_column_of_mixed_pieces() -> None:
    naive, utc, other = CASES["naive"], CASES["utc"], CASES["other offsets"]
    col = T.StampColumn()
    for piece in (naive[:5], other[:4], naive[5:9], utc[:3]):
        col.add(list(piece))
    texts = naive[:5] + other[:4] + naive[5:9] + utc[:3]
    assert list(col) == texts and col.take(range(len(texts))) == texts
    assert col.ns() is None  # not all numbers, and naive beside UTC
    both = T.StampColumn()
    both.add(list(naive[:4]))
    both.add(list(utc[:4]))
    assert both.ns() is None and list(both) == naive[:4] + utc[:4]


# ------------------------------------------------------------------------------ FillRecorder by hand
def test_recorder_columns_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """Values as FillColumns.read converts the table's (str, float, side in any case, None as 0.0), pieces of 2."""
    monkeypatch.setattr(T, "STAMP_PIECE", 2)
    rec = T.FillRecorder()
    fills = [Fill(1, 1, "2024-01-01T00:00:00", "B", "buy", 2, 10.5, 0.25, 0.0),
             Fill(2, 2, "2024-01-01T00:01:00", "A", "SELL", 1.5, 11, None, 0.0),  # type: ignore[arg-type]
             Fill(3, 3, "2024-01-01T00:02:00", "B", "Buy", 0.5, 9.75, 0.0, 0.0),
             Fill(4, 4, "2024-01-01 00:03:00", "A", "sell", 3.0, 12.0, 1.0, 0.0)]
    for f in fills:
        rec._on_fill(f)
    assert len(rec) == 4
    cols = rec.columns()
    assert list(cols.ts) == ["2024-01-01T00:00:00", "2024-01-01T00:01:00", "2024-01-01T00:02:00",
                             "2024-01-01 00:03:00"]
    assert cols.symbol == ["B", "A", "B", "A"] and cols.buy.tolist() == [True, False, True, False]
    assert repr(cols.quantity.tolist()) == repr([2.0, 1.5, 0.5, 3.0])
    assert repr(cols.price.tolist()) == repr([10.5, 11.0, 9.75, 12.0])
    assert repr(cols.commission.tolist()) == repr([0.25, 0.0, 0.0, 1.0])
    codes, names = cols.symbol_codes()
    assert names == ["A", "B"] and codes.tolist() == [1, 0, 1, 0]
    # the second piece is kept as text (a space for the "T"): the stamps are then parsed together, as read's
    parsed = cols.stamp_ns()
    assert parsed is not None and not parsed[1]
    assert parsed[0].tolist() == [pd.Timestamp(t).value for t in cols.ts]
    assert T.FillColumns(ts=list(cols.ts), symbol=cols.symbol, buy=cols.buy, quantity=cols.quantity,
                         price=cols.price, commission=cols.commission).symbol_codes()[0].tolist() == [1, 0, 1, 0]


def test_recorder_without_fills_and_columns_asked_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    empty = T.FillRecorder().columns()
    assert len(empty) == 0 and list(empty.ts) == [] and empty.symbol == [] and empty.buy.dtype == bool
    assert empty.quantity.dtype == np.float64 and empty.quantity.size == empty.commission.size == 0
    assert empty.symbol_codes()[0].size == 0 and empty.stamp_ns() is None
    monkeypatch.setattr(T, "STAMP_PIECE", 2)
    rec = T.FillRecorder()
    for i in range(5):  # pieces of 2, 2 and 1
        rec._on_fill(Fill(i, i, f"2024-01-01T00:0{i}:00", "AB"[i % 2], "buy" if i % 3 else "sell", 1.0 + i,
                          100.0 - i, 0.5 * i, 0.0))
    first, again = rec.columns(), rec.columns()
    for cols in (first, again):
        assert len(cols) == 5 and list(cols.ts) == [f"2024-01-01T00:0{i}:00" for i in range(5)]
        assert cols.symbol == ["A", "B", "A", "B", "A"] and cols.buy.tolist() == [False, True, True, False, True]
        assert cols.quantity.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0] and cols.commission.tolist() == [0.0, 0.5, 1.0,
                                                                                                    1.5, 2.0]


# ------------------------------------------------------------------------------ rows_at, CloseReader
def series_of(index: pd.DatetimeIndex) -> BarSeries:
    n = len(index)
    df = pd.DataFrame({"open": np.arange(n) + 0.25, "high": np.arange(n) + 0.5, "low": np.arange(n) - 0.5,
                       "close": np.arange(n) * 1.5, "volume": 1.0}, index=index)
    return BarSeries.from_frame("X", df)


@pytest.mark.parametrize("tz", [None, "America/New_York"])
def test_rows_at_equals_the_whole_search(tz: str | None) -> None:
    index = pd.date_range("2024-03-09 20:00", periods=400, freq="7min", tz=tz).delete(range(100, 140))  # a gap
    s = series_of(index)
    bar_epochs = s.ns() / 1e9
    rng = np.random.default_rng(3)
    picks = [bar_epochs[::3], bar_epochs[5:9], np.sort(rng.uniform(bar_epochs[0] - 600, bar_epochs[-1] + 600, 50)),
             np.array([bar_epochs[0] - 1.0, bar_epochs[0]]), np.array([bar_epochs[-1] + 60.0]),
             rng.permutation(bar_epochs[50:80]), np.empty(0)]
    for epochs in picks:
        want = np.searchsorted(bar_epochs, epochs, side="right") - 1
        assert B.rows_at(s, epochs).tolist() == want.tolist()


def test_close_reader_equals_the_close_column(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(B, "SCAN_ROWS", 3)
    s = series_of(pd.date_range("2024-01-01", periods=20, freq="1h"))
    closes = np.arange(20) * 1.5
    reader = B.CloseReader(s)

    def want(rows: list[int]) -> list[float]:
        return [float(closes[r]) if 0 <= r < 20 else math.nan for r in rows]

    for rows in ([-1, -1, 0, 0, 1], [1, 2, 7, 7], [8, 15], [15, 19, 20], [2, 3], [19, 19], [-1, 25]):
        got = reader.closes(np.array(rows, dtype=np.int64)).tolist()
        assert np.array_equal(got, want(rows), equal_nan=True), rows


# ------------------------------------------------------------------------------ drawdown_duration in pieces
def whole_drawdown_duration(equity: np.ndarray, initial: float | None) -> tuple[int, int, int]:
    """main's drawdown_duration (vectorised over the whole path), frozen."""
    e = np.asarray(equity, dtype=np.float64).ravel()
    path = np.concatenate(([float(initial)], e)) if initial is not None else e
    offset = 1 if initial is not None else 0
    if path.size == 0:
        return 0, -1, -1
    under = path < np.maximum.accumulate(path)
    edges = np.flatnonzero(np.diff(np.concatenate(([False], under, [False])).astype(np.int8)))
    if not edges.size:
        return 0, -1, -1
    starts, lengths = edges[0::2], edges[1::2] - edges[0::2]
    k = int(np.argmax(lengths))
    best, best_first = int(lengths[k]), int(starts[k])
    return best, best_first - offset, best_first + best - 1 - offset


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.sampled_from([-2.0, -1.0, 0.0, 1.0, 2.0, math.nan]), max_size=40),
       initial=st.sampled_from([None, 100.0, 97.0, 104.0]), piece=st.sampled_from([1, 2, 3, 7, 65_536]))
def test_drawdown_duration_in_pieces_equals_the_whole_path(steps: list[float], initial: float | None,
                                                           piece: int) -> None:
    equity = 100.0 + np.cumsum(np.array(steps, dtype=np.float64)) if steps else np.empty(0)
    saved = M._DRAWDOWN_PIECE
    M._DRAWDOWN_PIECE = piece
    try:
        assert M.drawdown_duration(equity, initial=initial) == whole_drawdown_duration(equity, initial)
    finally:
        M._DRAWDOWN_PIECE = saved


# ------------------------------------------------------------------------------ curve_stats_over
@pytest.mark.parametrize("n", [0, 1, 2, 500])
def test_curve_stats_in_one_array_equal_the_whole_arrays(n: int) -> None:
    rng = np.random.default_rng(n)
    initial = 10_000.0
    equity = initial * np.cumprod(1.0 + rng.normal(0.0, 0.01, n))
    stamps = [str(t) for t in pd.date_range("2024-01-01", periods=n, freq="5min")]
    positions = np.where(rng.random(n) < 0.4, 0.0, rng.random(n))
    want = curve_stats(equity, stamps, initial, 105_120.0, positions, 1234.5, 6.75)
    path = np.concatenate(([initial], equity))
    refills: list[int] = []

    def refill() -> np.ndarray:
        refills.append(1)
        path[1:] = equity
        path[0] = initial
        return path

    exposure = float(np.count_nonzero(positions)) / n if n else 0.0
    got, final = B.curve_stats_over(path, refill, stamps, 105_120.0, exposure, 1234.5, 6.75)
    assert json.dumps(got) == json.dumps(want)  # the same floats, keys in the same order
    assert final == (float(equity[-1]) if n else initial) and len(refills) == (1 if n else 0)


def test_kept_rows_by_hand() -> None:
    ns = np.arange(10, dtype=np.int64) * 60 * 10**9
    assert B._kept_rows(10, None, ns, None) == range(10)
    assert B._kept_rows(10, 180.0, ns, None) == range(3, 10)
    assert B._kept_rows(10, 1e9, ns, None) == range(10, 10)
    bumpy = np.array([0.0, 60.0, 0.0, 180.0, 240.0])  # a stamp parsed as 0.0 among the kept ones
    assert B._kept_rows(5, 60.0, None, bumpy).tolist() == [1, 3, 4]


# ------------------------------------------------------------------------------ release_free_memory
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_free_memory_gives_the_heaps_holes_back() -> None:
    """60k blocks of 1000 bytes (malloc's heap), every 64th kept: without the call the RSS stays."""
    code = textwrap.dedent("""
        import sys
        from aitrader._memory import _glibc, release_free_memory
        def rss():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
        if _glibc() is None:
            print("skip")
            raise SystemExit
        blocks = [bytearray(1000) for _ in range(60_000)]
        kept = blocks[::64]
        del blocks
        before = rss()
        released = release_free_memory() if sys.argv[1] == "1" else None
        print(before - rss(), released)
    """)
    out = {}
    for call in ("0", "1"):
        proc = subprocess.run([sys.executable, "-c", code, call], capture_output=True, text=True, check=True,
                              cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        out[call] = proc.stdout.split()
    if out["1"] == ["skip"]:
        pytest.skip("not glibc")
    assert float(out["0"][0]) < 5.0  # the holes stay resident
    assert float(out["1"][0]) > 30.0 and out["1"][1] == "True"
