"""Bar sources: replay of one or several symbols merged by timestamp, and a file tail (live mode).

Both yield *steps*: all the bars sharing one timestamp, ordered by symbol, as plain Python floats
(the hot loop never touches pandas). Timestamps become ISO-8601 strings once, vectorised: naive
stamps stay naive, tz-aware ones are written in UTC (``+00:00``).

A replay reads its bars in blocks (:class:`BarSeries`: a window of a
:class:`aitrader.data.stream.BarFile`): it holds the stamps of its bars, never their prices, and
turns one block at a time into Python objects.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from itertools import chain, count, repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from aitrader.errors import DataError

if TYPE_CHECKING:
    from aitrader.data.stream import BarFile

# (symbol, bar_index, open, high, low, close, volume)
BarTuple = tuple[str, int, float, float, float, float, float]
# (ts, epoch seconds, bars at that timestamp: a list, or a tuple when one symbol is replayed)
Step = tuple[str, float, Sequence[BarTuple]]


#: Bars turned into Python strings/floats at a time by replay_steps (and the size of a replay's shared
#: pass's blocks): 8192 bars of Python objects are ~2.5 MB, 65,536 were ~20 MB of a 1M-bar run's peak.
REPLAY_CHUNK = 8192


def _utc_ns(index: pd.DatetimeIndex) -> tuple[np.ndarray, str]:
    """Nanoseconds (UTC for an aware index, as given for a naive one) and the ISO suffix."""
    suffix = ""
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
        suffix = "+00:00"
    return index.as_unit("ns").asi8, suffix


def _format_ns(ns: np.ndarray, suffix: str, whole_seconds: bool) -> list[str]:
    """ISO-8601 strings of nanosecond stamps; ``whole_seconds`` is decided once for a whole series,
    so that every chunk of it is formatted alike."""
    if whole_seconds:
        # Whole seconds (the usual bars): each distinct day and time of day is formatted once and
        # the stamps are joined from them, twice as fast as numpy formatting every stamp.
        days, second = np.divmod(ns // 1_000_000_000, 86400)
        day_code, day_values = pd.factorize(days)
        time_code, time_values = pd.factorize(second)
        day_text = np.datetime_as_string(day_values.astype("datetime64[D]")).tolist()
        time_text = [f"T{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}{suffix}" for t in time_values.tolist()]
        return [day_text[d] + time_text[t] for d, t in zip(day_code.tolist(), time_code.tolist(), strict=True)]
    values: Any = ns.astype("datetime64[ns]")
    text = np.datetime_as_string(values, unit="us")  # type: ignore[call-overload]
    return [s + suffix for s in text.tolist()] if suffix else text.tolist()


def json_ns(ns: np.ndarray, suffix: str, whole_seconds: bool) -> list[str]:
    """:func:`_format_ns`'s texts as JSON strings (``json.encoder.encode_basestring_ascii`` of each).

    Whole seconds (the usual bars) are written by orjson from ``datetime64[s]`` (RFC 3339 without a
    fraction: the same ``YYYY-MM-DDTHH:MM:SS`` text, ~20x faster than formatting and quoting each one);
    anything else by :func:`_format_ns` and the json module's encoder."""
    if whole_seconds and len(ns):
        import orjson

        try:
            text = orjson.dumps(ns.view("datetime64[ns]").astype("datetime64[s]"),
                                option=orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1]
        except TypeError:  # orjson.JSONEncodeError for NaT (no bar has it): written as the slow path writes it
            text = None
        if text is not None:
            if suffix:  # '"...",' -> '"...+00:00",' at every stamp's end
                text = text.replace('",', suffix + '",')[:-1] + suffix + '"'
            return text.split(",")
    from json.encoder import encode_basestring_ascii

    return list(map(encode_basestring_ascii, _format_ns(ns, suffix, whole_seconds)))


def iso_strings(index: pd.DatetimeIndex) -> tuple[list[str], np.ndarray]:
    """ISO-8601 strings and epoch seconds of a DatetimeIndex, vectorised."""
    ns, suffix = _utc_ns(index)
    whole = bool(len(ns)) and not (ns % 1_000_000_000).any()
    return _format_ns(ns, suffix, whole), ns / 1e9


