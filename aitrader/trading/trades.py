"""Round trips (trades) from a run's fills: a pure function over fills and bars.

Matching is FIFO per symbol: a fill against the open side closes the oldest open lots first
(a partial reduction closes part of a lot), and what is left of a fill after closing every open
lot opens a new lot on its own side (a flip long -> short closes one trade and opens another).
Each closed piece of a lot is one round trip:

* ``pnl``: ``(exit_price - entry_price) * quantity`` for a long (negated for a short) minus the
  entry and exit commissions of that quantity (each fill's commission shared pro rata by quantity);
  fill prices already include slippage, so the P&L is net of all costs;
* ``return``: ``pnl / (entry_price * quantity)``;
* ``duration``: exit time - entry time; ``bars``: the bars from the entry bar up to (not including)
  the exit bar;
* ``mae``/``mfe`` (maximum adverse/favourable excursion): the worst and best move of the bars'
  lows and highs against the entry price over those same bars, as a fraction of the entry price
  in the trade's favour (``mae <= 0 <= mfe``); None without bars for the symbol.

Lots still open at the end are not round trips (they appear in the run's positions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

TRADE_COLUMNS = ("symbol", "side", "quantity", "entry_ts", "entry_price", "exit_ts", "exit_price", "pnl",
                 "return", "duration", "bars", "mae", "mfe")
_EPS = 1e-12


@dataclass
class _Lot:
    sign: int  # +1 long, -1 short
    quantity: float
    price: float
    ts: str
    fee_per_unit: float


def round_trips(fills: Iterable[Mapping[str, Any]],
                bars: Mapping[str, pd.DataFrame] | None = None) -> list[dict[str, Any]]:
    """The closed round trips of ``fills`` (dicts with ts, symbol, side, quantity, price, commission).

    ``bars`` (symbol -> OHLCV frame indexed by time) gives the MAE/MFE and bar counts. Trades are
    ordered by exit, then entry.
    """
    from aitrader.trading.trips import FillColumns, match_fills

    rows = list(fills)
    cols = FillColumns(ts=[str(f["ts"]) for f in rows], symbol=[str(f["symbol"]) for f in rows],
                       buy=np.array([str(f["side"]).lower() == "buy" for f in rows], dtype=bool),
                       quantity=np.array([float(f["quantity"]) for f in rows], dtype=np.float64),
                       price=np.array([float(f["price"]) for f in rows], dtype=np.float64),
                       commission=np.array([float(f.get("commission") or 0.0) for f in rows], dtype=np.float64))
    trips = match_fills(cols)  # the one FIFO matching (backtest's columns use it too)
    qty, price, fee = cols.quantity.tolist(), cols.price.tolist(), cols.commission.tolist()
    out: list[dict[str, Any]] = []
    for e, x, take in zip(trips.entry.tolist(), trips.exit.tolist(), trips.quantity.tolist(), strict=True):
        lot = _Lot(1 if cols.buy[e] else -1, take, price[e], cols.ts[e], fee[e] / qty[e])
        out.append(_trade(cols.symbol[e], lot, take, cols.ts[x], price[x], fee[x] / qty[x], bars))
    return out


def _trade(symbol: str, lot: _Lot, qty: float, exit_ts: str, exit_price: float, exit_fee: float,
           bars: Mapping[str, pd.DataFrame] | None) -> dict[str, Any]:
    gross = (exit_price - lot.price) * qty * lot.sign
    pnl = gross - (lot.fee_per_unit + exit_fee) * qty
    entry, leave = pd.Timestamp(lot.ts), pd.Timestamp(exit_ts)
    n_bars: int | None = None
    mae = mfe = None
    frame = bars.get(symbol) if bars is not None else None
    if frame is not None and len(frame):
        lo, hi = bar_span(frame.index, entry, leave)
        n_bars = hi - lo
        if hi > lo:
            mae, mfe = excursions(lot.sign, lot.price, float(frame["low"].iloc[lo:hi].min()),
                                  float(frame["high"].iloc[lo:hi].max()))
        else:
            mfe, mae = 0.0, 0.0
    return {
        "symbol": symbol, "side": "long" if lot.sign > 0 else "short", "quantity": qty,
        "entry_ts": lot.ts, "entry_price": lot.price, "exit_ts": exit_ts, "exit_price": exit_price,
        "pnl": pnl, "return": pnl / (lot.price * qty), "duration": str(leave - entry), "bars": n_bars,
        "mae": mae, "mfe": mfe,
    }


def bar_span(index: Any, entry: Any, leave: Any) -> tuple[int, int]:
    """Rows ``lo:hi`` of ``index`` a trade held: from the entry bar up to (not including) the exit bar."""
    return (int(index.searchsorted(aligned(entry, index), side="left")),
            int(index.searchsorted(aligned(leave, index), side="left")))


def excursions(sign: int, price: float, low: float, high: float) -> tuple[float, float]:
    """``(mae, mfe)`` of a trade entered at ``price`` on side ``sign`` (+1 long, -1 short) whose bars
    reached ``low`` and ``high``: fractions of the entry price, ``mae <= 0 <= mfe``."""
    up, down = high / price - 1.0, low / price - 1.0
    best, worst = (up, down) if sign > 0 else (-down, -up)
    return min(0.0, worst), max(0.0, best)


def aligned(value: Any, index: Any) -> pd.Timestamp:
    """``value`` as a Timestamp comparable with ``index`` (naive stamps take the index's zone; an aware
    stamp against a naive index is compared in UTC)."""
    ts = pd.Timestamp(value)
    tz = getattr(index, "tz", None)
    if tz is not None and ts.tz is None:
        return ts.tz_localize(tz)
    if tz is None and ts.tz is not None:
        return ts.tz_convert("UTC").tz_localize(None)
    return ts


def trades_frame(trades: list[dict[str, Any]]) -> pd.DataFrame:
    """The round trips as a table with :data:`TRADE_COLUMNS` (empty with those columns when none)."""
    return pd.DataFrame.from_records(trades, columns=list(TRADE_COLUMNS))
