"""Order-book features: batch and streaming evaluators over depth-of-market snapshots (docs/orderbook.md).

Alignment (both evaluators): bar ``t`` reads the LAST snapshot whose timestamp is at or before the
bar's stamp (taken as the bar's close, the moment paper-trade decides on it); when that snapshot is
more than ``max_age`` seconds older than the bar, or there is none yet, the feature is NaN (the
model skips the bar, training drops the row). Nothing after the bar's stamp is ever read, so a
value cannot change when later snapshots or bars are appended.

The batch evaluator aligns every bar at once with ``searchsorted``; the streaming evaluator keeps a
cursor into the snapshots (or takes them from :meth:`BookFeatures.push` as they arrive) and sees
only the snapshots up to the current bar. Both compute the same formulas from the same floats.

Formulas (level 1 = best; ``D_N`` = bid + ask size over the top N levels present):

* ``book_spread_bps`` = 1e4 (ask_1 - bid_1) / mid, mid = (bid_1 + ask_1) / 2
* ``book_mid`` = mid (``relative_to: none``) or 1e4 (mid / close - 1) (``relative_to: close``)
* ``book_microprice`` = 1e4 (micro / mid - 1), micro = (bid_1 ask_sz_1 + ask_1 bid_sz_1) / (bid_sz_1 + ask_sz_1)
* ``book_imbalance`` = (B_N - A_N) / (B_N + A_N), B_N / A_N = bid / ask size over the top N levels
* ``book_depth_change`` = D_N[t] / D_N[t - window] - 1 over the snapshots aligned to bars t and t - window
"""

from __future__ import annotations

import functools
import math
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aitrader.data.book import Book
from aitrader.data.validate import MAX_PRICE, MAX_VOLUME, MIN_PRICE
from aitrader.errors import DataError, FeatureError
from aitrader.features.kinds import BOOK_KINDS
from aitrader.features.registry import FeatureSpec
from aitrader.features.streaming import StreamingFeatures, _bad

NEEDS_BOOK = ("need depth-of-market snapshots; pass --book SYMBOL=PATH (paper-trade, train) or set data.book in the "
              "train config (docs/orderbook.md)")


def is_book(spec: FeatureSpec) -> bool:
    return spec.kind in BOOK_KINDS


def _max_age_ns(spec: FeatureSpec) -> int:
    return int(round(float(spec.params["max_age"]) * 1e9))


def bar_ns(index: pd.DatetimeIndex, book: Book) -> np.ndarray:
    """UTC nanoseconds of the bar stamps; DataError when bars and book disagree on having a time zone."""
    idx = pd.DatetimeIndex(index)
    aware = idx.tz is not None
    _same_tz(aware, book)
    if aware:
        idx = idx.tz_convert("UTC").tz_localize(None)
    return np.asarray(idx.as_unit("ns").asi8, dtype=np.int64)


def _same_tz(bars_aware: bool, book: Book) -> None:
    _check_tz(bars_aware, book.tz_aware, book.source)


def _check_tz(bars_aware: bool, book_aware: bool, source: str) -> None:
    if bars_aware != book_aware:
        which = ("the bars have a time zone and the order-book file has none" if bars_aware
                 else "the order-book file has a time zone and the bars have none")
        raise DataError(f"{source}: {which}; write both with offsets (e.g. 2024-01-31T14:30:00Z) or both "
                        "without, so snapshots align to the right bars")


# ------------------------------------------------------------------------------------------ batch

