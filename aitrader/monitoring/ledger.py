"""Read-only access to a paper-trading run's ledger (``runs/RUN_ID/ledger.db``).

The schema is the contract in docs/architecture.md (tables meta, predictions, events, equity...).
The ledger is opened read-only (``mode=ro``) so that monitoring a live run never blocks or
modifies the trader, and a missing file is an error rather than a new empty database.

Feature vectors are the bulk of a ledger (~90%). ``read_ledger(..., features=False)`` leaves them
in the file; :func:`iter_feature_chunks` is the ONE place that reads and decodes them, a chunk of
rows at a time (bounded memory: no per-row Python lists for the whole run), and
:func:`feature_rows` gathers the rows a caller selected into one float matrix.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aitrader.errors import TradingError
from aitrader.trading.ledger import PREDICTION_COLUMNS, equity_rows, ledger_state, prediction_rows, validate_run_id

if TYPE_CHECKING:  # pandas is imported where frames are built: the streamed monitor reads the ledger without it
    import pandas as pd

LEDGER_NAME = "ledger.db"
DEFAULT_RUNS_DIR = "runs"
#: Rows read at a time: a chunk of JSON feature vectors decodes into ~2.5 KB of Python objects per
#: row before it becomes a float matrix, so 10k rows peak at ~25 MB whatever the run's length.
FEATURE_CHUNK = 10_000


def resolve_run(runs_dir: str | Path = DEFAULT_RUNS_DIR, run_id: str | None = None) -> Path:
    """The folder of ``run_id``, or of the most recently modified run when ``run_id`` is None."""
    root = Path(runs_dir)
    if run_id is not None:
        run = root / validate_run_id(run_id, "--run")
        state = ledger_state(run / LEDGER_NAME)
        if state == "empty":
            raise TradingError(f"run {run_id!r} was stopped before it started (its ledger is empty); start it again "
                               f"with aitrader paper-trade --run-id {run_id}, or pass another --run")
        if state == "missing":
            recent = _started_runs(root)
            recent.sort(key=lambda p: ((p / LEDGER_NAME).stat().st_mtime, p.name), reverse=True)
            hint = f"; recent runs: {', '.join(p.name for p in recent[:5])}" if recent else ""
            raise TradingError(
                f"run {run_id!r} not found: no {run / LEDGER_NAME}{hint}; pass an existing --run, "
                "or --latest, or point --runs-dir at the folder holding the runs"
            )
        return run
    runs = _started_runs(root)
    if not runs:
        raise TradingError(
            f"no runs found under {root}/ (no */{LEDGER_NAME}); start one with `aitrader paper-trade` "
            "or pass --runs-dir"
        )
    # The ledger is written on every bar, so its mtime says which run was active last.
    return max(runs, key=lambda p: ((p / LEDGER_NAME).stat().st_mtime, p.name))


def _started_runs(root: Path) -> list[Path]:
    """Run folders under ``root`` whose ledger holds a run (a run killed before its first commit is skipped)."""
    runs = [p.parent for p in root.glob(f"*/{LEDGER_NAME}")] if root.is_dir() else []
    return [p for p in runs if ledger_state(p / LEDGER_NAME) != "empty"]


@dataclass
class Ledger:
    """What monitoring needs from one run, already decoded."""

    run_dir: Path
    meta: dict[str, Any]
    predictions: pd.DataFrame  # the predictions table, ts parsed
    events: pd.DataFrame  # persisted events (ML_ERROR, RISK_REJECTED, ALERT), payload decoded
    equity: pd.DataFrame  # bar_index, ts, cash, equity
    tables: set[str] = field(default_factory=set)
    # True when the predictions table has a features column that was left in the file (read it
    # with feature_rows); False when it was loaded into ``predictions`` or does not exist.
    features_in_file: bool = False

    @property
    def has_features(self) -> bool:
        return self.features_in_file or "features" in self.predictions.columns

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id") or self.run_dir.name)

    @property
    def models(self) -> list[dict[str, Any]]:
        models = self.meta.get("models") or []
        return [m for m in models if isinstance(m, dict)]


def _decode(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value  # a plain string stored without JSON quoting


def _read_table(conn: sqlite3.Connection, name: str, tables: set[str], columns: list[str],
                skip: tuple[str, ...] = (), convert: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
                shared: tuple[str, ...] = ()) -> pd.DataFrame:
    """The table in rowid order, read :data:`FEATURE_CHUNK` rows at a time; ``convert`` types each
    chunk (so no column of the whole table is held as Python objects), and the strings of the
    ``shared`` columns (model ids, digests: a few distinct values) are one object per value."""
    import pandas as pd

    if name not in tables:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    cols = [c for c in _table_columns(conn, name) if c not in skip]
    select = ", ".join(f'"{c}"' for c in cols)
    cur = conn.execute(f"SELECT {select} FROM {name} ORDER BY rowid")
    chunks = []
    seen: dict[Any, Any] = {}
    while rows := cur.fetchmany(FEATURE_CHUNK):
        # One array per column (not one 2-D object block whose views would keep every row's Python
        # objects alive after the numeric columns are converted).
        values = list(zip(*rows, strict=True))
        del rows
        data: dict[str, Any] = {}
        for col, column in zip(cols, values, strict=True):
            if col in shared:
                column = tuple(seen.setdefault(v, v) for v in column)
            data[col] = np.array(column, dtype=object)
        del values
        part = pd.DataFrame(data, columns=cols, copy=False)
        chunks.append(convert(part) if convert is not None else part)
    if not chunks:
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
        return convert(empty) if convert is not None else empty
    return pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]


def _numeric_predictions(df: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    for col in ("prediction", "confidence", "latency_us", "outcome"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    return df


def _typed_predictions(df: pd.DataFrame, features: bool) -> pd.DataFrame:
    if not features:
        df = df.drop(columns=[c for c in NOT_MONITORED if c in df.columns])
    return _numeric_predictions(df)


def _typed_equity(df: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    if len(df):
        df["equity"] = pd.to_numeric(df["equity"], errors="coerce").astype(float)
        df["ts"] = pd.to_datetime(df["ts"], utc=True, format="ISO8601")
    return df


#: predictions columns monitor_ledger does not read: left out by ``read_ledger(features=False)``.
NOT_MONITORED = ("features", "id", "ts", "bar_index", "symbol", "confidence", "outcome_ts")


def _table_columns(conn: sqlite3.Connection, name: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({name})")]


def open_ledger(path: Path) -> sqlite3.Connection:
    """A read-only connection to a ledger file."""
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        raise TradingError(f"cannot open ledger {path}: {exc}; check the file's permissions") from exc


def open_run_ledger(run: Path) -> tuple[Path, sqlite3.Connection]:
    """The ledger file of a run folder and a read-only connection to it (TradingError if none)."""
    path = run / LEDGER_NAME
    if not path.is_file():
        raise TradingError(f"no ledger at {path}; pass the folder of a paper-trade run")
    return path, open_ledger(path)


def ledger_tables(conn: sqlite3.Connection, path: Path) -> set[str]:
    """The ledger's table names, or TradingError when the file is not an aitrader ledger."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" not in tables or "predictions" not in tables:
        raise TradingError(
            f"{path} is not an aitrader ledger (tables found: {sorted(tables) or 'none'}; "
            "expected meta and predictions); pass the folder of a paper-trade run"
        )
    return tables


