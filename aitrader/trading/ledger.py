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
from array import array
from pathlib import Path
from typing import Any

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

LEDGER_NAME = "ledger.db"
ROWS_PER_INSERT = 64

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
WALL_CLOCK = {"predictions": ("latency_us",), "meta": ("started_at", "updated_at", "pid", "status", "run_id")}


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

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = connect(path)
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
        # The feature row is JSON-encoded at checkpoint, not here: this handler runs between the bar
        # and the order decision, and encoding 25 floats costs more than the model call.
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
    def read_meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def write_meta(self, values: dict[str, Any]) -> None:
        """Write meta keys in their own transaction (run start, status changes)."""
        self.conn.execute("BEGIN IMMEDIATE")
        self._put_meta(values)
        self.conn.execute("COMMIT")

    def _put_meta(self, values: dict[str, Any]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [(k, json.dumps(v, sort_keys=True)) for k, v in values.items()],
        )

    def checkpoint(
        self,
        cursors: dict[str, tuple[int, str]],
        positions: list[tuple[str, float, float, float]],
        state: dict[str, Any],
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Write every buffered row, the cursors, positions and engine state (and ``meta`` keys) in one
        transaction."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            if self._orders:
                insert_rows(c, "orders", 7, [x for row in self._orders.values() for x in row])
            if self._order_updates:
                c.executemany("UPDATE orders SET status = ? WHERE id = ?", self._order_updates)
            if self._fills:
                insert_rows(c, "fills", 9, self._fills)
            if self.equity_values:
                insert_rows(c, "equity", 4, self.equity_values)
                c.execute("INSERT INTO equity_chunks VALUES (?, ?)",
                          (self.equity_values[0], pack_floats(self.equity_values[3::4])))
            if self._events:
                c.executemany(
                    "INSERT INTO events (ts, type, symbol, model_id, reason, payload) VALUES (?, ?, ?, ?, ?, ?)",
                    self._events,
                )
            if self._predictions:
                c.executemany(
                    "INSERT INTO predictions (ts, bar_index, symbol, model_id, digest, prediction, confidence, "
                    "source, latency_us, in_sample, features) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(*row[:10], None if row[10] is None else json.dumps(row[10])) for row in self._predictions],
                )
            if self._outcomes:
                c.executemany(
                    "UPDATE predictions SET outcome = ?, outcome_ts = ? WHERE symbol = ? AND model_id = ? "
                    "AND bar_index = ?",
                    self._outcomes,
                )
            c.executemany(
                "INSERT OR REPLACE INTO cursors VALUES (?, ?, ?)", [(s, i, ts) for s, (i, ts) in cursors.items()]
            )
            c.execute("DELETE FROM positions")
            c.executemany("INSERT INTO positions VALUES (?, ?, ?, ?)", positions)
            self._put_meta({**(meta or {}), "state": state, "updated_at": now_iso()})
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        self._clear()

    def _clear(self) -> None:
        self._orders.clear()
        self._order_updates.clear()
        self._fills.clear()
        self.equity_values.clear()  # cleared in place: the engine holds its bound extend
        self._events.clear()
        self._predictions.clear()
        self._outcomes.clear()

    def cursors(self) -> dict[str, tuple[int, str]]:
        return {s: (int(i), ts) for s, i, ts in self.conn.execute("SELECT symbol, bar_index, ts FROM cursors")}

    def close(self) -> None:
        self.conn.close()


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


def read_table(path: Path, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Columns and rows of one exportable table, in id/time order (read-only)."""
    if table not in EXPORT_TABLES:
        raise TradingError(f"unknown table {table!r}; expected one of {', '.join(EXPORT_TABLES)}")
    conn = connect(path, readonly=True)
    try:
        cols = EXPORT_TABLES[table]
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        select = ", ".join(c if c in have or not have else f"NULL AS {c}" for c in (x.strip() for x in cols.split(",")))
        order = "symbol" if table == "positions" else ("bar_index, ts" if table == "equity" else "id")
        rows = conn.execute(f"SELECT {select} FROM {table} ORDER BY {order}").fetchall()
    except sqlite3.DatabaseError as exc:
        raise TradingError(f"cannot read {table} from {path}: {exc}; is it an aitrader ledger?") from exc
    finally:
        conn.close()
    return [c.strip() for c in cols.split(",")], rows


def ledger_content(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows minus wall-clock columns: what two equal runs must share exactly."""
    conn = connect(path, readonly=True)
    try:
        return _content(conn)
    except sqlite3.Error as exc:
        raise TradingError(f"cannot read {path}: {exc}") from exc
    finally:
        conn.close()


def _content(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table in ("cursors", "orders", "fills", "positions", "equity", "events", "predictions", "meta"):
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        keep = [c for c in cols if c not in WALL_CLOCK.get(table, ())]
        rows = conn.execute(f"SELECT {', '.join(keep)} FROM {table} ORDER BY 1").fetchall()
        if table == "meta":
            rows = [r for r in rows if r[0] not in WALL_CLOCK["meta"]]
        out[table] = rows
    return out
