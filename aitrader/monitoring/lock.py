"""An OS-level exclusive lock so that cron never runs two retrains at once.

``fcntl.flock`` is released by the kernel when the holder exits, even on a crash or ``kill -9``,
so a leftover lock file never blocks the next run; the file only carries the holder's pid and
start time for the error message. The file is left in place on release: deleting it would let a
third process lock a fresh inode while a second still waits on the old one.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from pathlib import Path
from types import TracebackType
from typing import IO

from aitrader.errors import AitraderError, LockHeldError

DEFAULT_LOCK = Path("logs") / "retrain.lock"


class FileLock:
    """``with FileLock(path): ...`` or raise :class:`LockHeldError` at once (never waits)."""

    def __init__(self, path: str | Path = DEFAULT_LOCK) -> None:
        self.path = Path(path)
        self._fh: IO[str] | None = None

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            info = {}
        return f"pid {info.get('pid', '?')}, since {info.get('since', '?')}"

    def acquire(self) -> FileLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = self.path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise AitraderError(f"cannot open lock file {self.path}: {exc.strerror}; check permissions") from exc
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise LockHeldError(
                f"another retrain holds the lock {self.path} ({self._holder()}); wait for it or remove "
                "the stale lock"
            ) from None
        fh.seek(0)
        fh.truncate()
        since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        fh.write(json.dumps({"pid": os.getpid(), "since": since}))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