def compute_batch(specs: list[FeatureSpec], index: pd.DatetimeIndex, close: np.ndarray, book: Book) -> np.ndarray:
    """The book features ``specs`` for bars stamped ``index`` (closes ``close``): shape (n, len(specs))."""
    ts = bar_ns(index, book)
    n = len(ts)
    out = np.full((n, len(specs)), np.nan)
    pos = np.searchsorted(book.ts_ns, ts, side="right") - 1  # last snapshot at or before each bar
    have = pos >= 0
    at = np.where(have, pos, 0)
    age = ts - book.ts_ns[at]
    b1, a1 = book.bid_px[at, 0], book.ask_px[at, 0]
    bs1, as1 = book.bid_sz[at, 0], book.ask_sz[at, 0]
    mid = (b1 + a1) / 2.0
    for j, spec in enumerate(specs):
        p = spec.params
        fresh = have & (age <= _max_age_ns(spec))
        if spec.kind == "book_spread_bps":
            val = 1e4 * (a1 - b1) / mid
        elif spec.kind == "book_mid":
            val = mid if p["relative_to"] == "none" else 1e4 * (mid / close - 1.0)
        elif spec.kind == "book_microprice":
            micro = (b1 * as1 + a1 * bs1) / (bs1 + as1)
            val = 1e4 * (micro / mid - 1.0)
        elif spec.kind == "book_imbalance":
            bid, ask = _depth(book.bid_sz, at, p["levels"]), _depth(book.ask_sz, at, p["levels"])
            val = (bid - ask) / (bid + ask)
        elif spec.kind == "book_depth_change":
            w = int(p["window"])
            depth = _depth(book.bid_sz, at, p["levels"]) + _depth(book.ask_sz, at, p["levels"])
            depth = np.where(fresh, depth, np.nan)
            val = np.full(n, np.nan)
            val[w:] = depth[w:] / depth[:-w] - 1.0
        else:  # pragma: no cover - BOOK_KINDS and this dispatch are kept together
            raise FeatureError(f"no batch evaluator for order-book kind {spec.kind}")
        out[:, j] = np.where(fresh, val, np.nan)
    return out


def _depth(sizes: np.ndarray, at: np.ndarray, levels: int) -> np.ndarray:
    """Sum of the top ``levels`` sizes of the snapshots ``at`` (levels a snapshot lacks count 0),
    added level by level in the order the streaming evaluator adds them."""
    total = np.zeros(len(at))
    for k in range(min(int(levels), sizes.shape[1])):
        col = sizes[at, k]
        total = total + np.where(np.isnan(col), 0.0, col)
    return total


# -------------------------------------------------------------------------------------- streaming

class BookFeatures:
    """Streaming evaluator of the book features ``specs``: :meth:`push` snapshots as they arrive,
    :meth:`on_bar` at each bar's close returns their values (NaN when stale). O(levels) a bar."""

    def __init__(self, specs: list[FeatureSpec], *, tz_aware: bool, source: str = "<stream>") -> None:
        self.specs = specs
        self.tz_aware = tz_aware
        self.source = source
        self._snap: tuple[int, list[float], list[float], list[float], list[float]] | None = None
        self._out = np.full(len(specs), np.nan)
        self._hist: list[deque[float] | None] = [
            deque(maxlen=int(s.params["window"]) + 1) if s.kind == "book_depth_change" else None for s in specs]
        self._age = [_max_age_ns(s) for s in specs]
        self._plan = [(j, _code(s), int(s.params.get("levels", 1)), self._age[j], self._hist[j])
                      for j, s in enumerate(specs)]
        self._sums: dict[tuple[int, int], float] = {}
        self._sums_of: object = None

    def push(self, ts_ns: int, bid_px: list[float], bid_sz: list[float], ask_px: list[float],
             ask_sz: list[float]) -> None:
        """The newest snapshot (levels best first, NaN for absent levels); times must not go back."""
        if self._snap is not None and ts_ns <= self._snap[0]:
            raise DataError(f"{self.source}: snapshot at {pd.Timestamp(ts_ns)} is not after the previous one "
                            f"({pd.Timestamp(self._snap[0])}); snapshots must arrive in time order")
        self._snap = (ts_ns, bid_px, bid_sz, ask_px, ask_sz)

    def on_bar(self, ts_ns: int, close: float) -> np.ndarray:
        """Values at the close of the bar stamped ``ts_ns`` from the snapshots pushed so far."""
        out = self._out
        snap = self._snap
        if snap is None:
            out.fill(math.nan)
            for h in self._hist:
                if h is not None:
                    h.append(math.nan)
            return out
        t, bp, bs, ap, az = snap
        age = ts_ns - t
        b1, a1, bs1, as1 = bp[0], ap[0], bs[0], az[0]
        mid = (b1 + a1) / 2.0
        sums = self._sums  # (side, levels) -> size sum of the current snapshot, computed once per snapshot
        if self._sums_of is not snap:
            sums.clear()
            self._sums_of = snap
        for j, code, levels, limit, hist in self._plan:
            fresh = age <= limit
            if code == _DEPTH_CHANGE:
                assert hist is not None
                hist.append(_cached_sum(sums, bs, az, levels, 2) if fresh else math.nan)
                val = hist[-1] / hist[0] - 1.0 if len(hist) == hist.maxlen else math.nan
            elif not fresh:
                val = math.nan
            elif code == _SPREAD:
                val = 1e4 * (a1 - b1) / mid
            elif code == _MID:
                val = mid
            elif code == _MID_GAP:
                val = 1e4 * (mid / close - 1.0)
            elif code == _MICRO:
                val = 1e4 * ((b1 * as1 + a1 * bs1) / (bs1 + as1) / mid - 1.0)
            else:  # imbalance
                bid, ask = _cached_sum(sums, bs, az, levels, 0), _cached_sum(sums, bs, az, levels, 1)
                val = (bid - ask) / (bid + ask)
            out[j] = val if fresh else math.nan
        return out


