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
from typing import Any, overload

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

    ts: Sequence[str]  # a list, or a StampColumn (FillRecorder's)
    symbol: list[str]
    buy: np.ndarray  # bool: side is buy (else sell)
    quantity: np.ndarray
    price: np.ndarray
    commission: np.ndarray  # None read as 0.0
    #: :meth:`stamp_ns`'s parse, made on first use (the report reads the stamps three times)
    _parsed: list[tuple[np.ndarray, bool] | None] = field(default_factory=list, repr=False, compare=False)
    #: :meth:`symbol_codes`, made on first use
    _codes: list[tuple[np.ndarray, list[str]]] = field(default_factory=list, repr=False, compare=False)

    def symbol_codes(self) -> tuple[np.ndarray, list[str]]:
        """Each fill's symbol as an index (int32) into the sorted distinct symbols, and those symbols;
        made once (no list of a number per fill)."""
        if not self._codes:
            names = sorted(set(self.symbol))
            at = {s: i for i, s in enumerate(names)}
            self._codes.append((np.fromiter((at[s] for s in self.symbol), dtype=np.int32, count=len(self.symbol)),
                                names))
        return self._codes[0]

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


class StampColumn(Sequence[str]):
    """The fills' stamps (their ISO text as published) without a Python string per fill: each piece of
    :data:`STAMP_PIECE` stamps is held as int64 nanoseconds when formatting those back
    (:func:`aitrader.trading.sources._format_ns`, the engine's own formatter) gives exactly the same
    text, else as the strings themselves. A stamp's text is made again where it is read (the report's
    ``--json`` writes each traded fill's stamps once)."""

    def __init__(self) -> None:
        # one per piece: (ns, suffix, whole_seconds) for a piece held as numbers, or its list of strings
        self._pieces: list[tuple[np.ndarray, str, bool] | list[str]] = []
        self._starts: list[int] = [0]

    def add(self, texts: list[str]) -> None:
        """Append a piece (the caller's list is not kept when the piece is held as numbers)."""
        if not texts:
            return
        self._pieces.append(_as_numbers(texts) or texts)
        self._starts.append(self._starts[-1] + len(texts))

    def __len__(self) -> int:
        return self._starts[-1]

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return self.take(range(*i.indices(len(self))))
        n = len(self)
        k = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= k < n:
            raise IndexError("stamp index out of range")
        return self.take([k])[0]

    def __iter__(self) -> Iterator[str]:
        for piece in self._pieces:
            yield from (_format_piece(piece, None) if isinstance(piece, tuple) else piece)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str) or len(other) != len(self):
            return False
        return all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def take(self, rows: Sequence[int] | np.ndarray, *, quoted: bool = False) -> list[str]:
        """The texts of stamps ``rows`` (in that order), formatted piece by piece, vectorised;
        ``quoted``: as JSON strings (what ``encode_basestring_ascii`` gives of each text)."""
        at = np.asarray(rows, dtype=np.int64).reshape(-1)
        if not at.size:
            return []
        if at.min() < 0 or at.max() >= len(self):
            raise IndexError("stamp index out of range")
        out: list[str] = [""] * at.size
        piece_of = np.searchsorted(np.asarray(self._starts[1:]), at, side="right")
        for p in np.unique(piece_of).tolist():
            where = np.flatnonzero(piece_of == p)
            local = at[where] - self._starts[p]
            piece = self._pieces[p]
            if isinstance(piece, tuple):
                texts = _format_piece(piece, local, quoted=quoted)
            else:
                texts = [piece[j] for j in local.tolist()]
                if quoted:
                    texts = list(map(encode_basestring_ascii, texts))
            for w, t in zip(where.tolist(), texts, strict=True):
                out[w] = t
        return out

    def ns(self) -> tuple[np.ndarray, bool] | None:
        """What :func:`_parse_stamps` gives of all the texts, when every piece is held as numbers of one
        kind (all naive or all UTC): their nanoseconds, without parsing; else None."""
        if not self._pieces or not all(isinstance(p, tuple) for p in self._pieces):
            return None
        suffixes = {p[1] for p in self._pieces if isinstance(p, tuple)}
        if len(suffixes) != 1:
            return None
        ns = np.concatenate([p[0] for p in self._pieces if isinstance(p, tuple)])
        return ns, suffixes.pop() != ""


