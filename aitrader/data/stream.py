"""Bars read in blocks: a validated bar file held as its timestamps only, its prices read on demand.

:func:`load_bars` returns the whole validated frame (~48 bytes a bar plus the transient copies of
reading and validating, ~0.3 KB a bar at its peak). A replay or a feature build needs the bars in
order, a block at a time, so :class:`BarFile` keeps only the timestamps (8 bytes a bar: the window,
the calendar and the asset class are decided from them) and yields ``open, high, low, close,
volume`` in blocks. The one read of the file validates it a block at a time and writes each
block's prices (40 bytes a bar, raw float64) to a spill file: an unlinked temporary file in the
temporary directory (``TMPDIR``), gone when the bars are or the process ends. The blocks are read
back from it (``os.preadv``: no shared file position, any thread), so memory is bounded by the
block, not by the file, and neither the parser's buffers (a parquet file's column pages: ~14 MB for
a 1M-row row group) nor a second parse are paid during the replay.

The bars a :class:`BarFile` yields are exactly those :func:`aitrader.data.load_bars` returns for
the same file and symbol (same floats, same index), and exactly those that were validated: a file
that changes after the scan changes nothing in the bars already scanned.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from aitrader.data._open import CORRUPT_ERRORS, is_compressed, max_read_bytes, open_bounded, require_regular_file
from aitrader.data._read import (
    _EXACT_FLOATS,
    PARQUET_SUFFIXES,
    SUPPORTED_SUFFIXES,
    _map_columns,
    file_symbol,
    numeric_time_kind,
    parse_timestamps,
    raw_frame,
)
from aitrader.data.loader import _pick, bar_files, load_bars, load_universe
from aitrader.data.suspect import QUANTISED_MIN_RETURNS, QUANTISED_SHARE, find_warnings, split_candidates
from aitrader.data.validate import validate
from aitrader.errors import DataError

log = logging.getLogger(__name__)

#: Rows yielded at a time by default.
BLOCK_ROWS = 65_536
#: Rows of the file read and validated at a time.
READ_ROWS = 16_384

#: ``(first row, values)``: ``values`` is a C-contiguous float64 array of shape ``(5, n)``; its rows
#: are open, high, low, close and volume of bars ``first .. first + n - 1`` (each row contiguous).
Block = tuple[int, np.ndarray]

_COLUMNS = ("open", "high", "low", "close", "volume")


class BarFile:
    """One symbol's validated bars: ``index`` held, prices yielded by :meth:`blocks`.

    ``reader(lo, hi, size)`` yields the blocks of rows ``lo:hi`` in order; :meth:`from_frame`
    wraps bars already in memory (the built-in sample, a backtest's frame, tests).
    """

    __slots__ = ("symbol", "source", "index", "_reader", "attrs")

    def __init__(self, symbol: str, source: str, index: pd.DatetimeIndex,
                 reader: Callable[[int, int, int], Iterator[Block]], attrs: dict | None = None) -> None:
        self.symbol = symbol
        self.source = source
        self.index = index
        self._reader = reader
        self.attrs = dict(attrs or {})

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"BarFile({self.symbol!r}, {self.source!r}, {len(self)} bars)"

    def blocks(self, lo: int = 0, hi: int | None = None, *, size: int = BLOCK_ROWS) -> Iterator[Block]:
        """The bars ``lo:hi`` (default: to the end) in blocks of at most ``size`` rows, in order."""
        n = len(self)
        hi = n if hi is None else min(int(hi), n)
        lo = max(0, int(lo))
        if lo >= hi:
            return iter(())
        return self._reader(lo, hi, max(1, int(size)))

    def frame(self, lo: int = 0, hi: int | None = None) -> pd.DataFrame:
        """Bars ``lo:hi`` as a frame like :func:`load_bars` returns (columns open..volume, the index)."""
        hi = len(self) if hi is None else min(int(hi), len(self))
        parts = [v for _, v in self.blocks(lo, hi)]
        values = np.concatenate(parts, axis=1) if parts else np.empty((5, 0))
        df = pd.DataFrame({c: values[k] for k, c in enumerate(_COLUMNS)}, index=self.index[lo:hi])
        df.attrs = {"symbol": self.symbol, "source": self.source, **self.attrs}
        return df

    @classmethod
    def from_frame(cls, symbol: str, df: pd.DataFrame) -> BarFile:
        """Bars already in memory (a validated frame: DatetimeIndex, columns open..volume)."""
        missing = [c for c in _COLUMNS if c not in df.columns]
        if missing:
            raise DataError(f"bars for {symbol} lack columns {missing}; expected open, high, low, close, volume")
        if not isinstance(df.index, pd.DatetimeIndex):
            raise DataError(f"bars for {symbol} must have a DatetimeIndex; load them with aitrader.data.load_bars")
        values = np.ascontiguousarray(np.vstack([df[c].to_numpy(dtype="float64") for c in _COLUMNS]))

        def read(lo: int, hi: int, size: int) -> Iterator[Block]:
            for start in range(lo, hi, size):
                stop = min(start + size, hi)
                yield start, np.ascontiguousarray(values[:, start:stop])

        attrs = {k: v for k, v in df.attrs.items() if k not in ("symbol", "source")}
        return cls(symbol, str(df.attrs.get("source") or symbol), df.index, read, attrs)

    @classmethod
    def from_frame_of(cls, df: pd.DataFrame) -> BarFile:
        """A frame :func:`load_bars` returned (its ``attrs`` name the symbol)."""
        return cls.from_frame(str(df.attrs.get("symbol") or ""), df)


# ---------------------------------------------------------------------------- reading files in blocks


class _Whole(Exception):
    """A block the block reader does not decide alone (a broken rule, a timestamp format that could
    depend on the other blocks, an order across blocks): the whole-file loader decides instead."""


def _raw_blocks(path: Path, rows: int) -> Iterator[pd.DataFrame]:
    """The file's data rows as read (no conversion), ``rows`` at a time, labelled by data row - 1.

    The same bounds as :func:`aitrader.data.loader.load_bars`: regular files only, at most
    ``max_read_bytes`` (after decompression) read."""
    name = path.name.lower()
    if not name.endswith(SUPPORTED_SUFFIXES):
        raise _Whole("unsupported file type")
    info = require_regular_file(path)
    limit = max_read_bytes()
    offset = 0
    if name.endswith(PARQUET_SUFFIXES):
        import pyarrow
        import pyarrow.parquet as pq

        if info.st_size > limit:
            raise _Whole("too big")
        pf = pq.ParquetFile(path, buffer_size=1 << 16, pre_buffer=False)  # pages streamed, not whole row groups
        meta = pf.metadata
        if sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)) > limit:
            raise _Whole("too big")
        try:
            for batch in pf.iter_batches(batch_size=rows, use_threads=False):
                df = batch.to_pandas()
                if isinstance(df.index, pd.DatetimeIndex) or df.index.name is not None:
                    df = df.reset_index()
                df.index = pd.RangeIndex(offset, offset + len(df))
                offset += len(df)
                yield df
        finally:
            pf.close()
            # The reader's column pages (~14 MB for a 1M-row row group) go back to the system now: pyarrow's
            # default pool (mimalloc) would keep them resident through the replay that follows.
            pyarrow.default_memory_pool().release_unused()
        return
    if not is_compressed(path) and info.st_size > limit:
        raise _Whole("too big")
    with open_bounded(path, limit) as handle:
        with pd.read_csv(handle, engine="c", skipinitialspace=True, chunksize=rows, **_EXACT_FLOATS) as reader:
            for df in reader:
                df.index = pd.RangeIndex(offset, offset + len(df))
                offset += len(df)
                yield df


def _block_timestamps(col: pd.Series) -> tuple[pd.Series, str]:
    """Parsed stamps of one block and the rule that read them, which must be the same in every block.

    Only rules that read each cell on its own qualify: stamps stored as datetimes, epoch numbers (the
    unit, guessed from the magnitude, must agree between blocks), YYYYMMDD numbers and ISO 8601 text
    with one offset. Anything else (other formats, inferred from the first cell; mixed offsets,
    converted to UTC; unreadable cells) is left to the whole-file parse.
    """
    if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(col.dtype):
        parsed, rule = col, "datetime"
    elif pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        values = col.to_numpy(dtype="float64", na_value=np.nan)
        if not np.isfinite(values).all():
            raise _Whole("empty or infinite stamps")
        parsed, rule = parse_timestamps(col), "number:" + numeric_time_kind(values)
    else:
        text = col.astype("string")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                parsed = pd.to_datetime(text, format="ISO8601")
        except (ValueError, TypeError, OverflowError, Warning) as exc:
            raise _Whole("not ISO 8601 with one offset") from exc
        rule = "iso"
        parsed = pd.Series(parsed.to_numpy(), index=col.index) if not isinstance(parsed, pd.Series) else parsed
    try:
        parsed = parsed.dt.as_unit("ns").set_axis(col.index)
    except (ValueError, OverflowError) as exc:
        raise _Whole("out of range") from exc
    if parsed.isna().any():
        raise _Whole("unreadable stamps")
    return parsed, f"{rule}:{parsed.dtype}"


#: What makes the first read hand a file to the whole-file loader, which words the error (or, for a
#: file it reads in another way, returns its bars).
_WHOLE: tuple[type[BaseException], ...] = (_Whole, DataError, ValueError, TypeError, KeyError, OSError, *CORRUPT_ERRORS)


class _Block(NamedTuple):
    """One block's validated bars of one symbol."""

    symbol: str | None
    ns: np.ndarray  # int64 stamps (UTC ns when tz-aware)
    values: np.ndarray  # (5, n) open, high, low, close, volume
    rule: str  # how the stamps were read (must agree between blocks)
    adjusted: bool  # prices multiplied by adj_close / close
    tz: Any


class _Spill:
    """The validated prices of one scan, block after block, in an unlinked temporary file.

    :meth:`write` appends a ``(5, n)`` float64 block and returns its byte offset; :meth:`read` reads
    one back with ``os.preadv`` (positional: readers on several threads never share a file position).
    The file is closed (and its space freed) when the spill is garbage, or when the process ends."""

    __slots__ = ("_file", "_fd", "size", "__weakref__")

    def __init__(self) -> None:
        self._file: Any = None
        self._fd = -1
        self.size = 0

    def write(self, values: np.ndarray) -> int:
        if not hasattr(os, "pwrite"):  # no positional file I/O (Windows): the whole-file loader instead
            raise OSError("positional file reads and writes (os.pwrite) are not available on this system")
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="aitrader-bars-")  # noqa: SIM115 - closed by the finalizer
            self._fd = self._file.fileno()
            weakref.finalize(self, self._file.close)
        at = self.size
        data = np.ascontiguousarray(values, dtype=np.float64).data.cast("B")
        done = 0
        while done < len(data):
            done += os.pwrite(self._fd, data[done:], at + done)
        self.size += len(data)
        return at

    def read(self, at: int, n: int) -> np.ndarray:
        out = np.empty((5, n))
        view = out.data.cast("B")
        done = 0
        while done < len(view):
            if hasattr(os, "preadv"):  # straight into the array
                got = os.preadv(self._fd, [view[done:]], at + done)
            else:
                chunk = os.pread(self._fd, len(view) - done, at + done)
                view[done:done + len(chunk)] = chunk
                got = len(chunk)
            if got <= 0:
                raise DataError(f"the spill file of the scanned bars ended early ({at + done} of {self.size} bytes); "
                                "check the free space of the temporary directory (TMPDIR) and run again")
            done += got
        return out