def read_ledger(run_dir: str | Path, *, features: bool = True) -> Ledger:
    """Load the meta, predictions, events and equity tables of one run.

    With ``features=False`` (what ``monitor`` does) the predictions' feature vectors stay in the
    file (``features_in_file``) to be read in chunks by :func:`feature_rows`, and the columns that
    monitoring does not read (:data:`NOT_MONITORED`) are left out: a few dozen bytes per row remain.
    """
    import pandas as pd

    run = Path(run_dir)
    path, conn = open_run_ledger(run)
    in_file = False
    try:
        tables = ledger_tables(conn, path)
        meta = {k: _decode(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        # Both storage formats (old table rows with JSON features, columnar blocks) decoded alike.
        # features=False (monitor): the vectors stay in the file, read block by block by
        # iter_feature_chunks; features=True: lists of floats (or None, or a damaged row's text).
        in_file = not features and (
            "prediction_blocks" in tables or "features" in _table_columns(conn, "predictions"))
        preds = _typed_predictions(pd.DataFrame(prediction_rows(conn, features="list" if features else "none"),
                                                columns=list(PREDICTION_COLUMNS), dtype=object), features)
        events = _read_table(conn, "events", tables, ["ts", "type", "symbol", "model_id", "reason", "payload"])
        equity = _typed_equity(pd.DataFrame(equity_rows(conn), columns=["bar_index", "ts", "cash", "equity"],
                                            dtype=object))
    except (sqlite3.DatabaseError, zlib.error, ValueError) as exc:
        raise TradingError(f"cannot read ledger {path}: {exc}; the file is damaged or not SQLite") from exc
    finally:
        conn.close()
    if "payload" in events.columns:
        events["payload"] = events["payload"].map(_decode)
    if len(equity):
        equity = equity.sort_values("ts").reset_index(drop=True)
    return Ledger(run_dir=run, meta=meta, predictions=preds, events=events, equity=equity, tables=tables,
                  features_in_file=in_file)


def iter_feature_chunks(conn: sqlite3.Connection, n_features: int, *,
                        chunk: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(position of the first row, float matrix)`` per chunk of predictions, in id order (positions
    count rows from 0, as ``read_ledger``'s predictions index does): the old table ``chunk`` rows at a
    time, then one chunk per checkpoint block (docs/trading.md, *Blocks*).

    The one function that reads and decodes the stored feature vectors: a change of the ledger's
    feature format changes this function only.
    """
    from aitrader.trading.ledger import PRED_BLOB_COLUMNS, decode_predictions

    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    start = 0
    if "features" in _table_columns(conn, "predictions"):
        cur = conn.execute("SELECT features FROM predictions ORDER BY id")
        while rows := cur.fetchmany(chunk or FEATURE_CHUNK):
            yield start, _decode_rows([r[0] for r in rows], n_features)
            start += len(rows)
    if "prediction_blocks" in tables:
        cols = ", ".join(PRED_BLOB_COLUMNS)
        for first_id, n, *blobs in conn.execute(
            f"SELECT first_id, n, {cols} FROM prediction_blocks ORDER BY first_id"  # noqa: S608 - fixed names
        ):
            block = decode_predictions(first_id, n, dict(zip(PRED_BLOB_COLUMNS, blobs, strict=True)))
            yield start, _decode_rows([row[10] for row in block], n_features)
            start += len(block)


def feature_rows(ledger: Ledger, positions: np.ndarray, n_features: int, *,
                 chunk: int | None = None) -> np.ndarray:
    """The feature matrix of the predictions rows at ``positions`` (row numbers in rowid order),
    streamed from the ledger file ``chunk`` rows at a time; memory: the result plus one chunk.
    """
    wanted = np.asarray(positions, dtype=np.int64)
    order = np.argsort(wanted, kind="stable")
    positions = wanted[order]
    out = np.full((positions.size, n_features), np.nan)
    if positions.size == 0 or not ledger.features_in_file:
        return out
    conn = open_ledger(ledger.run_dir / LEDGER_NAME)
    try:
        for start, mat in iter_feature_chunks(conn, n_features, chunk=chunk):
            lo, hi = np.searchsorted(positions, [start, start + len(mat)])
            if hi > lo:
                out[lo:hi] = mat[positions[lo:hi] - start]
            if hi >= positions.size:
                break
    except sqlite3.DatabaseError as exc:
        raise TradingError(f"cannot read ledger {ledger.run_dir / LEDGER_NAME}: {exc}; the file is damaged") from exc
    finally:
        conn.close()
    if np.array_equal(order, np.arange(order.size)):  # already ascending (the usual case): no copy
        return out
    result = np.empty_like(out)
    result[order] = out
    return result


def feature_matrix(features: pd.Series, n_features: int) -> np.ndarray:
    """The predictions' ``features`` (lists of floats, or the old format's JSON text) as a float matrix (null -> NaN).

    Rows whose list has the wrong length (another model version) or is missing become all-NaN, so
    they count as unavailable rather than silently shifting columns.
    """
    return _decode_rows(features.tolist(), n_features)


def _decode_rows(raw: list[Any], n_features: int) -> np.ndarray:
    out = np.full((len(raw), n_features), np.nan)
    text = [r for r in raw if isinstance(r, str)]
    if not text:  # decoded rows (lists of floats, None): no JSON to parse
        rows = raw
    else:
        try:  # one parse of the whole column is ~10x faster than a json.loads per row
            parsed = iter(json.loads("[" + ",".join(r if r.strip() else "null" for r in text) + "]"))
            rows = [next(parsed) if isinstance(r, str) else r for r in raw]
        except ValueError:  # a damaged row: decode row by row so the others still count
            rows = [_decode(r) for r in raw]
    good = [i for i, v in enumerate(rows) if isinstance(v, list) and len(v) == n_features]
    if good:
        # dtype=float turns JSON null (None) into NaN; a non-numeric entry fails the row below.
        try:
            out[good] = np.array([rows[i] for i in good], dtype=float)
        except (TypeError, ValueError):
            for i in good:
                try:
                    out[i] = np.array(rows[i], dtype=float)
                except (TypeError, ValueError):
                    continue
    return out
