"""``aitrader registry rebuild``: recover the index from the immutable version folders.

What comes back, and from where:

- every ``NAME/vN`` folder whose files match its own ``checksums.sha256`` (only regular files;
  nothing is deserialised): the version, its digest, every file's SHA256 and size, and from its
  ``manifest.json`` the kind, task, pickle flag and headline metrics. A folder that does not match
  its list is not indexed and is reported (it was changed after registration);
- from ``deploy_log.jsonl`` when it exists: tags, trust decisions, who registered each version and
  when (matched by name, version *and* digest), every deploy-log row, and so every alias;
- from the old index itself, whatever of it can still be read (its deploy log and version rows,
  table by table): it wins over the journal for the rows it still has, so rebuilding a healthy
  index loses nothing, and history from before the journal existed is kept;
- with neither, aliases and the deploy history cannot be recovered (the index was the only
  copy): the report says so, and pickle-based versions come back untrusted (re-register them with
  ``--trust-pickle`` to trust them again).

The new index is built under a temporary name and renamed over ``registry.db`` at the end; the
old file (with its ``-wal``/``-shm``) is kept as ``registry.db.replaced-<time>``. Run it while no
other registry command is running on the same root.
"""

from __future__ import annotations

import json
import sqlite3
import stat
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aitrader.errors import RegistryError
from aitrader.registry import hashing, journal
from aitrader.registry.catalog import Catalog
from aitrader.registry.hashing import CHECKSUM_FILE
from aitrader.registry.index import Index
from aitrader.registry.layout import DB_NAME, disk_versions
from aitrader.registry.log import ALIAS_ACTIONS, now_iso
from aitrader.registry.manifest_check import MANIFEST_NAME, summary
from aitrader.registry.verify import walk_quiet


@dataclass
class RebuildReport:
    root: str
    versions: list[str] = field(default_factory=list)  # model ids indexed
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}
    aliases: dict[str, int] = field(default_factory=dict)  # "name@alias" -> version
    events: int = 0  # deploy-log rows restored
    journal: bool = False  # deploy_log.jsonl was found
    journal_bad_lines: int = 0
    old_index: bool = False  # rows were read from the old registry.db
    replaced: str | None = None  # where the old index was moved
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _scan_version(path: Path) -> tuple[dict[str, tuple[str, int]], str]:
    """rel -> (sha256, size) of a version folder checked against its own list, and the digest.

    RegistryError naming the first problem when the folder does not match its checksum file.
    """
    listing = path / CHECKSUM_FILE
    mode = listing.lstat().st_mode
    if not stat.S_ISREG(mode):
        raise RegistryError(f"{CHECKSUM_FILE} is a {hashing.file_kind(mode)}")
    text = listing.read_text(encoding="utf-8")
    listed = hashing.parse_checksum_text(text)
    present = {rel for rel, _ in walk_quiet(path)} - {CHECKSUM_FILE}
    if present != set(listed):
        diff = sorted(present ^ set(listed))[0]
        how = "not listed in" if diff in present else "missing but listed in"
        raise RegistryError(f"{diff} is {how} {CHECKSUM_FILE}")
    files: dict[str, tuple[str, int]] = {}
    for rel in sorted(listed):
        file_mode = (path / rel).lstat().st_mode
        if not stat.S_ISREG(file_mode):
            raise RegistryError(f"{rel} is a {hashing.file_kind(file_mode)}, not a regular file")
        sha, size = hashing.sha256_file(path / rel)
        if sha != listed[rel]:
            raise RegistryError(f"{rel} has sha256 {sha[:16]}..., {CHECKSUM_FILE} lists {listed[rel][:16]}...")
        files[rel] = (sha, size)
    if hashing.checksum_text(listed) != text:
        raise RegistryError(f"{CHECKSUM_FILE} is not in the registry's format (sorted sha256sum lines)")
    return files, hashing.digest_of(text)


