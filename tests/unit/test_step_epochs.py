"""backtest.step_ns over 1e9 (the equity steps' epochs from the replayed series' bars) == session.to_epoch of each
stamp the engine wrote, stamp by stamp (main's frozen_curve did exactly that), or None where it must not guess.

The stamps are written as a replay writes them (``replay_steps`` over the same series), packed as the ledger
packs them (one blob per checkpoint).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aitrader.trading.backtest import step_ns
from aitrader.trading.ledger import pack_text
from aitrader.trading.session import to_epoch
from aitrader.trading.sources import BarSeries, replay_steps


def step_epochs(series: list[BarSeries], blobs: list[tuple[int, bytes]]) -> np.ndarray | None:
    """The steps' epoch seconds as the report makes them: ``step_ns`` over 1e9 (None: parse the stamps)."""
    ns = step_ns(series, blobs)  # type: ignore[arg-type]
    return ns / 1e9 if ns is not None else None


def series(symbol: str, index: pd.DatetimeIndex) -> BarSeries:
    n = len(index)
    df = pd.DataFrame({c: np.arange(n) + 1.0 for c in ("open", "high", "low", "close", "volume")}, index=index)
    return BarSeries.from_frame(symbol, df)


def blobs_of(stamps: list[str], every: int) -> list[tuple[int, bytes]]:
    return [(len(stamps[k:k + every]), pack_text(stamps[k:k + every])) for k in range(0, len(stamps), every)]


def written(bars: list[BarSeries]) -> list[str]:
    return [ts for ts, _, _ in replay_steps(bars, chunk=7)]


def test_one_and_two_symbols_naive_and_zoned_equal_to_epoch_per_stamp() -> None:
    naive = series("A", pd.date_range("2024-03-09 20:00", periods=300, freq="5min"))
    ny = series("A", pd.date_range("2024-03-09 20:00", periods=300, freq="5min", tz="America/New_York"))
    paris = series("B", pd.date_range("2024-03-09 22:07", periods=200, freq="3min", tz="Europe/Paris"))
    for bars in ([naive], [ny], [ny, paris]):
        stamps = written(bars)
        assert len(stamps) == (300 if len(bars) == 1 else 300 + 200 - len(set(ny.ns()) & set(paris.ns())))
        got = step_epochs(bars, blobs_of(stamps, 64))
        assert got is not None and got.tolist() == [to_epoch(t) for t in stamps]
        stopped = stamps[:150]  # a replay stopped early wrote a prefix of its steps
        got = step_epochs(bars, blobs_of(stopped, 64))
        assert got is not None and got.tolist() == [to_epoch(t) for t in stopped]


def test_none_when_the_stamps_are_not_the_series_steps() -> None:
    bars = [series("A", pd.date_range("2024-01-01", periods=50, freq="1h"))]
    stamps = written(bars)
    assert step_epochs(bars, blobs_of(stamps[1:], 20)) is None  # first stamp is not the first bar
    assert step_epochs(bars, blobs_of(stamps + ["2024-01-03T02:00:00"], 20)) is None  # more steps than bars
    assert step_epochs(bars, blobs_of(stamps[:-2] + stamps[-1:], 20)) is None  # last stamp not step 48
    assert step_epochs(bars, []) is None and step_epochs([], blobs_of(stamps, 20)) is None
    fine = [series("A", pd.date_range("2024-01-01", periods=50, freq="1500ms"))]  # half seconds: parsed instead
    assert step_epochs(fine, blobs_of(written(fine), 20)) is None
