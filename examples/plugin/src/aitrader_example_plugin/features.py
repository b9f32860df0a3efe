"""The ``efficiency_ratio`` feature kind: Kaufman's efficiency ratio over ``window`` bars.

    ER[t] = |close[t] - close[t-n]| / sum_{i=t-n+1..t} |close[i] - close[i-1]|    (0 when the sum is 0)

1 for a straight move, near 0 for noise. The value at bar t reads bars t-n..t only (``history``),
so the warm-up is n bars.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from aitrader.features.kinds import FeatureKind, Param


def _window(p: dict[str, Any]) -> int:
    return int(p["window"])


def batch(o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray,
          params: dict[str, Any]) -> np.ndarray:
    """ER over the whole series (NaN for the first n bars)."""
    n = _window(params)
    out = np.full(len(c), np.nan)
    if len(c) <= n:
        return out
    steps = np.abs(np.diff(c))
    # A fresh sum per window (no running sum whose rounding would drift); the terms are >= 0, so it
    # agrees with streaming's exact fsum to ~1e-16 relative.
    path = sliding_window_view(steps, n).sum(axis=1)
    net = np.abs(c[n:] - c[:-n])
    out[n:] = np.where(path > 0.0, net / np.where(path > 0.0, path, 1.0), 0.0)
    return out


def stream(params: dict[str, Any]) -> Callable[[float, float, float, float, float], float]:
    """A fresh bar-by-bar evaluator: keeps the last n + 1 closes."""
    n = _window(params)
    closes: deque[float] = deque(maxlen=n + 1)

    def update(o: float, h: float, low: float, c: float, v: float) -> float:
        closes.append(c)
        if len(closes) <= n:
            return math.nan
        xs = list(closes)
        path = math.fsum(abs(b - a) for a, b in zip(xs, xs[1:], strict=False))
        return abs(xs[-1] - xs[0]) / path if path > 0.0 else 0.0

    return update


EFFICIENCY_RATIO = FeatureKind(
    name="efficiency_ratio",
    summary="Kaufman efficiency ratio |close - close[window ago]| / sum of |1-bar changes| (0 when flat)",
    params={"window": Param(int, 2)},
    min_warmup=_window,
    history=_window,
    version=1,
    batch=batch,
    stream=stream,
    features=({"name": "efficiency_ratio_10", "description": "Kaufman efficiency ratio over 10 bars",
               "group": "indicator", "params": {"window": 10}, "warmup": 10,
               "metadata": {"unit": "ratio", "dtype": "float64"}, "aliases": ["er_10"]},),
)
