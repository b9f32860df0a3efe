"""The run's SQLite ledger: the truth a run is resumed, audited and monitored from.

Schema: the tables of docs/architecture.md (meta, cursors, orders, fills, positions, equity,
events, predictions), plus ``meta.state``: the engine's in-memory state (cash, positions,
pending orders, model error counters and fallback state, daily-loss tracking, counters) at the
same bar boundary as the rest of the transaction. Rows are buffered in memory and written at each
checkpoint, in ONE transaction with the cursors and the state, so a run killed at any moment
resumes from a consistent bar boundary and re-does the lost bars exactly. Inserts go
``ROWS_PER_INSERT`` rows per statement: the equity curve has a row per step, and one statement
per row (``executemany``) cost twice as much per bar as the whole rest of the loop.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import sys
import threading
import zlib
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aitrader._lazy import lazy_module
from aitrader.errors import TradingError
from aitrader.trading.events import (
    PERSISTED_EVENT_TYPES,
    EventBus,
    EventType,
    Fill,
    ModelPrediction,
    Order,
    Outcome,
)

if TYPE_CHECKING:
    import numpy as np

    from aitrader.trading.ledger_writer import LedgerWriter
else:  # imported by the first block (de)coded: `export` of fills, orders, events or positions needs no numpy
    np = lazy_module("numpy", globals(), "np")

LEDGER_NAME = "ledger.db"
ROWS_PER_INSERT = 64
#: Feature vectors are stored as float32 (4, the default: what the ONNX and XGBoost runners feed the
#: model; ~85 bytes per 25-feature row compressed) or float64 (8: every bit of the streaming row, ~175).
FEATURE_BYTES = 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS cursors (symbol TEXT PRIMARY KEY, bar_index INTEGER, ts TEXT);
CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, ts TEXT, symbol TEXT, side TEXT, quantity REAL,
    status TEXT, reason TEXT);
CREATE TABLE IF NOT EXISTS fills (id INTEGER PRIMARY KEY, order_id INTEGER, ts TEXT, symbol TEXT, side TEXT,
    quantity REAL, price REAL, commission REAL, slippage REAL);
CREATE TABLE IF NOT EXISTS positions (symbol TEXT PRIMARY KEY, quantity REAL, avg_price REAL, realised_pnl REAL);
CREATE TABLE IF NOT EXISTS equity (bar_index INTEGER PRIMARY KEY, ts TEXT, cash REAL, equity REAL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, ts TEXT, type TEXT, symbol TEXT, model_id TEXT,
    reason TEXT, payload TEXT);
CREATE TABLE IF NOT EXISTS predictions (id INTEGER PRIMARY KEY, ts TEXT, bar_index INTEGER, symbol TEXT,
    model_id TEXT, digest TEXT, prediction REAL, confidence REAL, source TEXT, latency_us REAL, features TEXT,
    outcome REAL, outcome_ts TEXT, in_sample INTEGER);
CREATE TABLE IF NOT EXISTS equity_chunks (first_bar INTEGER PRIMARY KEY, equity BLOB);
CREATE INDEX IF NOT EXISTS predictions_key ON predictions (symbol, model_id, bar_index);
CREATE TABLE IF NOT EXISTS prediction_blocks (first_id INTEGER PRIMARY KEY, n INTEGER, ts BLOB, bar_index BLOB,
    symbol BLOB, model_id BLOB, digest BLOB, prediction BLOB, confidence BLOB, source BLOB, latency_us BLOB,
    in_sample BLOB, n_features BLOB, features BLOB, feature_bytes INTEGER);
CREATE TABLE IF NOT EXISTS equity_blocks (first_bar INTEGER PRIMARY KEY, n INTEGER, bar_index BLOB, ts BLOB,
    cash BLOB, equity BLOB);
CREATE TABLE IF NOT EXISTS outcome_blocks (id INTEGER PRIMARY KEY, n INTEGER, symbol BLOB, model_id BLOB,
    bar_index BLOB, outcome BLOB, outcome_ts BLOB);
"""

#: Tables ``aitrader export`` can write, with their columns in order.
EXPORT_TABLES = {
    "fills": "id, order_id, ts, symbol, side, quantity, price, commission, slippage",
    "orders": "id, ts, symbol, side, quantity, status, reason",
    "equity": "bar_index, ts, cash, equity",
    "predictions": "id, ts, bar_index, symbol, model_id, digest, prediction, confidence, source, latency_us, "
    "features, outcome, outcome_ts, in_sample",
    "events": "id, ts, type, symbol, model_id, reason, payload",
    "positions": "symbol, quantity, avg_price, realised_pnl",
}

#: Columns holding wall-clock data: excluded when two ledgers are compared for determinism.
WALL_CLOCK = {"predictions": ("latency_us",),
              "meta": ("started_at", "updated_at", "pid", "status", "run_id", "threads")}


RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def validate_run_id(run_id: str, option: str = "--run-id") -> str:
    """A run id names one folder under --runs-dir: no separators, no '..', no absolute path."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id) or ".." in run_id:
        raise TradingError(
            f"{option} {run_id!r} is not a valid run id; use 1-128 letters, digits, '.', '_' or '-' starting with a "
            "letter or digit (it names one folder under --runs-dir; pass --state DIR for another place)"
        )
    return run_id


def ledger_state(path: Path) -> str:
    """``started`` (meta has a run_id), ``empty`` (0 bytes, or SQLite without a run's meta: a run killed
    before its first commit), ``missing`` or ``damaged`` (not readable as SQLite)."""
    try:
        if not path.is_file():
            return "missing"
        if path.stat().st_size == 0:
            return "empty"
    except OSError:
        return "damaged"
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return "damaged"
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            return "empty" if not tables else "damaged"
        row = conn.execute("SELECT value FROM meta WHERE key = 'run_id'").fetchone()
        return "started" if row is not None else "empty"
    except sqlite3.Error:
        return "damaged"
    finally:
        conn.close()


def remove_ledger(path: Path) -> None:
    """Delete a ledger file and its WAL side files."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    try:
        if readonly:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        else:
            conn = sqlite3.connect(path, timeout=10, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            # A process kill keeps every committed transaction with NORMAL in WAL mode (only a power
            # loss can drop the last ones), at a fraction of FULL's cost.
            conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as exc:
        raise TradingError(f"cannot open ledger {path}: {exc}; check the folder exists and is writable") from exc
    return conn


class Ledger:
    """Write side of one run's ledger; subscribes to the bus and commits at checkpoints."""

    def __init__(self, path: Path, *, feature_bytes: int | None = None, features: bool = True,
                 scratch: bool = False) -> None:
        self.path = path
        self.feature_bytes = FEATURE_BYTES if feature_bytes is None else feature_bytes
        #: False: predictions are written without their feature rows (n_features -1, as a fallback's), for a
        #: ledger nothing reads features from (a backtest's temporary one); the packing is most of a checkpoint.
        self.features = features
        #: True: a scratch ledger (backtest's temporary one, read for the summary and the report, then
        #: deleted): predictions counted, not recorded (:func:`prediction_counts`: what the summary reads),
        #: no outcome rows, no journal and no sync on this connection (a run that dies loses it anyway).
        #: Never for a run that may be resumed, exported or monitored.
        self.scratch = scratch
        self.conn = connect(path)
        if scratch:
            self.conn.execute("PRAGMA journal_mode=OFF")
            self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.executescript(SCHEMA)
        add_missing_columns(self.conn)
        self._orders: dict[int, list[Any]] = {}
        self._order_updates: list[tuple[str, int]] = []
        self._fills: list[Any] = []  # flat, 9 values per fill
        #: The equity curve, flat: bar_index, ts, cash, equity, bar_index, ... The engine extends it
        #: directly (one row per step, the hot path); other listeners get EQUITY events.
        self.equity_values: list[Any] = []
        self._events: list[tuple[Any, ...]] = []
        self._predictions: list[tuple[Any, ...]] = []
        self._outcomes: list[tuple[Any, ...]] = []
        #: The buffers, public for the engine's direct path (cleared in place at each checkpoint).
        self.prediction_rows = self._predictions
        self.outcome_rows = self._outcomes
        self._next_id = next_prediction_id(self.conn)
        #: The thread committing the checkpoints when started (:meth:`start_writer`); None: this thread.
        self.writer: LedgerWriter | None = None

    # ------------------------------------------------------------------ subscriptions
    def attach(self, bus: EventBus) -> None:
        bus.subscribe(EventType.ORDER, self._on_order)
        bus.subscribe(EventType.FILL, self._on_fill)
        bus.subscribe(EventType.MODEL_PREDICTION, self._on_prediction)
        bus.subscribe(EventType.OUTCOME, self._on_outcome)
        for t in PERSISTED_EVENT_TYPES:
            bus.subscribe(t, self._on_event)

    def _on_order(self, e: Order) -> None:
        # Rows are lists so that a status change (filled in the same checkpoint) is one store.
        if e.status == "pending":
            self._orders[e.id] = [e.id, e.ts, e.symbol, e.side, e.quantity, e.status, e.reason]
        elif (row := self._orders.get(e.id)) is not None:
            row[5] = e.status
        else:
            self._order_updates.append((e.status, e.id))

    def _on_fill(self, e: Fill) -> None:
        self._fills.extend((e.id, e.order_id, e.ts, e.symbol, e.side, e.quantity, e.price, e.commission, e.slippage))
        if (row := self._orders.get(e.order_id)) is not None:
            row[5] = "filled"
        else:
            self._order_updates.append(("filled", e.order_id))

    def _on_prediction(self, e: ModelPrediction) -> None:
        # The feature rows are packed into one blob per checkpoint, not here: this handler runs between
        # the bar and the order decision.
        self._predictions.append(
            (e.ts, e.bar_index, e.symbol, e.model_id, e.digest, e.prediction, e.confidence, e.source, e.latency_us,
             e.in_sample, e.features)
        )

    def _on_outcome(self, e: Outcome) -> None:
        self._outcomes.append((e.outcome, e.ts, e.symbol, e.model_id, e.bar_index))

    def _on_event(self, e: Any) -> None:
        payload = json.dumps(e.payload, sort_keys=True, default=str)
        self._events.append((e.ts, e.type.value, e.symbol, e.model_id, e.reason, payload))

    # ------------------------------------------------------------------ meta and checkpoints
    def start_writer(self, depth: int | None = None) -> None:
        """Commit the next checkpoints on a writer thread (:mod:`aitrader.trading.ledger_writer`)."""
        from aitrader.trading.ledger_writer import DEPTH, LedgerWriter

        if self.writer is None:
            self.writer = LedgerWriter(self.path, depth=DEPTH if depth is None else depth)

    def flush(self) -> None:
        """Wait until the writer thread (if any) has committed every checkpoint taken; its error is raised."""
        if self.writer is not None:
            self.writer.flush()

    def read_meta(self) -> dict[str, Any]:
        self.flush()
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def write_meta(self, values: dict[str, Any]) -> None:
        """Write meta keys in their own transaction (run start, status changes)."""
        self.flush()
        self.conn.execute("BEGIN IMMEDIATE")
        self._put_meta(values)
        self.conn.execute("COMMIT")

    def _put_meta(self, values: dict[str, Any]) -> None:
        self.conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta_rows(values))

    def checkpoint(
        self,
        cursors: dict[str, tuple[int, str]],
        positions: list[tuple[str, float, float, float]],
        state: dict[str, Any],
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Write every buffered row, the cursors, positions and engine state (and ``meta`` keys) in one
        transaction: here, or on the ledger writer thread when one is started (:meth:`start_writer`),
        which commits the checkpoints in the order they were taken."""
        writer = self.writer
        if writer is not None:  # (it raises the error of a failed checkpoint: nothing later may commit)
            writer.submit(self._take(cursors, positions, state, meta, copy=True))
        else:
            write_checkpoint(self.conn, self._take(cursors, positions, state, meta, copy=False))
        self._next_id += len(self._predictions)
        self._clear()

    def _take(self, cursors: dict[str, tuple[int, str]], positions: list[tuple[str, float, float, float]],
              state: dict[str, Any], meta: dict[str, Any] | None, *, copy: bool) -> Checkpoint:
        """The checkpoint's rows; with ``copy``, lists of their own (the buffers are cleared next while the
        writer thread still reads them). The blocks' columns are built here (Python work that holds the GIL:
        a writer thread would only compete with the loop for it) and compressed by :func:`write_checkpoint`.
        The meta values (the engine state) are JSON-encoded here: they are live objects the next bars change."""
        def own(values: list[Any]) -> list[Any]:
            return list(values) if copy else values

        return Checkpoint(
            orders=[x for row in self._orders.values() for x in row],
            order_updates=own(self._order_updates), fills=own(self._fills), events=own(self._events),
            equity=equity_columns(self.equity_values) if self.equity_values else None,
            predictions=(prediction_counts(self._predictions, self.feature_bytes) if self.scratch else
                         prediction_columns(self._predictions, self.feature_bytes, features=self.features))
            if self._predictions else None,
            outcomes=outcome_columns(self._outcomes) if self._outcomes and not self.scratch else None,
            first_id=self._next_id,
            cursors=[(s, i, ts) for s, (i, ts) in cursors.items()], positions=list(positions),
            meta=meta_rows({**(meta or {}), "state": state, "updated_at": now_iso()}),
        )

    def _clear(self) -> None:
        self._orders.clear()
        self._order_updates.clear()
        self._fills.clear()
        self.equity_values.clear()  # cleared in place: the engine holds its bound extend
        self._events.clear()
        self._predictions.clear()
        self._outcomes.clear()

    def cursors(self) -> dict[str, tuple[int, str]]:
        self.flush()
        return {s: (int(i), ts) for s, i, ts in self.conn.execute("SELECT symbol, bar_index, ts FROM cursors")}

    def close(self) -> None:
        """Close the connection; a writer thread first commits what is queued (its error not yet raised is)."""
        writer, self.writer = self.writer, None
        try:
            if writer is not None:
                writer.close()
        finally:
            self.conn.close()


def meta_rows(values: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, JSON text) rows of the meta table."""
    return [(k, json.dumps(v, sort_keys=True)) for k, v in values.items()]


