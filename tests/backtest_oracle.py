"""The backtest report's figures over whole arrays: the definition ``backtest.curve_stats_over`` computes in
one array of the run's length (the tests' reference; the library computes only the in-place form)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from aitrader.trading.backtest import short_duration
from aitrader.training import metrics as M


@dataclass
class Curve:
    """The replay's equity over the traded bars as whole arrays: stamps, epoch seconds and equity."""

    stamps: Sequence[str]
    epochs: np.ndarray
    equity: np.ndarray


def curve_stats(equity: np.ndarray, stamps: Sequence[str], initial: float, periods: float, positions: np.ndarray,
                traded: float, fees: float) -> dict[str, Any]:
    """Return, CAGR, Sharpe, Sortino, drawdown (depth, bars, calendar time), exposure, turnover, fees, over
    whole arrays with the metrics module's whole-array functions."""
    rets = M.simple_returns(equity, initial=initial)
    bars, first, last = M.drawdown_duration(equity, initial=initial)
    dd_time = None
    if bars:
        peak = stamps[first - 1] if first > 0 else stamps[0]
        dd_time = short_duration(pd.Timestamp(stamps[last]) - pd.Timestamp(peak))
    before = np.concatenate(([initial], equity[:-1])) if equity.size else equity
    return {
        "total_return": float(equity[-1] / initial - 1.0) if equity.size else 0.0,
        "cagr": M.cagr(equity, initial, periods),
        "sharpe": M.sharpe_ratio(rets, periods),
        "sortino": M.sortino_ratio(rets, periods),
        "max_drawdown": M.max_drawdown(equity, initial=initial),
        "max_drawdown_bars": bars,
        "max_drawdown_duration": dd_time,
        "exposure": M.exposure(positions),
        "turnover": M.turnover([traded], before),
        "fees": fees,
    }
