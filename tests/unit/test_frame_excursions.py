"""``export RUN trades`` from columns (``service.run_trades``: ``trips`` + ``backtest.frame_excursions``) ==
the trade-by-trade ``trades.round_trips`` with whole frames, to the bit.

Oracle: ``round_trips`` (a pandas Timestamp pair, ``bar_span``'s ``searchsorted`` of each aligned stamp and
pandas' skip-NaN ``min``/``max`` of the frame's slice per trade) on random fills over three symbols, one
of them without bars, against frames with naive, UTC and Europe/Paris indexes (across the 31 March
change), stamps naive, UTC or Paris, lows and highs with NaN, and trades running past the frame's end.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrader.trading.backtest import frame_excursions
from aitrader.trading.trades import round_trips, trades_frame
from aitrader.trading.trips import FillColumns, match_fills, records, trade_columns
from tests.unit.test_trips import COLS, FILL, stamp


def frame(zone: str, n: int, rnd: Any, nan_share: float) -> pd.DataFrame:
    start = pd.Timestamp("2024-03-30 20:00:00")
    index = (pd.date_range(start, periods=n, freq="37min") if zone == "naive"
             else pd.date_range(start, periods=n, freq="37min", tz="UTC").tz_convert(zone))
    close = np.array([100.0 + rnd.uniform(-20, 20) for _ in range(n)])
    low = close - np.array([rnd.uniform(0, 3) for _ in range(n)])
    high = close + np.array([rnd.uniform(0, 3) for _ in range(n)])
    for a in (low, high):
        for k in range(n):
            if rnd.random() < nan_share:
                a[k] = np.nan
    return pd.DataFrame({"open": close, "high": high, "low": low, "close": close, "volume": 1.0}, index=index)


@settings(max_examples=120, deadline=None)
@given(st.lists(FILL, max_size=50), st.sampled_from(["naive", "UTC", "Europe/Paris"]),
       st.sampled_from(["naive", "UTC", "Europe/Paris"]), st.sampled_from([0.0, 0.3, 1.0]),
       st.integers(0, 900), st.randoms(use_true_random=False))
def test_run_trades_columns_equal_round_trips(fills: list[tuple[Any, ...]], stamps_zone: str, index_zone: str,
                                              nan_share: float, n_bars: int, rnd: Any) -> None:
    rows, at = [], 0
    for i, (sym, side, qty, price, fee, step) in enumerate(fills):
        # whole seconds (bars' stamps), ~3.6 hours apart at most: most trades inside the frame, some past its end
        at += step // 20 // 10**9 * 10**9
        rows.append((i + 1, i + 1, stamp(at, stamps_zone), sym, side, qty, price, fee, 0.0))
    frames = {"A": frame(index_zone, n_bars, rnd, nan_share), "B": frame(index_zone, 40, rnd, 0.0)}  # no C
    want = trades_frame(round_trips([dict(zip(COLS, r, strict=True)) for r in rows], frames))
    trades = trade_columns(match_fills(FillColumns.from_rows(COLS, rows)))
    got = trades_frame(records(trades, *frame_excursions(trades, frames)))
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert got.to_csv(index=False) == want.to_csv(index=False)


def test_a_hand_worked_trade() -> None:
    """A long bought at 100 on the 2nd bar, sold on the 4th: it held bars 1-2 (lows 98, NaN; highs 103, 104):
    MAE 98/100 - 1 = -0.02, MFE 104/100 - 1 = 0.04, 2 bars; a short over the same bars: MAE -0.04, MFE 0.02."""
    index = pd.date_range("2024-01-01", periods=5, freq="D")
    bars = pd.DataFrame({"open": 100.0, "high": [101.0, 103.0, 104.0, 105.0, 106.0],
                         "low": [99.0, 98.0, np.nan, 97.0, 96.0], "close": 100.0, "volume": 1.0}, index=index)
    rows = [(1, 1, "2024-01-02T00:00:00", "X", "buy", 1.0, 100.0, 0.0, 0.0),
            (2, 2, "2024-01-04T00:00:00", "X", "sell", 1.0, 101.0, 0.0, 0.0),
            (3, 3, "2024-01-02T00:00:00", "X", "sell", 1.0, 100.0, 0.0, 0.0),
            (4, 4, "2024-01-04T00:00:00", "X", "buy", 1.0, 99.0, 0.0, 0.0)]
    trades = trade_columns(match_fills(FillColumns.from_rows(COLS, rows)))
    got = records(trades, *frame_excursions(trades, {"X": bars}))
    assert [(t["side"], t["bars"], t["mae"], t["mfe"]) for t in got] == [
        ("long", 2, 98.0 / 100.0 - 1.0, 104.0 / 100.0 - 1.0),
        ("short", 2, -(104.0 / 100.0 - 1.0), -(98.0 / 100.0 - 1.0))]
