"""The registry: immutable, SHA256-verified version folders plus a SQLite index.

Layout under the root (``./models`` unless ``root`` or ``$AITRADER_REGISTRY`` says otherwise)::

    registry.db                 the index (WAL mode)
    NAME/vN/...                 the artifact's files, byte for byte
    NAME/vN/checksums.sha256    sha256sum-format list; its SHA256 is the version digest
    NAME/.tmp-*                 a register in progress (or killed); never listed
    NAME/.orphan-vN-*           a folder renamed into place by a register killed before its commit

``Registry`` is the public face; the work lives in one module per concern: ``register``
(atomic copy and commit), ``verify`` (re-hashing against the index), ``deploy`` (checks and
promotion), ``log`` (the append-only deploy log and history), ``index`` (the SQLite schema).
The index is the source of truth: a folder without a row is invisible.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

from aitrader.errors import ModelError, ModelNotFoundError, RegistryError, TrustError
from aitrader.registry import log as _log
from aitrader.registry import register as _register
from aitrader.registry import verify as _verify
from aitrader.registry.index import DB_NAME, Index
from aitrader.registry.log import now_iso, who
from aitrader.registry.manifest_check import MANIFEST_NAME
from aitrader.registry.names import DEFAULT_ALIAS, ModelRef, parse_model_id, validate_name
from aitrader.registry.types import (
    DeployEvent,
    DeployResult,
    History,
    LoadedModel,
    VerifyReport,
    VersionCheck,
    VersionInfo,
)

__all__ = ["DEFAULT_ROOT", "ENV_ROOT", "Registry", "clear_cache", "now_iso", "who"]

ENV_ROOT = "AITRADER_REGISTRY"
DEFAULT_ROOT = "models"

_RUNNER_CACHE: dict[str, Any] = {}  # digest -> runner; per process
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget every loaded runner of this process."""
    with _CACHE_LOCK:
        _RUNNER_CACHE.clear()


