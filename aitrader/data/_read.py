"""Reading bar files into a normalised raw frame: file formats, column spellings, timestamps.

Nothing here validates prices; that is :mod:`aitrader.data.validate`. The output of
:func:`read_raw` keeps every data row of the file, labelled 0..n-1, so that problems can be reported as a user
sees them: row numbers in messages count data rows from 1 and do not count the header, so in a
CSV row N is on line N + 1.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aitrader.data._open import (
    CORRUPT_ERRORS,
    corrupt,
    is_compressed,
    max_read_bytes,
    open_bounded,
    require_regular_file,
    too_big,
)
from aitrader.errors import DataError

PRICE_COLUMNS = ("open", "high", "low", "close")
BAR_COLUMNS = (*PRICE_COLUMNS, "volume")
CSV_SUFFIXES = (".csv", ".csv.gz", ".txt", ".txt.gz", ".csv.bz2", ".csv.zip", ".csv.xz")
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
SUPPORTED_SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES

# Accepted spellings after normalising a header (lower case, runs of space/-/. -> "_").
_ALIASES = {
    "open": ("open", "o", "open_price"),
    "high": ("high", "h", "high_price"),
    "low": ("low", "l", "low_price"),
    "close": ("close", "c", "close_price", "last"),
    "volume": ("volume", "v", "vol"),
    "adj_close": ("adj_close", "adjclose", "adjusted_close", "adj_close_price"),
    "symbol": ("symbol", "ticker"),
}
# Timestamp columns in order of preference.
_TIME_NAMES = ("timestamp", "datetime", "date_time", "date", "time", "ts", "open_time")


@dataclass
class RawFrame:
    """One file's rows with canonical column names; ``ts`` is parsed (NaT where unparseable)."""

    source: str  # the file name used in messages
    frame: pd.DataFrame  # columns: open high low close volume [adj_close] [symbol], float prices
    ts: pd.Series  # parsed timestamps (datetime64[ns] or tz-aware), NaT where unparseable
    ts_raw: pd.Series  # the timestamp cells as read, for messages
    original: pd.DataFrame  # the file as read, for quoting bad cells in messages
    columns: dict[str, str]  # canonical name -> column of ``original``

    def cell(self, label: int, name: str) -> object:
        """The cell as written in the file (row label = data row - 1)."""
        return self.original.at[label, self.columns[name]]


# pandas < 3 parses CSV floats with a fast parser that can be one ulp off (~16% of random prices);
# pandas 3 parses them exactly and deprecates the option. (metrics helper: found by the pandas 2.2 CI)
_EXACT_FLOATS: dict[str, Any] = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}


def file_symbol(path: Path) -> str:
    """Symbol from a file name: the name without its data suffixes (``AAPL.csv.gz`` -> ``AAPL``)."""
    name = path.name
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_bar_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(SUPPORTED_SUFFIXES)


def _normalise_name(name: object) -> str:
    return re.sub(r"[\s\-./]+", "_", str(name).strip().lower()).strip("_")


def _read_table(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    if not path.exists():
        raise DataError(f"{path}: file not found; pass an existing CSV, CSV.gz or parquet file")
    if not name.endswith(SUPPORTED_SUFFIXES):
        raise DataError(f"{path.name}: unsupported file type; expected one of {', '.join(SUPPORTED_SUFFIXES)}")
    info = require_regular_file(path)
    limit = max_read_bytes()
    try:
        if name.endswith(PARQUET_SUFFIXES):
            return _read_parquet(path, info.st_size, limit)
        return _read_csv(path, info.st_size, limit)
    except DataError:
        raise
    except CORRUPT_ERRORS as exc:
        raise corrupt(path, exc) from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path.name}: the file is empty; expected a header line and bar rows") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        detail = _first_line(exc)
        raise DataError(f"{path.name}: not a readable CSV file ({detail}); expected comma-separated bars") from exc
    except OSError as exc:
        if is_compressed(path) and exc.errno is None:  # bz2 and lzma report a damaged stream as OSError
            raise corrupt(path, exc) from exc
        raise DataError(f"{path.name}: cannot read the file: {exc.strerror or exc}") from exc
    except Exception as exc:
        # pyarrow raises its own error types for files that are not parquet.
        if type(exc).__module__.startswith("pyarrow"):
            raise DataError(f"{path.name}: not a readable parquet file ({_first_line(exc)})") from exc
        raise


