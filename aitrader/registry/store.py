"""The registry: immutable, SHA256-verified version folders plus a SQLite index.

Layout under the root (``./models`` unless ``root`` or ``$AITRADER_REGISTRY`` says otherwise)::

    registry.db                 the index (WAL mode)
    NAME/vN/...                 the artifact's files, byte for byte
    NAME/vN/checksums.sha256    sha256sum-format list; its SHA256 is the version digest
    NAME/.tmp-*                 a register in progress (or killed); never listed
    NAME/.orphan-vN-*           a folder renamed into place by a register killed before its commit

A register copies into ``NAME/.tmp-*`` (hashing the bytes it writes), fsyncs, then in one
``BEGIN IMMEDIATE`` transaction picks N, renames the folder to ``vN`` and inserts the rows. The
index is the source of truth: a folder without a row is invisible.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aitrader.errors import IntegrityError, ModelError, ModelNotFoundError, RegistryError, TrustError
from aitrader.registry import hashing
from aitrader.registry.hashing import CHECKSUM_FILE
from aitrader.registry.index import DB_NAME, Index
from aitrader.registry.manifest_check import MANIFEST_NAME, read_artifact_manifest, summary
from aitrader.registry.names import DEFAULT_ALIAS, ModelRef, parse_model_id, validate_name, validate_tags
from aitrader.registry.types import (
    DeployResult,
    FileProblem,
    History,
    LoadedModel,
    VerifyReport,
    VersionCheck,
    VersionInfo,
)

ENV_ROOT = "AITRADER_REGISTRY"
DEFAULT_ROOT = "models"
# Tests set this to a number of seconds to widen the crash windows of register (never in production).
TEST_DELAY_ENV = "AITRADER_TEST_REGISTER_DELAY"
_VDIR = re.compile(r"v([0-9]+)")

_RUNNER_CACHE: dict[str, Any] = {}  # digest -> runner; per process
_CACHE_LOCK = threading.Lock()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def who() -> tuple[str, str]:
    """(user, host) for the audit trail; never fails."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return user, socket.gethostname() or "unknown"


