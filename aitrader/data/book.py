"""Order-book (depth-of-market) snapshots: reading, validating and writing them (docs/orderbook.md).

A snapshot file holds, per row, a timestamp and the top N levels of each side of one symbol's book:

* CSV / CSV.gz / parquet ("wide"): a ``timestamp`` column (any spelling the bar reader accepts:
  ``timestamp``, ``datetime``, ``date``, ``time``, ``ts``...) and ``bid_px_1, bid_sz_1, ...,
  ask_px_1, ask_sz_1, ...`` for levels 1..N (level 1 = best). A level that a snapshot lacks is left
  empty (price and size both); the levels present are 1..k without a gap.
* JSON lines (``.jsonl``, ``.ndjson``, optionally ``.gz``), the original design's format: one object a
  line, ``{"ts": ..., "bids": [[price, size], ...], "asks": [[price, size], ...]}``, best level first.

Timestamps: ISO-8601 strings (with or without an offset) or epoch numbers (s/ms/us/ns by
magnitude, UTC), as for bars. Every rule a file breaks is reported in one :class:`DataError`, one
line per rule naming the file, the first offending 1-based data row, its timestamp, the value and
the fix (as :mod:`aitrader.data.validate` does for bars); there is no repair mode.

Rules: a parseable timestamp; strictly increasing timestamps (``unsorted``, ``duplicate``); both
sides have a level 1 (``empty_side``); price and size present together, levels without gaps
(``level_gap``); prices finite in [MIN_PRICE, MAX_PRICE] (``price``); sizes finite, > 0 and at most
MAX_VOLUME (``size``; a negative or zero size is refused); bid prices strictly decreasing and ask
prices strictly increasing with the level (``unsorted_levels``); best bid <= best ask
(``crossed``; a locked book, bid == ask, is accepted).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aitrader._util import atomic_path
from aitrader.data.validate import MAX_PRICE, MAX_VOLUME, MIN_PRICE, format_ts
from aitrader.errors import DataError

#: Most levels a snapshot file may carry per side (a bound on the width of the arrays).
MAX_LEVELS = 50
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
BOOK_SUFFIXES = TABLE_SUFFIXES + JSONL_SUFFIXES
_LEVEL_COLUMN = re.compile(r"^(bid|ask)_(px|sz)_([1-9][0-9]*)$")
_SIDES = ("bid_px", "bid_sz", "ask_px", "ask_sz")
_SHAPE = '{"ts": ..., "bids": [[price, size], ...], "asks": [[price, size], ...]}'


@dataclass(frozen=True)
class Book:
    """Validated snapshots of one symbol's book, in time order.

    ``ts_ns``: int64 UTC nanoseconds (a naive stamp is read as UTC; ``tz_aware`` says which the
    file had). ``bid_px, bid_sz, ask_px, ask_sz``: float64 arrays of shape (n, levels), best level
    in column 0, NaN where a snapshot has fewer levels.
    """

    ts_ns: np.ndarray
    bid_px: np.ndarray
    bid_sz: np.ndarray
    ask_px: np.ndarray
    ask_sz: np.ndarray
    tz_aware: bool
    source: str = "<memory>"

    @property
    def levels(self) -> int:
        return int(self.bid_px.shape[1])

    def __len__(self) -> int:
        return len(self.ts_ns)

    def index(self) -> pd.DatetimeIndex:
        """The snapshot times (UTC when the file had an offset, naive otherwise)."""
        idx = pd.DatetimeIndex(self.ts_ns.astype("datetime64[ns]"), name="timestamp")
        return idx.tz_localize("UTC") if self.tz_aware else idx

    def to_frame(self) -> pd.DataFrame:
        """The wide layout: ``bid_px_1, bid_sz_1, ask_px_1, ask_sz_1, bid_px_2, ...`` by timestamp."""
        cols: dict[str, np.ndarray] = {}
        for k in range(self.levels):
            for name, arr in zip(_SIDES, (self.bid_px, self.bid_sz, self.ask_px, self.ask_sz), strict=True):
                cols[f"{name}_{k + 1}"] = arr[:, k]
        return pd.DataFrame(cols, index=self.index())

    def info(self) -> dict[str, Any]:
        """What a manifest records about the snapshots a model was trained with."""
        import hashlib

        h = hashlib.sha256()
        for arr in (self.ts_ns, self.bid_px, self.bid_sz, self.ask_px, self.ask_sz):
            h.update(np.ascontiguousarray(arr).tobytes())
        idx = self.index()
        return {"sha256": h.hexdigest(), "source": self.source, "snapshots": len(self), "levels": self.levels,
                "first": idx[0].isoformat() if len(idx) else None, "last": idx[-1].isoformat() if len(idx) else None}


# ------------------------------------------------------------------------------------------ reading

def load_book(path: str | Path) -> Book:
    """Read and validate a snapshot file (wide CSV/parquet or JSON lines); DataError naming each broken rule."""
    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        raise DataError(f"{path}: order-book file not found; pass an existing snapshot file "
                        f"({', '.join(BOOK_SUFFIXES)})")
    if not name.endswith(BOOK_SUFFIXES):
        raise DataError(f"{path.name}: unsupported order-book file type; expected one of {', '.join(BOOK_SUFFIXES)}")
    if name.endswith(JSONL_SUFFIXES):
        ts_raw, levels = _read_jsonl(path)
    else:
        ts_raw, levels = _read_wide(path)
    return _validate(path.name, ts_raw, levels)


def _read_wide(path: Path) -> tuple[pd.Series, dict[str, np.ndarray]]:
    from aitrader.data._read import _TIME_NAMES, _normalise_name, _read_table

    df = _read_table(path)
    names = {_normalise_name(c): c for c in df.columns}
    time_col = next((names[t] for t in _TIME_NAMES if t in names), None)
    if time_col is None:
        raise DataError(f"{path.name}: no timestamp column; expected one named timestamp (or datetime, date, "
                        "time, ts) beside bid_px_1, bid_sz_1, ask_px_1, ask_sz_1, ...")
    found: dict[tuple[str, int], str] = {}
    for norm, col in names.items():
        m = _LEVEL_COLUMN.match(norm)
        if m:
            found[(f"{m.group(1)}_{m.group(2)}", int(m.group(3)))] = col
    depth = max((k for _, k in found), default=0)
    if depth == 0:
        raise DataError(f"{path.name}: no order-book level columns; expected bid_px_1, bid_sz_1, ask_px_1, "
                        "ask_sz_1 (and _2, _3, ... for deeper levels)")
    if depth > MAX_LEVELS:
        raise DataError(f"{path.name}: {depth} levels; at most {MAX_LEVELS} per side are read, drop the deeper ones")
    missing = [f"{s}_{k}" for k in range(1, depth + 1) for s in _SIDES if (s, k) not in found]
    if missing:
        raise DataError(f"{path.name}: missing columns {', '.join(missing[:6])}"
                        f"{' ...' if len(missing) > 6 else ''}; every level 1..{depth} needs bid_px, bid_sz, "
                        "ask_px and ask_sz (leave cells empty where a snapshot has fewer levels)")
    levels: dict[str, np.ndarray] = {}
    for side in _SIDES:
        cols = [pd.to_numeric(df[found[(side, k)]], errors="coerce") for k in range(1, depth + 1)]
        raw = [df[found[(side, k)]] for k in range(1, depth + 1)]
        arr = np.column_stack([c.to_numpy(dtype="float64") for c in cols])
        # a non-numeric cell (not an empty one) is a bad value, not a missing level: mark it +inf
        for k, (num, orig) in enumerate(zip(cols, raw, strict=True)):
            if pd.api.types.is_numeric_dtype(orig.dtype):
                continue  # already numbers (NaN = an empty cell)
            text = orig.astype("string").str.strip()
            bad = num.isna().to_numpy() & orig.notna().to_numpy() & (text.fillna("") != "").to_numpy()
            arr[bad, k] = np.inf
        levels[side] = arr
    return df[time_col], levels


def _read_jsonl(path: Path) -> tuple[pd.Series, dict[str, np.ndarray]]:
    from aitrader.data._open import CORRUPT_ERRORS, corrupt, max_read_bytes, open_bounded, require_regular_file

    require_regular_file(path)
    stamps: list[Any] = []
    sides: dict[str, list[list[list[float]]]] = {"bids": [], "asks": []}
    try:
        with open_bounded(path, max_read_bytes()) as handle:
            row = 0
            # buffered: iterating lines of the raw bounded stream would read one byte per call
            for line_no, raw in enumerate(io.BufferedReader(handle, 1 << 20), start=1):
                text = raw.strip()
                if text:
                    row += 1
                    ts, bids, asks = _parse_line(text, path.name, row, line_no)
                    stamps.append(ts)
                    sides["bids"].append(bids)
                    sides["asks"].append(asks)
    except DataError:
        raise
    except CORRUPT_ERRORS as exc:
        raise corrupt(path, exc) from exc
    except OSError as exc:
        raise DataError(f"{path.name}: cannot read the file: {exc.strerror or exc}") from exc
    if not stamps:
        raise DataError(f"{path.name}: the file has no snapshots; expected one JSON object a line")
    depth = max(max(len(b) for b in sides["bids"]), max(len(a) for a in sides["asks"]), 1)
    if depth > MAX_LEVELS:
        raise DataError(f"{path.name}: {depth} levels; at most {MAX_LEVELS} per side are read, drop the deeper ones")
    levels = {}
    for side, (px, sz) in (("bids", ("bid_px", "bid_sz")), ("asks", ("ask_px", "ask_sz"))):
        p = np.full((len(stamps), depth), np.nan)
        s = np.full((len(stamps), depth), np.nan)
        for i, pairs in enumerate(sides[side]):
            for k, (a, b) in enumerate(pairs):
                p[i, k], s[i, k] = a, b
        levels[px], levels[sz] = p, s
    # epoch numbers and strings may not mix in one pandas column: numbers stay numbers when all are
    ts = pd.Series(stamps, dtype="float64" if all(_is_number(t) for t in stamps) else "object")
    return ts, levels


def _parse_line(text: bytes, source: str, row: int, line_no: int) -> tuple[Any, list[list[float]], list[list[float]]]:
    """``(ts, bids, asks)`` of one JSON line."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise DataError(f"{source}: row {row} (line {line_no}): not a JSON object ({detail}); "
                        f"expected {_SHAPE}") from exc
    if not isinstance(doc, dict) or not {"ts", "bids", "asks"} <= set(doc):
        shown = text[:80].decode("utf-8", "replace")
        raise DataError(f"{source}: row {row} (line {line_no}): expected an object with ts, bids and "
                        f"asks, got {shown!r}; write {_SHAPE}")
    return doc["ts"], _pairs(doc["bids"], source, row, "bids"), _pairs(doc["asks"], source, row, "asks")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _pairs(value: Any, source: str, row: int, side: str) -> list[list[float]]:
    """``[[price, size], ...]`` as floats (a non-number becomes +inf, which the value rules report)."""
    if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2 for p in value):
        raise DataError(f"{source}: row {row}: {side} must be a list of [price, size] pairs, got "
                        f"{json.dumps(value)[:80]}; write e.g. [[100.0, 5], [99.9, 3]]")
    return [[float(x) if _is_number(x) else np.inf for x in pair] for pair in value]