class _Track:
    """What the first pass keeps of one symbol: its stamps, where its prices were spilled, and how the
    stamps were read."""

    __slots__ = ("parts", "spill", "spilled", "last", "rule", "tz", "rows", "adjusted", "close", "zeros", "returns",
                 "split")

    def __init__(self, spill: _Spill) -> None:
        self.parts: list[np.ndarray] = []
        self.spill = spill
        self.spilled: list[tuple[int, int]] = []  # (byte offset in the spill, rows) of each block, in order
        self.last: int | None = None
        self.rule: str | None = None
        self.tz: Any = None
        self.rows = 0
        self.adjusted = False
        # what the data warnings (aitrader.data.suspect) are decided from
        self.close: float | None = None
        self.zeros = self.returns = 0
        self.split = False

    def add(self, ns: np.ndarray, values: np.ndarray) -> None:
        if self.last is not None and ns[0] <= self.last:
            raise _Whole("unsorted or duplicate across blocks")
        self.last = int(ns[-1])
        self.parts.append(ns)
        try:
            self.spilled.append((self.spill.write(values), len(ns)))
        except OSError as exc:  # no space or no temporary directory: the whole-file loader holds the bars instead
            log.warning("cannot spill the scanned bars to the temporary directory (%s); reading the file whole "
                        "into memory instead (set TMPDIR to a folder with room for 40 bytes a bar)", exc)
            raise _Whole("cannot spill") from exc
        self.rows += len(ns)
        close = values[3] if self.close is None else np.concatenate(([self.close], values[3]))
        if len(close) > 1:
            diff = np.diff(close)
            self.zeros += int((diff == 0.0).sum())
            self.returns += len(diff)
            self.split = self.split or bool(split_candidates(close))
        self.close = float(values[3][-1])

    def suspect(self) -> bool:
        """Would :func:`aitrader.data.suspect.find_warnings` warn about these bars?"""
        quantised = self.returns >= QUANTISED_MIN_RETURNS and self.zeros / self.returns > QUANTISED_SHARE
        return quantised or (self.split and not self.adjusted)


