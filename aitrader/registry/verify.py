"""Verification: re-hash a version's files against the index and describe every difference.

The index (not the folder's own ``checksums.sha256``) is the reference, so a file edited
together with a rewritten checksum list is still caught. Nothing here deserialises a model.
Only regular files are ever opened: a FIFO, socket, device, directory or symbolic link where a
file should be (or anywhere in a version folder) is reported as a tamper at once (``lstat``),
never opened, so it cannot make a verify, deploy or paper-trade hang.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from aitrader.errors import IntegrityError
from aitrader.registry import hashing
from aitrader.registry.catalog import Catalog
from aitrader.registry.hashing import CHECKSUM_FILE
from aitrader.registry.names import parse_model_id, safe_text
from aitrader.registry.types import FileProblem, VerifyReport, VersionCheck, VersionInfo


def file_hashes(catalog: Catalog, info: VersionInfo) -> dict[str, str]:
    """relative path -> SHA256 recorded in the index for one version."""
    index = catalog.reader()
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


def check_version(catalog: Catalog, info: VersionInfo) -> VersionCheck:
    """Re-hash every file of one version against the index; collect every problem."""
    expected = file_hashes(catalog, info)
    check = VersionCheck(info.model_id, info.digest, 0, 0)

    def problem(rel: str, kind: str, exp: str | None, found: str | None) -> None:
        check.problems.append(FileProblem(info.model_id, str(info.path / rel), kind, exp, found))

    if hashing.digest_of(hashing.checksum_text(expected)) != info.digest:
        problem(CHECKSUM_FILE, "index", info.digest, hashing.digest_of(hashing.checksum_text(expected)))
    for rel, sha in sorted({**expected, CHECKSUM_FILE: info.digest}.items()):
        path = info.path / rel
        try:
            mode = path.lstat().st_mode
            if not stat.S_ISREG(mode):  # never open a FIFO, device or link: report it instead
                problem(rel, "not_regular", sha, hashing.file_kind(mode))
                continue
            found, size = hashing.sha256_file(path)
        except FileNotFoundError:
            problem(rel, "missing", sha, None)
            continue
        except hashing.NotRegularFileError as exc:  # replaced between lstat and open
            problem(rel, "not_regular", sha, str(exc))
            continue
        except OSError as exc:
            problem(rel, "unreadable", sha, exc.strerror)
            continue
        check.files += 1
        check.bytes += size
        if found != sha:
            problem(rel, "checksum_file" if rel == CHECKSUM_FILE else "changed", sha, found)
    if info.path.is_symlink():
        problem("", "not_regular", None, "symbolic link instead of the version folder")
    elif info.path.is_dir():
        present = {rel for rel, _ in walk_quiet(info.path)}
        for rel in sorted(present - set(expected) - {CHECKSUM_FILE}):
            problem(rel, "unexpected", None, None)
    return check


def verify(catalog: Catalog, model_id: str | None = None) -> VerifyReport:
    """Re-hash every file of every version (or of ``model_id``; a bare NAME means all its versions).

    Version folders on disk that the index does not know are reported too (problem ``unindexed``):
    a verify never calls a registry clean while it holds versions its index has lost.
    """
    start = time.perf_counter()
    name: str | None = None
    if model_id is None:
        infos = catalog.list_versions()
    elif ":" in model_id or "@" in model_id:
        infos = [catalog.resolve(parse_model_id(model_id))]
    else:
        infos = catalog.list_versions(model_id)
        name = model_id
    checks = [check_version(catalog, i) for i in infos]
    if model_id is None or name is not None:
        for missing_name, n in catalog.unindexed(name):
            model = f"{missing_name}:v{n}"
            check = VersionCheck(model, "", 0, 0)
            check.problems.append(FileProblem(model, str(catalog.root / missing_name / f"v{n}"), "unindexed"))
            checks.append(check)
    return VerifyReport(checks, time.perf_counter() - start)


def verify_or_raise(catalog: Catalog, info: VersionInfo) -> VersionCheck:
    """IntegrityError naming the first bad file unless every hash matches."""
    check = check_version(catalog, info)
    if check.problems:
        p = check.problems[0]
        more = f" (and {len(check.problems) - 1} more problem(s))" if len(check.problems) > 1 else ""
        raise IntegrityError(integrity_message(p) + more)
    return check


def walk_quiet(root: Path) -> list[tuple[str, Path]]:
    """Every entry under ``root`` that is not a folder (files, FIFOs, links...) as (posix relative path, path).

    Unreadable folders are skipped; symbolic links to folders are listed (as entries), never followed.
    """
    out = []
    for dirpath, dirs, filenames in os.walk(root):
        for name in [d for d in dirs if (Path(dirpath) / d).is_symlink()]:
            dirs.remove(name)
            filenames.append(name)
        for fname in filenames:
            path = Path(dirpath) / fname
            out.append((path.relative_to(root).as_posix(), path))
    return out


def integrity_message(p: FileProblem) -> str:
    """One line: what differs, that nothing was loaded, and what to do."""

    def short(h: str | None) -> str:
        return f"{h[:16]}..." if h else "nothing"

    if p.problem == "unindexed":
        return (
            f"version folder {safe_text(p.path)} is on disk but not in the index (a register killed before its "
            "commit, or an index replaced or restored from an older copy); run `aitrader registry rebuild` to "
            "re-index it"
        )
    if p.problem == "missing":
        what = f"file missing: {p.path} (registered {short(p.expected)})"
    elif p.problem == "unexpected":
        what = f"unexpected file {p.path}, not part of the registered version"
    elif p.problem == "index":
        what = f"index inconsistency for {p.path}: the recorded file hashes do not give digest {short(p.expected)}"
    elif p.problem == "not_regular":
        what = f"{p.path} is not a regular file ({p.found}); it was not opened"
    elif p.problem == "unreadable":
        what = f"cannot read {p.path} ({p.found or 'permission denied'})"
    else:
        what = f"sha256 mismatch in {p.path}: registered {short(p.expected)}, found {short(p.found)}"
    return (
        f"{safe_text(what)}; {p.model_id} changed after registration and nothing was loaded. "
        "Re-register the original artifact or deploy another version"
    )
