"""Round trips of a whole run's fills as columns: :func:`aitrader.trading.trades.round_trips`'s trades,
the same numbers to the bit, without a dict, a ``Timestamp`` or a ``Timedelta`` per trade.

``backtest`` reports every round trip of a replay (about one per ten bars with the bench's model).
Per trade, :func:`~aitrader.trading.trades.round_trips` parsed two stamps, formatted a ``Timedelta``
and built a dict, then the report made a DataFrame with object columns of them and a record dict per
row again (~150 us a trade in all). Here:

* the FIFO matching is one loop over the fills on plain floats, recording only (entry fill, exit fill,
  quantity) per closed piece. It stays sequential on purpose: a lot's remainder is a chain of float
  subtractions (``lot -= take``), and any cumulative-sum formulation rounds differently (the matched
  quantities, and so P&L, would differ in the last bits from the trades users have seen);
* everything else is numpy over those three arrays and the fills' columns: prices, fees per unit,
  P&L and return (the same IEEE operations in the same order as the scalar code), the stamps parsed
  once per fill (vectorised) and a duration text formatted once per distinct duration;
* the output records share their strings (symbol, side, stamps, durations) with the fills' columns.

:func:`trades_text` writes the trades as the exact text ``json.dumps(..., indent=2)`` gives their
records inside the backtest document, a format string per trade instead of the pure-Python indenting encoder.
"""

from __future__ import annotations

import math
import sqlite3
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aitrader.errors import TradingError
from aitrader.trading.trades import _EPS, TRADE_COLUMNS


@dataclass
class Trips:
    """The closed round trips, one entry per trade in :func:`round_trips` order (by exit, then entry):
    the fill rows they entered (``entry``) and exited (``exit``) at, and their quantity."""

    entry: np.ndarray  # int64 row of the fills columns
    exit: np.ndarray
    quantity: np.ndarray  # float64
    fills: FillColumns

    def __len__(self) -> int:
        return len(self.quantity)


