"""A quiet machine for timed runs: wait until the other processes leave the CPUs idle, and measure how
much they used while a run ran (Linux ``/proc/stat``; elsewhere nothing is waited for or measured).

On a shared machine the load average says little about one run: it lags by a minute and counts the run
itself. The machine's busy time over a run minus the run's own CPU time is what the others took."""

from __future__ import annotations

import os
import time
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_ticks() -> tuple[int, int] | None:
    """(idle + iowait, total) ticks of all CPUs from /proc/stat; None where there is none."""
    try:
        with Path("/proc/stat").open() as f:
            first = f.readline().split()
    except OSError:
        return None
    ticks = [int(x) for x in first[1:9]]  # user nice system idle iowait irq softirq steal
    return ticks[3] + ticks[4], sum(ticks)


def wait_quiet(max_wait: float) -> tuple[int, int] | None:
    """Wait until the other processes use < 0.1 core over half a second (at most ``max_wait`` seconds);
    the ticks the run starts from."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        a = cpu_ticks()
        if a is None:
            return None
        time.sleep(0.5)
        b = cpu_ticks()
        if b is not None and ((b[1] - a[1]) - (b[0] - a[0])) / HZ < 0.05:
            break
    return cpu_ticks()


def others_during(start: tuple[int, int] | None, cpu: float, wall: float) -> float | None:
    """Cores the other processes used since ``start``: the machine's busy time minus the run's CPU, over
    its wall time; None when it cannot be measured."""
    end = cpu_ticks()
    if start is None or end is None or wall <= 0:
        return None
    busy = ((end[1] - start[1]) - (end[0] - start[0])) / HZ
    return max(0.0, busy - cpu) / wall