_SPREAD, _MID, _MID_GAP, _MICRO, _IMBALANCE, _DEPTH_CHANGE = range(6)


def _code(spec: FeatureSpec) -> int:
    if spec.kind == "book_mid":
        return _MID if spec.params["relative_to"] == "none" else _MID_GAP
    return {"book_spread_bps": _SPREAD, "book_microprice": _MICRO, "book_imbalance": _IMBALANCE,
            "book_depth_change": _DEPTH_CHANGE}[spec.kind]


def _cached_sum(sums: dict[tuple[int, int], float], bs: list[float], az: list[float], levels: int,
                side: int) -> float:
    """Bid (side 0), ask (1) or bid + ask (2) size over the top ``levels`` levels, bid then ask added
    level by level as :func:`_depth` does in batch."""
    key = (side, levels)
    found = sums.get(key)
    if found is None:
        found = (_sum(bs, levels) if side == 0 else _sum(az, levels) if side == 1
                 else _cached_sum(sums, bs, az, levels, 0) + _cached_sum(sums, bs, az, levels, 1))
        sums[key] = found
    return found


def _sum(sizes: list[float], levels: int) -> float:
    total = 0.0
    for x in sizes[: int(levels)]:
        if x == x:  # NaN: an absent level counts 0
            total = total + x
    return total


class FileBookFeed:
    """Feeds a :class:`BookFeatures` from a loaded snapshot file: before each bar, every snapshot
    stamped at or before the bar (and nothing later) is pushed."""

    def __init__(self, book: Book, features: BookFeatures) -> None:
        self.book = book
        self.features = features
        self._ts = book.ts_ns.tolist()
        self._next = 0

    def advance(self, ts_ns: int) -> None:
        ts = self._ts
        k = self._next
        while k < len(ts) and ts[k] <= ts_ns:
            k += 1
        if k > self._next:
            last = k - 1  # only the newest one matters; the ones in between are superseded
            b = self.book
            self.features.push(ts[last], b.bid_px[last].tolist(), b.bid_sz[last].tolist(), b.ask_px[last].tolist(),
                               b.ask_sz[last].tolist())
            self._next = k


@functools.lru_cache(maxsize=4096)
def _day_ns(day: str) -> int:
    return int(np.datetime64(day, "ns").astype(np.int64))


