"""Loading bars of one symbol or a universe, fingerprinting them, writing them atomically."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aitrader._util import atomic_path
from aitrader.data._read import BAR_COLUMNS, RawFrame, file_symbol, is_bar_file, read_raw
from aitrader.data.suspect import find_warnings
from aitrader.data.validate import Problem, Validated, validate
from aitrader.errors import DataError

log = logging.getLogger(__name__)


def problems_message(problems: list[Problem]) -> str:
    """One line per broken rule, each with the file, the first offending row and the fix."""
    return "\n".join(p.message for p in problems)


def bar_files(directory: Path) -> list[Path]:
    """The bar files of a directory (sorted by name); an empty or non-bar directory is a DataError."""
    files = sorted(p for p in directory.iterdir() if is_bar_file(p))
    if not files:
        raise DataError(
            f"{directory}: no bar files in the directory; expected one .csv, .csv.gz or .parquet per symbol"
        )
    symbols: dict[str, Path] = {}
    for f in files:
        sym = file_symbol(f)
        if sym in symbols:
            raise DataError(f"{directory}: {symbols[sym].name} and {f.name} are both symbol {sym}; keep one")
        symbols[sym] = f
    return files


def symbol_groups(raw: RawFrame) -> dict[str, pd.Index]:
    """Row labels of each symbol in a long file (symbols sorted)."""
    sym = raw.frame["symbol"]
    empty = sym.isna() | (sym == "")
    if empty.any():
        row = int(sym.index[int(empty.to_numpy().argmax())]) + 1
        raise DataError(f"{raw.source}: row {row}: the symbol cell is empty; fill it or remove the row")
    return {str(k): v for k, v in sorted(raw.frame.groupby("symbol", sort=True).groups.items())}


def _pick(available: list[str], symbol: str, where: str) -> str:
    if symbol in available:
        return symbol
    folded = {s.upper(): s for s in available}
    if symbol.upper() in folded:
        return folded[symbol.upper()]
    raise DataError(f"{where}: symbol {symbol!r} not found; available: {', '.join(available)}")


def finish(validated: Validated, *, symbol: str, source: str, repair: bool, where: str) -> pd.DataFrame:
    """Raise on problems (unless repairing), log repairs, and set the contract's ``attrs``."""
    if validated.problems and not repair:
        raise DataError(problems_message(validated.problems))
    bars = validated.bars
    if bars.empty:
        raise DataError(
            f"{where}: no valid rows left after repair ({validated.rows_in_file} rows in the file were "
            "dropped); fix the file"
        )
    if validated.repaired_rows:
        detail = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in validated.repairs.items() if v)
        log.warning("%s: repaired %d row(s): %s", where, validated.repaired_rows, detail)
    for warning in find_warnings(bars, where=where, adjusted=validated.adjusted):
        log.warning("%s (see `aitrader data check`)", warning.message)
    bars.attrs = {"symbol": symbol, "source": source, "repaired_rows": validated.repaired_rows}
    return bars


def load_bars(path: str | Path, *, symbol: str | None = None, repair: bool = False) -> pd.DataFrame:
    """Load the bars of one symbol from a CSV/CSV.gz/parquet file or a directory of such files.

    A long file (with a ``symbol``/``ticker`` column) holding several symbols needs ``symbol``; in a
    directory, ``symbol`` picks the file named after it. Without ``repair`` any broken validation
    rule is a :class:`DataError` naming the file, the first offending row and the fix; with it,
    what can be repaired is (see :mod:`aitrader.data.validate`) and ``attrs["repaired_rows"]`` counts
    the rows touched. See docs/architecture.md for the returned frame.
    """
    started = time.perf_counter()
    path = Path(path)
    if path.is_dir():
        files = bar_files(path)
        by_symbol = {file_symbol(f): f for f in files}
        if symbol is None:
            if len(files) > 1:
                raise DataError(
                    f"{path}: {len(files)} symbols in the directory ({', '.join(by_symbol)}); "
                    "pass symbol (--symbol) to pick one"
                )
            path = files[0]
        else:
            symbol = _pick(list(by_symbol), symbol, str(path))  # the file's spelling, as in a long file
            path = by_symbol[symbol]
    raw = read_raw(path)
    labels = raw.frame.index
    where = raw.source
    if "symbol" in raw.frame.columns:
        groups = symbol_groups(raw)
        if symbol is None and len(groups) > 1:
            raise DataError(
                f"{raw.source}: {len(groups)} symbols in the file ({', '.join(groups)}); "
                "pass symbol (--symbol) to pick one"
            )
        symbol = next(iter(groups)) if symbol is None else _pick(list(groups), symbol, raw.source)
        labels = groups[symbol]
        where = f"{raw.source} [{symbol}]"
    symbol = symbol or file_symbol(path)
    bars = finish(validate(raw, labels, where=where), symbol=symbol, source=str(path), repair=repair, where=where)
    log.info("%s: loaded %d bars, %s .. %s, in %.2f s", where, len(bars), bars.index[0], bars.index[-1],
             time.perf_counter() - started)
    return bars


