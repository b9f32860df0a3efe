"""Where the registry keeps things under its root, and what is on disk regardless of the index.

    registry.db (-wal, -shm)      the SQLite index
    deploy_log.jsonl              append-only copy of registrations and deploy-log rows (rebuild)
    registry.db.replaced-<ts>     an index that `aitrader registry rebuild` replaced (kept, never read)
    NAME/vN/                      an immutable version folder (files + checksums.sha256)
    NAME/.tmp-*  NAME/.orphan-*   a register in progress / a folder a killed register never recorded

The version folders are the durable record of what was registered: they are written completely
(and fsynced) before they get their ``vN`` name, and never change afterwards. So this module can
tell, without the index, which versions exist (``disk_versions``); the index is checked against
it (a lost or replaced index is detected, never silently taken for an empty registry).
"""

from __future__ import annotations

import re
from pathlib import Path

from aitrader.registry.hashing import CHECKSUM_FILE
from aitrader.registry.names import NAME_RE, reserved_reason

DB_NAME = "registry.db"
JOURNAL_NAME = "deploy_log.jsonl"
VERSION_DIR = re.compile(r"v([0-9]{1,18})")
ORPHAN_DIR = re.compile(r"\.orphan-v([0-9]{1,18})-[0-9a-f]+")


def is_model_dir(path: Path) -> bool:
    """A folder at the root whose name is a valid, unreserved model name (never a symlink)."""
    name = path.name
    return (
        NAME_RE.fullmatch(name) is not None
        and ".." not in name
        and reserved_reason(name) is None
        and path.is_dir()
        and not path.is_symlink()
    )


def version_numbers(model_dir: Path, *, orphans: bool = False) -> list[int]:
    """The N of every ``vN`` folder (and, with ``orphans``, of every ``.orphan-vN-*``) in a model folder."""
    out: list[int] = []
    try:
        entries = list(model_dir.iterdir())
    except OSError:
        return out
    for entry in entries:
        m = VERSION_DIR.fullmatch(entry.name)
        if m is None and orphans:
            m = ORPHAN_DIR.fullmatch(entry.name)
        if m is not None:
            out.append(int(m.group(1)))
    return sorted(out)


def disk_versions(root: Path) -> dict[str, list[int]]:
    """name -> sorted N of every ``NAME/vN`` folder holding a checksum file (a completed register)."""
    found: dict[str, list[int]] = {}
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return found
    for entry in entries:
        if not is_model_dir(entry):
            continue
        versions = [n for n in version_numbers(entry) if (entry / f"v{n}" / CHECKSUM_FILE).exists()]
        if versions:
            found[entry.name] = versions
    return found


def registry_root_of(path: Path) -> Path | None:
    """The registry root that ``path`` is (or is inside), or None.

    A folder is a registry root when it holds ``registry.db`` or ``deploy_log.jsonl``. For other
    commands that write files (``train --out``, exports): nothing may ever write inside a registry
    except the registry, so they refuse any ``path`` for which this is not None.
    """
    current = Path(path).resolve(strict=False)
    for folder in (current, *current.parents):
        if (folder / DB_NAME).exists() or (folder / JOURNAL_NAME).exists():
            return folder
    return None


def describe(found: dict[str, list[int]], limit: int = 3) -> str:
    """``aapl/v1, aapl/v2, msft/v1 (and 4 more)`` for messages."""
    items = [f"{name}/v{n}" for name, ns in found.items() for n in ns]
    text = ", ".join(items[:limit])
    return text + (f" (and {len(items) - limit} more)" if len(items) > limit else "")