def _stamp_ns(ts: Any, tz_aware: bool, source: str) -> int:
    """UTC nanoseconds of a bar stamp (an ISO string from the engine, or a Timestamp)."""
    if isinstance(ts, str):
        # The engine's stamps: naive ``2024-01-02T10:00:00[.ffffff]`` or UTC with a ``+00:00`` suffix;
        # numpy parses those 5x faster than pandas. Anything else goes through pandas below.
        naive = ts[:-6] if ts.endswith("+00:00") else ts
        if "+" not in naive and "Z" not in naive and naive.count("-") == 2:
            _check_tz(naive is not ts, tz_aware, source)
            if len(naive) in (19, 26) and naive[10] == "T" and naive[13] == naive[16] == ":" and (
                    len(naive) == 19 or naive[19] == "."):
                # YYYY-MM-DDTHH:MM:SS[.ffffff]: the day parsed once (cached), the time of day by hand
                seconds = int(naive[11:13]) * 3600 + int(naive[14:16]) * 60 + int(naive[17:19])
                micro = int(naive[20:26]) if len(naive) == 26 else 0
                return _day_ns(naive[:10]) + seconds * 1_000_000_000 + micro * 1000
            return int(np.datetime64(naive, "ns").astype(np.int64))
    stamp = ts if isinstance(ts, pd.Timestamp) else pd.Timestamp(ts)
    aware = stamp.tzinfo is not None
    _check_tz(aware, tz_aware, source)
    if aware:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return int(stamp.as_unit("ns").value)


class PipelineStream:
    """The streaming evaluator of a pipeline with order-book features: bar features from the generated
    :class:`aitrader.features.streaming.StreamingFeatures`, book features from :class:`BookFeatures`
    fed by :class:`FileBookFeed`, merged in the pipeline's column order. Same interface as
    ``StreamingFeatures`` (``update``, ``run``, ``names``, ``warmup``, ``ready``, ``bars_seen``)."""

    def __init__(self, specs: list[FeatureSpec], buffer_size: int, book: Book) -> None:
        self.names = [s.name for s in specs]
        self.warmup = max(s.warmup for s in specs)
        self.book = book
        self._bar_cols = [j for j, s in enumerate(specs) if not is_book(s)]
        self._book_cols = [j for j, s in enumerate(specs) if is_book(s)]
        bar_specs = [specs[j] for j in self._bar_cols]
        self._bars = StreamingFeatures(bar_specs, buffer_size) if bar_specs else None
        self._book = BookFeatures([specs[j] for j in self._book_cols], tz_aware=book.tz_aware, source=book.source)
        self._feed = FileBookFeed(book, self._book)
        self._warmups = np.array([s.warmup for s in specs])
        # the usual layout, bar features then book features: plain slices instead of index lists
        k = len(self._bar_cols)
        self._split = k if self._bar_cols == list(range(k)) and self._book_cols == list(range(k, len(specs))) else -1
        self._out = np.full(len(specs), np.nan)
        self._seen = 0

    @property
    def bars_seen(self) -> int:
        return self._seen

    @property
    def ready(self) -> bool:
        return self._seen > self.warmup

    def update(self, ts: Any, o: float, h: float, low: float, c: float, v: float) -> np.ndarray:
        out = self._out
        k = self._split
        if self._bars is not None:
            if k >= 0:
                out[:k] = self._bars.update(ts, o, h, low, c, v)
            else:
                out[self._bar_cols] = self._bars.update(ts, o, h, low, c, v)
        elif not (all(MIN_PRICE <= x <= MAX_PRICE for x in (o, h, low, c)) and 0 <= v <= MAX_VOLUME):
            # each value compared on its own: min()/max() skip a NaN that is not first, so a NaN close passed
            _bad(self._seen, ts, o, h, low, c, v)  # what the bar evaluator refuses, refused here too
        t = _stamp_ns(ts, self.book.tz_aware, self.book.source)
        self._feed.advance(t)
        row = self._book.on_bar(t, c)
        if k >= 0:
            out[k:] = row
        else:
            out[self._book_cols] = row
        self._seen += 1
        if self._seen <= self.warmup:
            out[self._warmups >= self._seen] = math.nan  # inside a feature's declared warm-up
        return out

    def run(self, o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray,
            index: Any = None) -> np.ndarray:
        if index is None:
            raise FeatureError("order-book features need the bars' timestamps; pass index=")
        rows = np.empty((len(c), len(self.names)))
        for k, (ts, a, b, x, y, z) in enumerate(zip(list(index), o.tolist(), h.tolist(), low.tolist(), c.tolist(),
                                                    v.tolist(), strict=True)):
            rows[k] = self.update(ts, a, b, x, y, z)
        return rows