def _read_csv(path: Path, size: int, limit: int) -> pd.DataFrame:
    # The C parser and default dtypes keep a million rows to about a second.
    if not is_compressed(path):
        if size > limit:
            raise too_big(path, limit)
        # a regular file: its size bounds it
        return pd.read_csv(path, engine="c", skipinitialspace=True, **_EXACT_FLOATS)
    with open_bounded(path, limit) as handle:
        try:
            return pd.read_csv(handle, engine="c", skipinitialspace=True, **_EXACT_FLOATS)
        except Exception as exc:
            if handle.exceeded:  # the parser may wrap our own error in its own
                raise too_big(path, limit) from exc
            raise


def _read_parquet(path: Path, size: int, limit: int) -> pd.DataFrame:
    import pyarrow.parquet as pq

    if size > limit:
        raise too_big(path, limit)
    # Parquet is compressed too: bound what its row groups decompress to before reading them.
    metadata = pq.ParquetFile(path).metadata
    unpacked = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if unpacked > limit:
        raise too_big(path, limit, "bytes of decompressed columns")
    df = pd.read_parquet(path)
    # A DatetimeIndex (or a named index) carries the timestamps: make it a column.
    if isinstance(df.index, pd.DatetimeIndex) or df.index.name is not None:
        df = df.reset_index()
    return df


def _map_columns(df: pd.DataFrame, source: str) -> dict[str, str]:
    """Canonical name -> column in ``df``; a missing required column is a DataError."""
    normalised = {_normalise_name(c): c for c in df.columns}
    found: dict[str, str] = {}
    for canonical, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in normalised:
                found[canonical] = normalised[alias]
                break
    for name in _TIME_NAMES:
        if name in normalised:
            found["timestamp"] = normalised[name]
            break
    # A separate date and time-of-day column pair is combined.
    if "date" in normalised and "time" in normalised and found.get("timestamp") == normalised["date"]:
        found["time_of_day"] = normalised["time"]
    missing = [c for c in ("timestamp", *BAR_COLUMNS) if c not in found]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, df.columns))}; "
            "expected a timestamp column (timestamp/datetime/date/time) and open, high, low, close, "
            "volume (any case; volume is required)"
        )
    return found


def _epoch_unit(values: np.ndarray) -> str:
    """Guess the unit of epoch numbers by magnitude (today is ~1.7e9 s, 1.7e12 ms, ...)."""
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 0.0
    if top < 1e11:
        return "s"
    if top < 1e14:
        return "ms"
    if top < 1e17:
        return "us"
    return "ns"


def numeric_time_kind(values: np.ndarray) -> str:
    """How numbers in a timestamp column are read: ``"yyyymmdd"`` or the epoch unit."""
    finite = values[np.isfinite(values)]
    # YYYYMMDD integers (e.g. 20200131) are dates, not seconds in 1970.
    if finite.size and finite.min() >= 1e7 and finite.max() < 1e8 and np.all(finite == np.round(finite)):
        return "yyyymmdd"
    return _epoch_unit(values)


def _parse_numeric_time(col: pd.Series) -> pd.Series:
    values = col.to_numpy(dtype="float64", na_value=np.nan)
    unit = numeric_time_kind(values)
    if unit == "yyyymmdd":
        as_text = pd.Series(np.where(np.isfinite(values), values, 0).astype("int64").astype(str))
        parsed = pd.to_datetime(as_text, format="%Y%m%d", errors="coerce")
        return parsed.where(pd.Series(np.isfinite(values)))
    # Epoch numbers are UTC instants by definition.
    return pd.to_datetime(pd.Series(values), unit=unit, utc=True, errors="coerce")  # type: ignore[call-overload]


def _parse_text_time(col: pd.Series) -> pd.Series:
    # Falling back to per-cell parsing is intended here (cells that still fail are reported as
    # `timestamp` problems): pandas' warning about it would only be noise on the user's stderr.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Could not infer format", category=UserWarning)
        return _parse_text_time_inner(col)


