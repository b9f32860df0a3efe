"""Block-bootstrap intervals, implausibility warnings and the edge verdict (aitrader.training.verdict).

Oracles: the analytic standard error of a correlation and of a Sharpe ratio (Lo 2002) for i.i.d.
normal data, coverage of a known population IC on simulated overlapping returns, and small cases
worked out by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrader.training import verdict as V

Z975 = 1.959964


def overlapping(rng: np.random.Generator, n: int, h: int, a: float) -> tuple[np.ndarray, np.ndarray]:
    """h-bar forward returns of i.i.d. unit shocks and a prediction ``a * fwd + MA(h-1) noise``.

    Both series are sums over h consecutive shocks (overlapping, like the trainer's target and
    rolling features); the population IC is ``a / sqrt(a**2 + 1)``.
    """
    e, u = rng.standard_normal(n + h), rng.standard_normal(n + h)
    ce, cu = np.concatenate(([0.0], np.cumsum(e))), np.concatenate(([0.0], np.cumsum(u)))
    fwd = ce[h + 1 : n + h + 1] - ce[1 : n + 1]  # e[t+1] + ... + e[t+h]
    noise = cu[h : n + h] - cu[:n]  # u[t] + ... + u[t+h-1]
    return a * fwd + noise, fwd


@pytest.mark.parametrize(("n", "horizon", "expected"), [(1000, 1, 10), (1000, 5, 10), (1000, 8, 16),
                                                         (100, 20, 40), (5, 10, 5), (0, 3, 1), (2, 1, 2)])
def test_block_length(n, horizon, expected):
    assert V.block_length(n, horizon) == expected


def test_ic_interval_width_matches_the_analytic_standard_error():
    # i.i.d. bivariate normal, r = 0.3: se(r) ~ (1 - r^2) / sqrt(n - 3).
    n, r = 3000, 0.3
    widths = []
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        x = rng.standard_normal(n)
        y = r * x + math.sqrt(1 - r * r) * rng.standard_normal(n)
        lo, hi = V.ic_interval(x, y)
        assert lo < V.ic(x, y) < hi
        widths.append(hi - lo)
    analytic = 2 * Z975 * (1 - r * r) / math.sqrt(n - 3)
    assert np.mean(widths) == pytest.approx(analytic, rel=0.12)


def test_sharpe_interval_width_matches_lo_2002():
    # i.i.d. normal returns: se(per-bar Sharpe) ~ sqrt((1 + SR^2 / 2) / n), annualised x sqrt(252).
    n, mu, sd = 1500, 0.0005, 0.01
    widths = []
    for seed in range(3):
        returns = np.random.default_rng(200 + seed).normal(mu, sd, n)
        lo, hi = V.sharpe_interval(returns, 252.0)
        widths.append(hi - lo)
    sr = mu / sd
    analytic = 2 * Z975 * math.sqrt((1 + sr * sr / 2) / n) * math.sqrt(252.0)
    assert np.mean(widths) == pytest.approx(analytic, rel=0.12)


def test_block_bootstrap_covers_a_known_ic_on_overlapping_returns_where_iid_does_not():
    n, h, a = 400, 10, 0.3
    rho = a / math.sqrt(a * a + 1)
    rng = np.random.default_rng(7)
    sims = [overlapping(rng, n, h, a) for _ in range(150)]

    def coverage(block: int | None) -> float:
        hits = 0
        for seed, (p, f) in enumerate(sims):
            lo, hi = V.ic_interval(p, f, horizon=h, block=block, resamples=300, seed=seed)
            hits += lo <= rho <= hi
        return hits / len(sims)

    assert coverage(None) >= 0.86  # default block 2h = 20: about 0.92 (nominal 0.95)
    assert coverage(1) <= 0.72  # an i.i.d. bootstrap: about 0.57, far too narrow


def test_hand_checked_tiny_cases():
    returns = [0.01, -0.005, 0.02, 0.0]
    # mean 0.00625, sample std 0.0110868 -> 0.563735 x sqrt(252) = 8.94901
    assert V.sharpe(returns, 252.0) == pytest.approx(8.94901, rel=1e-5)
    # One block as long as the series: every resample is a rotation, which keeps the mean, the std
    # and the pairing of rows, so the interval collapses onto the point estimate.
    lo, hi = V.sharpe_interval(returns, 252.0, block=4)
    assert lo == pytest.approx(8.94901, rel=1e-5) and hi == pytest.approx(8.94901, rel=1e-5)
    pred, fwd = [0.1, 0.4, -0.2, 0.3, 0.0], [1.0, 2.0, -1.0, 0.5, 0.0]
    point = V.ic(pred, fwd)
    assert V.ic_interval(pred, fwd, block=5) == pytest.approx((point, point))
    # Exact linear relations give +1 / -1 in every resample.
    f = np.random.default_rng(1).standard_normal(200)
    assert V.ic_interval(2 * f + 1, f) == pytest.approx((1.0, 1.0))
    assert V.ic_interval(-f, f) == pytest.approx((-1.0, -1.0))
    # No variance: Sharpe 0 (the backtest's convention), IC 0.
    assert V.sharpe_interval(np.full(50, 0.001), 252.0) == (0.0, 0.0)
    assert V.ic_interval(np.ones(50), f[:50]) == (0.0, 0.0)
    assert math.isnan(V.ic_interval([1.0], [2.0])[0])


def test_block_sums_equal_the_statistics_of_explicitly_resampled_rows():
    # Oracle: build every resample's rows and compute the statistics with numpy directly.
    rng = np.random.default_rng(11)
    n, block, resamples, seed = 103, 7, 200, 5
    x, y = rng.standard_normal(n) + 3.0, rng.standard_normal(n) * 0.01 + 0.002
    (starts,) = list(V.block_starts(n, block, resamples, np.random.default_rng(seed)))
    rows = V.resample_rows(starts, n, block)
    assert rows.shape == (resamples, n) and rows.min() >= 0 and rows.max() < n
    # a resample is ceil(103 / 7) = 15 circular blocks of 7 rows, the last cut to 103 - 14 x 7 = 5
    first = rows[0]
    assert list(first[:7]) == [(starts[0, 0] + i) % n for i in range(7)]
    assert list(first[-5:]) == [(starts[0, 14] + i) % n for i in range(5)]
    corr = [np.corrcoef(x[r], y[r])[0, 1] for r in rows]
    sharpe = [y[r].mean() / y[r].std(ddof=1) * math.sqrt(252.0) for r in rows]
    expected_ic = tuple(np.quantile(corr, [0.025, 0.975]))
    expected_sharpe = tuple(np.quantile(sharpe, [0.025, 0.975]))
    got_ic = V.ic_interval(x, y, block=block, resamples=resamples, seed=seed)
    got_sharpe = V.sharpe_interval(y, 252.0, block=block, resamples=resamples, seed=seed)
    assert got_ic == pytest.approx(expected_ic, rel=1e-10)
    assert got_sharpe == pytest.approx(expected_sharpe, rel=1e-10)


def test_intervals_are_deterministic_and_chunking_does_not_change_them(monkeypatch):
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal(700), rng.standard_normal(700)
    first = V.ic_interval(x, y, horizon=5)
    assert V.ic_interval(x, y, horizon=5) == first
    assert V.ic_interval(x, y, horizon=5, seed=1) != first
    monkeypatch.setattr(V, "_CHUNK_VALUES", 70 * 7)  # 7 resamples (of 70 blocks) per chunk
    assert V.ic_interval(x, y, horizon=5) == pytest.approx(first, rel=1e-12)


def test_lag1_autocorrelation():
    e = np.random.default_rng(4).standard_normal(20_001)
    bounce = e[1:] - e[:-1]  # MA(1) with theta = -1: rho(1) = -1/2
    assert V.lag1_autocorr(bounce) == pytest.approx(-0.5, abs=0.03)
    assert V.lag1_autocorr([1.0, 2.0, 1.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert math.isnan(V.lag1_autocorr([1.0, np.nan]))


def test_bounce_warning_needs_a_strong_result_and_negative_autocorrelation():
    e = np.random.default_rng(5).standard_normal(2001)
    bounce, plain = e[1:] - e[:-1], e[1:]
    warned = V.implausibility_warnings(ic_value=0.39, sharpe_value=97.0, bar_returns=bounce)
    assert len(warned) == 1 and "bid/ask bounce" in warned[0] and "0.390" in warned[0]
    assert V.implausibility_warnings(ic_value=0.05, sharpe_value=6.0, bar_returns=bounce)  # Sharpe > 5
    assert not V.implausibility_warnings(ic_value=0.39, sharpe_value=97.0, bar_returns=plain)
    assert not V.implausibility_warnings(ic_value=0.1, sharpe_value=2.0, bar_returns=bounce)


def test_holdout_far_above_cross_validation_warns():
    folds = [0.01, 0.02, 0.0, 0.015, 0.01]  # mean 0.011, std 0.0074: gap threshold max(0.022, 0.05)
    far = V.implausibility_warnings(ic_value=0.2, sharpe_value=1.0, fold_ics=folds)
    assert len(far) == 1 and "walk-forward folds' mean IC 0.011" in far[0]
    assert not V.implausibility_warnings(ic_value=0.06, sharpe_value=1.0, fold_ics=folds)  # gap 0.049
    assert V.implausibility_warnings(ic_value=0.062, sharpe_value=1.0, fold_ics=folds)  # gap 0.051
    noisy = [-0.1, 0.1, 0.0, 0.05, -0.05]  # std 0.079: needs a gap above 0.24
    assert not V.implausibility_warnings(ic_value=0.2, sharpe_value=1.0, fold_ics=noisy)
    assert not V.implausibility_warnings(ic_value=0.9, sharpe_value=1.0, fold_ics=[0.0])  # one fold: no std


BASELINES = {"zero": {"sharpe": 0.0}, "always_long": {"sharpe": 0.37}, "prev_sign": {"sharpe": -0.2}}


def test_best_baseline_is_the_highest_sharpe():
    assert V.best_baseline(BASELINES) == ("always_long", 0.37)
    assert V.best_baseline({"zero": {"sharpe": 0.0}, "prev_sign": {"sharpe": None}}) == ("zero", 0.0)
    assert V.best_baseline({"a": {"sharpe": -1.0}, "b": {"sharpe": -0.5}}) == ("b", -0.5)


def _model_case(seed: int, signal: float) -> dict:
    rng = np.random.default_rng(seed)
    n = 1000
    fwd = rng.standard_normal(n) * 0.01
    pred = signal * fwd + rng.standard_normal(n) * 0.01
    returns = np.sign(pred) * fwd  # trading the sign of the prediction
    return {"pred": pred, "fwd": fwd, "returns": returns, "bar_returns": fwd}


def test_verdict_edge():
    v = V.holdout_verdict(**_model_case(0, 0.5), periods_per_year=252.0, baselines=BASELINES, horizon=1)
    assert v.edge and v.best_baseline == "always_long" and v.baseline_sharpe == 0.37
    assert v.ic_ci[0] > 0 and v.sharpe > 0.37 and v.ic_ci[0] < v.ic < v.ic_ci[1]
    assert v.text == (f"edge over always_long: Sharpe {v.sharpe:.2f} [{v.sharpe_ci[0]:.2f}, {v.sharpe_ci[1]:.2f}] "
                      f"vs 0.37, IC {v.ic:.3f} [{v.ic_ci[0]:.3f}, {v.ic_ci[1]:.3f}]")
    d = v.to_dict()
    assert d["edge"] is True and d["ic_ci"] == list(v.ic_ci) and d["warnings"] == []
    assert d["method"]["resamples"] == V.RESAMPLES and d["method"]["ic_block"] == 10


def test_verdict_no_edge_names_the_reasons():
    v = V.holdout_verdict(**_model_case(1, 0.0), periods_per_year=252.0, baselines=BASELINES, horizon=1)
    assert not v.edge
    assert v.text.startswith("no edge over always_long: Sharpe ")
    assert "IC interval not above 0" in v.text
    # A model whose IC is real but whose Sharpe loses to the best baseline has no edge either.
    strong = V.holdout_verdict(**_model_case(0, 0.5), periods_per_year=252.0,
                               baselines={"always_long": {"sharpe": 99.0}}, horizon=1)
    assert not strong.edge and strong.text.endswith("(Sharpe not above always_long's)")


def test_an_implausible_result_is_not_an_edge():
    case = _model_case(0, 0.5)
    e = np.random.default_rng(9).standard_normal(1001)
    case["bar_returns"] = e[1:] - e[:-1]
    v = V.holdout_verdict(**case, periods_per_year=105192.0, baselines=BASELINES, horizon=1)
    assert not v.edge and v.warnings and v.text.startswith("suspect result over always_long: ")


def test_recorded_verdict():
    assert V.recorded_verdict({"metrics": {"holdout": {}}}) == (None, V.NO_VERDICT)
    assert V.recorded_verdict({}) == (None, V.NO_VERDICT)
    assert V.recorded_verdict({"metrics": {"verdict": {"edge": "yes"}}}) == (None, V.NO_VERDICT)
    assert V.recorded_verdict({"metrics": {"verdict": {"edge": False, "text": "no edge over zero: x"}}}) == (
        False, "no edge over zero: x")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(5, 300), horizon=st.integers(1, 12),
       scale=st.floats(1e-6, 1e3), shift=st.floats(-10.0, 10.0))
def test_interval_invariances(seed, n, horizon, scale, shift):
    # Correlation ignores positive affine maps of either side and flips with the sign; the Sharpe
    # ratio ignores a positive scale of the returns. Same seed, same resamples: same interval.
    rng = np.random.default_rng(seed)
    p, f = rng.standard_normal(n), rng.standard_normal(n) + 0.3 * rng.standard_normal(n)
    lo, hi = V.ic_interval(p, f, horizon=horizon, resamples=200)
    assert -1.0 <= lo <= hi <= 1.0
    assert V.ic_interval(scale * p + shift, f, horizon=horizon, resamples=200) == pytest.approx((lo, hi), abs=1e-7)
    assert V.ic_interval(-p, f, horizon=horizon, resamples=200) == pytest.approx((-hi, -lo), abs=1e-7)
    r = 0.01 * f + 0.001
    s_lo, s_hi = V.sharpe_interval(r, 252.0, horizon=horizon, resamples=200)
    assert s_lo <= s_hi
    assert V.sharpe_interval(scale * r, 252.0, horizon=horizon, resamples=200) == pytest.approx((s_lo, s_hi),
                                                                                                  rel=1e-6, abs=1e-9)
