"""The replay loop's heap: what is alive when the loop starts is kept out of the garbage collector's
full passes while it runs (issue 11, several symbols).

CPython's oldest-generation collection walks every tracked object of the process. During a replay the
process holds the loaded bars, the model, pandas and numpy state; the number of full collections grows
with the bars allocated in the loop, and each walks a heap that grows with the number of symbols, so
their cost per bar grew with the symbol count (10 symbols of 5-minute crypto bars: ~4.7 us/bar in the
collector vs ~1 us on one symbol). :func:`gc.freeze` moves the objects alive at the start into a
permanent generation the collector skips; they are handed back at the end. Collection itself is not
changed (cycles made in the loop are still collected), so results are unaffected.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_DEPTH = 0  # nested or concurrent loops in one process: the heap is unfrozen when the last one ends


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Freeze the objects alive now for the duration of the block (re-entrant, thread-safe)."""
    global _DEPTH
    with _LOCK:
        if _DEPTH == 0:
            gc.freeze()
        _DEPTH += 1
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH -= 1
            if _DEPTH == 0:
                gc.unfreeze()


def frozen_depth() -> int:
    """How many loops hold the heap frozen now (0: none; for tests)."""
    return _DEPTH
