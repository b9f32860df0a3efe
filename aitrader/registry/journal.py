"""``deploy_log.jsonl``: an append-only copy of what the index alone would lose with its file.

The version folders survive the loss of ``registry.db`` (they are the record of *what* was
registered), but aliases, the deploy log, tags and trust decisions live only in the index. So
every committed registration, tag/trust update and deploy-log row is also appended here, one JSON
object per line, right after its SQLite transaction commits. ``aitrader registry rebuild`` reads
it back. Deploy-log lines carry the index row id, so lines appended out of order by concurrent
processes are replayed in commit order.

It is a copy, not the source of truth: a process killed between its commit and its append leaves
that one event out of the copy (the index still has it), and a failed append never fails the
command that committed (it is reported on stderr through logging).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 1 << 20  # a longer line is not ours: skipped on read


def append(path: Path, event: dict[str, Any]) -> bool:
    """Append one event as one line with a single ``O_APPEND`` write, fsynced; False if it failed."""
    line = (json.dumps(event, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        log.warning("cannot append to %s (%s); the index has the event, rebuild would not", path, exc)
        return False
    try:
        written = 0
        while written < len(line):
            written += os.write(fd, line[written:])
        os.fsync(fd)
        return True
    except OSError as exc:
        log.warning("cannot append to %s (%s); the index has the event, rebuild would not", path, exc)
        return False
    finally:
        os.close(fd)


def read(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(events, number of unreadable lines) from the journal; ([], 0) when there is none."""
    events: list[dict[str, Any]] = []
    bad = 0
    try:
        if not path.is_file() or path.is_symlink():
            return events, 0
        with path.open("rb") as f:
            for raw in f:
                if len(raw) > MAX_LINE_BYTES or not raw.endswith(b"\n"):
                    bad += 1  # a torn last line (killed mid-write) or something foreign
                    continue
                try:
                    event = json.loads(raw)
                except ValueError:
                    bad += 1
                    continue
                if isinstance(event, dict) and isinstance(event.get("event"), str):
                    events.append(event)
                else:
                    bad += 1
    except OSError:
        return events, bad + 1
    return events, bad