def _manifest_summary(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise RegistryError(f"{MANIFEST_NAME} is not readable JSON ({type(exc).__name__})") from exc
    if not isinstance(manifest, dict):
        raise RegistryError(f"{MANIFEST_NAME} is not a JSON object")
    return summary(manifest)


def _replay(events: list[dict[str, Any]]) -> tuple[dict[tuple[str, int], dict[str, Any]], list[dict[str, Any]]]:
    """(name, version) -> the last register/update record; deploy-log rows sorted by their index id."""
    records: dict[tuple[str, int], dict[str, Any]] = {}
    rows: dict[int, dict[str, Any]] = {}
    for e in events:
        try:
            if e["event"] in ("register", "update"):
                records[(str(e["name"]), int(e["version"]))] = e
            elif e["event"] == "deploy_log":
                rows[int(e["id"])] = e
        except (KeyError, TypeError, ValueError):
            continue
    return records, [rows[i] for i in sorted(rows)]


def _old_index_events(db: Path) -> list[dict[str, Any]]:
    """Register and deploy-log events read from an old index, table by table, as far as it is readable.

    Read-only (``mode=ro`` when a WAL holds pending transactions, else ``immutable=1``): the old file
    is never written, and a read-only connection never checkpoints or deletes its WAL on close.
    """
    if not db.is_file() or db.is_symlink():
        return []
    try:
        index = Index(db, create=False, readonly=True)
    except (RegistryError, OSError):
        return []
    try:
        return _read_old(index.conn)
    finally:
        index.close()


def _read_old(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for table, kind in (("versions", "register"), ("deploy_log", "deploy_log")):
        try:
            rows = [dict(r) for r in conn.execute(f"SELECT * FROM {table}")]  # noqa: S608 - fixed names
        except sqlite3.DatabaseError:  # a damaged or missing table: the journal may still have it
            rows = []
        for row in rows:
            try:
                if kind == "register":
                    row["tags"] = json.loads(row.get("tags") or "{}")
                else:
                    row["checks"] = json.loads(row.get("checks") or "[]")
                    row["details"] = json.loads(row["details"]) if row.get("details") else None
            except (TypeError, ValueError):
                continue
            events.append({**row, "event": kind})
    return events


def rebuild(catalog: Catalog) -> RebuildReport:
    """Build a new index from the version folders (+ the journal), then swap it in."""
    root = catalog.root
    if not root.is_dir():
        raise RegistryError(f"registry root {root} does not exist; pass --registry PATH")
    report = RebuildReport(root=str(root))
    events, report.journal_bad_lines = journal.read(catalog.journal_path)
    report.journal = catalog.journal_path.is_file()
    catalog.close()
    old = _old_index_events(catalog.db_path)
    report.old_index = bool(old)
    records, log_rows = _replay(events + old)  # the old index's rows come last: they win
    tmp = root / f".rebuild-{uuid.uuid4().hex[:12]}.db"
    try:
        index = Index(tmp, create=True)
    except (OSError, RegistryError) as exc:
        raise RegistryError(f"cannot create a new index in {root} ({exc}); check that the folder is writable") from exc
    try:
        kept = _fill(index, root, records, log_rows, report)
        index.close()
        report.replaced = _swap(root, tmp)
    except BaseException:
        index.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        raise
    if not report.journal and not report.old_index:
        report.notes.append(
            f"no {catalog.journal_path.name}: aliases and the deploy history could not be recovered (the index "
            "was their only copy); pickle-based versions come back untrusted: re-register with --trust-pickle"
        )
    elif report.journal_bad_lines:
        bad = report.journal_bad_lines
        report.notes.append(f"{bad} unreadable line(s) in {catalog.journal_path.name} were skipped")
    if kept:
        report.notes.append(kept)
    return report


def _fill(
    index: Index,
    root: Path,
    records: dict[tuple[str, int], dict[str, Any]],
    log_rows: list[dict[str, Any]],
    report: RebuildReport,
) -> str:
    now = now_iso()
    indexed: set[tuple[str, int]] = set()
    with index.write() as conn:
        for name, numbers in disk_versions(root).items():
            for n in numbers:
                path = root / name / f"v{n}"
                try:
                    files, digest = _scan_version(path)
                    info = _manifest_summary(path)
                except (OSError, UnicodeDecodeError, RegistryError) as exc:
                    report.skipped.append({"path": str(path), "reason": str(exc)})
                    continue
                rec = records.get((name, n))
                if rec is not None and rec.get("digest") != digest:
                    rec = None  # the journal describes other files under this number: trust nothing of it
                created = str(rec["created_at"]) if rec else _mtime_iso(path)
                raw_tags = rec.get("tags") if rec else None
                tags: dict[str, Any] = raw_tags if isinstance(raw_tags, dict) else {}
                conn.execute("INSERT OR IGNORE INTO models VALUES (?, ?)", (name, created))
                cur = conn.execute(
                    "INSERT INTO versions (name, version, digest, created_at, kind, task, metrics, tags, trusted,"
                    " pickle_based, size_bytes, source, registered_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        name,
                        n,
                        digest,
                        created,
                        info["kind"],
                        info["task"],
                        json.dumps(info["metrics"]),
                        json.dumps({str(k): str(v) for k, v in tags.items()}, sort_keys=True),
                        int(bool(rec and rec.get("trusted"))),
                        int(info["pickle_based"]),
                        sum(size for _, size in files.values()),
                        str(rec.get("source")) if rec and rec.get("source") else None,
                        str(rec.get("registered_by")) if rec else f"rebuilt {now}",
                    ),
                )
                conn.executemany(
                    "INSERT INTO files VALUES (?, ?, ?, ?)",
                    [(cur.lastrowid, rel, sha, size) for rel, (sha, size) in sorted(files.items())],
                )
                indexed.add((name, n))
                report.versions.append(f"{name}:v{n}")
        holders: dict[tuple[str, str], int] = {}
        for row in log_rows:
            try:
                name, alias = str(row["name"]), str(row["alias"])
                to_version = int(row["to_version"])
                conn.execute(
                    "INSERT INTO deploy_log (id, ts, user, host, name, alias, action, from_version, to_version,"
                    " status, checks, reason, details) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        int(row["id"]),
                        str(row["ts"]),
                        str(row.get("user")),
                        str(row.get("host")),
                        name,
                        alias,
                        str(row["action"]),
                        None if row.get("from_version") is None else int(row["from_version"]),
                        to_version,
                        str(row["status"]),
                        json.dumps(row.get("checks") or []),
                        None if row.get("reason") is None else str(row["reason"]),
                        None if row.get("details") is None else json.dumps(row["details"], sort_keys=True),
                    ),
                )
            except (KeyError, TypeError, ValueError):
                continue
            report.events += 1
            if row["action"] in ALIAS_ACTIONS and row["status"] == "success":
                holders[(name, alias)] = to_version
        missing = []
        for (name, alias), version in sorted(holders.items()):
            if (name, version) not in indexed:
                missing.append(f"{name}@{alias} -> v{version}")
                continue
            conn.execute("INSERT INTO aliases VALUES (?,?,?,?)", (name, alias, version, now))
            report.aliases[f"{name}@{alias}"] = version
    if missing:
        return f"not restored (the version is not indexed): {', '.join(missing)}"
    return ""


