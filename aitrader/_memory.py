"""The process's memory settings for long replays (``paper-trade``, ``backtest``), so that the peak RSS
follows what is live rather than what was once allocated.

- glibc's malloc serves a block of >= 128 KiB by ``mmap`` and gives it back on ``free``, until a freed
  mmapped block raises that threshold (dynamically, up to 32 MiB): from then on such blocks come from
  the heap, whose freed holes stay resident. A replay allocates and frees a chunk's feature matrix
  (8,192 rows: ~1.6 MB with 25 features) and its copies every chunk, so ``M_MMAP_THRESHOLD`` is fixed
  at 1 MiB (``mallopt``, which also stops the dynamic raise). Measured on a 1M-bar paper-trade: peak RSS
  175 MB against 185 with the dynamic threshold, for 240k minor page faults against 36k (CPU time within
  the noise); at 128 KiB the checkpoints' ~400 KB blobs were mmapped afresh too (520k faults, the same
  RSS). docs/trading.md, *Memory of a replay*.
- pyarrow's default pool (mimalloc or jemalloc) keeps freed pages for reuse; a run reads its parquet files
  once, at the start, so the system pool (malloc) is used: nothing of that read stays resident.

A ``MALLOC_MMAP_THRESHOLD_`` or ``ARROW_DEFAULT_MEMORY_POOL`` set in the environment is left as set; on a
C library other than glibc the malloc setting is skipped.

``features build`` leaves the process alone: its 256k-row chunks make ~2 MB arrays by the dozen, which
mmapped afresh each time took twice the time, and with the system pool the parquet writer's buffers
fragmented the heap (5M bars: 556 MB peak against 512 MB with no setting).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

#: ``mallopt`` parameter number of M_MMAP_THRESHOLD (glibc's malloc.h).
M_MMAP_THRESHOLD = -3
#: Bytes from which a block is mmapped (fixed instead of glibc's dynamic threshold).
MMAP_THRESHOLD = 1024 * 1024


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols, libc's among them (find_library runs ldconfig)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl has mallopt as a no-op)
    except (OSError, AttributeError):
        return None
    return libc


def settle_for_long_run() -> list[str]:
    """Apply the settings above (once per process is enough; again is harmless); returns what was set."""
    done: list[str] = []
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        libc = _glibc()
        if libc is not None and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1:
            done.append(f"malloc: blocks >= {MMAP_THRESHOLD // 1024} KiB mmapped")
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"  # read by pyarrow when it first needs its pool
        if "pyarrow" in sys.modules:  # already imported: its pool may be chosen already
            import pyarrow

            pyarrow.set_memory_pool(pyarrow.system_memory_pool())
        done.append("pyarrow: system memory pool")
    log.debug("memory settings: %s", "; ".join(done) or "none (set in the environment)")
    return done


def release_free_memory() -> bool:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim(0)``): after a replay, the
    memory its blocks and objects freed stays resident in the heap's holes otherwise (13 MB of a 1M-bar
    ``backtest``, which then builds its report). True when glibc released something; False elsewhere."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))