def _as_numbers(texts: list[str]) -> tuple[np.ndarray, str, bool] | None:
    """``(ns, suffix, whole_seconds)`` that :func:`aitrader.trading.sources._format_ns` turns back into
    exactly ``texts`` (naive stamps, or UTC ones written ``+00:00``), or None. The stamps are read by
    numpy's ISO parser (the offset cut off; ~12x pandas'), else by pandas; either way only a reading
    that formats back to the very texts is kept, so the numbers are the ones the texts stand for."""
    from aitrader.trading.sources import _format_ns

    suffix = "+00:00" if texts[0].endswith("+00:00") else ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy's deprecated zone parsing, a truncation: not this route
            ns = np.array([t[:-6] for t in texts] if suffix else texts, dtype="datetime64[ns]").view(np.int64)
    except (ValueError, TypeError, OverflowError, Warning):
        parsed = _parse_stamps(texts)
        if parsed is None:
            return None
        ns, suffix = parsed[0], "+00:00" if parsed[1] else ""
    for whole in (True, False):
        if whole and bool((ns % 1_000_000_000).any()):
            continue
        if _format_ns(ns, suffix, whole) == texts:
            return ns, suffix, whole
    return None


def _format_piece(piece: tuple[np.ndarray, str, bool], rows: np.ndarray | None, *, quoted: bool = False) -> list[str]:
    from aitrader.trading.sources import _format_ns, json_ns

    ns, suffix, whole = piece
    return (json_ns if quoted else _format_ns)(ns if rows is None else ns[rows], suffix, whole)


def stamp_texts(ts: Sequence[str], rows: Sequence[int] | np.ndarray) -> list[str]:
    """``[ts[i] for i in rows]``, vectorised for a :class:`StampColumn`."""
    if isinstance(ts, StampColumn):
        return ts.take(rows)
    return [ts[i] for i in (rows.tolist() if isinstance(rows, np.ndarray) else rows)]


def stamp_json(ts: Sequence[str], rows: Sequence[int] | np.ndarray) -> list[str]:
    """``stamp_texts`` as JSON strings (``encode_basestring_ascii`` of each), vectorised for a :class:`StampColumn`."""
    if isinstance(ts, StampColumn):
        return ts.take(rows, quoted=True)
    return list(map(encode_basestring_ascii, stamp_texts(ts, rows)))


#: Fills whose stamps are held as one piece of a :class:`StampColumn` (their strings are kept until then).
STAMP_PIECE = 8192


