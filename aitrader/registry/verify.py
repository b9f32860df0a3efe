"""Verification: re-hash a version's files against the index and describe every difference.

The index (not the folder's own ``checksums.sha256``) is the reference, so a file edited
together with a rewritten checksum list is still caught. Nothing here deserialises a model.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from aitrader.errors import IntegrityError
from aitrader.registry import hashing
from aitrader.registry.hashing import CHECKSUM_FILE
from aitrader.registry.types import FileProblem, VerifyReport, VersionCheck, VersionInfo

if TYPE_CHECKING:
    from aitrader.registry.store import Registry


def file_hashes(registry: Registry, info: VersionInfo) -> dict[str, str]:
    """relative path -> SHA256 recorded in the index for one version."""
    index = registry._reader()
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


def check_version(registry: Registry, info: VersionInfo) -> VersionCheck:
    """Re-hash every file of one version against the index; collect every problem."""
    expected = file_hashes(registry, info)
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
        present = {rel for rel, _ in walk_quiet(info.path)}
        for rel in sorted(present - set(expected) - {CHECKSUM_FILE}):
            problem(rel, "unexpected", None, None)
    return check


def verify(registry: Registry, model_id: str | None = None) -> VerifyReport:
    """Re-hash every file of every version (or of ``model_id``; a bare NAME means all its versions)."""
    start = time.perf_counter()
    if model_id is None:
        infos = registry.list_versions()
    elif ":" in model_id or "@" in model_id:
        infos = [registry.resolve(model_id)]
    else:
        infos = registry.list_versions(model_id)
    checks = [check_version(registry, i) for i in infos]
    return VerifyReport(checks, time.perf_counter() - start)


def verify_or_raise(registry: Registry, info: VersionInfo) -> VersionCheck:
    """IntegrityError naming the first bad file unless every hash matches."""
    check = check_version(registry, info)
    if check.problems:
        p = check.problems[0]
        more = f" (and {len(check.problems) - 1} more problem(s))" if len(check.problems) > 1 else ""
        raise IntegrityError(integrity_message(p) + more)
    return check


def walk_quiet(root: Path) -> list[tuple[str, Path]]:
    """Every file under ``root`` as (posix relative path, path); unreadable folders are skipped."""
    out = []
    for dirpath, _dirs, filenames in os.walk(root):
        for fname in filenames:
            path = Path(dirpath) / fname
            out.append((path.relative_to(root).as_posix(), path))
    return out


def integrity_message(p: FileProblem) -> str:
    """One line: what differs, that nothing was loaded, and what to do."""

    def short(h: str | None) -> str:
        return f"{h[:16]}..." if h else "nothing"

    if p.problem == "missing":
        what = f"file missing: {p.path} (registered {short(p.expected)})"
    elif p.problem == "unexpected":
        what = f"unexpected file {p.path}, not part of the registered version"
    elif p.problem == "index":
        what = f"index inconsistency for {p.path}: the recorded file hashes do not give digest {short(p.expected)}"
    elif p.problem == "unreadable":
        what = f"cannot read {p.path} ({p.found or 'permission denied'})"
    else:
        what = f"sha256 mismatch in {p.path}: registered {short(p.expected)}, found {short(p.found)}"
    return (
        f"{what}; {p.model_id} changed after registration and nothing was loaded. "
        "Re-register the original artifact or deploy another version"
    )
