"""The backtest report's formulas in aitrader.training.metrics, against hand-computed constants."""

from __future__ import annotations

import pytest

from aitrader.training import metrics as M


def test_cagr() -> None:
    # 252 daily bars ending at 121: one year, +21%
    assert M.cagr([100.0] * 251 + [121.0], 100.0, 252) == pytest.approx(0.21)
    # 126 bars ending at 121 (half a year): (1.21) ** 2 - 1 = 0.4641
    assert M.cagr([121.0] * 126, 100.0, 252) == pytest.approx(0.4641)
    assert M.cagr([], 100.0, 252) is None
    assert M.cagr([0.0], 100.0, 252) == -1.0


def test_drawdown_duration() -> None:
    # peaks: 100 (initial), 110 at bar 0; under water at bars 1, 2 (105, 108), recovered at 3 (110)
    # then bars 5..7 under the 115 peak of bar 4: the longest stretch is 3 bars, 5..7
    equity = [110, 105, 108, 110, 115, 100, 101, 114, 116]
    assert M.drawdown_duration(equity, initial=100) == (3, 5, 7)
    # without initial: the same indexes; an underwater stretch running to the end counts
    assert M.drawdown_duration([10, 9, 8, 9.5]) == (3, 1, 3)
    # the initial equity is the first peak: falling at once is under water from bar 0
    assert M.drawdown_duration([99, 98, 101], initial=100) == (2, 0, 1)
    assert M.drawdown_duration([1, 2, 3], initial=1) == (0, -1, -1)
    assert M.drawdown_duration([]) == (0, -1, -1)


def test_exposure() -> None:
    assert M.exposure([0, 1.5, -2, 0]) == 0.5
    assert M.exposure([]) == 0.0


def test_win_rate_and_profit_factor() -> None:
    pnls = [10.0, -5.0, 20.0, -15.0, 0.0]
    assert M.win_rate(pnls) == pytest.approx(2 / 5)  # a zero trade is not a win
    assert M.profit_factor(pnls) == pytest.approx(30 / 20)
    assert M.win_rate([]) is None
    assert M.profit_factor([1.0, 2.0]) is None  # no losing trade: undefined
    assert M.profit_factor([-1.0]) == 0.0


def _longest_underwater(path: list[float]) -> tuple[int, int]:
    """The oracle: a plain scan of the flags (bars, first index) over ``path``, the first of the longest."""
    peak, best, best_first, run, first = -float("inf"), 0, -1, 0, -1
    for i, v in enumerate(path):
        peak = max(peak, v)
        if v < peak:
            first = i if run == 0 else first
            run += 1
            if run > best:
                best, best_first = run, first
        else:
            run = 0
    return best, best_first


def test_drawdown_duration_matches_a_scan_on_random_walks() -> None:
    """The vectorised stretches against a plain scan, on walks with ties between stretches and runs at the end."""
    import random

    rng = random.Random(11)
    for n in (1, 2, 3, 17, 400):
        for _ in range(25):
            equity = [float(rng.choice((99, 100, 101, 100.5))) for _ in range(n)]
            best, first = _longest_underwater([100.0, *equity])
            want = (0, -1, -1) if best == 0 else (best, first - 1, first + best - 2)
            assert M.drawdown_duration(equity, initial=100) == want
            best, first = _longest_underwater(equity)
            assert M.drawdown_duration(equity) == ((0, -1, -1) if best == 0 else (best, first, first + best - 1))
