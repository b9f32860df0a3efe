"""The registry's SQLite index (``registry.db``): models, versions, files, aliases, deploy log.

WAL mode and a busy timeout let several processes share the index; every write happens in one
``BEGIN IMMEDIATE`` transaction so that a version number is allocated and recorded atomically.
The deploy log is append-only: triggers abort any UPDATE or DELETE on it.

Schema 2 added ``deploy_log.details`` (JSON, for evaluation entries); a schema 1 index is
migrated in place the first time a writer opens it (``ALTER TABLE ... ADD COLUMN``: the rows
are not touched, so the append-only triggers are not involved).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aitrader.errors import RegistryError

DB_NAME = "registry.db"
SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 60_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL REFERENCES models(name),
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    created_at TEXT NOT NULL,
    kind TEXT,
    task TEXT,
    metrics TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '{}',
    trusted INTEGER NOT NULL DEFAULT 0,
    pickle_based INTEGER NOT NULL DEFAULT 0,
    size_bytes INTEGER NOT NULL DEFAULT 0,
    source TEXT,
    registered_by TEXT,
    UNIQUE (name, version),
    UNIQUE (name, digest)
);
CREATE TABLE IF NOT EXISTS files (
    version_id INTEGER NOT NULL REFERENCES versions(id),
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (version_id, path)
);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL REFERENCES models(name),
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (name, alias)
);
CREATE TABLE IF NOT EXISTS deploy_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    user TEXT NOT NULL,
    host TEXT NOT NULL,
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    action TEXT NOT NULL,
    from_version INTEGER,
    to_version INTEGER NOT NULL,
    status TEXT NOT NULL,
    checks TEXT NOT NULL,
    reason TEXT,
    details TEXT
);
CREATE INDEX IF NOT EXISTS deploy_log_name ON deploy_log(name, alias, id);
CREATE TRIGGER IF NOT EXISTS deploy_log_no_update BEFORE UPDATE ON deploy_log
BEGIN SELECT RAISE(ABORT, 'deploy_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS deploy_log_no_delete BEFORE DELETE ON deploy_log
BEGIN SELECT RAISE(ABORT, 'deploy_log is append-only'); END;
"""


def _statements(script: str) -> list[str]:
    """Split a script into statements (executescript would COMMIT the open transaction first)."""
    out: list[str] = []
    current = ""
    for line in script.strip().splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    return out


def _db_error(path: Path, exc: sqlite3.Error) -> RegistryError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return RegistryError(
            f"registry index {path} is locked by another process (waited {BUSY_TIMEOUT_MS // 1000} s); "
            "retry when the other register/deploy has finished"
        )
    return RegistryError(
        f"registry index {path} cannot be used: {text}; check that the folder is writable and the file "
        "is an aitrader registry.db (run `aitrader verify`)"
    )


class Index:
    """A connection to ``registry.db``; use :meth:`write` and :meth:`read` as context managers."""

    def __init__(self, path: Path, *, create: bool) -> None:
        self.path = path
        if not create and not path.is_file():
            raise FileNotFoundError(path)
        try:
            self.conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.execute("PRAGMA synchronous=FULL")
            if create:
                self._init_schema()
        except sqlite3.DatabaseError as exc:
            raise _db_error(path, exc) from exc

    def init_schema(self) -> None:
        """Create the tables, or migrate an older schema (idempotent; takes the write lock)."""
        try:
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            raise _db_error(self.path, exc) from exc

    def _init_schema(self) -> None:
        # Switching to WAL needs a moment of exclusive access; under a burst of first opens it can
        # report "locked" without waiting, so retry briefly. Once set it is stored in the file.
        for attempt in range(200):
            try:
                mode = self.conn.execute("PRAGMA journal_mode").fetchone()[0]
                if mode != "wal":
                    self.conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 199:
                    raise
                time.sleep(0.05)
        with self.write() as conn:
            for statement in _statements(SCHEMA):
                conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is not None and int(row[0]) > SCHEMA_VERSION:
                raise RegistryError(
                    f"registry index {self.path} has schema version {row[0]}, this aitrader reads up to "
                    f"{SCHEMA_VERSION}; upgrade aitrader"
                )
            columns = {r[1] for r in conn.execute("PRAGMA table_info(deploy_log)")}
            if "details" not in columns:  # schema 1 -> 2
                conn.execute("ALTER TABLE deploy_log ADD COLUMN details TEXT")
            conn.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (str(SCHEMA_VERSION),),
            )

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken at BEGIN, so reads inside it are current."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise _db_error(self.path, exc) from exc
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self.conn.execute("ROLLBACK")
            raise _db_error(self.path, exc) from exc

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for multi-query answers."""
        try:
            self.conn.execute("BEGIN")
            yield self.conn
        except sqlite3.DatabaseError as exc:
            raise _db_error(self.path, exc) from exc
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    def integrity_ok(self) -> bool:
        return bool(self.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok")

    def close(self) -> None:
        self.conn.close()