def _mtime_iso(path: Path) -> str:
    try:
        return datetime.fromtimestamp((path / CHECKSUM_FILE).stat().st_mtime, UTC).isoformat(timespec="microseconds")
    except OSError:
        return now_iso()


def _checkpoint(db: Path) -> None:
    """Fold a readable old index's WAL into its main file, so the file set aside stands alone.

    Without it, the committed rows of a WAL-mode index may live only in its ``-wal``, and the renamed
    set was unreadable ("file is not a database") in 18 of 30 tries; a damaged or foreign index is
    moved aside as it is."""
    if not db.is_file() or db.is_symlink():
        return
    try:
        conn = sqlite3.connect(str(db), timeout=5.0)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return


def _swap(root: Path, tmp: Path) -> str | None:
    """Move the old index (and its -wal/-shm/-journal) aside, rename the new one in; the old path or None."""
    db = root / DB_NAME
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    aside = root / f"{DB_NAME}.replaced-{stamp}"
    replaced = None
    _checkpoint(db)
    if db.exists() or db.is_symlink():
        db.rename(aside)
        replaced = str(aside)
    for suffix in ("-wal", "-shm", "-journal"):  # never let an old WAL be replayed into the new file
        old = Path(f"{db}{suffix}")
        if old.exists() or old.is_symlink():
            old.rename(Path(f"{aside}{suffix}"))
    tmp.replace(db)
    hashing.fsync_dir(root)
    return replaced