@dataclass(slots=True)
class Checkpoint:
    """One checkpoint's rows, as :meth:`Ledger.checkpoint` hands them to :func:`write_checkpoint`.

    ``orders`` flat (7 values per order), ``fills`` flat (9 per fill); the blocks' columns built but not
    compressed (the part of the encoding that holds the GIL is done where the checkpoint is taken, the
    compression and SQLite, which release it, where it is written); ``first_id``: the id of the first
    prediction; ``meta``: (key, JSON) rows."""

    orders: list[Any]
    order_updates: list[tuple[str, int]]
    fills: list[Any]
    events: list[tuple[Any, ...]]
    # the blocks' columns, uncompressed (equity_columns, prediction_columns, outcome_columns); None: no rows
    equity: dict[str, Any] | None
    predictions: dict[str, Any] | None
    outcomes: dict[str, Any] | None
    first_id: int
    cursors: list[tuple[str, int, str]]
    positions: list[tuple[str, float, float, float]]
    meta: list[tuple[str, str]]


def write_checkpoint(c: sqlite3.Connection, cp: Checkpoint) -> None:
    """Encode and write one checkpoint in one transaction (rolled back, and the error raised, on failure)."""
    c.execute("BEGIN IMMEDIATE")
    try:
        if cp.orders:
            insert_rows(c, "orders", 7, cp.orders)
        if cp.order_updates:
            c.executemany("UPDATE orders SET status = ? WHERE id = ?", cp.order_updates)
        if cp.fills:
            insert_rows(c, "fills", 9, cp.fills)
        if cp.equity:
            ev = compress(cp.equity)
            c.execute("INSERT INTO equity_blocks VALUES (?, ?, ?, ?, ?, ?)",
                      (ev["first_bar"], ev["n"], ev["bar_index"], ev["ts"], ev["cash"], ev["equity"]))
        if cp.events:
            c.executemany(
                "INSERT INTO events (ts, type, symbol, model_id, reason, payload) VALUES (?, ?, ?, ?, ?, ?)",
                cp.events,
            )
        if cp.predictions:
            blobs = compress(cp.predictions)
            c.execute(
                f"INSERT INTO prediction_blocks (first_id, n, {', '.join(PRED_BLOB_COLUMNS)}) "
                f"VALUES ({', '.join('?' * (len(PRED_BLOB_COLUMNS) + 2))})",
                (cp.first_id, blobs["n"], *(blobs[k] for k in PRED_BLOB_COLUMNS)),
            )
        if cp.outcomes:
            blobs = compress(cp.outcomes)
            c.execute("INSERT INTO outcome_blocks (n, symbol, model_id, bar_index, outcome, outcome_ts) "
                      "VALUES (?, ?, ?, ?, ?, ?)",
                      (blobs["n"], blobs["symbol"], blobs["model_id"], blobs["bar_index"], blobs["outcome"],
                       blobs["outcome_ts"]))
        c.executemany("INSERT OR REPLACE INTO cursors VALUES (?, ?, ?)", cp.cursors)
        c.execute("DELETE FROM positions")
        c.executemany("INSERT INTO positions VALUES (?, ?, ?, ?)", cp.positions)
        c.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", cp.meta)
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise


def next_prediction_id(conn: sqlite3.Connection) -> int:
    """The id the next prediction gets: after the old table's rows and the blocks' (ids never repeat)."""
    (old,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM predictions").fetchone()
    (new,) = conn.execute("SELECT COALESCE(MAX(first_id + n - 1), 0) FROM prediction_blocks").fetchone()
    return int(max(old, new)) + 1


#: Columns added after the first ledgers were written: (table, column, type). Older ledgers get them
#: on open for writing (NULL in old rows: unknown); readers treat a missing column as NULL.
ADDED_COLUMNS = (("predictions", "in_sample", "INTEGER"),)


def add_missing_columns(conn: sqlite3.Connection) -> None:
    for table, column, kind in ADDED_COLUMNS:
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def insert_rows(conn: sqlite3.Connection, table: str, ncols: int, values: list[Any]) -> None:
    """INSERT flat ``values`` (``ncols`` per row) into ``table``, ROWS_PER_INSERT rows per statement."""
    width = ncols * ROWS_PER_INSERT
    full = len(values) - len(values) % width
    if full:
        sql = _insert_sql(table, ncols, ROWS_PER_INSERT)
        for k in range(0, full, width):
            conn.execute(sql, values[k : k + width])
    if full < len(values):
        conn.execute(_insert_sql(table, ncols, (len(values) - full) // ncols), values[full:])


def _insert_sql(table: str, ncols: int, nrows: int) -> str:
    row = "(" + ", ".join("?" * ncols) + ")"
    return f"INSERT INTO {table} VALUES " + ", ".join([row] * nrows)  # noqa: S608 - fixed names, no input


def pack_floats(values: list[float]) -> bytes:
    """Little-endian float64 bytes (the ``equity_chunks`` copy of the curve)."""
    packed = array("d", values)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def unknown_table_message(table: str, tables: list[str]) -> str:
    """``unknown table 'fill' (did you mean 'fills'?); expected one of fills, orders, ...``."""
    import difflib

    close = difflib.get_close_matches(table.lower(), tables, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown table {table!r}{hint}; expected one of {', '.join(tables)}"


def read_table(path: Path, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Columns and rows of one exportable table, in id/time order (read-only)."""
    if table not in EXPORT_TABLES:
        raise TradingError(unknown_table_message(table, list(EXPORT_TABLES)))
    conn = connect(path, readonly=True)
    try:
        cols = EXPORT_TABLES[table]
        if table == "predictions":  # the old table's rows and the blocks', features as JSON text as before
            return list(PREDICTION_COLUMNS), [tuple(r) for r in prediction_rows(conn, features="json")]
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        select = ", ".join(c if c in have or not have else f"NULL AS {c}" for c in (x.strip() for x in cols.split(",")))
        if table == "equity":
            return [c.strip() for c in cols.split(",")], equity_rows(conn)
        order = "symbol" if table == "positions" else "id"
        rows = conn.execute(f"SELECT {select} FROM {table} ORDER BY {order}").fetchall()
    except (sqlite3.DatabaseError, zlib.error, ValueError) as exc:
        raise TradingError(f"cannot read {table} from {path}: {exc}; is it an aitrader ledger?") from exc
    finally:
        conn.close()
    return [c.strip() for c in cols.split(",")], rows


def ledger_content(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows minus wall-clock columns: what two equal runs must share exactly."""
    conn = connect(path, readonly=True)
    try:
        return _content(conn)
    except (sqlite3.Error, zlib.error, ValueError) as exc:
        raise TradingError(f"cannot read {path}: {exc}") from exc
    finally:
        conn.close()


def _content(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table in ("cursors", "orders", "fills", "positions", "equity", "events", "predictions", "meta"):
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        keep = [c for c in cols if c not in WALL_CLOCK.get(table, ())]
        if table == "predictions":  # the decoded rows: the same whatever the storage format
            drop = PREDICTION_COLUMNS.index("latency_us")
            out[table] = [tuple(r[:drop] + r[drop + 1 :]) for r in prediction_rows(conn, features="json")]
            continue
        if table == "equity":
            out[table] = equity_rows(conn)
            continue
        rows = conn.execute(f"SELECT {', '.join(keep)} FROM {table} ORDER BY 1").fetchall()
        if table == "meta":
            rows = [r for r in rows if r[0] not in WALL_CLOCK["meta"]]
        out[table] = rows
    return out


# ---------------------------------------------------------------------- columnar prediction blocks
#: Predictions and outcomes are written as one row per checkpoint (``prediction_blocks``,
#: ``outcome_blocks``): each column a compressed blob (floats as little-endian float64 with their
#: bytes shuffled so that the compressor finds the repeated sign/exponent bytes; text as lines). Nothing
#: is rounded: a decoded row is the row the old ``predictions`` table held. Readers go through
#: :func:`prediction_rows`, which also reads the old table (JSON features, outcome column), so a
#: ledger of either format, or one resumed across the change, reads the same.
#:
#: Blobs are Zstandard frames (level :data:`ZSTD_LEVEL`); ledgers written before that hold zlib streams
#: (level 1), and a ledger resumed across the change holds both. Each blob says which it is: a zstd frame
#: starts with :data:`ZSTD_MAGIC`, a zlib stream never does (the ledger's start with 0x78; and 0x28 0xB5
#: fails the check every zlib header passes: (256 * byte0 + byte1) % 31 == 0), so :func:`_unz` reads
#: either. zstd level 3 packed the 200-tree bench's checkpoints 7x faster than zlib level 1, and 5%
#: smaller (docs/trading.md, *Blocks*): the compression had been ~15% of a replay's loop.
ZSTD_LEVEL = 3
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PREDICTION_COLUMNS = ("id", "ts", "bar_index", "symbol", "model_id", "digest", "prediction", "confidence", "source",
                      "latency_us", "features", "outcome", "outcome_ts", "in_sample")
#: Per-thread zstd (de)compression contexts: a context is not to be used by two threads at once (the
#: ledger writer thread compresses while the loop's thread may decode).
_zstd = threading.local()


def _codec() -> Any:
    """This thread's ``(ZstdCompressor, ZstdDecompressor)``, made on first use (zstandard imported then)."""
    pair = getattr(_zstd, "pair", None)
    if pair is None:
        import zstandard

        pair = _zstd.pair = (zstandard.ZstdCompressor(level=ZSTD_LEVEL), zstandard.ZstdDecompressor())
    return pair


def _z(data: bytes) -> bytes:
    """One blob: ``data`` as a Zstandard frame (with its size, so it decompresses in one call)."""
    return bytes(_codec()[0].compress(data))


def _unz(blob: bytes) -> bytes:
    """A blob's bytes: a Zstandard frame or (a ledger written before the change) a zlib stream. A
    corrupt blob raises ``zlib.error`` or ``ValueError`` (what the ledger's readers catch)."""
    if bytes(blob[:4]) != ZSTD_MAGIC:
        return zlib.decompress(blob)
    import zstandard

    try:
        return bytes(_codec()[1].decompress(blob))
    except zstandard.ZstdError as exc:
        raise ValueError(f"corrupt compressed block: {exc}") from exc


def text_bytes(values: list[Any]) -> bytes:
    """:func:`pack_text`'s bytes before compression."""
    return "\n".join("\x00" if v is None else v for v in values).encode()


def pack_text(values: list[Any]) -> bytes:
    """Lines of text (no newline may occur in a value: ids, stamps, digests); None is stored as \\x00."""
    return _z(text_bytes(values))


def unpack_text(blob: bytes, n: int) -> list[str | None]:
    if n == 0:
        return []
    out: list[str | None] = list(_unz(blob).decode().split("\n"))
    return [None if v == "\x00" else v for v in out]


def f8_bytes(values: Any, size: int = 8) -> bytes:
    """:func:`pack_f8`'s bytes before compression."""
    a = np.ascontiguousarray(np.asarray(values, dtype=f"<f{size}"))
    return a.view(np.uint8).reshape(-1, size).T.tobytes()


def pack_f8(values: Any, size: int = 8) -> bytes:
    """float64 (``size`` 8) or float32 (4) values, byte-shuffled (all first bytes, then all second
    bytes...) then compressed."""
    return _z(f8_bytes(values, size))


def unpack_f8(blob: bytes, n: int, size: int = 8) -> np.ndarray:
    """The values :func:`pack_f8` packed, as float64."""
    raw = np.frombuffer(_unz(blob), dtype=np.uint8)
    return np.ascontiguousarray(raw.reshape(size, n).T).view(f"<f{size}").reshape(n).astype(float)


def i8_bytes(values: Any) -> bytes:
    """:func:`pack_i8`'s bytes before compression."""
    a = np.asarray(values, dtype="<i8")
    return np.diff(a, prepend=np.int64(0)).astype("<i8").tobytes()


def pack_i8(values: Any) -> bytes:
    """int64 values stored as differences (bar indexes step by one: they compress to nothing)."""
    return _z(i8_bytes(values))


def compress(columns: dict[str, Any]) -> dict[str, Any]:
    """The blobs of columns from :func:`prediction_columns` / :func:`outcome_columns` /
    :func:`equity_columns`: each ``bytes`` value compressed (zstd releases the GIL while it works)."""
    return {k: _z(v) if isinstance(v, bytes) else v for k, v in columns.items()}


def unpack_i8(blob: bytes, n: int) -> np.ndarray:
    return np.cumsum(np.frombuffer(_unz(blob), dtype="<i8"), dtype=np.int64) if n else np.empty(0, np.int64)


def encode_predictions(rows: list[tuple[Any, ...]], feature_bytes: int = 4) -> dict[str, Any]:
    """Column blobs of buffered predictions: (ts, bar_index, symbol, model_id, digest, prediction,
    confidence, source, latency_us, in_sample, features) per row; features a float64 row or None."""
    return compress(prediction_columns(rows, feature_bytes))


def prediction_columns(rows: list[tuple[Any, ...]], feature_bytes: int = 4, *, features: bool = True
                       ) -> dict[str, Any]:
    """:func:`encode_predictions` before compression (the Python part: it needs the GIL throughout).

    When every feature row has the same width the matrix is stored transposed (all first features,
    then all second...): neighbouring values of one feature share their leading bytes. ``features``
    False: every row is written without its features (as a fallback prediction's: ``None``)."""
    cols = list(zip(*rows, strict=True))
    feats = cols[10] if features else (None,) * len(rows)
    lengths = np.array([-1 if f is None else len(f) for f in feats], dtype="<i8")
    values = [f for f in feats if f is not None]
    widths = {len(f) for f in values}
    if len(widths) == 1:  # one model's rows: stored feature by feature (column-major), ~4% smaller compressed
        flat = np.asarray(values, dtype=float).T.ravel()
    else:  # rows of several widths (or none): one after the other
        flat = np.concatenate([np.asarray(f, dtype=float).ravel() for f in values]) if values else np.empty(0)
    in_sample = np.array([-1 if v is None else int(v) for v in cols[9]], dtype="<i8")
    return {
        "n": len(rows), "ts": text_bytes(list(cols[0])), "bar_index": i8_bytes(cols[1]),
        "symbol": text_bytes(list(cols[2])), "model_id": text_bytes(list(cols[3])),
        "digest": text_bytes(list(cols[4])), "prediction": f8_bytes(cols[5]), "confidence": f8_bytes(cols[6]),
        "source": text_bytes(list(cols[7])), "latency_us": f8_bytes(cols[8], 4), "in_sample": i8_bytes(in_sample),
        "n_features": i8_bytes(lengths), "features": f8_bytes(flat, feature_bytes), "feature_bytes": feature_bytes,
    }


def prediction_counts(rows: list[tuple[Any, ...]], feature_bytes: int = 4) -> dict[str, Any]:
    """A scratch ledger's prediction block (:attr:`Ledger.scratch`): the count and the in-sample flags, what
    :func:`prediction_count` (the run's summary) reads; every other column empty (not decodable: rows
    counted, not recorded)."""
    flags = np.array([-1 if v is None else int(v) for v in (r[9] for r in rows)], dtype="<i8")
    return {**dict.fromkeys(PRED_BLOB_COLUMNS, b""), "n": len(rows), "in_sample": i8_bytes(flags),
            "feature_bytes": feature_bytes}


def decode_predictions(first_id: int, n: int, blobs: dict[str, bytes]) -> list[list[Any]]:
    """Rows in :data:`PREDICTION_COLUMNS` order (features a list of floats or None; outcome None)."""
    ts = unpack_text(blobs["ts"], n)
    bar = unpack_i8(blobs["bar_index"], n).tolist()
    sym, mid, dig, src = (unpack_text(blobs[k], n) for k in ("symbol", "model_id", "digest", "source"))
    pred, conf = (unpack_f8(blobs[k], n).tolist() for k in ("prediction", "confidence"))
    lat = unpack_f8(blobs["latency_us"], n, 4).tolist()  # wall-clock microseconds: float32 is plenty
    ins = unpack_i8(blobs["in_sample"], n).tolist()
    lengths = unpack_i8(blobs["n_features"], n).tolist()
    total = sum(k for k in lengths if k > 0)
    flat = unpack_f8(blobs["features"], total, int(blobs.get("feature_bytes") or 8))
    widths = {k for k in lengths if k >= 0}
    if len(widths) == 1:  # column-major (see encode_predictions): back to one row per prediction
        (w,) = widths
        flat = flat.reshape(w, -1).T.ravel() if w else flat
    flat_list = flat.tolist()
    rows, at = [], 0
    for k in range(n):
        width = lengths[k]
        feats = None if width < 0 else flat_list[at : at + width]
        at += max(width, 0)
        rows.append([first_id + k, ts[k], bar[k], sym[k], mid[k], dig[k], pred[k], conf[k], src[k], lat[k], feats,
                     None, None, None if ins[k] < 0 else ins[k]])
    return rows


def encode_outcomes(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Blobs of buffered outcomes: (outcome, outcome_ts, symbol, model_id, bar_index) per row."""
    return compress(outcome_columns(rows))


def outcome_columns(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """:func:`encode_outcomes` before compression."""
    cols = list(zip(*rows, strict=True))
    return {"n": len(rows), "outcome": f8_bytes(cols[0]), "outcome_ts": text_bytes(list(cols[1])),
            "symbol": text_bytes(list(cols[2])), "model_id": text_bytes(list(cols[3])),
            "bar_index": i8_bytes(cols[4])}


def equity_columns(flat: list[Any]) -> dict[str, Any]:
    """The columns of an ``equity_blocks`` row before compression, from the flat (bar_index, ts, cash,
    equity, ...) buffer."""
    return {"first_bar": flat[0], "n": len(flat) // 4, "bar_index": i8_bytes(flat[0::4]), "ts": text_bytes(flat[1::4]),
            "cash": f8_bytes(flat[2::4]), "equity": f8_bytes(flat[3::4])}


PRED_BLOB_COLUMNS = ("ts", "bar_index", "symbol", "model_id", "digest", "prediction", "confidence", "source",
                     "latency_us", "in_sample", "n_features", "features", "feature_bytes")


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def outcome_map(conn: sqlite3.Connection) -> dict[tuple[str, str, int], tuple[float, str]]:
    """(symbol, model_id, bar_index) -> (outcome, outcome_ts) of every outcome block."""
    out: dict[tuple[str, str, int], tuple[float, str]] = {}
    if "outcome_blocks" not in _tables(conn):
        return out
    for n, sym, mid, bar, val, ts in conn.execute(
        "SELECT n, symbol, model_id, bar_index, outcome, outcome_ts FROM outcome_blocks ORDER BY id"
    ):
        keys = zip(unpack_text(sym, n), unpack_text(mid, n), unpack_i8(bar, n).tolist(), strict=True)
        for key, v, t in zip(keys, unpack_f8(val, n).tolist(), unpack_text(ts, n), strict=True):
            out[key] = (v, t)  # type: ignore[index,assignment]
    return out


def _old_prediction_rows(conn: sqlite3.Connection, features: str) -> list[list[Any]]:
    """The old table's rows (JSON features, outcome column)."""
    have = {r[1] for r in conn.execute("PRAGMA table_info(predictions)")}
    select = ", ".join(c if c in have else f"NULL AS {c}" for c in PREDICTION_COLUMNS)
    rows = [list(r) for r in conn.execute(f"SELECT {select} FROM predictions ORDER BY id")]  # noqa: S608
    for row in rows:
        if features == "none":
            row[10] = None
        elif features == "list" and isinstance(row[10], str):
            try:
                row[10] = json.loads(row[10])
            except ValueError:
                pass  # a damaged row stays text: feature readers count it as unavailable
    return rows


def _block_prediction_rows(conn: sqlite3.Connection, features: str) -> list[list[Any]]:
    rows: list[list[Any]] = []
    cols = ", ".join(PRED_BLOB_COLUMNS)
    for first_id, n, *blobs in conn.execute(
        f"SELECT first_id, n, {cols} FROM prediction_blocks ORDER BY first_id"  # noqa: S608 - fixed names
    ):
        block = decode_predictions(first_id, n, dict(zip(PRED_BLOB_COLUMNS, blobs, strict=True)))
        if features != "list":
            for row in block:
                if row[10] is not None:
                    row[10] = json.dumps(row[10]) if features == "json" else None
        rows.extend(block)
    return rows


def prediction_rows(conn: sqlite3.Connection, *, features: str = "list") -> list[list[Any]]:
    """Every prediction in id order, columns :data:`PREDICTION_COLUMNS`, from the old table and the blocks.

    ``features``: ``"list"`` (floats or None), ``"json"`` (the old table's text) or ``"none"`` (skipped).
    Outcomes come from the old table's column or from the outcome blocks (a resumed old ledger has both).
    """
    tables = _tables(conn)
    rows = _old_prediction_rows(conn, features) if "predictions" in tables else []
    if "prediction_blocks" in tables:
        rows += _block_prediction_rows(conn, features)
    outcomes = outcome_map(conn)
    if outcomes:
        for row in rows:
            got = outcomes.get((row[3], row[4], row[2]))
            if got is not None:
                row[11], row[12] = got
    return rows


def prediction_count(conn: sqlite3.Connection, where_in_sample: bool = False) -> int:
    """How many predictions (or in-sample ones) the ledger holds, without decoding features."""
    tables = _tables(conn)
    # Every ledger has the predictions table (empty since the blocks): a ledger without it is damaged.
    sql = "SELECT COUNT(*) FROM predictions" + (" WHERE in_sample = 1" if where_in_sample else "")
    total = int(conn.execute(sql).fetchone()[0])
    if "prediction_blocks" in tables:
        if where_in_sample:
            for n, blob in conn.execute("SELECT n, in_sample FROM prediction_blocks"):
                total += int((unpack_i8(blob, n) == 1).sum())
        else:
            total += conn.execute("SELECT COALESCE(SUM(n), 0) FROM prediction_blocks").fetchone()[0]
    return int(total)


# ---------------------------------------------------------------------- the equity curve
#: The curve is written as one ``equity_blocks`` row per checkpoint (bar_index, ts, cash, equity
#: columns as blobs); ledgers from before kept a row per step in ``equity`` (and float64 copies of the
#: equity column in ``equity_chunks``). Readers take both, table rows first (a resumed old run).


def _equity_table_rows(conn: sqlite3.Connection, tables: set[str], last: int | None = None) -> list[tuple[Any, ...]]:
    if "equity" not in tables:
        return []
    if last is None:
        return conn.execute("SELECT bar_index, ts, cash, equity FROM equity ORDER BY bar_index, ts").fetchall()
    rows = conn.execute("SELECT bar_index, ts, cash, equity FROM equity ORDER BY bar_index DESC, ts DESC LIMIT ?",
                        (last,)).fetchall()
    return rows[::-1]


def _equity_blocks(conn: sqlite3.Connection, tables: set[str], *, newest_first: bool = False) -> Any:
    if "equity_blocks" not in tables:
        return iter(())
    order = "DESC" if newest_first else ""
    sql = f"SELECT first_bar, n, bar_index, ts, cash, equity FROM equity_blocks ORDER BY first_bar {order}"
    return conn.execute(sql)


def equity_rows(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    """(bar_index, ts, cash, equity) of every step, in bar order, from either storage format."""
    tables = _tables(conn)
    rows = list(_equity_table_rows(conn, tables))
    for _first, n, bar, ts, cash, eq in _equity_blocks(conn, tables):
        rows.extend(zip(unpack_i8(bar, n).tolist(), unpack_text(ts, n), unpack_f8(cash, n).tolist(),
                        unpack_f8(eq, n).tolist(), strict=True))
    return rows


def equity_column(conn: sqlite3.Connection, lead: float | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """The equity column in bar order (float64), decoding no stamps; with ``lead``, one more slot in front
    holding it (the summary's ``[initial, *equity]`` path: the equity before each bar is a view of it);
    with ``out`` (a float64 array of exactly that length: the column read before, in the same read
    transaction), written into it."""
    tables = _tables(conn)
    first = [] if lead is None else [lead]
    head = np.array(first + [r[3] for r in _equity_table_rows(conn, tables)], dtype=float)
    # One statement (one snapshot of a ledger still being written) gives the blocks and their total, so
    # the column is filled in place: no list of pieces and no concatenated copy beside it.
    rows: Iterable[tuple[int, bytes, int]] = conn.execute(
        "SELECT n, equity, SUM(n) OVER () FROM equity_blocks ORDER BY first_bar") if "equity_blocks" in tables else ()
    def sized(size: int) -> np.ndarray:
        if out is None:
            return np.empty(size)
        if len(out) != size:
            raise ValueError(f"the equity column has {size} values, not {len(out)}")
        return out

    col: np.ndarray | None = None
    pos = len(head)
    for n, eq, total in rows:
        if col is None:  # the first block: the column's length is known
            col = sized(len(head) + int(total))
            col[:pos] = head
        col[pos:pos + n] = unpack_f8(eq, n)
        pos += n
    if col is None:  # no blocks
        if out is None:
            return head
        col = sized(len(head))
        col[:] = head
    return col


def equity_stamps(conn: sqlite3.Connection, last: int | None = None) -> list[str]:
    """The stamps of the steps in bar order; only the ``last`` ones when given (few blocks decoded)."""
    tables = _tables(conn)
    newest: list[list[str]] = []
    have = 0
    for _f, n, _b, ts, _c, _e in _equity_blocks(conn, tables, newest_first=True):
        if last is not None and have >= last:
            break
        newest.append([str(t) for t in unpack_text(ts, n)])
        have += n
    stamps = [t for block in reversed(newest) for t in block]
    if last is None or have < last:
        stamps = [str(r[1]) for r in _equity_table_rows(conn, tables, None if last is None else last - have)] + stamps
    return stamps if last is None else stamps[-last:]


def decoded_copy(path: Path) -> sqlite3.Connection:
    """An in-memory copy of a ledger of either format whose ``predictions`` and ``equity`` tables hold
    every row decoded (features as JSON text, outcomes filled in): the old one-row-per-item layout, for
    ad-hoc SQL and tests. The file is only read."""
    src = connect(path, readonly=True)
    mem = sqlite3.connect(":memory:")
    try:
        src.backup(mem)
        preds = prediction_rows(src, features="json")
        equity = equity_rows(src)
    finally:
        src.close()
    mem.executescript("DROP TABLE IF EXISTS predictions; DROP TABLE IF EXISTS equity; " + SCHEMA)
    if preds:
        mem.executemany(f"INSERT INTO predictions ({', '.join(PREDICTION_COLUMNS)}) VALUES "
                        f"({', '.join('?' * len(PREDICTION_COLUMNS))})", preds)
    if equity:
        mem.executemany("INSERT INTO equity (bar_index, ts, cash, equity) VALUES (?, ?, ?, ?)", equity)
    return mem
