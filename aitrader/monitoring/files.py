"""Atomic text writes: a temporary file in the target folder, then a rename.

A reader (a browser on the report, ``retrain --if-alert`` on the state) sees the old file or the
new one, never half of one, and a crash leaves at most a hidden ``.NAME.*.tmp`` behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically with the usual permissions (0666 minus the umask).

    ``mkstemp`` creates 0600 files; a report or state file should be readable like any other.
    Raises OSError; callers turn it into an AitraderError naming their option.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        Path(tmp).chmod(0o666 & ~_umask())
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
