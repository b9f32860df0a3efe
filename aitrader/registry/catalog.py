"""The catalog: the index opened the right way, checked against the disk, and queried.

This is the layer the registry's operations (register, verify, deploy, log, rebuild, loading)
are written against; ``Registry`` (``store.py``) is a facade on top of them. Layers, bottom up::

    names, types, hashing          pure helpers
    layout, index, journal         the files under the root: folders, SQLite, deploy_log.jsonl
    catalog                        opening rules + queries (this module)
    log, verify, loading, register, deploy, rebuild    the operations (take a Catalog)
    store.Registry                 the public facade

Opening rules: an index that is missing, empty, not a regular file or not an aitrader index
while version folders exist on disk is never taken for an empty registry: every command stops
with an error that offers ``aitrader registry rebuild``. A root or file that is not writable is
opened read-only, so read commands work on a read-only mount.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from aitrader.errors import ModelNotFoundError, RegistryError
from aitrader.registry import index as _index
from aitrader.registry.index import Index, IndexDamagedError, db_error, rebuild_hint
from aitrader.registry.layout import DB_NAME, JOURNAL_NAME, describe, disk_versions
from aitrader.registry.names import ModelRef, safe_text, validate_name
from aitrader.registry.types import VersionInfo

ENV_ROOT = "AITRADER_REGISTRY"


class Catalog:
    """The index of one registry root, opened lazily (read-only when the root is not writable)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db_path = root / DB_NAME
        self.journal_path = root / JOURNAL_NAME
        self._index: Index | None = None
        self._writable = False  # the schema was created/migrated by this object

    # ------------------------------------------------------------------ opening

    def _lost(self, what: str) -> RegistryError:
        found = disk_versions(self.root)
        if not found:
            return RegistryError(f"registry index {self.db_path} {what}; {rebuild_hint(self.root)}")
        n = sum(len(v) for v in found.values())
        return RegistryError(
            f"registry index {self.db_path} {what}, but {self.root} holds {n} version folder(s) "
            f"({describe(found)}); nothing was changed: {rebuild_hint(self.root)}"
        )

    def _check_file(self) -> bool:
        """True when the index file exists; RegistryError when the path is something else."""
        if self.db_path.is_symlink() or (self.db_path.exists() and not self.db_path.is_file()):
            raise self._lost("is not a regular file")
        return self.db_path.is_file()

    def _open(self, *, readonly: bool) -> Index:
        """Open the existing file; a damaged one is reported with the versions the disk still holds."""
        try:
            return Index(self.db_path, create=False, readonly=readonly)
        except IndexDamagedError as exc:
            raise self._lost(f"is damaged or not an aitrader index ({exc.cause})") from exc

    def _adopt(self, index: Index, *, for_write: bool) -> Index | None:
        """Keep ``index`` if it is an aitrader index; None for an empty file with no versions on disk."""
        try:
            tables = index.tables()
        except IndexDamagedError as exc:
            index.close()
            raise self._lost(f"is damaged or not an aitrader index ({exc.cause})") from exc
        if not tables:
            if disk_versions(self.root):
                index.close()
                raise self._lost("is empty (0 bytes or no tables)")
            if not for_write:
                index.close()
                return None
            return index
        if not _index.REQUIRED_TABLES <= tables:
            index.close()
            listing = ", ".join(sorted(tables)[:4])
            raise self._lost(f"is a SQLite file with other tables ({listing}), not an aitrader index")
        return index

    def writer(self) -> Index:
        """The index for writing, creating the root and the database (or migrating its schema) when needed."""
        if self._index is not None and self._writable:
            return self._index
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not _index.writable(self.root):
                raise PermissionError(13, "no write permission")
            probe = self.root / f".probe-{uuid.uuid4().hex}"
            probe.mkdir()
            probe.rmdir()
        except OSError as exc:
            raise RegistryError(
                f"registry root {self.root} is not writable ({exc.strerror or exc}); pass --registry PATH "
                f"or set {ENV_ROOT} to a writable folder (read commands work on a read-only registry)"
            ) from exc
        if self._index is not None and not self._index.readonly:  # opened for reading: migrate it now
            self._index.init_schema()
            self._writable = True
            return self._index
        if self._index is not None:  # a read-only connection cannot write: reopen
            self._index.close()
            self._index = None
        exists = self._check_file()
        if not exists and disk_versions(self.root):
            raise self._lost("is missing")
        index = self._open(readonly=False) if exists else None
        if index is not None:
            index = self._adopt(index, for_write=True)
            assert index is not None
            index.init_schema()
        else:
            index = Index(self.db_path, create=True)
        self._index = index
        self._writable = True
        return index

    def reader(self) -> Index | None:
        """The index for reading, or None when nothing was ever registered here (nothing is created)."""
        if self._index is not None:
            return self._index
        if not self._check_file():
            if disk_versions(self.root):
                raise self._lost("is missing")
            return None
        readonly = not (_index.writable(self.root) and _index.writable(self.db_path))
        index = self._adopt(self._open(readonly=readonly), for_write=False)
        self._index = index
        return index

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
            self._writable = False

    def integrity_ok(self) -> bool:
        index = self.reader()
        return True if index is None else index.integrity_ok()

    # ------------------------------------------------------------------ rows -> records

    def _json(self, row: sqlite3.Row, column: str, where: str) -> Any:
        raw = row[column]
        try:
            value = json.loads(raw) if raw else {}
        except (TypeError, ValueError) as exc:
            raise RegistryError(
                f"registry index {self.db_path}: column {column} of {where} is not valid JSON ({exc}); "
                f"{rebuild_hint(self.root)}"
            ) from exc
        if not isinstance(value, dict):
            raise RegistryError(
                f"registry index {self.db_path}: column {column} of {where} is not a JSON object; "
                f"{rebuild_hint(self.root)}"
            )
        return value

    def info(self, conn: sqlite3.Connection, row: sqlite3.Row) -> VersionInfo:
        """A ``versions`` row (and its aliases) as a VersionInfo; RegistryError for a damaged row."""
        try:
            name, version = str(row["name"]), int(row["version"])
            where = f"{name}:v{version}"
            aliases = [
                r[0]
                for r in conn.execute(
                    "SELECT alias FROM aliases WHERE name=? AND version=? ORDER BY alias", (name, version)
                )
            ]
            return VersionInfo(
                name=name,
                version=version,
                model_id=where,
                digest=str(row["digest"]),
                path=self.root / name / f"v{version}",
                created_at=str(row["created_at"]),
                kind=row["kind"],
                task=row["task"],
                metrics=self._json(row, "metrics", where),
                tags=self._json(row, "tags", where),
                trusted=bool(row["trusted"]),
                aliases=aliases,
                pickle_based=bool(row["pickle_based"]),
                size_bytes=int(row["size_bytes"] or 0),
            )
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            raise RegistryError(
                f"registry index {self.db_path} has a damaged versions row ({type(exc).__name__}: {exc}); "
                f"{rebuild_hint(self.root)}"
            ) from exc

    # ------------------------------------------------------------------ queries

    def not_found(self, conn: sqlite3.Connection | None, what: str, name: str | None = None) -> ModelNotFoundError:
        on_disk = disk_versions(self.root).get(name, []) if name else []
        if on_disk and conn is not None:
            indexed = {int(r[0]) for r in conn.execute("SELECT version FROM versions WHERE name=?", (name,))}
            on_disk = [v for v in on_disk if v not in indexed]
        if on_disk:  # the index lost it (a healthy index that lacks a name's folders)
            return ModelNotFoundError(
                f"{what}: the index has no row for {name}/v{on_disk[0]}, which is on disk; "
                f"run `aitrader registry rebuild --registry {self.root}` to re-index it"
            )
        if conn is None:
            return ModelNotFoundError(
                f"{what}: the registry at {self.root} is empty; register an artifact first "
                "(aitrader register DIR --name NAME) or pass --registry PATH"
            )
        known = [
            f"{r[0]} (v1..v{r[1]})" if r[1] > 1 else f"{r[0]} (v1)"
            for r in conn.execute("SELECT name, MAX(version) FROM versions GROUP BY name ORDER BY name")
        ]
        listing = ", ".join(known) if known else "none"
        return ModelNotFoundError(f"{what} in the registry at {self.root}; registered: {listing}")

    def version_of(self, conn: sqlite3.Connection, ref: ModelRef) -> int | None:
        """The version number ``ref`` names right now in ``conn``'s snapshot (None: no such version)."""
        if ref.alias is not None:
            row = conn.execute("SELECT version FROM aliases WHERE name=? AND alias=?", (ref.name, ref.alias)).fetchone()
            return None if row is None else int(row[0])
        if ref.version is not None:
            row = conn.execute(
                "SELECT version FROM versions WHERE name=? AND version=?", (ref.name, ref.version)
            ).fetchone()
        else:
            row = conn.execute("SELECT MAX(version) FROM versions WHERE name=?", (ref.name,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def resolve_in(self, conn: sqlite3.Connection, ref: ModelRef) -> VersionInfo:
        version = ref.version
        if ref.alias is not None:
            row = conn.execute("SELECT version FROM aliases WHERE name=? AND alias=?", (ref.name, ref.alias)).fetchone()
            if row is None:
                held = [
                    f"{r[0]} -> v{r[1]}"
                    for r in conn.execute("SELECT alias, version FROM aliases WHERE name=? ORDER BY alias", (ref.name,))
                ]
                raise ModelNotFoundError(
                    f"no alias {ref.alias!r} on model {ref.name!r} (aliases: {', '.join(held) or 'none'}); "
                    f"deploy a version first: aitrader deploy --model-id {ref.name} --alias {ref.alias}"
                )
            version = row[0]
        if version is None:
            row = conn.execute(
                "SELECT * FROM versions WHERE name=? ORDER BY version DESC LIMIT 1", (ref.name,)
            ).fetchone()
        else:
            row = conn.execute("SELECT * FROM versions WHERE name=? AND version=?", (ref.name, version)).fetchone()
        if row is None:
            raise self.not_found(conn, f"unknown model id {safe_text(str(ref))!r}", ref.name)
        return self.info(conn, row)

    def resolve(self, ref: ModelRef) -> VersionInfo:
        index = self.reader()
        if index is None:
            raise self.not_found(None, f"unknown model id {str(ref)!r}")
        with index.read() as conn:
            return self.resolve_in(conn, ref)

    def alias_target(self, name: str, alias: str) -> VersionInfo | None:
        validate_name(name)
        index = self.reader()
        if index is None:
            return None
        with index.read() as conn:
            row = conn.execute("SELECT version FROM aliases WHERE name=? AND alias=?", (name, alias)).fetchone()
            if row is None:
                return None
            return self.resolve_in(conn, ModelRef(name, version=row[0]))

    def list_versions(self, name: str | None = None) -> list[VersionInfo]:
        if name is not None:
            validate_name(name)
        index = self.reader()
        if index is None:
            if name is not None:
                raise self.not_found(None, f"unknown model {name!r}")
            return []
        with index.read() as conn:
            if name is None:
                rows = conn.execute("SELECT * FROM versions ORDER BY name, version").fetchall()
            else:
                rows = conn.execute("SELECT * FROM versions WHERE name=? ORDER BY version", (name,)).fetchall()
                if not rows:
                    raise self.not_found(conn, f"unknown model {name!r}", name)
            return [self.info(conn, r) for r in rows]

    def unindexed(self, name: str | None = None) -> list[tuple[str, int]]:
        """(name, N) of every complete ``NAME/vN`` folder on disk that the index has no row for.

        A register killed between its rename and its commit leaves one (the next register moves it
        aside); an index restored from an older copy leaves several. ``verify`` reports them.
        """
        found = disk_versions(self.root)
        if name is not None:
            found = {name: found[name]} if name in found else {}
        if not found:
            return []
        index = self.reader()
        if index is None:
            return [(n, v) for n, vs in found.items() for v in vs]
        try:
            with index.read() as conn:
                known = {(r[0], int(r[1])) for r in conn.execute("SELECT name, version FROM versions")}
        except sqlite3.DatabaseError as exc:  # pragma: no cover - read() converts these already
            raise db_error(self.db_path, exc) from exc
        return [(n, v) for n, vs in found.items() for v in vs if (n, v) not in known]
