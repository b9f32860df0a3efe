"""Round trips as columns (trading.trips) == the trade-by-trade round_trips, to the bit; its JSON text ==
json.dumps's.

Oracles: the scalar FIFO code ``trades.round_trips`` had before it used ``match_fills`` (written out
below, with ``trades._trade`` for each trade: a dict per trade, pandas stamps) on random fills
over several symbols with partial closes, flips and sub-epsilon remainders; a hand-worked case; and
``json.dumps(..., indent=2)`` of the same records for the text.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrader.trading.trades import _EPS, TRADE_COLUMNS, _Lot, _trade, round_trips
from aitrader.trading.trips import FillColumns, match_fills, records, trade_columns


def scalar_round_trips(fills: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The FIFO matching round_trips did lot by lot, before it used match_fills: the oracle."""
    books: dict[str, deque[_Lot]] = {}
    out: list[dict[str, Any]] = []
    for fill in fills:
        symbol = str(fill["symbol"])
        qty = float(fill["quantity"])
        if not qty > 0:
            continue
        sign = 1 if str(fill["side"]).lower() == "buy" else -1
        price = float(fill["price"])
        fee_per_unit = float(fill.get("commission") or 0.0) / qty
        ts = str(fill["ts"])
        book = books.setdefault(symbol, deque())
        left = qty
        while left > _EPS and book and book[0].sign != sign:
            lot = book[0]
            take = min(lot.quantity, left)
            out.append(_trade(symbol, lot, take, ts, price, fee_per_unit, None))
            lot.quantity -= take
            left -= take
            if lot.quantity <= _EPS:
                book.popleft()
        if left > _EPS:
            book.append(_Lot(sign, left, price, ts, fee_per_unit))
    return out


COLS = ["id", "order_id", "ts", "symbol", "side", "quantity", "price", "commission", "slippage"]


