"""The fills' stamps parsed once (``FillColumns.stamp_ns``) give the trades' bar spans and the position
curve the report computed from three separate parses.

Oracles: ``stamp_spans`` on the stamps' text (its own parse, or ``trades.aligned`` one stamp at a time)
and ``epochs_of`` on the text (``pd.to_datetime(utc=True)``), per symbol, as the report did before; and
hand-written spans for a naive case. Stamps naive, UTC, one fixed offset, and Europe/Paris across the
31 March change (mixed offsets: the single parse gives way to each function's own), against naive and
zoned bar indexes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aitrader.trading import backtest as B
from aitrader.trading.sources import BarSeries
from aitrader.trading.trips import FillColumns, match_fills, trade_columns


def series(symbol: str, index: pd.DatetimeIndex) -> BarSeries:
    n = len(index)
    df = pd.DataFrame({c: np.arange(n) + 1.0 for c in ("open", "high", "low", "close", "volume")}, index=index)
    return BarSeries.from_frame(symbol, df)


def fills_on(index: pd.DatetimeIndex, zone: str, seed: int) -> FillColumns:
    """Fills on random bars of ``index`` (stamped in ``zone``: naive, or converted to it), two symbols."""
    rng = np.random.default_rng(seed)
    at = np.sort(rng.choice(len(index), size=40, replace=False))
    stamps = index[at]
    if zone == "naive":
        stamps = stamps.tz_localize(None) if stamps.tz is not None else stamps
    else:
        stamps = (stamps if stamps.tz is not None else stamps.tz_localize("UTC")).tz_convert(zone)
    text = [t.isoformat() for t in stamps]
    return FillColumns(ts=text, symbol=[("A", "B")[k % 3 == 0] for k in range(40)],
                       buy=rng.random(40) < 0.5, quantity=rng.choice([1.0, 2.0, 0.5], size=40),
                       price=rng.uniform(90, 110, size=40), commission=np.zeros(40))


def old_trip_spans(trades: B.TradeColumns, symbol: str, s: BarSeries) -> tuple[np.ndarray, np.ndarray]:
    rows = B._rows_of(trades, symbol)
    ts = trades.trips.fills.ts
    return B.stamp_spans([ts[i] for i in trades.trips.entry[rows].tolist()],
                         [ts[i] for i in trades.trips.exit[rows].tolist()], s)


def old_positions(fills: FillColumns, epochs: np.ndarray) -> np.ndarray:
    gross = np.zeros(len(epochs))
    symbols = np.array(fills.symbol, dtype=object)
    for sym in sorted(set(fills.symbol)):
        rows = np.flatnonzero(symbols == sym)
        held = np.round(np.cumsum(np.where(fills.buy[rows], 1.0, -1.0) * fills.quantity[rows]), B.QTY_DECIMALS)
        idx = np.searchsorted(B.epochs_of([fills.ts[i] for i in rows.tolist()]), epochs, side="right") - 1
        gross += np.where(idx >= 0, np.abs(held[np.maximum(idx, 0)]), 0.0)
    return gross


@pytest.mark.parametrize(("bars_zone", "zone"), [(None, "naive")] + [  # a zoned replay writes zoned stamps
    (b, z) for b in (None, "UTC", "Europe/Paris") for z in ("UTC", "+05:30", "Europe/Paris")])
def test_one_parse_gives_the_per_function_spans_and_positions(bars_zone: str | None, zone: str) -> None:
    index = pd.date_range("2024-03-30 20:00", periods=600, freq="7min", tz=bars_zone)
    tz = "UTC" if zone == "+05:30" else zone
    for seed in range(3):
        fills = fills_on(index, tz, seed)
        if zone == "+05:30":  # one fixed offset
            fills.ts = [pd.Timestamp(t).tz_convert("Asia/Kolkata").isoformat() for t in fills.ts]
        parsed = fills.stamp_ns()
        assert (parsed is None) == (zone == "Europe/Paris")  # offsets +01:00 and +02:00 in one run
        trades = trade_columns(match_fills(fills))
        s = series("A", index)
        for sym in ("A", "B"):
            got, want = B.trip_spans(trades, sym, s), old_trip_spans(trades, sym, s)
            assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
        epochs = s.ns() / 1e9
        assert B._gross(B._position_tables(fills), epochs).tolist() == old_positions(fills, epochs).tolist()


def test_spans_by_hand_on_naive_stamps() -> None:
    index = pd.date_range("2024-01-01", periods=10, freq="1h")
    fills = FillColumns(ts=["2024-01-01T02:00:00", "2024-01-01T05:00:00", "2024-01-01T06:00:00",
                            "2024-01-01T09:00:00"], symbol=["A"] * 4, buy=np.array([True, False, False, True]),
                        quantity=np.ones(4), price=np.full(4, 10.0), commission=np.zeros(4))
    assert fills.stamp_ns() is not None and fills.stamp_ns()[1] is False
    trades = trade_columns(match_fills(fills))  # long 02:00 -> 05:00, short 06:00 -> 09:00
    lo, hi = B.trip_spans(trades, "A", series("A", index))
    assert lo.tolist() == [2, 6] and hi.tolist() == [5, 9]
    assert trades.duration_ns.tolist() == [3 * 3600 * 10**9] * 2
    at = np.array([1.0, 2.0, 5.0, 6.0, 9.0]) * 3600 + index[0].timestamp()
    assert B._gross(B._position_tables(fills), at).tolist() == \
        [0.0, 1.0, 0.0, 1.0, 0.0]
