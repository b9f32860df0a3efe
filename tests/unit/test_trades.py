"""Round trips from fills (aitrader.trading.trades), every expected value computed by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from aitrader.trading.trades import TRADE_COLUMNS, round_trips, trades_frame


def fill(ts: str, side: str, qty: float, price: float, commission: float = 0.0, symbol: str = "X") -> dict:
    return {"ts": ts, "symbol": symbol, "side": side, "quantity": qty, "price": price, "commission": commission}


def test_long_round_trip_net_of_both_commissions() -> None:
    # buy 10 @ 100 (fee 1), sell 10 @ 110 (fee 1.1): gross 100, net 97.9, return 97.9 / 1000
    [t] = round_trips([fill("2024-01-01", "buy", 10, 100.0, 1.0), fill("2024-01-03", "sell", 10, 110.0, 1.1)])
    assert t["side"] == "long" and t["quantity"] == 10
    assert t["entry_ts"] == "2024-01-01" and t["exit_ts"] == "2024-01-03"
    assert t["entry_price"] == 100.0 and t["exit_price"] == 110.0
    assert t["pnl"] == pytest.approx(97.9)
    assert t["return"] == pytest.approx(0.0979)
    assert t["duration"] == "2 days 00:00:00"
    assert t["bars"] is None and t["mae"] is None and t["mfe"] is None  # no bars given


def test_short_round_trip() -> None:
    # sell 5 @ 50, buy back 5 @ 40, fees 0: +50, return 50 / 250 = 0.2
    [t] = round_trips([fill("2024-01-01", "sell", 5, 50.0), fill("2024-01-02", "buy", 5, 40.0)])
    assert t["side"] == "short" and t["pnl"] == pytest.approx(50.0) and t["return"] == pytest.approx(0.2)


def test_fifo_partial_reductions_close_the_oldest_lot_first() -> None:
    fills = [
        fill("2024-01-01", "buy", 4, 10.0, 0.4),   # lot A: 4 @ 10, fee 0.1 per unit
        fill("2024-01-02", "buy", 6, 20.0, 1.2),   # lot B: 6 @ 20, fee 0.2 per unit
        fill("2024-01-03", "sell", 5, 30.0, 1.0),  # closes A (4) and 1 of B; fee 0.2 per unit
        fill("2024-01-04", "sell", 5, 25.0, 0.0),  # closes the rest of B (5)
    ]
    a, b1, b2 = round_trips(fills)
    # A: (30 - 10) * 4 - (0.1 + 0.2) * 4 = 80 - 1.2 = 78.8
    assert (a["entry_ts"], a["exit_ts"], a["quantity"]) == ("2024-01-01", "2024-01-03", 4)
    assert a["pnl"] == pytest.approx(78.8)
    # B part 1: (30 - 20) * 1 - (0.2 + 0.2) * 1 = 9.6
    assert (b1["entry_ts"], b1["exit_ts"], b1["quantity"]) == ("2024-01-02", "2024-01-03", 1)
    assert b1["pnl"] == pytest.approx(9.6)
    # B part 2: (25 - 20) * 5 - 0.2 * 5 = 24.0; return 24 / 100
    assert (b2["entry_ts"], b2["exit_ts"], b2["quantity"]) == ("2024-01-02", "2024-01-04", 5)
    assert b2["pnl"] == pytest.approx(24.0) and b2["return"] == pytest.approx(0.24)


def test_flip_closes_the_long_and_opens_a_short() -> None:
    fills = [fill("2024-01-01", "buy", 2, 100.0, 2.0),    # fee 1 per unit
             fill("2024-01-02", "sell", 5, 90.0, 5.0),    # closes 2 long, opens 3 short @ 90; fee 1 per unit
             fill("2024-01-03", "buy", 3, 80.0, 0.0)]     # closes the short
    long_, short = round_trips(fills)
    assert long_["side"] == "long" and long_["quantity"] == 2
    assert long_["pnl"] == pytest.approx((90 - 100) * 2 - (1 + 1) * 2)  # -24
    assert short["side"] == "short" and short["quantity"] == 3 and short["entry_price"] == 90.0
    assert short["pnl"] == pytest.approx((90 - 80) * 3 - 1 * 3)  # 27: its share of the flip's fee
    assert short["return"] == pytest.approx(27 / 270)


def test_open_lot_is_not_a_round_trip_and_symbols_are_matched_apart() -> None:
    fills = [fill("2024-01-01", "buy", 1, 10.0, symbol="A"), fill("2024-01-02", "sell", 1, 12.0, symbol="B"),
             fill("2024-01-03", "sell", 1, 11.0, symbol="A")]
    [t] = round_trips(fills)
    assert t["symbol"] == "A" and t["pnl"] == pytest.approx(1.0)


def test_mae_mfe_and_bars_from_the_bars_between_entry_and_exit() -> None:
    idx = pd.date_range("2024-01-01", periods=5, freq="D")
    bars = pd.DataFrame({"open": [100, 100, 104, 99, 101], "high": [101, 105, 106, 100, 120],
                         "low": [99, 98, 103, 95, 80], "close": [100, 104, 100, 101, 110],
                         "volume": 1.0}, index=idx)
    # long entered at the open of 01-02 @ 100, exited at the open of 01-04: bars 01-02 and 01-03 count
    [t] = round_trips([fill("2024-01-02", "buy", 1, 100.0), fill("2024-01-04", "sell", 1, 99.0)], {"X": bars})
    assert t["bars"] == 2
    assert t["mfe"] == pytest.approx(0.06)   # high 106 / 100 - 1
    assert t["mae"] == pytest.approx(-0.02)  # low 98 / 100 - 1
    # the same bars for a short from 100: favourable is the low, adverse the high
    [s] = round_trips([fill("2024-01-02", "sell", 1, 100.0), fill("2024-01-04", "buy", 1, 99.0)], {"X": bars})
    assert s["mfe"] == pytest.approx(0.02) and s["mae"] == pytest.approx(-0.06)


def test_excursions_never_cross_zero() -> None:
    idx = pd.date_range("2024-01-01", periods=3, freq="D")
    bars = pd.DataFrame({"open": 10.0, "high": [12.0, 13.0, 14.0], "low": [11.0, 11.5, 12.0], "close": 12.0,
                         "volume": 1.0}, index=idx)
    # entry at 10 while every low is above it: no adverse move -> mae 0
    [t] = round_trips([fill("2024-01-01", "buy", 1, 10.0), fill("2024-01-03", "sell", 1, 12.0)], {"X": bars})
    assert t["mae"] == 0.0 and t["mfe"] == pytest.approx(0.3)


def test_tz_aware_fills_against_naive_bars_and_the_frame_columns() -> None:
    idx = pd.date_range("2024-01-01", periods=3, freq="h")
    bars = pd.DataFrame({"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.0, "volume": 1.0}, index=idx)
    trades = round_trips([fill("2024-01-01 00:00:00+00:00", "buy", 1, 1.0),
                          fill("2024-01-01 02:00:00+00:00", "sell", 1, 1.0)], {"X": bars})
    assert trades[0]["bars"] == 2 and trades[0]["duration"] == "0 days 02:00:00"
    df = trades_frame(trades)
    assert tuple(df.columns) == TRADE_COLUMNS and len(df) == 1
    assert tuple(trades_frame([]).columns) == TRADE_COLUMNS
