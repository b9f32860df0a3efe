"""Registering a version: copy into a temp folder, fsync, then rename and index in one transaction.

A register copies into ``NAME/.tmp-<host>-<pid>-<id>`` (hashing the bytes it writes), fsyncs,
then in one ``BEGIN IMMEDIATE`` transaction picks N, renames the folder to ``vN`` and inserts the
rows. The index is the source of truth: a folder without a row is invisible, so a crash at any
point leaves no version or a whole one (docs/registry.md, "Atomicity, concurrency and crashes").
A version number that exists on disk (``vN``, or ``.orphan-vN-*`` moved aside) is never reused.
After the commit the registration is copied to ``deploy_log.jsonl`` (``journal``) for rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aitrader._util import pid_alive
from aitrader.errors import RegistryError
from aitrader.registry import hashing, journal
from aitrader.registry.catalog import Catalog
from aitrader.registry.hashing import CHECKSUM_FILE
from aitrader.registry.index import Index
from aitrader.registry.layout import version_numbers
from aitrader.registry.log import now_iso, who
from aitrader.registry.manifest_check import read_artifact_manifest, summary
from aitrader.registry.names import validate_name, validate_tags
from aitrader.registry.types import VersionInfo

# Tests set this to a number of seconds to widen the crash windows of register (never in production).
TEST_DELAY_ENV = "AITRADER_TEST_REGISTER_DELAY"


def _host_token() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _test_pause() -> None:
    delay = os.environ.get(TEST_DELAY_ENV)
    if delay:
        time.sleep(float(delay))


def register(
    catalog: Catalog,
    artifact_dir: str | Path,
    name: str,
    *,
    tags: dict[str, str] | None = None,
    trust_pickle: bool = False,
) -> VersionInfo:
    """Copy an artifact folder into ``NAME/vN`` atomically and index it (see ``Registry.register``)."""
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
    listed = _listed_checksums(src) if any(rel == CHECKSUM_FILE for rel, _ in files) else None
    files = [(rel, path) for rel, path in files if rel != CHECKSUM_FILE]
    if listed is not None:  # checked before anything is written; again on the copy below
        _check_listed(src, listed, {rel: hashing.sha256_file(path)[0] for rel, path in files})
    info = summary(manifest)
    index = catalog.writer()
    model_dir = catalog.root / name
    tmp = model_dir / f".tmp-{_host_token()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        model_dir.mkdir(exist_ok=True)
        tmp.mkdir()
        hashes, size = _copy_into(files, tmp)
        if listed is not None:
            _check_listed(src, listed, hashes)
        text = hashing.checksum_text(hashes)
        hashing.write_durable(tmp / CHECKSUM_FILE, text)
        hashing.fsync_dir(tmp)
        digest = hashing.digest_of(text)
        _test_pause()
        record = _Record(name, digest, hashes, size, info, tags, trust_pickle, src)
        result, event = _commit(catalog, index, model_dir, tmp, record)
    except OSError as exc:
        raise RegistryError(
            f"cannot write the new version under {model_dir}: {exc.strerror or exc}; check free space and "
            "permissions of the registry folder"
        ) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if event is not None:
        journal.append(catalog.journal_path, event)
    return result


def _journal_event(kind: str, row: sqlite3.Row) -> dict[str, Any]:
    """What rebuild needs beyond the folder: tags, trust, when and by whom (a committed ``versions`` row)."""
    return {
        "event": kind,
        "name": row["name"],
        "version": row["version"],
        "digest": row["digest"],
        "created_at": row["created_at"],
        "tags": json.loads(row["tags"]),
        "trusted": bool(row["trusted"]),
        "registered_by": row["registered_by"],
        "source": row["source"],
    }


@dataclass
class _Record:
    """What a register has to write into the index once its folder is in place."""

    name: str
    digest: str
    hashes: dict[str, str]
    size: int
    info: dict[str, Any]
    tags: dict[str, str]
    trust_pickle: bool
    src: Path


def _listed_checksums(src: Path) -> dict[str, str]:
    try:
        return hashing.parse_checksum_text((src / CHECKSUM_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"cannot read {src / CHECKSUM_FILE}: {exc}; delete it or restore it") from exc


def _check_listed(src: Path, listed: dict[str, str], hashes: dict[str, str]) -> None:
    if listed != hashes:
        diff = sorted(set(listed.items()) ^ set(hashes.items()))[0][0]
        raise RegistryError(
            f"{src / CHECKSUM_FILE} does not match the artifact's files (first difference: {diff}); "
            "the files changed since they were listed: restore them or delete the checksum file"
        )


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
    catalog: Catalog, index: Index, model_dir: Path, tmp: Path, rec: _Record
) -> tuple[VersionInfo, dict[str, Any] | None]:
    """Inside one write transaction: reuse the digest, or pick N, rename and insert the rows.

    Returns the version and the journal line to append after the commit (None: nothing changed).
    """
    user, host = who()
    renamed: Path | None = None
    name = rec.name
    try:
        with index.write() as conn:
            row = conn.execute("SELECT * FROM versions WHERE name=? AND digest=?", (name, rec.digest)).fetchone()
            if row is not None:
                return _reuse(catalog, conn, row, rec.tags, rec.trust_pickle, user, host)
            _sweep(conn, name, model_dir)
            top = conn.execute("SELECT MAX(version) FROM versions WHERE name=?", (name,)).fetchone()[0] or 0
            # never reuse a number that exists on disk: vN folders, and orphans moved aside
            n = max(top, *version_numbers(model_dir, orphans=True), 0) + 1
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
                    rec.digest,
                    now,
                    rec.info["kind"],
                    rec.info["task"],
                    json.dumps(rec.info["metrics"]),
                    json.dumps(rec.tags, sort_keys=True),
                    int(rec.trust_pickle),
                    int(rec.info["pickle_based"]),
                    rec.size,
                    str(rec.src.resolve()),
                    f"{user}@{host}",
                ),
            )
            conn.executemany(
                "INSERT INTO files VALUES (?, ?, ?, ?)",
                [(cur.lastrowid, rel, h, (final / rel).stat().st_size) for rel, h in sorted(rec.hashes.items())],
            )
            new_row = conn.execute("SELECT * FROM versions WHERE id=?", (cur.lastrowid,)).fetchone()
            result = catalog.info(conn, new_row)
            event = _journal_event("register", new_row)
    except BaseException:
        if renamed is not None and renamed.exists():
            renamed.rename(tmp)  # not committed: take the folder back out of sight
        raise
    return result, event


def _reuse(
    catalog: Catalog,
    conn: sqlite3.Connection,
    row: sqlite3.Row,
    tags: dict[str, str],
    trust: bool,
    user: str,
    host: str,
) -> tuple[VersionInfo, dict[str, Any] | None]:
    old_tags = catalog.info(conn, row).tags
    merged = {**old_tags, **tags}
    trusted = bool(row["trusted"]) or trust
    event = None
    if merged != old_tags or trusted != bool(row["trusted"]):
        note = row["registered_by"]
        if trusted != bool(row["trusted"]):
            note = f"{note}; trusted by {user}@{host} {now_iso()}"
        conn.execute(
            "UPDATE versions SET tags=?, trusted=?, registered_by=? WHERE id=?",
            (json.dumps(merged, sort_keys=True), int(trusted), note, row["id"]),
        )
        row = conn.execute("SELECT * FROM versions WHERE id=?", (row["id"],)).fetchone()
        event = _journal_event("update", row)
    info = catalog.info(conn, row)
    info.reused = True
    return info, event


def _sweep(conn: sqlite3.Connection, name: str, model_dir: Path) -> None:
    """Inside the write lock: move aside ``vN`` folders with no index row, drop dead temp folders.

    Holding the lock matters: every register renames and inserts inside the same lock, so a
    row-less ``vN`` seen now can only come from a register that died before its commit (or an index
    restored from an older copy: ``aitrader verify`` reports those before any register). Its number
    stays taken: the orphan keeps it in its name and the next version gets a higher one.
    """
    known = {r[0] for r in conn.execute("SELECT version FROM versions WHERE name=?", (name,))}
    for n in version_numbers(model_dir):
        if n not in known:
            (model_dir / f"v{n}").rename(model_dir / f".orphan-v{n}-{uuid.uuid4().hex[:8]}")
    mine = _host_token()
    for entry in model_dir.glob(".tmp-*"):
        parts = entry.name.split("-")
        if len(parts) == 4 and parts[1] == mine and parts[2].isdigit() and not pid_alive(int(parts[2])):
            shutil.rmtree(entry, ignore_errors=True)
