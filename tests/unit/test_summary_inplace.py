"""The summary's figures computed over one ``[initial, *equity]`` array (returns written over it) are the
same floats as the whole-array formulas on separate curve, path and returns arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrader.trading.summary import performance
from aitrader.training import metrics as M

curves = st.lists(st.floats(min_value=1.0, max_value=1e7, allow_nan=False), min_size=0, max_size=60)


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(M, "_DRAWDOWN_PIECE", 7)  # many piece boundaries on short curves


@settings(max_examples=200, deadline=None)
@given(curves, st.floats(min_value=1.0, max_value=1e7))
def test_returns_over_is_a_division_per_bar(equity: list[float], initial: float) -> None:
    path = np.array([initial, *equity])
    rets = M.returns_over(path)
    prev = [initial, *equity][:len(equity)]
    assert rets.tolist() == [e / p - 1.0 for e, p in zip(equity, prev, strict=True)]  # a Python loop: the oracle


@settings(max_examples=200, deadline=None)
@given(curves, st.floats(min_value=1.0, max_value=1e7), st.floats(min_value=0.0, max_value=1e9))
def test_performance_equals_the_separate_array_formulas(equity: list[float], initial: float, traded: float) -> None:
    curve = np.array(equity)
    before = np.concatenate(([initial], curve[:-1]))
    rets = np.concatenate(([curve[0] / initial], curve[1:] / curve[:-1])) - 1.0 if len(curve) else np.empty(0)
    got = performance(np.array([initial, *equity]), 252.0, traded)
    if not equity:
        assert got == {"final": initial, "total_return": 0.0, "turnover": 0.0, "sharpe": 0.0, "sortino": None,
                       "max_drawdown": 0.0}
        return
    sd = float(np.std(rets, ddof=1)) if len(rets) > 1 else 0.0
    sharpe = float(np.mean(rets) / sd * math.sqrt(252.0)) if sd > 1e-15 else 0.0
    down = math.sqrt(float(np.mean(np.minimum(rets, 0.0) ** 2)))
    peaks = np.maximum.accumulate(np.concatenate(([initial], curve)))[1:]
    assert got["final"] == equity[-1]
    assert got["total_return"] == equity[-1] / initial - 1.0
    assert got["turnover"] == (traded / float(np.sum(before)))
    assert got["max_drawdown"] == min(0.0, float(np.min(curve / peaks - 1.0)))
    assert got["sharpe"] == sharpe
    assert got["sortino"] == (float(np.mean(rets) / down * math.sqrt(252.0)) if down > 1e-15 else None)


def test_returns_over_refuses_a_strided_path() -> None:
    with pytest.raises(ValueError, match="contiguous"):
        M.returns_over(np.arange(10.0)[::2])