@dataclass
class FillColumns:
    """A run's fills as columns (the ledger's ``fills`` table in id order)."""

    ts: list[str]
    symbol: list[str]
    buy: np.ndarray  # bool: side is buy (else sell)
    quantity: np.ndarray
    price: np.ndarray
    commission: np.ndarray  # None read as 0.0
    #: :meth:`stamp_ns`'s parse, made on first use (the report reads the stamps three times)
    _parsed: list[tuple[np.ndarray, bool] | None] = field(default_factory=list, repr=False, compare=False)

    def stamp_ns(self) -> tuple[np.ndarray, bool] | None:
        """Every fill's stamp parsed once, in one vectorised call, as ``(ns, aware)``: UTC ns when the stamps
        carry one offset (``aware``), wall ns when they are all naive; the ns each of :func:`fill_ns`,
        :func:`aitrader.trading.backtest.stamp_ns` and :func:`~aitrader.trading.backtest.epochs_of` gives
        them then. None when one call cannot read them all (mixed offsets, a stamp without a time): those
        functions parse them their own way."""
        if not self._parsed:
            self._parsed.append(_parse_stamps(self.ts))
        return self._parsed[0]

    @classmethod
    def from_rows(cls, cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> FillColumns:
        """From :func:`aitrader.trading.ledger.read_table`'s column names and rows."""
        at = {c: i for i, c in enumerate(cols)}
        its, isym, iside, iq, ip, ic = (at[c] for c in ("ts", "symbol", "side", "quantity", "price", "commission"))
        return cls(ts=[str(r[its]) for r in rows], symbol=[str(r[isym]) for r in rows],
                   buy=np.array([str(r[iside]).lower() == "buy" for r in rows], dtype=bool),
                   quantity=np.array([float(r[iq]) for r in rows], dtype=np.float64),
                   price=np.array([float(r[ip]) for r in rows], dtype=np.float64),
                   commission=np.array([float(r[ic] or 0.0) for r in rows], dtype=np.float64))

    @classmethod
    def read(cls, ledger: Path) -> FillColumns:
        """The ``fills`` table of the ledger at ``ledger``, row by row from the cursor (no list of row
        tuples: ~450 bytes a fill at the peak), each symbol and side one shared string."""
        from aitrader.trading.ledger import connect

        ts: list[str] = []
        symbols: list[str] = []
        buy: list[bool] = []
        qty: list[float] = []
        price: list[float] = []
        fee: list[float] = []
        shared: dict[str, str] = {}
        conn = connect(ledger, readonly=True)
        try:
            for t, sym, side, q, p, c in conn.execute(
                    "SELECT ts, symbol, side, quantity, price, commission FROM fills ORDER BY id"):
                ts.append(str(t))
                symbols.append(shared.setdefault(str(sym), str(sym)))
                buy.append(str(side).lower() == "buy")
                qty.append(float(q))
                price.append(float(p))
                fee.append(float(c or 0.0))
        except (sqlite3.DatabaseError, TypeError, ValueError) as exc:
            raise TradingError(f"cannot read fills from {ledger}: {exc}; is it an aitrader ledger?") from exc
        finally:
            conn.close()
        return cls(ts=ts, symbol=symbols, buy=np.array(buy, dtype=bool), quantity=np.array(qty, dtype=np.float64),
                   price=np.array(price, dtype=np.float64), commission=np.array(fee, dtype=np.float64))

    def __len__(self) -> int:
        return len(self.ts)


class FillRecorder:
    """A run's fills as the broker publishes them (a bus subscriber: ``RunOptions.subscribers``): the
    columns :meth:`FillColumns.read` gives of the ledger's ``fills`` table after the run (the same
    order: ids are given in publishing order; the same floats: SQLite stores them as they are),
    without reading them back. A fill costs one ``extend`` of a flat list (its six values) during the
    replay; the columns are made from it once, at the end (:meth:`columns`)."""

    WIDTH = 6  # ts, symbol, side, quantity, price, commission

    def __init__(self) -> None:
        self._flat: list[Any] = []

    def attach(self, bus: Any) -> None:
        from aitrader.trading.events import EventType

        bus.subscribe(EventType.FILL, self._on_fill)

    def _on_fill(self, e: Any) -> None:
        self._flat.extend((e.ts, e.symbol, e.side, e.quantity, e.price, e.commission))

    def __len__(self) -> int:
        return len(self._flat) // self.WIDTH

    def columns(self) -> FillColumns:
        """The columns, converted as :meth:`FillColumns.read` converts the table's values (``str``,
        ``float``, a side ``buy`` in any case, a commission None as 0.0), each symbol one shared string."""
        flat, w = self._flat, self.WIDTH
        ts = [v if type(v) is str else str(v) for v in flat[0::w]]
        shared: dict[Any, str] = {}
        symbols = [shared[v] if v in shared else shared.setdefault(v, str(v)) for v in flat[1::w]]
        sides = flat[2::w]
        buy_of = {v: str(v).lower() == "buy" for v in set(sides)}
        return FillColumns(ts=ts, symbol=symbols, buy=np.array([buy_of[v] for v in sides], dtype=bool),
                           quantity=_column(flat[3::w]), price=_column(flat[4::w]),
                           commission=_column([0.0 if v is None else v for v in flat[5::w]]))


def _column(values: list[Any]) -> np.ndarray:
    """``np.array([float(v) for v in values])``: numpy converts floats and ints as ``float`` does."""
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([float(v) for v in values], dtype=np.float64)


def match_fills(fills: FillColumns) -> Trips:
    """FIFO matching per symbol, exactly as :func:`aitrader.trading.trades.round_trips`: a fill against
    the open side closes the oldest lots first; what is left opens a lot on its own side."""
    books: dict[str, deque[list[Any]]] = {}
    entries: list[int] = []
    exits: list[int] = []
    qtys: list[float] = []
    for k, (symbol, buy, qty) in enumerate(zip(fills.symbol, fills.buy.tolist(), fills.quantity.tolist(),
                                               strict=True)):
        if not qty > 0:
            continue
        sign = 1 if buy else -1
        book = books.get(symbol)
        if book is None:
            book = books[symbol] = deque()
        left = qty
        while left > _EPS and book and book[0][0] != sign:
            lot = book[0]  # [sign, quantity left, fill row]
            have = lot[1]
            take = left if left < have else have  # min(have, left)
            entries.append(lot[2])
            exits.append(k)
            qtys.append(take)
            lot[1] = have - take
            left -= take
            if lot[1] <= _EPS:
                book.popleft()
        if left > _EPS:
            book.append([sign, left, k])
    return Trips(np.array(entries, dtype=np.int64), np.array(exits, dtype=np.int64),
                 np.array(qtys, dtype=np.float64), fills)


@dataclass
class TradeColumns:
    """Each round trip's figures (see :mod:`aitrader.trading.trades` for their definitions)."""

    trips: Trips
    long: np.ndarray  # bool
    pnl: np.ndarray
    ret: np.ndarray
    duration_ns: np.ndarray  # int64, exit - entry
    durations: list[str]  # str(pd.Timedelta) of each

    def __len__(self) -> int:
        return len(self.trips)


def trade_columns(trips: Trips) -> TradeColumns:
    """P&L, return and duration of every trip, vectorised with the scalar code's operations and order."""
    f = trips.fills
    e, x, q = trips.entry, trips.exit, trips.quantity
    with np.errstate(divide="ignore", invalid="ignore"):
        fee_per_unit = f.commission / f.quantity  # per fill, as the lot and the exit fill carry it
        sign = np.where(f.buy[e], 1.0, -1.0)
        entry_price = f.price[e]
        gross = (f.price[x] - entry_price) * q * sign
        pnl = gross - (fee_per_unit[e] + fee_per_unit[x]) * q
        ret = pnl / (entry_price * q)
    parsed = f.stamp_ns()
    ns = parsed[0] if parsed is not None else fill_ns(f.ts, np.union1d(e, x))
    dur = ns[x] - ns[e]
    uniq, inverse = np.unique(dur, return_inverse=True)
    texts = [str(pd.Timedelta(int(v), unit="ns")) for v in uniq.tolist()]
    return TradeColumns(trips, sign > 0, pnl, ret, dur, [texts[i] for i in inverse.reshape(-1).tolist()])


def fill_ns(stamps: list[str], rows: np.ndarray) -> np.ndarray:
    """ns of ``stamps[rows]`` such that a difference is ``pd.Timestamp(b) - pd.Timestamp(a)``: UTC for
    aware stamps (as a difference of aware Timestamps is), wall time for naive ones (the engine writes
    one kind per run; a naive stamp against an aware one, which the scalar code refused, counts as UTC).
    A full-length array (zeros at the rows not asked for)."""
    out = np.zeros(len(stamps), dtype=np.int64)
    if not len(rows):
        return out
    wanted = [stamps[i] for i in rows.tolist()]
    try:
        parsed = pd.to_datetime(pd.Series(wanted, dtype=object), format="ISO8601", utc=True)
        if pd.isna(parsed).any():
            raise ValueError("a stamp without a time")
        ns = np.asarray(pd.DatetimeIndex(parsed).as_unit("ns").asi8, dtype=np.int64)
    except (TypeError, ValueError):  # not one ISO kind: one by one, as the scalar code
        ns = np.array([_one_ns(t) for t in wanted], dtype=np.int64)
    out[rows] = ns
    return out


def _parse_stamps(stamps: list[str]) -> tuple[np.ndarray, bool] | None:
    """See :meth:`FillColumns.stamp_ns`."""
    if not stamps:
        return None
    try:
        with warnings.catch_warnings():  # pandas 2.x warns on mixed offsets before failing below
            warnings.simplefilter("ignore", FutureWarning)
            parsed = pd.DatetimeIndex(pd.to_datetime(pd.Series(stamps, dtype=object), format="ISO8601"))
    except (TypeError, ValueError):
        return None
    if bool(parsed.isna().any()):
        return None
    return np.asarray(parsed.as_unit("ns").asi8, dtype=np.int64), parsed.tz is not None


def _one_ns(text: str) -> int:
    ts = pd.Timestamp(text)
    if ts.tz is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return int(ts.as_unit("ns").value)


def records(cols: TradeColumns, bars: np.ndarray | None = None, mae: np.ndarray | None = None,
            mfe: np.ndarray | None = None, has_bars: np.ndarray | None = None, *,
            last: int | None = None) -> list[dict[str, Any]]:
    """The trades as the report's records (:data:`TRADE_COLUMNS`, NaN as None), as the DataFrame route
    gave them: ``bars`` an int, or a float when some trades have bars and others none (``has_bars``
    False: their symbol had no bars), and then ``mae``/``mfe`` None for those. ``last``: only the last
    ``last`` trades' records (the table view's), typed as among all of them."""
    t, f = cols.trips, cols.trips.fills
    n = len(t)
    lo = 0 if last is None else max(0, n - max(0, int(last)))
    m = n - lo
    entry, exit_ = t.entry[lo:], t.exit[lo:]
    e, x = entry.tolist(), exit_.tolist()
    symbols = [f.symbol[i] for i in e]
    sides = ["long" if v else "short" for v in cols.long[lo:].tolist()]
    ts = f.ts
    if has_bars is None or bars is None or mae is None or mfe is None or not n:
        bar_col: list[Any] = [None] * m
        mae_col: list[Any] = [None] * m
        mfe_col: list[Any] = [None] * m
    else:
        some = bool(has_bars.any())  # decided over every trade, whatever is shown
        every = bool(has_bars.all())
        have, bars = has_bars[lo:], bars[lo:]
        if every:
            bar_col = bars.tolist()
        elif some:  # a float64 column with NaN in the frame: floats, None where missing
            bar_col = [float(b) if h else None for b, h in zip(bars.tolist(), have.tolist(), strict=True)]
        else:
            bar_col = [None] * m
        mae_col = _nan_none(np.where(have, mae[lo:], np.nan)) if some else [None] * m
        mfe_col = _nan_none(np.where(have, mfe[lo:], np.nan)) if some else [None] * m
    keys = TRADE_COLUMNS
    values = zip(symbols, sides, t.quantity[lo:].tolist(), [ts[i] for i in e], f.price[entry].tolist(),
                 [ts[i] for i in x], f.price[exit_].tolist(), _nan_none(cols.pnl[lo:]), _nan_none(cols.ret[lo:]),
                 cols.durations[lo:], bar_col, mae_col, mfe_col, strict=True)
    return [dict(zip(keys, v, strict=True)) for v in values]


def _nan_none(a: np.ndarray) -> list[Any]:
    out = a.tolist()
    if np.isnan(a).any():
        return [None if isinstance(v, float) and math.isnan(v) else v for v in out]
    return out


# ------------------------------------------------------------------------------ JSON text

# A trade's text is "    {\n" + ",\n".join(f'      "{key}": {value}') + "\n    }", the trades joined by ",\n"
# in "[\n" ... "\n  ]" (json.dumps's indent=2 at depth 1). Cut at the values: _PIECES[j] goes before the
# value of key j; between two trades the "}" of one and the "{" of the next (_NEXT); after the last _END
_PIECES = ["    {\n" + f"      {encode_basestring_ascii(TRADE_COLUMNS[0])}: "] + [
    f",\n      {encode_basestring_ascii(k)}: " for k in TRADE_COLUMNS[1:]]
_NEXT = "\n    },\n" + _PIECES[0]
_END = "\n    }\n  ]"


def trades_text(cols: TradeColumns, bars: np.ndarray | None = None, mae: np.ndarray | None = None,
                mfe: np.ndarray | None = None, has_bars: np.ndarray | None = None) -> str:
    """The text ``json.dumps(json_clean(records(cols, bars, mae, mfe, has_bars)), indent=2)`` gives the
    trades as the value of a top-level key (items indented 4, keys 6, the closing bracket 2),
    straight from the columns: no record dict per trade. Floats as ``json.dumps`` writes them
    (``float.__repr__``; NaN and infinities ``null``, as ``json_clean`` makes them), strings by its ASCII
    encoder. :func:`trades_text_parts` gives the same text in pieces."""
    return "".join(trades_text_parts(cols, bars, mae, mfe, has_bars))


#: Trades written per piece of :func:`trades_text_parts` (~450 bytes of text each, and ~30 value
#: strings while a piece is laid out: a piece's memory, not the run's).
TEXT_CHUNK = 8192


def trades_text_parts(cols: TradeColumns, bars: np.ndarray | None = None, mae: np.ndarray | None = None,
                      mfe: np.ndarray | None = None, has_bars: np.ndarray | None = None, *,
                      chunk: int = TEXT_CHUNK) -> Iterator[str]:
    """:func:`trades_text` in pieces of ``chunk`` trades, so that a writer holds one piece's value texts
    and text at a time (120k trades built whole held ~250 MB: a value string per figure, then the text).
    Each piece writes the stamps and prices of the fills its trades use once, however many of its trades
    share a fill; the bars column's type (int, or float with nulls) is decided over every trade."""
    t, f = cols.trips, cols.trips.fills
    n = len(t)
    if not n:
        yield "[]"
        return
    symbol = {s: encode_basestring_ascii(s) for s in set(f.symbol)}
    duration = {d: encode_basestring_ascii(d) for d in set(cols.durations)}
    excursion = not (has_bars is None or bars is None or mae is None or mfe is None or not has_bars.any())
    every = excursion and bool(has_bars.all())  # type: ignore[union-attr]
    step = max(1, int(chunk))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        m = hi - lo
        entry, exit_ = t.entry[lo:hi], t.exit[lo:hi]
        e, x = entry.tolist(), exit_.tolist()
        used = np.union1d(entry, exit_).tolist()
        stamps = {i: encode_basestring_ascii(f.ts[i]) for i in used}
        prices = dict(zip(used, _floats(f.price[used]), strict=True))
        if not excursion:
            bar_col = mae_col = mfe_col = ["null"] * m
        else:
            assert bars is not None and mae is not None and mfe is not None and has_bars is not None
            have = has_bars[lo:hi]
            if every:
                bar_col = list(map(int.__repr__, bars[lo:hi].tolist()))
            else:  # a float64 column with NaN in the frame (see records)
                bar_col = [float.__repr__(float(b)) if h else "null"
                           for b, h in zip(bars[lo:hi].tolist(), have.tolist(), strict=True)]
            mae_col = _floats(np.where(have, mae[lo:hi], np.nan))
            mfe_col = _floats(np.where(have, mfe[lo:hi], np.nan))
        columns = (
            [symbol[f.symbol[i]] for i in e], ['"long"' if v else '"short"' for v in cols.long[lo:hi].tolist()],
            _floats(t.quantity[lo:hi]), list(map(stamps.__getitem__, e)), list(map(prices.__getitem__, e)),
            list(map(stamps.__getitem__, x)), list(map(prices.__getitem__, x)), _floats(cols.pnl[lo:hi]),
            _floats(cols.ret[lo:hi]), list(map(duration.__getitem__, cols.durations[lo:hi])), bar_col, mae_col,
            mfe_col,
        )
        yield _interleave(columns, m, first=lo == 0, last=hi == n)


def _interleave(columns: tuple[list[str], ...], n: int, *, first: bool = True, last: bool = True) -> str:
    """The text of ``n`` trades from their columns of value texts: one join over the values with the fixed
    pieces between them (:data:`_PIECES`), laid out by slice assignments (no format string per trade);
    ``first``: the array's opening bracket before them (else the separator from the trade before),
    ``last``: its closing bracket after them."""
    width = 2 * len(TRADE_COLUMNS)  # per trade: (the text before the value, the value) for each key
    out: list[str] = [""] * (width * n)
    for j, column in enumerate(columns):
        if j:
            out[2 * j::width] = [_PIECES[j]] * n
        out[2 * j + 1::width] = column
    out[0::width] = [_NEXT] * n
    if first:
        out[0] = "[\n" + _PIECES[0]
    if last:
        out.append(_END)
    return "".join(out)


def _floats(a: np.ndarray) -> list[str]:
    """Each float64 as ``json.dumps`` writes it after ``json_clean`` (non-finite: ``null``)."""
    values = a.tolist()
    if bool(np.isfinite(a).all()):
        return list(map(float.__repr__, values))
    return [float.__repr__(v) if math.isfinite(v) else "null" for v in values]