class BarSeries:
    """One symbol's replayed bars: rows ``lo:hi`` of a :class:`aitrader.data.stream.BarFile` (bar ``i``
    of the replay is row ``lo + i`` of the file). It holds no prices: :meth:`blocks` reads them a
    block at a time and :func:`replay_steps` turns each block into Python strings and floats, so a
    replay's memory is bounded by the block, not by the run (the file's index, 8 bytes a bar, is
    what stays per bar)."""

    __slots__ = ("symbol", "file", "lo", "hi", "suffix", "whole_seconds", "_shared")

    def __init__(self, file: BarFile, lo: int = 0, hi: int | None = None, *, symbol: str | None = None) -> None:
        self.file = file
        self.symbol = symbol or file.symbol
        self.hi = len(file) if hi is None else max(0, min(int(hi), len(file)))
        self.lo = max(0, min(int(lo), self.hi))
        self.suffix = "+00:00" if file.index.tz is not None else ""
        # Decided once for the whole window, so that every block is formatted alike (_format_ns).
        n = len(self)
        self.whole_seconds = n > 0 and not any((self.ns(a, a + _SCAN) % 1_000_000_000).any()
                                               for a in range(0, n, _SCAN))
        self._shared: SharedPass | None = None

    def __len__(self) -> int:
        return self.hi - self.lo

    def __repr__(self) -> str:
        return f"BarSeries({self.symbol!r}, rows {self.lo}:{self.hi} of {self.file!r})"

    @property
    def index(self) -> pd.DatetimeIndex:
        """The stamps of the replayed bars (a view of the file's index, not a copy)."""
        return self.file.index[self.lo:self.hi]

    def ns(self, a: int = 0, b: int | None = None) -> np.ndarray:
        """int64 nanoseconds of bars ``a:b`` (UTC for tz-aware bars, as given for naive ones): a view of the
        file's index when it is in ns (not to be written to), else a copy."""
        b = len(self) if b is None else min(b, len(self))
        index = self.file.index[self.lo + a:self.lo + b]
        if index.unit != "ns":  # as_unit copies even an index already in ns (a view of it is returned then)
            index = index.as_unit("ns")
        return np.asarray(index.asi8, dtype=np.int64)

    def ts_strings(self, a: int = 0, b: int | None = None) -> list[str]:
        """The ISO-8601 stamps of bars ``a:b``."""
        return _format_ns(self.ns(a, b), self.suffix, self.whole_seconds)

    @property
    def ts(self) -> list[str]:
        """Every stamp as a string (builds the whole list: prefer :meth:`ts_strings` on a slice)."""
        return self.ts_strings()

    def blocks(self, a: int = 0, *, size: int = REPLAY_CHUNK) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(first bar, ns, values)`` of bars ``a:`` in order: ``values`` is a float64 ``(5, n)`` block
        (open, high, low, close, volume rows; never to be written to) and ``ns`` its stamps (see :meth:`ns`).

        The readers of a replay from bar 0 (its steps, each model's features, the fingerprint) share
        one pass over the file (:class:`SharedPass`, whose blocks may have another size than
        ``size``); any other start reads a pass of its own."""
        if a == 0:
            if self._shared is None:
                self._shared = SharedPass(self, size)
            reader = self._shared.reader()
            if reader is not None:
                return reader
        return self.own_blocks(a, size=size)

    def own_blocks(self, a: int = 0, *, size: int = REPLAY_CHUNK) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """:meth:`blocks` on a pass of their own over the file."""
        lo = self.lo
        for first, values in self.file.blocks(lo + a, self.hi, size=size):
            k = first - lo
            yield k, self.ns(k, k + values.shape[1]), values

    def frame(self) -> pd.DataFrame:
        """The replayed bars as a frame like :func:`aitrader.data.load_bars` returns (backtest reports on it)."""
        return self.file.frame(self.lo, self.hi)

    @classmethod
    def from_frame(cls, symbol: str, df: pd.DataFrame) -> BarSeries:
        """Every bar of a validated frame (held in memory: :meth:`aitrader.data.stream.BarFile.from_frame`)."""
        from aitrader.data.stream import BarFile

        return cls(BarFile.from_frame(symbol, df), symbol=symbol)


#: Stamps checked for whole seconds at a time (a transient array of this many, not of the whole run).
_SCAN = 1 << 16


#: How far (in bars) a reader of a :class:`SharedPass` may trail the one ahead before it is
#: detached to a pass of its own: the features run a chunk or two ahead of the steps, the
#: fingerprint a checkpoint (2,000 steps) behind, so in a replay every reader stays within it.
SHARED_LAG = 1 << 17


class SharedPass:
    """One pass over a :class:`BarSeries`'s blocks shared by several readers, each at its own pace:
    a block is read once (under a lock: a batch-route worker thread may read) and held until every
    reader has taken it. A reader more than :data:`SHARED_LAG` bars behind the newest block (one
    that stopped reading, or never started) is detached and continues on a pass of its own from its
    next bar: the same bars, read again, so memory stays bounded whatever the readers do.

    On a scanned file, a pass reads the prices back from the scan's spill file (``scan_bars``): one
    shared pass instead of one per reader reads them once."""

    def __init__(self, series: BarSeries, size: int) -> None:
        self.series = series
        self.size = size
        self._lock = threading.Lock()
        self._source: Iterator[tuple[int, np.ndarray, np.ndarray]] | None = None
        self._held: deque[tuple[int, np.ndarray, np.ndarray]] = deque()
        self._base = 0  # sequence number of _held[0]
        self._held_bars = 0
        self._done = False
        self._error: Exception | None = None
        self._next: dict[int, int] = {}  # reader -> sequence number of the next block it takes
        self._ids = count()

    def reader(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]] | None:
        """A reader from bar 0 (registered now), or None when the pass has already let bar 0 go."""
        with self._lock:
            if self._base > 0:
                return None
            rid = next(self._ids)
            self._next[rid] = 0
        return self._read(rid)

    def _read(self, rid: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        after = 0  # the bar after the last block taken
        detached = False
        try:
            while True:
                with self._lock:
                    block = self._take(rid)
                if block is _DETACHED:
                    detached = True
                    break
                if block is None:
                    return
                yield block
                after = block[0] + len(block[1])
        finally:
            with self._lock:
                self._next.pop(rid, None)
                self._trim()
        if detached:
            yield from self.series.own_blocks(after, size=self.size)

    def _take(self, rid: int) -> Any:
        """The reader's next block, None at the end, or :data:`_DETACHED`."""
        seq = self._next.get(rid)
        if seq is None:
            return _DETACHED
        k = seq - self._base
        if k >= len(self._held):
            if self._error is not None:
                raise self._error  # what the pass raised (a changed file) reaches every reader
            if self._done:
                return None
            if self._source is None:
                self._source = self.series.own_blocks(size=self.size)
            try:
                block = next(self._source, None)
            except Exception as exc:
                self._error = exc
                raise
            if block is None:
                self._done = True
                return None
            self._held.append(block)
            self._held_bars += len(block[1])
        block = self._held[k]
        self._next[rid] = seq + 1
        self._trim()
        return block

    def _trim(self) -> None:
        while self._held and self._held_bars - len(self._held[0][1]) > SHARED_LAG:
            # the oldest block is past the lag: the readers still to take it will read on their own
            for rid in [r for r, seq in self._next.items() if seq <= self._base]:
                del self._next[rid]
            self._drop()
        low = min(self._next.values(), default=self._base + len(self._held))
        while self._base < low:
            self._drop()

    def _drop(self) -> None:
        self._held_bars -= len(self._held.popleft()[1])
        self._base += 1


_DETACHED = object()


class ReplaySteps(Iterator[Step]):
    """The steps of a replay, carrying the replayed :class:`BarSeries` (``.series``), which the batch
    route (:mod:`aitrader.trading.batch`) computes its features from. Iterating it hands out the
    underlying iterator itself, so the loop pays nothing per step for the wrapper."""

    def __init__(self, series: list[BarSeries], steps: Iterator[Step]) -> None:
        self.series = series
        self._steps = steps

    def __iter__(self) -> Iterator[Step]:
        return self._steps

    def __next__(self) -> Step:
        return next(self._steps)


def replay_steps(series: list[BarSeries], *, chunk: int | None = None) -> ReplaySteps:
    """Merge several symbols' bars by timestamp (ties ordered by symbol), reading each symbol's bars
    in blocks of ``chunk`` rows (default :data:`REPLAY_CHUNK`): only those become Python objects."""
    series = sorted(series, key=lambda s: s.symbol)
    size = int(chunk or REPLAY_CHUNK)
    if len(series) == 1:
        # One symbol (the common replay): the steps are built by zip in C, no Python frame per bar;
        # a step's bars are a 1-tuple here (the engine only iterates and indexes them).
        s = series[0]
        return ReplaySteps(series, chain.from_iterable(_one_block(s, *block) for block in s.blocks(size=size)))
    return ReplaySteps(series, _merged_steps(series, chunk=size))


def _one_block(s: BarSeries, first: int, ns: np.ndarray, values: np.ndarray) -> Iterator[Step]:
    bars = zip(repeat(s.symbol), range(first, first + len(ns)), *values.tolist(), strict=False)
    ts = _format_ns(ns, s.suffix, s.whole_seconds)
    return zip(ts, (ns / 1e9).tolist(), zip(bars, strict=False), strict=True)  # type: ignore[return-value]


class _Head:
    """One symbol's bars not merged yet: the rest of its current block (with the next ones appended
    while they are needed), as ``first`` (bar of row 0), epochs, stamps and values."""

    __slots__ = ("k", "blocks", "done", "first", "epoch", "ns", "values")

    def __init__(self, k: int, s: BarSeries, size: int) -> None:
        self.k = k
        self.blocks = s.blocks(size=size)
        self.done = False
        self.first = 0
        self.epoch = np.empty(0)
        self.ns = np.empty(0, dtype=np.int64)
        self.values = np.empty((5, 0))

    def extend(self) -> None:
        """Append the symbol's next non-empty block (or mark it done)."""
        for first, ns, values in self.blocks:
            if not len(ns):
                continue
            if len(self.ns):
                ns, values = np.concatenate((self.ns, ns)), np.concatenate((self.values, values), axis=1)
                first = self.first
            self.first, self.ns, self.values = first, ns, values
            self.epoch = ns / 1e9
            return
        self.done = True

    def take(self, cut: int) -> tuple[int, np.ndarray, np.ndarray]:
        """Rows ``:cut`` as (first bar, stamps, values), dropped from the head."""
        out = self.first, self.ns[:cut], self.values[:, :cut]
        self.first += cut
        self.epoch, self.ns, self.values = self.epoch[cut:], self.ns[cut:], self.values[:, cut:]
        return out


def _merged_steps(series: list[BarSeries], *, chunk: int | None = None) -> Iterator[Step]:
    size = int(chunk or REPLAY_CHUNK)
    # Each symbol's reader is registered now (with the other readers of its shared pass), read when iterated.
    return _merge([_Head(k, s, size) for k, s in enumerate(series)], series, size)


def _merge(heads: list[_Head], series: list[BarSeries], size: int) -> Iterator[Step]:
    """k-way merge of the symbols' blocks by (epoch, symbol), vectorised a round at a time.

    A round merges every held bar stamped before ``bound``, the earliest last stamp held by a symbol
    that has more blocks: no later block holds a bar before it, so those steps are complete. The
    symbols whose held bars all sit at the bound then read their next block. Only the current
    blocks are held (never a sort of every bar), and the steps are those of one global
    ``lexsort((symbol, epoch))`` of all the bars.
    """
    for h in heads:
        h.extend()
    names = np.array([s.symbol for s in series], dtype=object)
    carry: list[Any] = [None, "", []]  # the step being gathered: epoch, stamp, bars
    while True:
        open_ = [h for h in heads if not h.done]
        bound = min((float(h.epoch[-1]) for h in open_), default=math.inf)
        parts = [(h.k, *h.take(cut)) for h in heads
                 if (cut := len(h.epoch) if not open_ else int(np.searchsorted(h.epoch, bound, side="left")))]
        if parts:
            ks = np.concatenate([np.full(len(ns), k) for k, _, ns, _ in parts])
            ns = np.concatenate([ns for _, _, ns, _ in parts])
            loc = np.concatenate([np.arange(first, first + len(ns)) for _, first, ns, _ in parts])
            values = np.concatenate([v for *_, v in parts], axis=1)
            order = np.lexsort((ks, ns / 1e9))
            for a in range(0, len(order), size):  # Python objects for `size` bars at a time
                yield from _merge_piece(series, names, order[a:a + size], ks, ns, loc, values, carry)
        if not open_:
            break
        for h in open_:
            if not len(h.epoch) or h.epoch[-1] <= bound:
                h.extend()
    if carry[2]:
        yield carry[1], carry[0], carry[2]


def _merge_piece(series: list[BarSeries], names: np.ndarray, idx: np.ndarray, ks: np.ndarray, ns: np.ndarray,
                 loc: np.ndarray, values: np.ndarray, carry: list[Any]) -> Iterator[Step]:
    """The steps of merged rows ``idx`` (in order); the last one stays in ``carry`` (the next piece
    may add bars to it). The bar tuples are built by zip in C; Python runs once per step."""
    kk, eps = ks[idx], ns[idx] / 1e9
    bars = list(zip(names[kk].tolist(), loc[idx].tolist(), *values[:, idx].tolist(), strict=True))
    cuts = (np.flatnonzero(eps[1:] != eps[:-1]) + 1).tolist()
    starts = np.array([0, *cuts], dtype=np.int64)
    stamps: list[str] = [""] * len(starts)
    first_k = kk[starts]
    for k in np.unique(first_k).tolist():  # the step's stamp: its first bar's, formatted as its symbol's
        sel = np.flatnonzero(first_k == k)
        s = series[k]
        for pos, text in zip(sel.tolist(), _format_ns(ns[idx[starts[sel]]], s.suffix, s.whole_seconds), strict=True):
            stamps[pos] = text
    for lo, hi, ep, ts in zip(starts.tolist(), [*cuts, len(idx)], eps[starts].tolist(), stamps, strict=True):
        if ep == carry[0]:
            carry[2].extend(bars[lo:hi])
            continue
        if carry[2]:
            yield carry[1], carry[0], carry[2]
        carry[0], carry[1], carry[2] = ep, ts, bars[lo:hi]


def bar_bytes(epoch: Any, o: Any, h: Any, lo: Any, c: Any, v: Any) -> bytes:
    """The bytes a run's fingerprint hashes per bar: epoch seconds and OHLCV as little-endian float64."""
    cols = [np.asarray(x, dtype="<f8").reshape(-1) for x in (epoch, o, h, lo, c, v)]
    return np.column_stack(cols).astype("<f8").tobytes()


class _Hash:
    """SHA-256 of one symbol's bars ``0..n``, advanced with its own pass over the symbol's blocks."""

    __slots__ = ("series", "n", "sha", "blocks", "first", "ns", "values")

    def __init__(self, series: BarSeries) -> None:
        self.series = series
        self.n = 0
        self.sha = hashlib.sha256()
        self.blocks: Iterator[tuple[int, np.ndarray, np.ndarray]] = series.blocks()
        self.first, self.ns, self.values = 0, np.empty(0, dtype=np.int64), np.empty((5, 0))

    def advance(self, n: int) -> None:
        while self.n < n:
            k = self.n - self.first
            if k >= len(self.ns):
                nxt = next(self.blocks, None)
                if nxt is None:
                    return
                self.first, self.ns, self.values = nxt
                continue
            stop = min(len(self.ns), n - self.first)
            self.sha.update(bar_bytes(self.ns[k:stop] / 1e9, *self.values[:, k:stop]))
            self.n = self.first + stop


class ReplayFingerprint:
    """SHA-256 of each symbol's bars 0..cursor of a replay, updated incrementally at each checkpoint
    (each symbol's bars read once, in order, a block held at a time)."""

    def __init__(self, series: list[BarSeries]) -> None:
        self.series = {s.symbol: s for s in series}
        # Registered now, beside the replay's other readers of each symbol's pass (read at the checkpoints).
        self._done: dict[str, _Hash] = {s.symbol: _Hash(s) for s in series}

    def __call__(self, cursors: dict[str, tuple[int, str]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for sym, (i, _) in sorted(cursors.items()):
            s = self.series.get(sym)
            if s is None:
                continue
            n = min(int(i) + 1, len(s))
            h = self._done.get(sym)
            if h is None or h.n > n:
                h = self._done[sym] = _Hash(s)
            h.advance(n)
            out[sym] = {"bars": n, "sha256": h.sha.hexdigest()}
        return out


def live_bar_problem(ts: str, vals: list[float]) -> str | None:
    """Why a live bar cannot be traded (the same per-bar rules files are validated by), or None."""
    from aitrader.data.validate import validate_bar

    o, h, lo, c, v = vals
    problem = validate_bar(ts, o, h, lo, c, v)
    return problem.message if problem is not None else None


class FollowSource:
    """Tail a CSV file (``timestamp,open,high,low,close,volume``) that another process appends to.

    Yields every bar already in the file, then each new complete line as it arrives, until
    :meth:`stop` is called (the engine calls it on SIGINT/SIGTERM and stops after the current bar).

    Live bars are validated like files: a line that does not parse, breaks a price rule, is not
    later than the previous bar (out of order, duplicate) or changes time zone is a *bad bar*. With
    ``bad_bar="skip"`` it is skipped (it takes no bar index) and an ALERT ``bad_bar`` is published
    (once per line: ``reported`` holds the lines a resumed run already recorded); with ``"stop"``
    the run stops with a DataError naming the line. ``min_bars``: a resumed run's bars up to its
    cursor; a file that ends before them has shrunk (DataError instead of waiting forever).
    """

    def __init__(self, path: Path, symbol: str, *, poll_s: float = 0.05,
                 stop_event: threading.Event | None = None, bad_bar: str = "skip", min_bars: int = 0,
                 reported: set[int] | None = None) -> None:
        self.path = path
        self.symbol = symbol
        self.poll_s = poll_s
        self.stop_event = stop_event or threading.Event()
        self.bad_bar = bad_bar
        self.min_bars = min_bars
        self.reported = set(reported or ())
        self.bus: Any = None
        self._hash = hashlib.sha256()
        self._digests: dict[int, str] = {}  # bar index -> SHA-256 of bars 0..index (the last few)

    def attach(self, bus: Any) -> None:
        """Publish bad-bar alerts on this bus (a RunOptions subscriber)."""
        self.bus = bus

    def stop(self) -> None:
        self.stop_event.set()

    def fingerprint(self, cursors: dict[str, tuple[int, str]]) -> dict[str, Any]:
        cur = cursors.get(self.symbol)
        if cur is None or int(cur[0]) not in self._digests:
            return {}
        return {self.symbol: {"bars": int(cur[0]) + 1, "sha256": self._digests[int(cur[0])]}}

    def _parse(self, header: list[str], line: str, line_no: int) -> tuple[pd.Timestamp, list[float]]:
        row = dict(zip(header, next(csv.reader(io.StringIO(line))), strict=False))
        try:
            stamp = pd.Timestamp(str(row.get("timestamp") or row.get("date") or row.get("time")))
            vals = [float(row[c]) for c in ("open", "high", "low", "close", "volume")]
            if stamp is pd.NaT:
                raise ValueError("no timestamp")
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise _BadBar(f"not a bar ({exc}); expected timestamp,open,high,low,close,volume") from exc
        return stamp, vals

    def _bad(self, line_no: int, line: str, problem: str, ts: str) -> None:
        where = f"{self.path}: line {line_no} {line.strip()[:120]!r}"
        if self.bad_bar == "stop":
            raise DataError(f"{where}: {problem}; fix the file, or set ml_trading.live.bad_bar: skip to skip such "
                            "bars with an alert")
        if line_no in self.reported or self.bus is None:
            return
        self.reported.add(line_no)
        from aitrader.trading.events import Alert

        self.bus.publish(Alert(ts, self.symbol, "", "bad_bar",
                               {"line": line_no, "problem": problem, "text": line.strip()[:200]}))

    def steps(self) -> Iterator[Step]:  # noqa: C901 - one reading loop with its checks in order
        if not self.path.is_file():
            raise DataError(f"--follow file not found: {self.path}; create it or pass an existing file")
        with self.path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
            header: list[str] | None = None
            partial = ""
            index = 0
            line_no = 0
            last_epoch: float | None = None
            last_stamp: pd.Timestamp | None = None
            while not self.stop_event.is_set():
                chunk = fh.readline()
                if not chunk:
                    if index < self.min_bars:
                        raise DataError(
                            f"{self.path} now holds {index} bar(s) but the run had consumed {self.min_bars}: the "
                            "file shrank since the run started; resume with the same file or start a new run"
                        )
                    self.stop_event.wait(self.poll_s)
                    continue
                partial += chunk
                if not partial.endswith("\n"):
                    continue  # the writer has not finished this line yet
                line, partial = partial, ""
                line_no += 1
                if not line.strip():
                    continue
                if header is None:
                    header = [h.strip().lower() for h in line.strip().split(",")]
                    continue
                shown = last_stamp.isoformat() if last_stamp is not None else ""
                try:
                    stamp, vals = self._parse(header, line, line_no)
                except _BadBar as exc:
                    self._bad(line_no, line, str(exc), shown)
                    continue
                ts_list, epochs = iso_strings(pd.DatetimeIndex([stamp]))
                ts, epoch = ts_list[0], float(epochs[0])
                problem = live_bar_problem(ts, vals)
                if problem is None and last_stamp is not None:
                    if (stamp.tz is None) != (last_stamp.tz is None):
                        problem = (f"time zone changed: {stamp} after {last_stamp} (one mixes naive and "
                                   "zone-aware stamps)")
                    elif stamp.tz is not None and _offset_jump(stamp, last_stamp) not in (0.0, 3600.0):
                        problem = f"time zone changed: offset of {stamp} differs from {last_stamp}"
                    elif last_epoch is not None and epoch == last_epoch:
                        problem = f"duplicate bar: {stamp} again"
                    elif last_epoch is not None and epoch < last_epoch:
                        problem = f"out of order: {stamp} comes after {last_stamp}"
                if problem is not None:
                    self._bad(line_no, line, problem, ts)
                    continue
                self._hash.update(bar_bytes(epoch, *vals))
                self._digests[index] = self._hash.hexdigest()
                self._digests.pop(index - 8, None)
                last_epoch, last_stamp = epoch, stamp
                yield ts, epoch, [(self.symbol, index, *vals)]  # type: ignore[list-item]
                index += 1


def _offset_jump(a: pd.Timestamp, b: pd.Timestamp) -> float:
    """Seconds between two aware stamps' UTC offsets (a daylight-saving change is 3600)."""
    oa, ob = a.utcoffset(), b.utcoffset()
    if oa is None or ob is None:
        return 0.0
    return abs((oa - ob).total_seconds())


class _BadBar(Exception):
    """A line that is not a bar."""


def describe(frames: dict[str, Any]) -> dict[str, Any]:
    """Short description of replayed data for the run's meta (frames or :class:`BarSeries`: their
    length and stamps)."""
    return {s: {"rows": len(df), "first": str(df.index[0]) if len(df) else None,
                "last": str(df.index[-1]) if len(df) else None} for s, df in sorted(frames.items())}


def pace(speed: float, epoch0: float, wall0: float, epoch: float) -> None:
    """Sleep so that bars replay at ``speed`` times their own cadence (no-op when speed is 0)."""
    if speed > 0:
        delay = wall0 + (epoch - epoch0) / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