def _parse_text_time_inner(col: pd.Series) -> pd.Series:
    text = col.astype("string")
    for fmt in ("ISO8601", None):
        try:
            with warnings.catch_warnings():
                # pandas 2.2 only warns about mixed offsets (and returns objects); pandas 3 raises.
                warnings.filterwarnings("error", message=".*mixed time zones", category=FutureWarning)
                return pd.to_datetime(text, format=fmt)
        except (ValueError, FutureWarning) as exc:
            if "Mixed timezones" in str(exc) or "mixed time" in str(exc).lower():
                # Several offsets (e.g. across DST) cannot share one zone: convert to UTC.
                try:
                    return pd.to_datetime(text, format=fmt, utc=True)
                except ValueError:
                    continue
        except (TypeError, OverflowError):
            continue
    # Some cells are unparseable: keep the parse that reads the most cells, NaT for the rest.
    best: pd.Series | None = None
    for fmt in ("ISO8601", None):
        try:
            candidate = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
        except ValueError:
            continue
        if best is None or candidate.notna().sum() > best.notna().sum():
            best = candidate
    if best is None:
        return pd.Series(pd.NaT, index=col.index, dtype="datetime64[ns]")
    # Without offsets in the readable cells the stamps were naive: keep them naive.
    has_offset = text.str.contains(r"(?:[+-]\d\d:?\d\d|Z)\s*$", regex=True, na=False).any()
    return best if has_offset else best.dt.tz_localize(None)


def parse_timestamps(col: pd.Series) -> pd.Series:
    """Parse a timestamp column: ISO strings, dates, other date formats, epoch s/ms/us/ns numbers.

    Unparseable cells become NaT (the caller reports them). Time zones are kept: one offset or
    zone stays as it is, a mix of offsets is converted to UTC, epoch numbers are UTC.
    """
    if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(col.dtype):
        parsed = col
    elif pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        parsed = _parse_numeric_time(col)
    else:
        parsed = _parse_text_time(col)
    parsed = pd.Series(parsed.to_numpy(), index=col.index) if not isinstance(parsed, pd.Series) else parsed
    try:
        return parsed.dt.as_unit("ns")
    except (ValueError, OverflowError) as exc:
        raise DataError(
            f"timestamps outside 1677-2262 cannot be represented ({exc}); fix the timestamp column"
        ) from exc


def _first_line(exc: BaseException) -> str:
    """Library messages can span lines (pyarrow prints schemas): an error stays one line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_raw(path: Path, *, source: str | None = None) -> RawFrame:
    """Read one file into canonical columns with parsed timestamps (no validation yet)."""
    source = source or path.name
    # A RangeIndex makes every label its data row number minus one, through any subsetting.
    df = _read_table(path).reset_index(drop=True)
    if len(df) == 0:
        raise DataError(f"{source}: no data rows (only a header); expected bars below the header line")
    duplicated = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if duplicated:  # parquet allows them (CSV headers are de-duplicated by the parser)
        raise DataError(f"{source}: duplicate column name(s) {', '.join(duplicated)}; keep one column of each")
    return raw_frame(df, source, _map_columns(df, source))


def raw_frame(df: pd.DataFrame, source: str, cols: dict[str, str],
              parse: Callable[[pd.Series], pd.Series] | None = None) -> RawFrame:
    """Canonical columns and parsed timestamps of rows ``df`` of a file (``cols``: :func:`_map_columns`).

    ``parse`` replaces :func:`parse_timestamps` (:mod:`aitrader.data.stream` parses a block with rules
    that cannot depend on the other blocks).
    """
    column, kind = cols["timestamp"], "timestamps"
    try:
        ts_raw = df[column]
        if "time_of_day" in cols:
            ts_raw = ts_raw.astype("string") + " " + df[cols["time_of_day"]].astype("string")
        ts = (parse or parse_timestamps)(ts_raw)
        out = pd.DataFrame(index=df.index)
        for name in (*BAR_COLUMNS, "adj_close"):
            if name in cols:
                column, kind = cols[name], "numbers"
                # Non-numeric cells become NaN and are reported as missing prices by the validator.
                out[name] = pd.to_numeric(df[column], errors="coerce").astype("float64")
        if "symbol" in cols:
            column, kind = cols["symbol"], "text"
            out["symbol"] = df[column].astype("string").str.strip()
    except DataError as exc:
        raise DataError(f"{source}: column {column}: {exc}") from exc
    except (TypeError, ValueError, OverflowError, UnicodeDecodeError) as exc:
        # Cells of a type no bar column has (bytes, lists, structs in parquet).
        raise DataError(
            f"{source}: column {column} cannot be read as {kind} ({type(exc).__name__}: {_first_line(exc)}); "
            "store it as text or numbers"
        ) from exc
    return RawFrame(source=source, frame=out, ts=ts, ts_raw=ts_raw, original=df, columns=cols)
