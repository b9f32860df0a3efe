"""trips.trades_text (backtest --json's trades written from the columns) == json.dumps of the records.

Oracle: ``aitrader._json.to_json`` (``json_clean`` + ``json.dumps(indent=2)``) of the same trades as
``records`` gives them, inside a document, on random fills over several symbols (partial closes, flips,
fills shared by two trades) with random excursions: every trade with bars, none, some (bars then
floats and None), and NaN/infinite figures.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrader._json import to_json
from aitrader.trading.trips import FillColumns, match_fills, records, trade_columns, trades_text, trades_text_parts
from tests.unit.test_trips import COLS, FILL, stamp

ODD = st.sampled_from([0.0, -0.0, 1e-300, 1e16, 123456789.125, float("nan"), float("inf"), -float("inf")])


def as_json(trades: list[dict[str, Any]]) -> str:
    """The oracle: the encoder's text of the trades inside a document, cut out of it."""
    doc = to_json({"performance": {"x": 1.5}, "trades": trades, "report": None})
    head = to_json({"performance": {"x": 1.5}, "trades": "HOLE", "report": None})
    start = head.index('"HOLE"')
    return doc[start:len(doc) - (len(head) - start - len('"HOLE"'))]


@settings(max_examples=150, deadline=None)
@given(st.lists(FILL, max_size=50), st.sampled_from(["naive", "UTC", "Europe/Paris"]),
       st.sampled_from(["all", "none", "some", "absent"]), st.randoms(use_true_random=False),
       st.lists(ODD, max_size=4))
def test_text_from_columns_is_json_dumps_of_the_records(fills: list[tuple[Any, ...]], zone: str, bars_kind: str,
                                                        rnd: Any, odd: list[float]) -> None:
    rows, at = [], 0
    for i, (sym, side, qty, price, fee, step) in enumerate(fills):
        at += step
        rows.append((i + 1, i + 1, stamp(at, zone), sym, side, qty, price, fee, 0.0))
    cols = trade_columns(match_fills(FillColumns.from_rows(COLS, rows)))
    n = len(cols)
    bars = np.array([rnd.randint(0, 400) for _ in range(n)], dtype=np.int64)
    mae = np.array([-rnd.random() for _ in range(n)])
    mfe = np.array([rnd.random() for _ in range(n)])
    for k, v in enumerate(odd[:n]):  # NaN, infinities, -0.0 and long reprs among the figures
        mae[k] = v
        mfe[n - 1 - k] = v
        cols.pnl[k] = v
    has = np.array([bars_kind == "all" or (bars_kind == "some" and rnd.random() < 0.5) for _ in range(n)])
    excursion = () if bars_kind == "absent" else (bars, mae, mfe, has)
    every = records(cols, *excursion)
    want = as_json(every)
    assert trades_text(cols, *excursion) == want
    for chunk in (1, 2, 3, 7):  # in pieces (a fill shared across two pieces is written in both)
        assert "".join(trades_text_parts(cols, *excursion, chunk=chunk)) == want
    for last in (0, 1, 3, n, n + 5):  # the table view's tail: the same records as the whole list's
        assert records(cols, *excursion, last=last) == (every[-last:] if last else [])
    if n and bars_kind == "some" and has.any() and not has.all():
        assert "null" in want and '"bars": ' in want  # the float/None bars column was exercised


def test_a_fill_shared_by_two_trades_and_a_flip_by_hand() -> None:
    rows = [  # id, order, ts, symbol, side, qty, price, commission, slippage
        (1, 1, "2024-01-01T00:00:00+00:00", "A", "buy", 1.0, 10.0, 0.0, 0.0),
        (2, 2, "2024-01-01T00:05:00+00:00", "A", "buy", 1.0, 10.5, 0.0, 0.0),
        (3, 3, "2024-01-01T00:10:00+00:00", "A", "sell", 3.0, 11.25, 0.0, 0.0),  # closes both, opens a short
        (4, 4, "2024-01-01T00:15:00+00:00", "A", "buy", 1.0, 11.0, 0.0, 0.0),
    ]
    cols = trade_columns(match_fills(FillColumns.from_rows(COLS, rows)))
    text = trades_text(cols, np.array([2, 1, 1]), np.array([0.0, -0.5, float("nan")]),
                       np.array([0.125, 0.0, 0.0]), np.array([True, True, True]))
    item = ('    {{\n      "symbol": "A",\n      "side": "{}",\n      "quantity": 1.0,\n      "entry_ts": "{}",\n'
            '      "entry_price": {},\n      "exit_ts": "{}",\n      "exit_price": {},\n      "pnl": {},\n'
            '      "return": {},\n      "duration": "{}",\n      "bars": {},\n      "mae": {},\n'
            '      "mfe": {}\n    }}')
    t = "2024-01-01T00:{}:00+00:00"
    assert text == "[\n" + ",\n".join([
        item.format("long", t.format("00"), "10.0", t.format("10"), "11.25", "1.25", "0.125", "0 days 00:10:00",
                    2, "0.0", "0.125"),
        item.format("long", t.format("05"), "10.5", t.format("10"), "11.25", "0.75", "0.07142857142857142",
                    "0 days 00:05:00", 1, "-0.5", "0.0"),
        item.format("short", t.format("10"), "11.25", t.format("15"), "11.0", "0.25", "0.022222222222222223",
                    "0 days 00:05:00", 1, "null", "0.0"),
    ]) + "\n  ]"
    assert trades_text(trade_columns(match_fills(FillColumns.from_rows(COLS, rows[:1])))) == "[]"
