"""The replay loop's heap: what is alive when the loop starts is kept out of the garbage collector's
full passes while it runs (issue 11, several symbols).

CPython's oldest-generation collection walks every tracked object of the process. During a replay the
process holds the loaded bars, the model, pandas and numpy state; the number of full collections grows
with the bars allocated in the loop, and each walks a heap that grows with the number of symbols, so
their cost per bar grew with the symbol count (10 symbols of 5-minute crypto bars: ~4.7 us/bar in the
collector vs ~1 us on one symbol). :func:`gc.freeze` moves the objects alive at the start into a
permanent generation the collector skips; they are handed back at the end.

The young generation's threshold is raised for the loop too (:data:`LOOP_GEN0_THRESHOLD`): a replay
makes a few rows per bar that live until the next checkpoint and are then freed together, so with
CPython's default (700 net allocations) the collector walked them some 300 times per 100,000 bars and
found nothing (~1.1 us/bar of the 200-tree benchmark's loop, ~0.01 with the higher threshold). Cycles
made in the loop are still collected, after at most that many net allocations; results are unaffected.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_DEPTH = 0  # nested or concurrent loops in one process: the heap is unfrozen when the last one ends
#: gc threshold 0 (young generation) while a loop runs; the previous thresholds come back after it.
LOOP_GEN0_THRESHOLD = 20_000
_SAVED: tuple[int, int, int] | None = None


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Freeze the objects alive now for the duration of the block, with the young generation's
    threshold raised to :data:`LOOP_GEN0_THRESHOLD` (re-entrant, thread-safe; a threshold of 0, the
    collector switched off, stays 0)."""
    global _DEPTH, _SAVED
    with _LOCK:
        if _DEPTH == 0:
            gc.freeze()
            _SAVED = gc.get_threshold()
            if 0 < _SAVED[0] < LOOP_GEN0_THRESHOLD:
                gc.set_threshold(LOOP_GEN0_THRESHOLD, *_SAVED[1:])
        _DEPTH += 1
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH -= 1
            if _DEPTH == 0:
                gc.unfreeze()
                if _SAVED is not None:
                    gc.set_threshold(*_SAVED)
                    _SAVED = None


def frozen_depth() -> int:
    """How many loops hold the heap frozen now (0: none; for tests)."""
    return _DEPTH