def _validated_blocks(path: Path, source: str, rows: int) -> Iterator[_Block]:
    """:class:`_Block` s per block of the file and symbol (every symbol of a long file): the bars
    :func:`aitrader.data.validate.validate` keeps. Raises :class:`_Whole` on anything the whole-file
    loader must decide."""
    cols: dict[str, str] | None = None
    for df in _raw_blocks(path, rows):
        if cols is None:
            if df.columns.duplicated().any():
                raise _Whole("duplicate columns")
            try:
                cols = _map_columns(df, source)
            except DataError as exc:
                raise _Whole(str(exc)) from exc
        rules: list[str] = []
        raw = raw_frame(df, source, cols, parse=partial(_record, rules=rules))
        groups: list[tuple[str | None, pd.Index]]
        if "symbol" in raw.frame.columns:
            sym = raw.frame["symbol"]
            if (sym.isna() | (sym == "")).any():
                raise _Whole("empty symbol cell")
            groups = [(str(k), v) for k, v in sorted(raw.frame.groupby("symbol", sort=True).groups.items())]
        else:
            groups = [(None, raw.frame.index)]
        for sym_name, labels in groups:
            where = source if sym_name is None else f"{source} [{sym_name}]"
            checked = validate(raw, labels, where=where)
            if checked.problems:
                raise _Whole(checked.problems[0].message)
            bars, adjusted = checked.bars, checked.adjusted
            stamps = pd.DatetimeIndex(bars.index)
            ns = np.asarray(stamps.asi8, dtype=np.int64)
            values = np.ascontiguousarray(np.vstack([bars[c].to_numpy(dtype="float64") for c in _COLUMNS]))
            yield _Block(sym_name, ns, values, rules[0], adjusted, stamps.tz)