# --------------------------------------------------------------------------------------- validation

def _stamps(ts_raw: pd.Series) -> tuple[np.ndarray, bool, np.ndarray]:
    """(UTC ns, tz-aware, NaT mask) of the parsed timestamp column."""
    from aitrader.data._read import parse_timestamps

    parsed = parse_timestamps(ts_raw.reset_index(drop=True))
    tz_aware = isinstance(parsed.dtype, pd.DatetimeTZDtype)
    if tz_aware:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    nat = parsed.isna().to_numpy()
    ns = parsed.to_numpy(dtype="datetime64[ns]").astype("int64")
    return ns, tz_aware, nat


class _Report:
    def __init__(self, source: str, ns: np.ndarray, tz_aware: bool, ts_raw: pd.Series) -> None:
        self.source, self.ns, self.tz_aware, self.ts_raw = source, ns, tz_aware, ts_raw
        self.lines: list[str] = []

    def add(self, mask: np.ndarray, what: Any, fix: str) -> None:
        """One line for the first row of ``mask``; ``what(i)`` describes that row."""
        count = int(mask.sum())
        if not count:
            return
        i = int(np.argmax(mask))
        stamp = self.stamp(i)
        more = f" ({count - 1} more row{'s' if count > 2 else ''} like this)" if count > 1 else ""
        self.lines.append(f"{self.source}: row {i + 1}{f' ({stamp})' if stamp else ''}: {what(i)}; {fix}{more}")

    def stamp(self, i: int) -> str:
        if self.ns[i] == np.iinfo(np.int64).min:
            return ""
        ts = pd.Timestamp(int(self.ns[i]), tz="UTC" if self.tz_aware else None)
        return format_ts(ts)


