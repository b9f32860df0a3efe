"""The ledger writer thread: a replay's checkpoints encoded and committed off the loop's thread.

At a checkpoint the loop builds the blocks' columns (the Python part of the encoding, which holds
the GIL anyway), copies the other buffered rows and JSON-encodes the cursors, positions and engine
state (:meth:`Ledger._take`), hands that to the writer and goes on with the next bars; the writer
compresses the columns (zstd) and writes everything in ONE transaction on its own SQLite connection
(:func:`aitrader.trading.ledger.write_checkpoint`, the code the loop's thread runs without a writer),
in the order the checkpoints were taken. zstd and SQLite release the GIL while they work, so that
part can run on a second core (docs/trading.md, "Ledger writer").

The durability contract is the one of the synchronous ledger: each checkpoint is one transaction
holding its rows with the cursors and the state of the same bar boundary, and they commit in order,
so a process killed at any moment leaves the ledger at some earlier checkpoint, from which a resume
re-does the later bars exactly (a resumed ledger equals an uninterrupted run's). What changes is
only how far the committed ledger trails the loop: at most ``depth`` checkpoints queued plus the one
being written. The queue is bounded: a loop faster than the disk waits at its checkpoint
(back-pressure), so memory does not grow with the run.

Errors: a checkpoint the writer fails to write is rolled back and nothing after it is written (the
queued ones are dropped, so the ledger never holds a later checkpoint without an earlier one). The
error is raised on the loop's thread at its next checkpoint, or when the loop waits for the writer
(:meth:`LedgerWriter.flush`: before any other use of the ledger, and at the end of the run) or
closes it; the session turns a disk error into one ``TradingError`` naming ``--resume``.

Opt-in (``paper-trade --ledger-thread``, ``RunOptions.ledger_thread``): on the shared 2-core machine
it was measured on, it took 15-25% of the CPU off the loop's thread but gave no wall-clock gain
(docs/trading.md, "Ledger writer"). Used for replays at ``--speed 0`` only (:func:`wanted`): a
``--follow`` run commits every bar before it processes the next, and ``paper-trade --bus``
acknowledges its input only after the commit, so both keep the synchronous write.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

from aitrader.trading.ledger import Checkpoint, connect, write_checkpoint

#: Checkpoints that may wait in the queue (plus the one being written): enough to ride out a slow
#: commit, small enough to bound memory (a replay checkpoint holds 2,000 steps of rows).
DEPTH = 2


class LedgerWriter:
    """One thread writing checkpoints to ``path`` in order; see the module docstring."""

    def __init__(self, path: Path, *, depth: int = DEPTH) -> None:
        self.path = path
        self._queue: queue.Queue[Checkpoint | None] = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._delivered = False
        self.written = 0  # checkpoints committed (read by tests and benchmarks)
        opened = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(opened,), name="aitrader-ledger", daemon=True)
        self._thread.start()
        opened.wait()
        if self._error is not None:  # the connection could not be opened: nothing was started
            self._thread.join()
            raise self._error

    def _run(self, opened: threading.Event) -> None:
        try:
            conn = connect(self.path)  # this thread's own connection (sqlite3 objects stay on their thread)
        except BaseException as exc:  # noqa: BLE001 - raised on the loop's thread by __init__
            self._error = exc
            opened.set()
            return
        opened.set()
        try:
            while True:
                item = self._queue.get()
                try:
                    if item is None:
                        return
                    if self._error is None:  # after a failure the rest are dropped: no gap in the ledger
                        write_checkpoint(conn, item)
                        self.written += 1
                except BaseException as exc:  # noqa: BLE001 - handed to the loop's thread
                    self._error = exc
                finally:
                    self._queue.task_done()
        finally:
            conn.close()

    @property
    def failed(self) -> bool:
        return self._error is not None

    def raise_error(self, *, always: bool = False) -> None:
        """Raise the writer's error on the calling thread: once, or every time with ``always`` (a checkpoint
        after a failure must not be queued)."""
        err = self._error
        if err is not None and (always or not self._delivered):
            self._delivered = True
            raise err

    def submit(self, checkpoint: Checkpoint) -> None:
        """Queue one checkpoint (waiting while the queue is full); the writer's error, if any, is raised."""
        self.raise_error(always=True)
        self._queue.put(checkpoint)
        self.raise_error()

    def flush(self) -> None:
        """Wait until every queued checkpoint is written; the writer's error is raised (once)."""
        self._queue.join()
        self.raise_error()

    def close(self) -> None:
        """Write what is queued, stop the thread and close its connection; an error not raised yet is."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self.raise_error()


def wanted(choice: bool, *, steps: Any, speed: float, live: bool, swap: Any) -> bool:
    """Whether a run writes its ledger on a writer thread: when asked (``RunOptions.ledger_thread``,
    ``paper-trade --ledger-thread``), for a replay (steps with ``series``) at speed 0 without --follow or a
    version swap; never otherwise."""
    if getattr(steps, "series", None) is None or speed != 0 or live or swap is not None:
        return False
    return bool(choice)