def _record(col: pd.Series, rules: list[str]) -> pd.Series:
    parsed, rule = _block_timestamps(col)
    rules.append(rule)
    return parsed


def _first_pass(path: Path, source: str) -> tuple[dict[str | None, _Track], bool]:
    """Every symbol's stamps; a problem anywhere (or across blocks) raises :class:`_Whole`. Also says
    whether the file has a symbol column."""
    tracks: dict[str | None, _Track] = {}
    spill = _Spill()  # one file for every symbol of the file
    for b in _validated_blocks(path, source, READ_ROWS):
        t = tracks.get(b.symbol)
        if t is None:
            t = tracks[b.symbol] = _Track(spill)
        if t.rule is None:
            t.rule, t.tz = b.rule, b.tz
        elif t.rule != b.rule:
            raise _Whole("stamps read by another rule in a later block")
        t.adjusted = b.adjusted
        if len(b.ns):
            t.add(b.ns, b.values)
    if not tracks or any(t.rows == 0 for t in tracks.values()):
        raise _Whole("no rows")
    return tracks, None not in tracks


def _index(track: _Track) -> pd.DatetimeIndex:
    """The stamps as one index, built without a second whole-length copy: the parts are moved into one
    array (each freed once copied) and the index is a view of it (the epoch integers read as UTC)."""
    ns = np.empty(sum(len(p) for p in track.parts), dtype=np.int64)
    pos = 0
    while track.parts:
        part = track.parts.pop(0)
        ns[pos:pos + len(part)] = part
        pos += len(part)
    if track.tz is None:
        return pd.DatetimeIndex(ns.view("M8[ns]"), name="timestamp", copy=False)
    utc = pd.DatetimeIndex(ns, dtype=pd.DatetimeTZDtype("ns", "UTC"), name="timestamp", copy=False)
    return utc.tz_convert(track.tz)


