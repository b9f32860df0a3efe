"""aitrader._memory.settle_for_long_run: large blocks stay mmapped (so freed ones leave the RSS) and
pyarrow uses the system pool. Checked in a fresh interpreter, by glibc's own accounting (mallinfo2)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = r'''
import ctypes, os, sys
import numpy as np

class MI(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MI
if sys.argv[1] == "early-arrow":
    import pyarrow  # imported before the settings
if sys.argv[1] != "none":
    from aitrader._memory import settle_for_long_run
    print("set:", settle_for_long_run())
big = np.ones(4 << 17)  # 4 MiB: mmapped either way; freeing it raises glibc's dynamic threshold
del big
before = libc.mallinfo2().hblks
mid = np.ones(1 << 18)  # 2 MiB: above the fixed threshold, below the raised dynamic one
print("mmapped:", libc.mallinfo2().hblks - before)
import pyarrow
print("pool:", pyarrow.default_memory_pool().backend_name)
'''


def _glibc_with_mallinfo2() -> bool:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return hasattr(libc, "mallinfo2") and hasattr(libc, "gnu_get_libc_version")
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not (sys.platform.startswith("linux") and _glibc_with_mallinfo2()),
                                reason="glibc's malloc (mallinfo2) only")


def _probe(mode: str, **env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "ARROW_DEFAULT_MEMORY_POOL")}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**clean, "PYTHONPATH": str(ROOT), **env}, cwd=ROOT).stdout
    return dict(line.split(": ", 1) for line in out.strip().splitlines())


def test_without_the_settings_a_freed_block_raises_the_threshold() -> None:
    got = _probe("none")  # the behaviour the settings are for (so the next test can fail)
    assert got["mmapped"] == "0"


@pytest.mark.parametrize("mode", ["settle", "early-arrow"])
def test_the_settings_keep_large_blocks_mmapped_and_arrow_on_malloc(mode: str) -> None:
    got = _probe(mode)
    assert got["mmapped"] == "1"
    assert got["pool"] == "system"
    assert "mmapped" in got["set"] and "system memory pool" in got["set"]


def test_settings_given_in_the_environment_are_left_alone() -> None:
    got = _probe("settle", MALLOC_MMAP_THRESHOLD_="8388608", ARROW_DEFAULT_MEMORY_POOL="mimalloc")
    assert got["set"] == "[]"
    assert got["mmapped"] == "0"  # 2 MiB < the 8 MiB the user asked for
    assert got["pool"] == "mimalloc"