class FillRecorder:
    """A run's fills as the broker publishes them (a bus subscriber: ``RunOptions.subscribers``): the
    columns :meth:`FillColumns.read` gives of the ledger's ``fills`` table after the run (the same
    order: ids are given in publishing order; the same floats: SQLite stores them as they are),
    without reading them back.

    A fill costs one ``extend`` of a flat list (its six values); every :data:`STAMP_PIECE` fills that
    piece becomes typed columns (~36 bytes a fill instead of six Python objects, ~260): quantity, price
    and commission as float64, the side as a bool, the symbol as a code, and the stamps as a
    :class:`StampColumn` (int64 ns per fill, the text made again where it is read). Fixed-size pieces,
    not arrays grown by reallocation: the heap keeps no holes of their old sizes."""

    WIDTH = 6  # ts, symbol, side, quantity, price, commission

    def __init__(self) -> None:
        self._flat: list[Any] = []  # the piece being filled, six values a fill
        self._stamps = StampColumn()
        self._pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._done = 0  # fills in the pieces
        self._names: dict[Any, int] = {}  # symbol as published -> code (first seen first)

    def attach(self, bus: Any) -> None:
        from aitrader.trading.events import EventType

        bus.subscribe(EventType.FILL, self._on_fill)

    def _on_fill(self, e: Any) -> None:
        flat = self._flat
        flat.extend((e.ts, e.symbol, e.side, e.quantity, e.price, e.commission))
        if len(flat) >= STAMP_PIECE * self.WIDTH:
            self._flush()

    def _flush(self) -> None:
        """The piece being filled as typed columns, converted as :meth:`FillColumns.read` converts the
        table's values (``str``, ``float``, a side ``buy`` in any case, a commission None as 0.0)."""
        flat, w = self._flat, self.WIDTH
        if not flat:
            return
        self._flat = []
        self._stamps.add([v if type(v) is str else str(v) for v in flat[0::w]])
        names = self._names
        codes = np.fromiter((names[v] if v in names else names.setdefault(v, len(names)) for v in flat[1::w]),
                            dtype=np.int32, count=len(flat) // w)
        sides = flat[2::w]
        buy_of = {v: str(v).lower() == "buy" for v in set(sides)}
        self._pieces.append((codes, np.array([buy_of[v] for v in sides], dtype=bool), _column(flat[3::w]),
                             _column(flat[4::w]), _column([0.0 if v is None else v for v in flat[5::w]])))
        self._done += len(codes)

    def __len__(self) -> int:
        return self._done + len(self._flat) // self.WIDTH

    def columns(self) -> FillColumns:
        """The columns (the recorder's own arrays: record nothing after), each symbol one shared string;
        the stamps a :class:`StampColumn` (its nanoseconds are :meth:`FillColumns.stamp_ns`'s parse)."""
        self._flush()
        if len(self._pieces) != 1:  # one piece, a column at a time (the pieces of a column freed once copied)
            columns: list[list[np.ndarray]] = [list(c) for c in zip(*self._pieces, strict=True)] or [[]] * 5
            self._pieces = []
            kinds = (np.int32, bool, np.float64, np.float64, np.float64)
            merged = []
            for j, kind in enumerate(kinds):
                merged.append(np.concatenate(columns[j]) if columns[j] else np.empty(0, dtype=kind))
                columns[j] = []
            self._pieces = [(merged[0], merged[1], merged[2], merged[3], merged[4])]
        first_seen, buy, qty, price, fee = self._pieces[0]
        names: list[str] = [""] * len(self._names)
        shared: dict[str, str] = {}
        for v, code in self._names.items():
            text = str(v)
            names[code] = shared.setdefault(text, text)
        symbols = [names[c] for c in first_seen.tolist()]
        distinct = sorted(shared)
        remap = np.array([distinct.index(name) for name in names], dtype=np.int32)
        codes = remap[first_seen] if len(first_seen) else np.empty(0, dtype=np.int32)
        parsed = self._stamps.ns()
        return FillColumns(ts=self._stamps, symbol=symbols, buy=buy, quantity=qty, price=price, commission=fee,
                           _parsed=[parsed] if parsed is not None else [], _codes=[(codes, distinct)])


def _column(values: list[Any]) -> np.ndarray:
    """``np.array([float(v) for v in values])``: numpy converts floats and ints as ``float`` does."""
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([float(v) for v in values], dtype=np.float64)


#: Fills matched per piece of :func:`match_fills` (the Python values of one piece at a time).
MATCH_PIECE = 65_536


def match_fills(fills: FillColumns) -> Trips:
    """FIFO matching per symbol, exactly as :func:`aitrader.trading.trades.round_trips`: a fill against
    the open side closes the oldest lots first; what is left opens a lot on its own side.

    The fills are taken as Python values a piece of :data:`MATCH_PIECE` at a time, and each trip is
    written straight into the result's columns, made once ``2 * fills`` long (a fill closes at most one
    lot partly, and each lot is closed whole once; pages never written are never resident): no list of
    Python numbers per trip, and no typed array grown by reallocation (its moves left ~8 MB of holes in
    the heap at 120k trips)."""
    books: dict[str, deque[list[Any]]] = {}
    n = len(fills)
    out_entry = np.empty(2 * n, dtype=np.int64)
    out_exit = np.empty(2 * n, dtype=np.int64)
    out_qty = np.empty(2 * n, dtype=np.float64)
    count = 0
    for lo in range(0, n, MATCH_PIECE):
        hi = min(n, lo + MATCH_PIECE)
        for k, symbol, buy, qty in zip(range(lo, hi), fills.symbol[lo:hi], fills.buy[lo:hi].tolist(),
                                       fills.quantity[lo:hi].tolist(), strict=True):
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
                out_entry[count] = lot[2]
                out_exit[count] = k
                out_qty[count] = take
                count += 1
                lot[1] = have - take
                left -= take
                if lot[1] <= _EPS:
                    book.popleft()
            if left > _EPS:
                book.append([sign, left, k])
    return Trips(out_entry[:count], out_exit[:count], out_qty[:count], fills)


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


#: Trips whose figures are computed at a time by :func:`trade_columns` (element-wise: the same floats).
TRADE_PIECE = 16_384


def trade_columns(trips: Trips) -> TradeColumns:
    """P&L, return and duration of every trip, vectorised with the scalar code's operations and order,
    a piece of :data:`TRADE_PIECE` trips at a time (the temporaries of a piece, not of the run)."""
    f = trips.fills
    n = len(trips)
    long = np.empty(n, dtype=bool)
    pnl = np.empty(n)
    ret = np.empty(n)
    parsed = f.stamp_ns()
    ns = parsed[0] if parsed is not None else fill_ns(f.ts, np.union1d(trips.entry, trips.exit))
    for a in range(0, n, TRADE_PIECE):
        e, x, q = trips.entry[a:a + TRADE_PIECE], trips.exit[a:a + TRADE_PIECE], trips.quantity[a:a + TRADE_PIECE]
        with np.errstate(divide="ignore", invalid="ignore"):
            # per fill, as the lot and the exit fill carry it
            fee_e, fee_x = f.commission[e] / f.quantity[e], f.commission[x] / f.quantity[x]
            sign = np.where(f.buy[e], 1.0, -1.0)
            entry_price = f.price[e]
            gross = (f.price[x] - entry_price) * q * sign
            pnl[a:a + TRADE_PIECE] = gross - (fee_e + fee_x) * q
            ret[a:a + TRADE_PIECE] = pnl[a:a + TRADE_PIECE] / (entry_price * q)
        long[a:a + TRADE_PIECE] = sign > 0
    dur = ns[trips.exit] - ns[trips.entry]
    uniq, inverse = np.unique(dur, return_inverse=True)
    texts = [str(pd.Timedelta(int(v), unit="ns")) for v in uniq.tolist()]
    return TradeColumns(trips, long, pnl, ret, dur, [texts[i] for i in inverse.reshape(-1).tolist()])


def fill_ns(stamps: Sequence[str], rows: np.ndarray) -> np.ndarray:
    """ns of ``stamps[rows]`` such that a difference is ``pd.Timestamp(b) - pd.Timestamp(a)``: UTC for
    aware stamps (as a difference of aware Timestamps is), wall time for naive ones (the engine writes
    one kind per run; a naive stamp against an aware one, which the scalar code refused, counts as UTC).
    A full-length array (zeros at the rows not asked for)."""
    out = np.zeros(len(stamps), dtype=np.int64)
    if not len(rows):
        return out
    wanted = stamp_texts(stamps, rows)
    try:
        parsed = pd.to_datetime(pd.Series(wanted, dtype=object), format="ISO8601", utc=True)
        if pd.isna(parsed).any():
            raise ValueError("a stamp without a time")
        ns = np.asarray(pd.DatetimeIndex(parsed).as_unit("ns").asi8, dtype=np.int64)
    except (TypeError, ValueError):  # not one ISO kind: one by one, as the scalar code
        ns = np.array([_one_ns(t) for t in wanted], dtype=np.int64)
    out[rows] = ns
    return out


def _parse_stamps(stamps: Sequence[str]) -> tuple[np.ndarray, bool] | None:
    """See :meth:`FillColumns.stamp_ns`."""
    if not stamps:
        return None
    try:
        with warnings.catch_warnings():  # pandas 2.x warns on mixed offsets before failing below
            warnings.simplefilter("ignore", FutureWarning)
            parsed = pd.DatetimeIndex(pd.to_datetime(pd.Series(list(stamps), dtype=object), format="ISO8601"))
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
    values = zip(symbols, sides, t.quantity[lo:].tolist(), stamp_texts(ts, e), f.price[entry].tolist(),
                 stamp_texts(ts, x), f.price[exit_].tolist(), _nan_none(cols.pnl[lo:]), _nan_none(cols.ret[lo:]),
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
#: strings while a piece is laid out: ~4 MB a piece of 2,048, the piece's memory, not the run's).
TEXT_CHUNK = 2048


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
        stamps = dict(zip(used, stamp_json(f.ts, used), strict=True))
        prices = dict(zip(used, _floats(f.price[used]), strict=True))
        if not excursion:
            bar_col = mae_col = mfe_col = ["null"] * m
        else:
            assert bars is not None and mae is not None and mfe is not None and has_bars is not None
            have = has_bars[lo:hi]
            if every:
                bar_col = _ints(bars[lo:hi])
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
    """Each float64 as ``json.dumps`` writes it after ``json_clean`` (``float.__repr__``; non-finite:
    ``null``), ~15x faster than ``float.__repr__`` per value.

    orjson writes a numpy array's floats with the same shortest round-trip digits as ``repr`` and the same
    positional form for 1e-4 <= |x| < 1e16, where ``repr`` writes them positionally too (``tests/unit/
    test_json_numbers.py`` checks both against ``float.__repr__`` on random bit patterns). Outside that
    range ``repr`` writes an exponent (``1e-05``, ``1e+16``) that orjson spells otherwise, so those values
    are written by ``repr`` itself."""
    import orjson

    a = np.ascontiguousarray(a, dtype=np.float64)
    if not a.size:
        return []
    out = orjson.dumps(a, option=orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1].split(",")
    m = np.abs(a)
    odd = np.flatnonzero(((m < 1e-4) & (m != 0.0)) | (m >= 1e16))  # NaN compares False: orjson writes null
    for j, v in zip(odd.tolist(), a[odd].tolist(), strict=True):
        out[j] = float.__repr__(v) if math.isfinite(v) else "null"
    return out


def _ints(a: np.ndarray) -> list[str]:
    """Each int64 as ``json.dumps`` writes it (``int.__repr__``): orjson's text of the array, split."""
    import orjson

    a = np.ascontiguousarray(a, dtype=np.int64)
    return orjson.dumps(a, option=orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1].split(",") if a.size else []