def _host_token() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _test_pause() -> None:
    delay = os.environ.get(TEST_DELAY_ENV)
    if delay:
        time.sleep(float(delay))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # ------------------------------------------------------------------ index access

    def _writer(self) -> Index:
        """The index, creating the root and the database when needed."""
        if self._index is not None:
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
        self._index = Index(self.db_path, create=True)
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
        validate_name(name)
        tags = validate_tags(tags)
        src = Path(artifact_dir)
        if not src.is_dir():
            raise RegistryError(
                f"artifact folder {src} does not exist or is not a folder; pass the folder `aitrader train` wrote"
            )
        manifest = read_artifact_manifest(src)
        files = list(hashing.artifact_files(src))
        # A folder copied out of a registry carries its checksum list: check it, then write our own.
        listed = self._listed_checksums(src) if any(rel == CHECKSUM_FILE for rel, _ in files) else None
        files = [(rel, path) for rel, path in files if rel != CHECKSUM_FILE]
        if listed is not None:  # checked before anything is written; again on the copy below
            self._check_listed(src, listed, {rel: hashing.sha256_file(path)[0] for rel, path in files})
        info = summary(manifest)
        index = self._writer()
        model_dir = self.root / name
        tmp = model_dir / f".tmp-{_host_token()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            model_dir.mkdir(exist_ok=True)
            tmp.mkdir()
            hashes, size = self._copy_into(files, tmp)
            if listed is not None:
                self._check_listed(src, listed, hashes)
            text = hashing.checksum_text(hashes)
            hashing.write_durable(tmp / CHECKSUM_FILE, text)
            hashing.fsync_dir(tmp)
            digest = hashing.digest_of(text)
            _test_pause()
            return self._commit(index, name, model_dir, tmp, digest, hashes, size, info, tags, trust_pickle, src)
        except OSError as exc:
            raise RegistryError(
                f"cannot write the new version under {model_dir}: {exc.strerror or exc}; check free space and "
                "permissions of the registry folder"
            ) from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _listed_checksums(src: Path) -> dict[str, str]:
        try:
            return hashing.parse_checksum_text((src / CHECKSUM_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise RegistryError(f"cannot read {src / CHECKSUM_FILE}: {exc}; delete it or restore it") from exc

    @staticmethod
    def _check_listed(src: Path, listed: dict[str, str], hashes: dict[str, str]) -> None:
        if listed != hashes:
            diff = sorted(set(listed.items()) ^ set(hashes.items()))[0][0]
            raise RegistryError(
                f"{src / CHECKSUM_FILE} does not match the artifact's files (first difference: {diff}); "
                "the files changed since they were listed: restore them or delete the checksum file"
            )

    @staticmethod
    def _copy_into(files: Iterable[tuple[str, Path]], dest: Path) -> tuple[dict[str, str], int]:
        hashes: dict[str, str] = {}
        total = 0
        dirs = {dest}
        for rel, path in files:
            target = dest / rel
            if target.parent not in dirs:
                target.parent.mkdir(parents=True, exist_ok=True)
                dirs.add(target.parent)
            hashes[rel], n = hashing.copy_and_hash(path, target)
            target.chmod(0o444)  # a version is immutable; read-only files make accidents less likely
            total += n
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            hashing.fsync_dir(d)
        return hashes, total

    def _commit(
        self,
        index: Index,
        name: str,
        model_dir: Path,
        tmp: Path,
        digest: str,
        hashes: dict[str, str],
        size: int,
        info: dict[str, Any],
        tags: dict[str, str],
        trust_pickle: bool,
        src: Path,
    ) -> VersionInfo:
        user, host = who()
        renamed: Path | None = None
        try:
            with index.write() as conn:
                row = conn.execute("SELECT * FROM versions WHERE name=? AND digest=?", (name, digest)).fetchone()
                if row is not None:
                    return self._reuse(conn, row, tags, trust_pickle, user, host)
                self._sweep(conn, name, model_dir)
                top = conn.execute("SELECT MAX(version) FROM versions WHERE name=?", (name,)).fetchone()[0] or 0
                n = max(top, *self._disk_versions(model_dir), 0) + 1
                final = model_dir / f"v{n}"
                tmp.rename(final)  # same filesystem: atomic; refuses a non-empty target
                renamed = final
                hashing.fsync_dir(model_dir)
                _test_pause()
                now = now_iso()
                conn.execute("INSERT OR IGNORE INTO models VALUES (?, ?)", (name, now))
                cur = conn.execute(
                    "INSERT INTO versions (name, version, digest, created_at, kind, task, metrics, tags, trusted,"
                    " pickle_based, size_bytes, source, registered_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        name,
                        n,
                        digest,
                        now,
                        info["kind"],
                        info["task"],
                        json.dumps(info["metrics"]),
                        json.dumps(tags, sort_keys=True),
                        int(trust_pickle),
                        int(info["pickle_based"]),
                        size,
                        str(src.resolve()),
                        f"{user}@{host}",
                    ),
                )
                conn.executemany(
                    "INSERT INTO files VALUES (?, ?, ?, ?)",
                    [(cur.lastrowid, rel, h, (final / rel).stat().st_size) for rel, h in sorted(hashes.items())],
                )
                result = self._info(
                    conn, conn.execute("SELECT * FROM versions WHERE id=?", (cur.lastrowid,)).fetchone()
                )
        except BaseException:
            if renamed is not None and renamed.exists():
                renamed.rename(tmp)  # not committed: take the folder back out of sight
            raise
        return result

    def _reuse(
        self, conn: sqlite3.Connection, row: sqlite3.Row, tags: dict[str, str], trust: bool, user: str, host: str
    ) -> VersionInfo:
        merged = {**json.loads(row["tags"]), **tags}
        trusted = bool(row["trusted"]) or trust
        if merged != json.loads(row["tags"]) or trusted != bool(row["trusted"]):
            note = row["registered_by"]
            if trusted != bool(row["trusted"]):
                note = f"{note}; trusted by {user}@{host} {now_iso()}"
            conn.execute(
                "UPDATE versions SET tags=?, trusted=?, registered_by=? WHERE id=?",
                (json.dumps(merged, sort_keys=True), int(trusted), note, row["id"]),
            )
            row = conn.execute("SELECT * FROM versions WHERE id=?", (row["id"],)).fetchone()
        info = self._info(conn, row)
        info.reused = True
        return info

    @staticmethod
    def _disk_versions(model_dir: Path) -> list[int]:
        out = []
        for entry in model_dir.iterdir():
            m = _VDIR.fullmatch(entry.name)
            if m:
                out.append(int(m.group(1)))
        return out

    def _sweep(self, conn: sqlite3.Connection, name: str, model_dir: Path) -> None:
        """Inside the write lock: move aside ``vN`` folders with no index row, drop dead temp folders.

        Holding the lock matters: every register renames and inserts inside the same lock, so a
        row-less ``vN`` seen now can only come from a register that died before its commit.
        """
        known = {r[0] for r in conn.execute("SELECT version FROM versions WHERE name=?", (name,))}
        for n in self._disk_versions(model_dir):
            if n not in known:
                (model_dir / f"v{n}").rename(model_dir / f".orphan-v{n}-{uuid.uuid4().hex[:8]}")
        mine = _host_token()
        for entry in model_dir.glob(".tmp-*"):
            parts = entry.name.split("-")
            if len(parts) == 4 and parts[1] == mine and parts[2].isdigit() and not _pid_alive(int(parts[2])):
                shutil.rmtree(entry, ignore_errors=True)

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

    def _file_hashes(self, info: VersionInfo) -> dict[str, str]:
        index = self._reader()
        assert index is not None  # info came from it
        with index.read() as conn:
            return {
                r[0]: r[1]
                for r in conn.execute(
                    "SELECT f.path, f.sha256 FROM files f JOIN versions v ON v.id=f.version_id"
                    " WHERE v.name=? AND v.version=?",
                    (info.name, info.version),
                )
            }

    def check_version(self, info: VersionInfo) -> VersionCheck:
        """Re-hash every file of one version against the index; collect every problem."""
        expected = self._file_hashes(info)
        check = VersionCheck(info.model_id, info.digest, 0, 0)

        def problem(rel: str, kind: str, exp: str | None, found: str | None) -> None:
            check.problems.append(FileProblem(info.model_id, str(info.path / rel), kind, exp, found))

        if hashing.digest_of(hashing.checksum_text(expected)) != info.digest:
            problem(CHECKSUM_FILE, "index", info.digest, hashing.digest_of(hashing.checksum_text(expected)))
        for rel, sha in sorted({**expected, CHECKSUM_FILE: info.digest}.items()):
            path = info.path / rel
            try:
                found, size = hashing.sha256_file(path)
            except FileNotFoundError:
                problem(rel, "missing", sha, None)
                continue
            except OSError as exc:
                problem(rel, "unreadable", sha, exc.strerror)
                continue
            check.files += 1
            check.bytes += size
            if found != sha:
                problem(rel, "checksum_file" if rel == CHECKSUM_FILE else "changed", sha, found)
        if info.path.is_dir():
            present = {rel for rel, _ in _walk_quiet(info.path)}
            for rel in sorted(present - set(expected) - {CHECKSUM_FILE}):
                problem(rel, "unexpected", None, None)
        return check

    def verify(self, model_id: str | None = None) -> VerifyReport:
        """Re-hash every file of every version (or of ``model_id``; a bare NAME means all its versions)."""
        start = time.perf_counter()
        if model_id is None:
            infos = self.list_versions()
        elif ":" in model_id or "@" in model_id:
            infos = [self.resolve(model_id)]
        else:
            infos = self.list_versions(model_id)
        checks = [self.check_version(i) for i in infos]
        return VerifyReport(checks, time.perf_counter() - start)

    def verify_or_raise(self, info: VersionInfo) -> VersionCheck:
        """IntegrityError naming the first bad file unless every hash matches."""
        check = self.check_version(info)
        if check.problems:
            p = check.problems[0]
            more = f" (and {len(check.problems) - 1} more problem(s))" if len(check.problems) > 1 else ""
            raise IntegrityError(_integrity_message(p) + more)
        return check

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
        self, model_id: str, alias: str = DEFAULT_ALIAS, dry_run: bool = False, reason: str | None = None
    ) -> DeployResult:
        """Run the deploy checks on ``model_id`` and point ``alias`` at it; every attempt is logged."""
        from aitrader.registry import deploy as _deploy

        return _deploy.deploy(self, model_id, alias, dry_run=dry_run, reason=reason)

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
    ) -> DeployResult:
        """Register ``artifact_dir`` under ``name`` then deploy that version."""
        from aitrader.registry import deploy as _deploy

        return _deploy.deploy_from_file(
            self, artifact_dir, name, alias, dry_run=dry_run, reason=reason, trust_pickle=trust_pickle, tags=tags
        )

    def rollback(
        self, name: str, alias: str = DEFAULT_ALIAS, reason: str | None = None, dry_run: bool = False
    ) -> DeployResult:
        """Restore the version ``alias`` held before its latest successful change (checks run first)."""
        from aitrader.registry import deploy as _deploy

        return _deploy.rollback(self, name, alias, reason=reason, dry_run=dry_run)

    def history(self, name: str, at: str | None = None) -> History:
        """The append-only deploy log of ``name`` and, with ``at``, which version held each alias then."""
        from aitrader.registry import deploy as _deploy

        return _deploy.history(self, name, at)


def _walk_quiet(root: Path) -> list[tuple[str, Path]]:
    out = []
    for dirpath, _dirs, filenames in os.walk(root):
        for fname in filenames:
            path = Path(dirpath) / fname
            out.append((path.relative_to(root).as_posix(), path))
    return out


def _integrity_message(p: FileProblem) -> str:
    def short(h: str | None) -> str:
        return f"{h[:16]}..." if h else "nothing"

    if p.problem == "missing":
        what = f"file missing: {p.path} (registered {short(p.expected)})"
    elif p.problem == "unexpected":
        what = f"unexpected file {p.path}, not part of the registered version"
    elif p.problem == "index":
        what = f"index inconsistency for {p.path}: the recorded file hashes do not give digest {short(p.expected)}"
    else:
        what = f"sha256 mismatch in {p.path}: registered {short(p.expected)}, found {short(p.found)}"
    return (
        f"{what}; {p.model_id} changed after registration and nothing was loaded. "
        "Re-register the original artifact or deploy another version"
    )