def transform(specs: list[FeatureSpec], bars: pd.DataFrame, arrays: tuple[np.ndarray, ...], book: Book) -> np.ndarray:
    """Batch values of a pipeline with book features: bar kinds through :func:`batch.compute`, book
    kinds through :func:`compute_batch`, in ``specs`` order; NaN inside each feature's warm-up."""
    from aitrader.features import batch

    out = np.full((len(bars), len(specs)), np.nan)
    bar_cols = [j for j, s in enumerate(specs) if not is_book(s)]
    book_cols = [j for j, s in enumerate(specs) if is_book(s)]
    if bar_cols:
        out[:, bar_cols] = batch.compute([specs[j] for j in bar_cols], *arrays)
    out[:, book_cols] = compute_batch([specs[j] for j in book_cols], pd.DatetimeIndex(bars.index), arrays[3], book)
    for j in book_cols:
        out[: specs[j].warmup, j] = np.nan
    return out


def book_for(books: str | dict[str, str] | None, symbol: str, features: list[str], *, where: str) -> Book:
    """The snapshots of ``symbol`` from a path (any symbol) or a ``{SYMBOL: path}`` mapping, loaded and
    validated; FeatureError naming the features and the option to pass when there are none."""
    from aitrader.data.book import load_book

    path: str | None
    if isinstance(books, dict):
        folded = {k.upper(): v for k, v in books.items()}
        path = folded.get(symbol.upper())
        if path is None:
            given = ", ".join(sorted(books)) or "none"
            raise FeatureError(f"order-book features ({', '.join(features)}) need snapshots for {symbol}, but "
                               f"{where} names only {given}; pass --book {symbol}=PATH")
    else:
        path = books
    if path is None:
        hint = " or set data.book in the train config" if where.startswith("data.book") else ""
        raise FeatureError(f"order-book features ({', '.join(features)}) need depth-of-market snapshots for "
                           f"{symbol}; pass --book {symbol}=PATH{hint} (docs/orderbook.md)")
    return load_book(path)


def training_book(books: str | dict[str, str] | None, symbol: str, features: list[str]) -> Book:
    """:func:`book_for` for ``train`` (``data.book`` of the train config, or ``--book``)."""
    return book_for(books, symbol, features, where="data.book (--book)")


def parse_book_options(values: list[str] | None) -> str | dict[str, str] | None:
    """``--book`` values: one ``PATH`` (any symbol), or ``SYMBOL=PATH`` pairs. ConfigError otherwise."""
    from aitrader.errors import ConfigError

    if not values:
        return None
    pairs: dict[str, str] = {}
    plain: list[str] = []
    for value in values:
        symbol, eq, path = value.partition("=")
        if eq and symbol.strip() and path.strip() and not Path(value).exists():
            if symbol.strip().upper() in (k.upper() for k in pairs):
                raise ConfigError(f"--book {value}: {symbol.strip()} is given twice; pass one file per symbol")
            pairs[symbol.strip()] = path.strip()
        else:
            plain.append(value)
    if plain and (pairs or len(plain) > 1):
        raise ConfigError(f"--book {plain[0]}: with several --book options each must be SYMBOL=PATH "
                          "(e.g. --book AAPL=book/AAPL.jsonl)")
    return plain[0] if plain else pairs