def _validate(source: str, ts_raw: pd.Series, levels: dict[str, np.ndarray]) -> Book:
    n = len(ts_raw)
    if n == 0:
        raise DataError(f"{source}: the file has no snapshots; expected a header line and snapshot rows")
    ns, tz_aware, nat = _stamps(ts_raw)
    rep = _Report(source, ns, tz_aware, ts_raw)
    cells = ts_raw.reset_index(drop=True)
    rep.add(nat, lambda i: f"timestamp {cells.iloc[i]!r} is not a date or time",
            "write ISO-8601 (2024-01-31T14:30:00Z) or epoch seconds")
    prev = np.concatenate([[np.iinfo(np.int64).min], ns[:-1]])
    valid = ~nat & ~np.concatenate([[True], nat[:-1]])
    rep.add(valid & (ns < prev), lambda i: f"timestamp goes back in time (previous row {rep.stamp(i - 1)})",
            "sort the snapshots by timestamp")
    rep.add(valid & (ns == prev), lambda i: "same timestamp as the previous row",
            "keep one snapshot per timestamp (the last one)")
    bp, bs, ap, az = (levels[s] for s in _SIDES)
    present = {}
    for side, px, sz in (("bid", bp, bs), ("ask", ap, az)):
        has_px, has_sz = ~np.isnan(px), ~np.isnan(sz)
        present[side] = has_px & has_sz
        rep.add(~present[side][:, 0], lambda i, s=side: f"no {s} level 1 (the {s} side is empty)",
                "every snapshot needs a best bid and a best ask")
        half = has_px ^ has_sz
        gap = (~present[side][:, :-1] & present[side][:, 1:]).any(axis=1) if px.shape[1] > 1 else np.zeros(n, bool)
        rep.add(half.any(axis=1) | gap, lambda i, s=side, h=half: (
                f"{s} level {int(np.argmax(h[i])) + 1} has a price without a size or a size without a price"
                if h[i].any() else f"{s} levels have a gap (a deeper level without the one above it)"),
                "give price and size for levels 1..k, leave both empty below")
        with np.errstate(invalid="ignore"):
            bad_px = present[side] & ~((px >= MIN_PRICE) & (px <= MAX_PRICE))
            bad_sz = present[side] & ~((sz > 0) & (sz <= MAX_VOLUME))
        rep.add(bad_px.any(axis=1), lambda i, s=side, b=bad_px, a=px: (
                f"{s}_px_{int(np.argmax(b[i])) + 1} = {_show(a[i, int(np.argmax(b[i]))])}"),
                f"prices must be numbers in [{MIN_PRICE:g}, {MAX_PRICE:g}]")
        rep.add(bad_sz.any(axis=1), lambda i, s=side, b=bad_sz, a=sz: (
                f"{s}_sz_{int(np.argmax(b[i])) + 1} = {_show(a[i, int(np.argmax(b[i]))])}"),
                f"sizes must be numbers > 0 and <= {MAX_VOLUME:g} (a negative or zero size is not a level)")
    with np.errstate(invalid="ignore"):
        both = present["bid"][:, 1:] & present["bid"][:, :-1]
        bid_bad = both & ~(bp[:, 1:] < bp[:, :-1])
        both = present["ask"][:, 1:] & present["ask"][:, :-1]
        ask_bad = both & ~(ap[:, 1:] > ap[:, :-1])
    rep.add(bid_bad.any(axis=1), lambda i: (
            f"bid_px_{int(np.argmax(bid_bad[i])) + 2} = {_show(bp[i, int(np.argmax(bid_bad[i])) + 1])} is not below "
            f"bid_px_{int(np.argmax(bid_bad[i])) + 1} = {_show(bp[i, int(np.argmax(bid_bad[i]))])}"),
            "bid levels must be sorted best first (strictly decreasing prices)")
    rep.add(ask_bad.any(axis=1), lambda i: (
            f"ask_px_{int(np.argmax(ask_bad[i])) + 2} = {_show(ap[i, int(np.argmax(ask_bad[i])) + 1])} is not above "
            f"ask_px_{int(np.argmax(ask_bad[i])) + 1} = {_show(ap[i, int(np.argmax(ask_bad[i]))])}"),
            "ask levels must be sorted best first (strictly increasing prices)")
    with np.errstate(invalid="ignore"):
        crossed = present["bid"][:, 0] & present["ask"][:, 0] & (bp[:, 0] > ap[:, 0])
    rep.add(crossed, lambda i: f"crossed book: best bid {_show(bp[i, 0])} > best ask {_show(ap[i, 0])}",
            "drop the snapshot or fix its levels (a book with bid > ask cannot be traded)")
    if rep.lines:
        raise DataError("\n".join(rep.lines))
    return Book(ts_ns=ns, bid_px=bp, bid_sz=bs, ask_px=ap, ask_sz=az, tz_aware=tz_aware, source=source)