class Registry:
    """A model registry rooted at ``root`` (see the module docstring for the layout)."""

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            root = os.environ.get(ENV_ROOT) or DEFAULT_ROOT
        self.root = Path(root)
        self.db_path = self.root / DB_NAME
        self._index: Index | None = None
        self._writable = False  # the schema was created/migrated by this object

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # ------------------------------------------------------------------ index access

    def _writer(self) -> Index:
        """The index, creating the root and the database (or migrating its schema) when needed."""
        if self._index is not None and self._writable:
            return self._index
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{uuid.uuid4().hex}"
            probe.mkdir()
            probe.rmdir()
        except OSError as exc:
            raise RegistryError(
                f"registry root {self.root} is not writable ({exc.strerror or exc}); pass --registry PATH "
                f"or set {ENV_ROOT} to a writable folder"
            ) from exc
        if self._index is not None:  # opened for reading first: bring the schema up to date now
            self._index.init_schema()
        else:
            self._index = Index(self.db_path, create=True)
        self._writable = True
        return self._index

    def _reader(self) -> Index | None:
        """The index for reading, or None when nothing was ever registered here (nothing is created)."""
        if self._index is not None:
            return self._index
        if not self.db_path.is_file():
            return None
        self._index = Index(self.db_path, create=False)
        return self._index

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
            self._writable = False

    def integrity_ok(self) -> bool:
        """SQLite's own integrity check of the index (True when there is no index yet)."""
        index = self._reader()
        return True if index is None else index.integrity_ok()

    # ------------------------------------------------------------------ register

    def register(
        self, artifact_dir: str | Path, name: str, *, tags: dict[str, str] | None = None, trust_pickle: bool = False
    ) -> VersionInfo:
        """Copy an artifact folder into ``NAME/vN`` atomically and index it.

        The same digest registered twice under one name returns the existing version
        (``reused=True``); ``trust_pickle`` and new tags are then added to it.
        """
        return _register.register(self, artifact_dir, name, tags=tags, trust_pickle=trust_pickle)

    # ------------------------------------------------------------------ queries

    def _info(self, conn: sqlite3.Connection, row: sqlite3.Row) -> VersionInfo:
        aliases = [
            r[0]
            for r in conn.execute(
                "SELECT alias FROM aliases WHERE name=? AND version=? ORDER BY alias", (row["name"], row["version"])
            )
        ]
        return VersionInfo(
            name=row["name"],
            version=row["version"],
            model_id=f"{row['name']}:v{row['version']}",
            digest=row["digest"],
            path=self.root / row["name"] / f"v{row['version']}",
            created_at=row["created_at"],
            kind=row["kind"],
            task=row["task"],
            metrics=json.loads(row["metrics"]),
            tags=json.loads(row["tags"]),
            trusted=bool(row["trusted"]),
            aliases=aliases,
            pickle_based=bool(row["pickle_based"]),
            size_bytes=row["size_bytes"],
        )

    def _not_found(self, conn: sqlite3.Connection | None, what: str) -> ModelNotFoundError:
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

    def resolve(self, model_id: str) -> VersionInfo:
        """``NAME`` (latest), ``NAME:vN`` or ``NAME@alias`` -> VersionInfo, or ModelNotFoundError."""
        ref = parse_model_id(model_id)
        index = self._reader()
        if index is None:
            raise self._not_found(None, f"unknown model id {model_id!r}")
        with index.read() as conn:
            return self._resolve(conn, ref)

    def _resolve(self, conn: sqlite3.Connection, ref: ModelRef) -> VersionInfo:
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
            raise self._not_found(conn, f"unknown model id {str(ref)!r}")
        return self._info(conn, row)

    def alias_target(self, name: str, alias: str) -> VersionInfo | None:
        """The version ``alias`` points to, or None when the alias is not set."""
        validate_name(name)
        index = self._reader()
        if index is None:
            return None
        with index.read() as conn:
            row = conn.execute("SELECT version FROM aliases WHERE name=? AND alias=?", (name, alias)).fetchone()
            if row is None:
                return None
            return self._resolve(conn, ModelRef(name, version=row[0]))

    def list_versions(self, name: str | None = None) -> list[VersionInfo]:
        """Every indexed version (of one model when ``name`` is given), by name then version."""
        if name is not None:
            validate_name(name)
        index = self._reader()
        if index is None:
            if name is not None:
                raise self._not_found(None, f"unknown model {name!r}")
            return []
        with index.read() as conn:
            if name is None:
                rows = conn.execute("SELECT * FROM versions ORDER BY name, version").fetchall()
            else:
                rows = conn.execute("SELECT * FROM versions WHERE name=? ORDER BY version", (name,)).fetchall()
                if not rows:
                    raise self._not_found(conn, f"unknown model {name!r}")
            return [self._info(conn, r) for r in rows]

    # ------------------------------------------------------------------ verification and loading

    def check_version(self, info: VersionInfo) -> VersionCheck:
        """Re-hash every file of one version against the index; collect every problem."""
        return _verify.check_version(self, info)

    def verify(self, model_id: str | None = None) -> VerifyReport:
        """Re-hash every file of every version (or of ``model_id``; a bare NAME means all its versions)."""
        return _verify.verify(self, model_id)

    def verify_or_raise(self, info: VersionInfo) -> VersionCheck:
        """IntegrityError naming the first bad file unless every hash matches."""
        return _verify.verify_or_raise(self, info)

    def load(self, model_id: str) -> LoadedModel:
        """Verify every file's SHA256, check trust, then build a runner (cached per process by digest)."""
        info = self.resolve(model_id)
        self.verify_or_raise(info)  # before anything is deserialised
        return self.load_verified(info)

    def load_verified(self, info: VersionInfo) -> LoadedModel:
        """Load a version whose files were verified just now by the caller (deploy checks)."""
        manifest = json.loads((info.path / MANIFEST_NAME).read_text(encoding="utf-8"))
        pickle_based = info.pickle_based or bool((manifest.get("model") or {}).get("pickle_based"))
        if pickle_based and not info.trusted:
            raise TrustError(
                f"{info.model_id} is pickle-based and was registered without --trust-pickle: loading a pickle "
                "runs code from the file. If you trust its source, re-register it: aitrader register "
                f"{info.path} --name {info.name} --trust-pickle"
            )
        with _CACHE_LOCK:
            runner = _RUNNER_CACHE.get(info.digest)
        if runner is None:
            from aitrader.models.runner import ModelRunner

            try:
                runner = ModelRunner.from_artifact(info.path, manifest, trust_pickle=info.trusted)
            except RegistryError:
                raise
            except ModelError:
                raise
            except Exception as exc:  # a verified file that still fails to load: report, do not crash
                raise ModelError(f"cannot load {info.model_id} from {info.path}: {type(exc).__name__}: {exc}") from exc
            with _CACHE_LOCK:
                _RUNNER_CACHE[info.digest] = runner
        return LoadedModel(info=info, manifest=manifest, runner=runner, path=info.path)

    # ------------------------------------------------------------------ deploy (aitrader.registry.deploy)

    def deploy(
        self, model_id: str, alias: str = DEFAULT_ALIAS, dry_run: bool = False, reason: str | None = None,
        require_edge: bool = False,
    ) -> DeployResult:
        """Run the deploy checks on ``model_id`` and point ``alias`` at it; every attempt is logged.

        ``require_edge``: also fail unless the training verdict says edge (else only a warning)."""
        from aitrader.registry import deploy as _deploy

        return _deploy.deploy(self, model_id, alias, dry_run=dry_run, reason=reason, require_edge=require_edge)

    def deploy_from_file(
        self,
        artifact_dir: str | Path,
        name: str,
        alias: str = DEFAULT_ALIAS,
        *,
        dry_run: bool = False,
        reason: str | None = None,
        trust_pickle: bool = False,
        tags: dict[str, str] | None = None,
        require_edge: bool = False,
    ) -> DeployResult:
        """Register ``artifact_dir`` under ``name`` then deploy that version."""
        from aitrader.registry import deploy as _deploy

        return _deploy.deploy_from_file(
            self, artifact_dir, name, alias, dry_run=dry_run, reason=reason, trust_pickle=trust_pickle, tags=tags,
            require_edge=require_edge,
        )

    def rollback(
        self, name: str, alias: str = DEFAULT_ALIAS, reason: str | None = None, dry_run: bool = False
    ) -> DeployResult:
        """Restore the version ``alias`` held before its latest successful change (checks run first)."""
        from aitrader.registry import deploy as _deploy

        return _deploy.rollback(self, name, alias, reason=reason, dry_run=dry_run)

    def history(self, name: str, at: str | None = None) -> History:
        """The append-only deploy log of ``name`` and, with ``at``, which version held each alias then."""
        return _log.history(self, name, at)

    def record_decision(
        self,
        model_id: str,
        *,
        alias: str = DEFAULT_ALIAS,
        decision: str,
        reason: str,
        details: dict[str, Any] | None = None,
    ) -> DeployEvent:
        """Log an evaluation of ``model_id`` against ``alias``'s holder that may have promoted nothing.

        ``decision``: ``promoted`` (only once ``alias`` points at ``model_id``), ``rejected``,
        ``unchanged`` or ``registered``; ``details``: the scores (JSON; NaN stored as null). Appends
        one ``evaluate`` row to the deploy log and moves no alias; ``history`` shows it.
        """
        return _log.record_decision(self, model_id, alias=alias, decision=decision, reason=reason, details=details)