def _reader(track: _Track) -> Callable[[int, int, int], Iterator[Block]]:
    """Blocks of the track's validated bars, read back from the spill (a block at a time)."""
    spill, spilled = track.spill, track.spilled

    def read(lo: int, hi: int, size: int) -> Iterator[Block]:
        pos = 0
        for at, n in spilled:
            if pos + n <= lo:
                pos += n
                continue
            if pos >= hi:
                return
            values = spill.read(at, n)
            a, b = max(lo, pos), min(hi, pos + n)
            for start in range(a, b, size):
                stop = min(start + size, b)
                yield start, np.ascontiguousarray(values[:, start - pos:stop - pos])
            pos += n

    return read


def _bar_file(path: Path, symbol: str, track: _Track, where: str) -> BarFile:
    index = _index(track)  # takes the stamps out of the track
    reader = _reader(track)
    bf = BarFile(symbol, str(path), index, reader, {"repaired_rows": 0})
    if track.suspect():
        # a file that shows a data warning is read back whole once, to word it as load_bars does
        for warning in find_warnings(bf.frame(), where=where, adjusted=track.adjusted):
            log.warning("%s (see `aitrader data check`)", warning.message)
    return bf


def scan_bars(path: str | Path, *, symbol: str | None = None) -> BarFile:
    """:func:`aitrader.data.load_bars` (without repair) held as a :class:`BarFile`: the same bars and
    the same errors, only the stamps kept in memory. A file the block reader cannot decide alone (a
    broken rule, other timestamp formats) is loaded whole by ``load_bars`` and wrapped."""
    path = Path(path)
    started = time.perf_counter()
    target, picked = path, symbol
    if path.is_dir():
        files = bar_files(path)
        by_symbol = {file_symbol(f): f for f in files}
        if symbol is None:
            if len(files) > 1:
                return BarFile.from_frame_of(load_bars(path, symbol=symbol))  # its error
            target = files[0]
        else:
            picked = _pick(list(by_symbol), symbol, str(path))
            target = by_symbol[picked]
    if not target.is_file():
        return BarFile.from_frame_of(load_bars(path, symbol=symbol))
    source = target.name
    try:
        tracks, long = _first_pass(target, source)
        if long:
            names = [str(k) for k in tracks]
            if picked is None and len(names) > 1:
                raise _Whole("several symbols")
            picked = names[0] if picked is None else _pick(names, picked, source)
            track, where = tracks[picked], f"{source} [{picked}]"
        else:
            picked = picked or file_symbol(target)
            track, where = tracks[None], source
    except _WHOLE:
        return BarFile.from_frame_of(load_bars(path, symbol=symbol))
    bf = _bar_file(target, picked, track, where)
    log.info("%s: scanned %d bars, %s .. %s, in %.2f s (held: their stamps; prices spilled)", where, len(bf),
             bf.index[0], bf.index[-1], time.perf_counter() - started)
    return bf


def scan_universe(path: str | Path) -> dict[str, BarFile]:
    """:func:`aitrader.data.load_universe` (without repair) as :class:`BarFile` s, sorted by symbol."""
    path = Path(path)
    out: dict[str, BarFile] = {}
    try:
        if path.is_dir():
            for f in bar_files(path):
                tracks, long = _first_pass(f, f.name)
                if long and len(tracks) > 1:
                    raise _Whole("several symbols in one file of a directory")
                key = next(iter(tracks))
                sym = file_symbol(f)
                out[sym] = _bar_file(f, sym, tracks[key], f.name)
        elif path.is_file():
            tracks, long = _first_pass(path, path.name)
            for key, track in tracks.items():
                sym = file_symbol(path) if key is None else key
                where = path.name if key is None else f"{path.name} [{key}]"
                out[sym] = _bar_file(path, sym, track, where)
        else:
            raise _Whole("not a file or directory")
    except _WHOLE:
        return {s: BarFile.from_frame_of(df) for s, df in load_universe(path).items()}
    return dict(sorted(out.items()))


def scan_data_items(items: list[str]) -> tuple[dict[str, BarFile], bool]:
    """:func:`aitrader.data.load_data_items` as :class:`BarFile` s (``SYMBOL=PATH``, files, directories)."""
    found: dict[str, BarFile] = {}
    explicit = False
    for item in items:
        sym, sep, path = item.partition("=")
        if sep and not Path(item).exists():
            found[sym] = scan_bars(path, symbol=sym)
            found[sym].symbol = sym
            explicit = True
        else:
            found.update(scan_universe(item))
    return found, explicit