def load_data_items(items: list[str]) -> tuple[dict[str, pd.DataFrame], bool]:
    """``--data`` items as validated frames by symbol: ``SYMBOL=PATH`` (that symbol), or a file or a
    directory (:func:`load_universe`). Also says whether any item named its symbol explicitly."""
    frames: dict[str, pd.DataFrame] = {}
    explicit = False
    for item in items:
        sym, sep, path = item.partition("=")
        if sep and not Path(item).exists():
            frames[sym] = load_bars(path, symbol=sym)
            explicit = True
        else:
            frames.update(load_universe(item))
    return frames, explicit


def load_universe(path: str | Path, *, repair: bool = False) -> dict[str, pd.DataFrame]:
    """Bars of every symbol: a directory (symbol = file name without suffixes), a long file with a
    ``symbol``/``ticker`` column, or a single file (one symbol named after it). Sorted by symbol.

    Every symbol is validated before anything is returned; the DataError lists the problems of all
    symbols.
    """
    path = Path(path)
    results: dict[str, Validated] = {}
    wheres: dict[str, tuple[str, str]] = {}
    if path.is_dir():
        for f in bar_files(path):
            sym = file_symbol(f)
            raw = read_raw(f)
            if "symbol" in raw.frame.columns and len(symbol_groups(raw)) > 1:
                raise DataError(
                    f"{f.name}: several symbols in one file of a directory; a directory holds one file per "
                    "symbol (or pass the long file itself)"
                )
            results[sym] = validate(raw)
            wheres[sym] = (raw.source, str(f))
    else:
        raw = read_raw(path)
        if "symbol" in raw.frame.columns:
            for sym, labels in symbol_groups(raw).items():
                where = f"{raw.source} [{sym}]"
                results[sym] = validate(raw, labels, where=where)
                wheres[sym] = (where, str(path))
        else:
            sym = file_symbol(path)
            results[sym] = validate(raw)
            wheres[sym] = (raw.source, str(path))
    problems = [p for v in results.values() for p in v.problems]
    if problems and not repair:
        raise DataError(problems_message(problems))
    log.info("%s: loaded %d symbol(s), %d bars", path, len(results), sum(len(v.bars) for v in results.values()))
    return {
        sym: finish(v, symbol=sym, source=wheres[sym][1], repair=repair, where=wheres[sym][0])
        for sym, v in results.items()
    }


def infer_interval(index: pd.DatetimeIndex) -> pd.Timedelta | None:
    """The most common positive spacing of ``index`` (the bar interval); None under two bars."""
    if len(index) < 2:
        return None
    diffs = np.diff(index.as_unit("ns").asi8)
    diffs = diffs[diffs > 0]
    if diffs.size == 0:
        return None
    values, counts = np.unique(diffs, return_counts=True)
    return pd.Timedelta(int(values[counts.argmax()]), unit="ns")  # ties: the smallest spacing


def bars_fingerprint(df: pd.DataFrame) -> str:
    """SHA256 of the bars: index as int64 UTC nanoseconds, the five float64 columns, the tz name.

    Independent of the index's resolution (us or ns) and of extra columns or ``attrs``.
    """
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataError(f"bars_fingerprint: expected a DatetimeIndex, got {type(df.index).__name__}")
    missing = [c for c in BAR_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"bars_fingerprint: missing column(s) {', '.join(missing)}; expected {BAR_COLUMNS}")
    h = hashlib.sha256()
    h.update(df.index.as_unit("ns").asi8.astype("<i8").tobytes())
    for col in BAR_COLUMNS:
        h.update(np.ascontiguousarray(df[col].to_numpy(dtype="float64"), dtype="<f8").tobytes())
    h.update(str(df.index.tz or "").encode())
    return h.hexdigest()


def write_bars(df: pd.DataFrame, path: str | Path) -> Path:
    """Write bars to CSV (``.csv``/``.csv.gz``) or parquet atomically (temp file, then rename)."""
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((".csv", ".csv.gz", ".parquet")):
        raise DataError(f"{path}: unsupported output type; use a .csv, .csv.gz or .parquet file name")
    try:
        with atomic_path(path) as tmp:
            out = df[list(BAR_COLUMNS)].rename_axis("timestamp")
            if name.endswith(".parquet"):
                out.to_parquet(tmp)
            else:
                out.to_csv(tmp, compression="gzip" if name.endswith(".gz") else None)
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}; pass a writable --out path") from exc
    return path