def as_trips(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return records(trade_columns(match_fills(FillColumns.from_rows(COLS, rows))))


def exact(trades: list[dict[str, Any]]) -> str:
    """Every value's repr (so 0.1 + 0.2 != 0.3 and -0.0 != 0.0 count)."""
    return repr([[(k, repr(v)) for k, v in t.items()] for t in trades])


# quantities that round differently when summed (0.1 + 0.2 - 0.3 != 0), whole ones and a sub-epsilon one
QTY = st.sampled_from([0.1, 0.2, 0.3, 0.7, 1.0, 2.0, 3.0, 0.12345678, 1e-13, 0.0, 5.5])
FILL = st.tuples(st.sampled_from(["A", "B", "C"]), st.sampled_from(["buy", "sell", "BUY"]), QTY,
                 st.floats(1.0, 500.0), st.one_of(st.none(), st.floats(0.0, 2.0)),
                 st.integers(0, 3 * 86_400 * 10**9))  # ns since the previous fill


def stamp(ns: int, zone: str) -> str:
    t = pd.Timestamp("2024-03-30 22:00:00") + pd.Timedelta(ns, unit="ns")
    if zone == "naive":
        return t.isoformat()
    return t.tz_localize("UTC").tz_convert(zone).isoformat()  # Europe/Paris: offsets change on 31 March


@settings(max_examples=150, deadline=None)
@given(st.lists(FILL, max_size=60), st.sampled_from(["naive", "UTC", "Europe/Paris"]))
def test_columns_equal_round_trips_exactly(fills: list[tuple[Any, ...]], zone: str) -> None:
    rows, at = [], 0
    for i, (sym, side, qty, price, fee, step) in enumerate(fills):
        at += step
        rows.append((i + 1, i + 1, stamp(at, zone), sym, side, qty, price, fee, 0.0))
    want = scalar_round_trips([dict(zip(COLS, r, strict=True)) for r in rows])
    assert exact(as_trips(rows)) == exact(want)
    assert exact(round_trips(dict(zip(COLS, r, strict=True)) for r in rows)) == exact(want)


def test_several_symbols_partial_closes_and_a_flip_by_hand() -> None:
    rows = [  # id, order, ts, symbol, side, qty, price, commission, slippage
        (1, 1, "2024-01-01T00:00:00", "A", "buy", 4.0, 10.0, 0.4, 0.0),
        (2, 2, "2024-01-01T01:00:00", "B", "sell", 2.0, 50.0, None, 0.0),
        (3, 3, "2024-01-01T02:30:00", "A", "buy", 2.0, 11.0, 0.0, 0.0),
        (4, 4, "2024-01-02T02:00:00", "A", "sell", 5.0, 12.0, 1.0, 0.0),  # closes 4 @10 and 1 of 2 @11
        (5, 5, "2024-01-02T03:00:00", "B", "buy", 3.0, 40.0, 0.3, 0.0),  # closes the short, flips long 1
        (6, 6, "2024-01-02T03:00:00", "A", "sell", 2.0, 13.0, 0.0, 0.0),  # closes 1 @11, opens a short 1
    ]
    t = as_trips(rows)
    assert [(x["symbol"], x["side"], x["quantity"], x["entry_price"], x["exit_price"], x["duration"]) for x in t] == [
        ("A", "long", 4.0, 10.0, 12.0, "1 days 02:00:00"),
        ("A", "long", 1.0, 11.0, 12.0, "0 days 23:30:00"),
        ("B", "short", 2.0, 50.0, 40.0, "1 days 02:00:00"),
        ("A", "long", 1.0, 11.0, 13.0, "1 days 00:30:00"),
    ]
    # fees per unit: fill 1 0.1, fill 4 0.2, fill 5 0.1; pnl = move * qty - (entry + exit fee per unit) * qty
    assert [x["pnl"] for x in t] == [8.0 - 1.2, 1.0 - 0.2, 20.0 - 0.2, 2.0]
    assert t[0]["return"] == (8.0 - 1.2) / 40.0 and t[2]["return"] == 19.8 / 100.0
    assert all(x["bars"] is None and x["mae"] is None and x["mfe"] is None for x in t)
    assert tuple(t[0]) == TRADE_COLUMNS


def test_no_fills_no_trips() -> None:
    assert as_trips([]) == []
    assert as_trips([(1, 1, "2024-01-01", "A", "buy", 1.0, 10.0, 0.0, 0.0)]) == []



def test_backtest_json_text_is_print_json_text(capsys: Any) -> None:
    """The command's --json writer (trades written from their columns) == print_json of the same document."""

    from aitrader.cli._output import print_json
    from aitrader.cli.backtest import print_backtest_json
    from aitrader.trading.backtest import Backtest

    rows = [(1, 1, "2024-01-01T00:00:00+00:00", "A", "buy", 0.3, 10.0, 0.01, 0.0),
            (2, 2, "2024-01-01T00:05:00+00:00", "A", "sell", 0.1, 10.5, None, 0.0),
            (3, 3, "2024-01-01T00:10:00+00:00", "A", "sell", 0.4, 9.5, 0.02, 0.0)]
    for fills in (rows, []):
        cols = trade_columns(match_fills(FillColumns.from_rows(COLS, fills)))
        n = len(cols.trips)
        excursion = (np.arange(n) + 2, np.full(n, -0.5), np.full(n, float("nan")), np.arange(n) > 0)
        result = Backtest(models=["m (A)"], run={"fills": 3, "state_dir": None, "ratio": float("nan")}, kept=False,
                          performance={"strategy": {"sharpe": float("inf"), "trades": 2}, "window": {"bars": 3}},
                          trades=cols, excursion=excursion, report=None)
        assert len(result.as_dict()["trades"]) == (2 if fills else 0)
        print_json(result.as_dict())
        want = capsys.readouterr().out
        print_backtest_json(result)
        assert capsys.readouterr().out == want


def test_reading_fills_from_what_is_not_a_ledger_is_a_trading_error(tmp_path: Any) -> None:
    import pytest

    from aitrader.errors import TradingError

    bad = tmp_path / "ledger.db"
    bad.write_bytes(b"not a database, just bytes" * 100)
    with pytest.raises(TradingError, match="cannot read fills from .*ledger.db"):
        FillColumns.read(bad)
