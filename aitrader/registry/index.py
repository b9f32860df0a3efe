"""The registry's SQLite index (``registry.db``): models, versions, files, aliases, deploy log.

WAL mode and a busy timeout let several processes share the index; every write happens in one
``BEGIN IMMEDIATE`` transaction so that a version number is allocated and recorded atomically.
The deploy log is append-only: triggers abort any UPDATE or DELETE on it.

Schema 2 added ``deploy_log.details`` (JSON, for evaluation entries); a schema 1 index is
migrated in place the first time a writer opens it (``ALTER TABLE ... ADD COLUMN``: the rows
are not touched, so the append-only triggers are not involved).

Read-only registries: when the root or the file is not writable (a read-only mount, another
user's folder), readers open the file with ``immutable=1`` (no lock, no -shm; the file is taken
as it is), or, when a non-empty ``registry.db-wal`` holds transactions not yet copied into the
main file, with ``mode=ro`` so they are seen (falling back to ``immutable=1`` if SQLite cannot
share the WAL without writing: those last transactions are then not visible).
Any SQLite error becomes one ``RegistryError`` naming the file and the fix
(``aitrader registry rebuild`` for a damaged or foreign file).
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aitrader.errors import RegistryError
from aitrader.registry.layout import DB_NAME

__all__ = [
    "BUSY_TIMEOUT_MS",
    "DB_NAME",
    "SCHEMA_VERSION",
    "Index",
    "IndexDamagedError",
    "db_error",
    "rebuild_hint",
    "writable",
]

SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 60_000
REQUIRED_TABLES = frozenset({"meta", "models", "versions", "files", "aliases", "deploy_log"})

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


class IndexDamagedError(RegistryError):
    """The index file is damaged or is not an aitrader index (``aitrader registry rebuild`` fixes it)."""

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


def rebuild_hint(root: Path) -> str:
    return (
        f"run `aitrader registry rebuild --registry {root}` to re-index the version folders (the old file is "
        "kept aside as registry.db.replaced-*)"
    )


def db_error(path: Path, exc: BaseException) -> RegistryError:
    """One line for any SQLite failure: what happened to which file and what to do."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return RegistryError(
            f"registry index {path} is locked by another process (waited {BUSY_TIMEOUT_MS // 1000} s); "
            "retry when the other register/deploy has finished"
        )
    if "readonly" in text or "read-only" in text or "unable to open" in text or "permission" in text.lower():
        return RegistryError(
            f"registry index {path} cannot be opened for this command ({text}); check that the folder "
            f"{path.parent} is writable (read commands work on a read-only registry)"
        )
    return IndexDamagedError(
        f"registry index {path} is damaged or not an aitrader index ({text}); {rebuild_hint(path.parent)}", text
    )


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def writable(path: Path) -> bool:
    """Whether this process may write ``path`` (a folder or a file); tests replace this to emulate a read-only mount."""
    return os.access(path, os.W_OK)


class Index:
    """A connection to ``registry.db``; use :meth:`write` and :meth:`read` as context managers.

    ``readonly``: open with ``mode=ro`` (falling back to ``immutable=1``); :meth:`write` then fails.
    """

    def __init__(self, path: Path, *, create: bool, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self.immutable = False
        if not create and not path.is_file():
            raise FileNotFoundError(path)
        try:
            if readonly:
                self.conn = self._open_readonly(path)
            else:
                self.conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            self._inode = _inode(path)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self.conn.execute("PRAGMA foreign_keys=ON")
            if not readonly:
                self.conn.execute("PRAGMA synchronous=FULL")
            if create:
                self._init_schema()
        except sqlite3.DatabaseError as exc:
            raise db_error(path, exc) from exc

    def _open_readonly(self, path: Path) -> sqlite3.Connection:
        """``immutable=1`` when no WAL content is pending (no lock, no -shm: works on a read-only mount);
        else ``mode=ro`` to see the WAL, falling back to ``immutable=1`` when SQLite cannot share it."""
        quoted = urllib.parse.quote(str(path.resolve()))
        wal = Path(f"{path}-wal")
        pending = wal.is_file() and wal.stat().st_size > 0
        if pending:
            conn = sqlite3.connect(
                f"file:{quoted}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
            )
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return conn
            except sqlite3.OperationalError:  # it needs to write -shm: read the main file as it is
                conn.close()
        self.immutable = True
        return sqlite3.connect(f"file:{quoted}?mode=ro&immutable=1", uri=True, isolation_level=None)

    def tables(self) -> set[str]:
        """The table names in the file (empty for a new or 0-byte file); RegistryError for a non-database."""
        try:
            return {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise db_error(self.path, exc) from exc

    def is_aitrader_index(self) -> bool:
        return REQUIRED_TABLES <= self.tables()

    def init_schema(self) -> None:
        """Create the tables, or migrate an older schema (idempotent; takes the write lock)."""
        try:
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            raise db_error(self.path, exc) from exc

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
        if self.readonly:
            raise RegistryError(
                f"registry index {self.path} is open read-only (the folder or file is not writable); "
                "run this command where the registry can be written"
            )
        replaced = RegistryError(
            f"registry index {self.path} was replaced (aitrader registry rebuild) while this command was "
            "running; nothing was written: run the command again"
        )
        # Checked before BEGIN too: SQLite finds the WAL by path, so a connection to the old file must not
        # touch the new file's -wal at all (that read failed as "file is not a database" under load).
        if _inode(self.path) != self._inode:
            raise replaced
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            if _inode(self.path) != self._inode:
                raise replaced from exc
            raise db_error(self.path, exc) from exc
        if _inode(self.path) != self._inode:  # `registry rebuild` swapped the file while we waited
            self._end("ROLLBACK")
            raise replaced
        try:
            yield self.conn
        except BaseException as exc:
            self._end("ROLLBACK")
            if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.ProgrammingError):
                raise db_error(self.path, exc) from exc
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self._end("ROLLBACK")
            raise db_error(self.path, exc) from exc

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for multi-query answers."""
        try:
            self.conn.execute("BEGIN")
            yield self.conn
        except sqlite3.ProgrammingError:  # misuse (a bug), not a damaged file
            raise
        except sqlite3.DatabaseError as exc:
            raise db_error(self.path, exc) from exc
        finally:
            self._end("COMMIT")

    def _end(self, statement: str) -> None:
        """COMMIT/ROLLBACK an open read transaction, or drop it quietly when the file is damaged."""
        if self.conn.in_transaction:
            try:
                self.conn.execute(statement)
            except sqlite3.DatabaseError:
                if self.conn.in_transaction:
                    try:
                        self.conn.execute("ROLLBACK")
                    except sqlite3.DatabaseError:
                        pass  # the error that matters is already being raised

    def integrity_ok(self) -> bool:
        try:
            return bool(self.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok")
        except sqlite3.DatabaseError:
            return False

    def close(self) -> None:
        self.conn.close()
