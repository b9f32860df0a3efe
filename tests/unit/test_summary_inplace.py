"""The summary's figures computed over one ``[initial, *equity]`` array (returns written over it) are the
same floats as the whole-array formulas on separate curve, path and returns arrays."""

from __future__ import annotations

import math
from pathlib import Path

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


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 6000), st.integers(0, 2**32 - 1), st.sampled_from([1e-4, 1e-2, 1.0]))
def test_ratios_computed_in_place_are_numpys_floats(n: int, seed: int, scale: float) -> None:
    r = np.random.default_rng(seed).normal(0.0, scale, n)  # long enough for numpy's pairwise sums to nest
    sd = float(np.std(r, ddof=1)) if n > 1 else 0.0  # the oracle: numpy's own np.std and np.mean on a copy
    want_sharpe = float(np.mean(r) / sd * math.sqrt(252.0)) if sd > 1e-15 else 0.0
    down = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2))) if n else 0.0
    want_sortino = float(np.mean(r) / down * math.sqrt(252.0)) if down > 1e-15 else None
    assert M.sharpe_over(r.copy(), 252.0) == want_sharpe
    assert M.sortino_over(r.copy(), 252.0) == want_sortino
    assert M.sharpe_ratio(r.tolist(), 252.0) == want_sharpe  # the copying forms give the same
    assert M.sortino_ratio(r, 252.0) == want_sortino
    if n > 1:
        assert M._std_over(r.copy(), 1) == sd
        assert M._std_over(r.copy(), 0) == float(np.std(r))


@pytest.mark.parametrize("n", [8193, 65_537, 300_007])
def test_ratios_in_place_on_long_runs_are_numpys_floats(n: int) -> None:
    r = np.random.default_rng(n).normal(0.0, 1e-3, n)
    assert M._std_over(r.copy(), 1) == float(np.std(r, ddof=1))
    assert M.sharpe_over(r.copy(), 98_280.0) == float(np.mean(r) / np.std(r, ddof=1) * math.sqrt(98_280.0))


def test_performance_refills_the_array_it_consumed() -> None:
    curve = np.array([100.0, 101.0, 99.5, 102.0, 98.0, 103.5])
    seen: list[int] = []

    def refill(into: np.ndarray) -> np.ndarray:
        seen.append(id(into))
        into[:] = curve
        return into

    path = curve.copy()
    got = performance(path, 252.0, 10.0, refill=refill)
    assert seen == [id(path)]
    assert got == performance(curve.copy(), 252.0, 10.0)  # kept copy: the same floats
    with pytest.raises(ValueError, match="refill"):
        performance(curve.copy(), 252.0, 10.0, refill=lambda into: curve.copy())


def test_equity_column_fills_an_array_of_its_length_only(tmp_path: Path) -> None:
    import sqlite3

    from aitrader.trading.ledger import equity_column, pack_f8

    conn = sqlite3.connect(tmp_path / "l.db")
    conn.execute("CREATE TABLE equity (bar_index, ts, cash, equity)")
    conn.execute("CREATE TABLE equity_blocks (first_bar, n, bar_index, ts, cash, equity)")
    conn.execute("INSERT INTO equity VALUES (0, 't0', 0, 7.0)")
    conn.execute("INSERT INTO equity_blocks VALUES (1, 2, NULL, NULL, NULL, ?)", (pack_f8([8.0, 9.0]),))
    assert equity_column(conn, lead=5.0).tolist() == [5.0, 7.0, 8.0, 9.0]
    out = np.zeros(4)
    assert equity_column(conn, lead=5.0, out=out) is out and out.tolist() == [5.0, 7.0, 8.0, 9.0]
    with pytest.raises(ValueError, match="has 4 values, not 5"):
        equity_column(conn, lead=5.0, out=np.zeros(5))
    conn.execute("DELETE FROM equity_blocks")
    with pytest.raises(ValueError, match="has 2 values, not 4"):
        equity_column(conn, lead=5.0, out=out)