def _show(value: float) -> str:
    return "a non-number" if value == np.inf else repr(float(value))


# ------------------------------------------------------------------------------------------ writing

def write_book(book: Book, path: str | Path) -> Path:
    """Write snapshots as wide CSV/CSV.gz/parquet or as JSON lines, atomically (temp file, then rename)."""
    path = Path(path)
    name = path.name.lower()
    if not name.endswith(BOOK_SUFFIXES):
        raise DataError(f"{path}: unsupported order-book output type; use one of {', '.join(BOOK_SUFFIXES)}")
    try:
        with atomic_path(path) as tmp:
            if name.endswith(JSONL_SUFFIXES):
                _write_jsonl(book, tmp, gz=name.endswith(".gz"))
            elif name.endswith(".parquet"):
                book.to_frame().to_parquet(tmp)
            else:
                book.to_frame().to_csv(tmp, compression="gzip" if name.endswith(".gz") else None)
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}; pass a writable --out path") from exc
    return path


def _write_jsonl(book: Book, tmp: Path, *, gz: bool) -> None:
    import gzip

    idx = book.index()
    stamps = [t.isoformat() for t in idx]
    opener: Any = gzip.open if gz else open
    with opener(tmp, "wt", encoding="utf-8") as f:
        for i, ts in enumerate(stamps):
            doc = {"ts": ts,
                   "bids": [[float(p), float(s)] for p, s in zip(book.bid_px[i], book.bid_sz[i], strict=True)
                            if not np.isnan(p)],
                   "asks": [[float(p), float(s)] for p, s in zip(book.ask_px[i], book.ask_sz[i], strict=True)
                            if not np.isnan(p)]}
            f.write(json.dumps(doc, separators=(",", ":")) + "\n")
