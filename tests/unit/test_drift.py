"""PSI and KS against a manifest-style baseline."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrader.errors import ModelError
from aitrader.monitoring.drift import (
    EPSILON,
    autocorrelation_time,
    bin_counts,
    drift_stats,
    drift_table,
    effective_sample_size,
    feature_drift_score,
    importance_weights,
    ks_statistic,
    lag1_autocorrelation,
    make_baseline,
    psi,
    psi_from_counts,
    psi_noise,
)


def test_psi_hand_computed() -> None:
    # Two bins, baseline 50/50, live 80/20: (0.8-0.5)ln(0.8/0.5) + (0.2-0.5)ln(0.2/0.5)
    expected = 0.3 * np.log(1.6) + (-0.3) * np.log(0.4)
    assert psi_from_counts([50, 50], [80, 20]) == pytest.approx(expected)


def test_psi_empty_bin_uses_epsilon() -> None:
    value = psi_from_counts([50, 50], [100, 0])
    expected = (1 - 0.5) * np.log(1 / 0.5) + (EPSILON - 0.5) * np.log(EPSILON / 0.5)
    assert value == pytest.approx(expected)
    assert np.isfinite(value)


def test_bins_outer_open_and_edge_goes_right() -> None:
    edges = np.array([0.0, 1.0])
    assert bin_counts([-100, 0.0, 0.5, 1.0, 100, np.nan], edges).tolist() == [1, 2, 2]


def test_baseline_layout_with_outer_edges_is_accepted() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=5000)
    base = make_baseline(train)
    assert len(base["quantiles"]) == 101 and len(base["counts"]) == 10 and len(base["bin_edges"]) == 9
    full = dict(base, bin_edges=[-np.inf, *base["bin_edges"], np.inf])
    live = rng.normal(size=800)
    assert psi(full, live) == pytest.approx(psi(base, live))


def test_damaged_baseline_names_the_feature() -> None:
    with pytest.raises(ModelError, match="baseline of 'rsi_14'.*3 bin_edges do not fit 10 counts"):
        psi({"counts": [1] * 10, "bin_edges": [0, 1, 2]}, [1.0], name="rsi_14")


def test_same_distribution_is_stable_shift_is_not() -> None:
    rng = np.random.default_rng(1)
    base = make_baseline(rng.normal(size=20_000))
    assert psi(base, rng.normal(size=2000)) < 0.02
    assert ks_statistic(base["quantiles"], rng.normal(size=2000)) < 0.05
    assert psi(base, rng.normal(1.0, 1.0, size=2000)) > 0.2
    assert ks_statistic(base["quantiles"], rng.normal(1.0, 1.0, size=2000)) > 0.3


def test_ks_matches_exact_two_sample_statistic() -> None:
    # With 101 quantiles of a large sample the reconstruction is within about a percentile.
    rng = np.random.default_rng(2)
    train, live = rng.normal(size=50_000), rng.normal(0.3, 1.2, size=3000)
    base = make_baseline(train)
    pts = np.sort(np.concatenate([train, live]))
    exact = np.max(np.abs(np.searchsorted(np.sort(live), pts, "right") / live.size
                          - np.searchsorted(np.sort(train), pts, "right") / train.size))
    assert ks_statistic(base["quantiles"], live) == pytest.approx(exact, abs=0.015)


def test_ks_point_mass_feature() -> None:
    # A binary feature (quantiles tie at 0 and 1): identical shares give a small statistic.
    train = np.r_[np.zeros(700), np.ones(300)]
    base = make_baseline(train)
    assert ks_statistic(base["quantiles"], np.r_[np.zeros(70), np.ones(30)]) <= 0.02
    assert ks_statistic(base["quantiles"], np.ones(50)) >= 0.69


def test_drift_table_ranks_by_psi_and_flags_missing_baseline() -> None:
    rng = np.random.default_rng(3)
    baselines = {"a": make_baseline(rng.normal(size=5000)), "b": make_baseline(rng.normal(size=5000))}
    live = np.column_stack([rng.normal(size=500), rng.normal(2, 1, size=500), rng.normal(size=500)])
    rows = drift_table(baselines, ["a", "b", "c"], live)
    assert [r["name"] for r in rows] == ["b", "a", "c"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert rows[2]["psi"] is None and rows[2]["note"] == "no baseline"
    with pytest.raises(ModelError, match="expected \\(rows, 2\\)"):
        drift_table(baselines, ["a", "b"], live)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6), min_size=20, max_size=200),
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200),
)
def test_psi_and_ks_properties(train: list[float], live: list[float]) -> None:
    base = make_baseline(train)
    p = psi(base, live)
    assert p >= 0  # sum of (a-e) ln(a/e) terms, each >= 0
    assert psi(base, train) == pytest.approx(0.0, abs=1e-9)  # a sample against its own histogram
    k = ks_statistic(base["quantiles"], live)
    assert 0.0 <= k <= 1.0


# --------------------------------------------------- noise, effective sample size, importance


def test_psi_hand_computed_three_bins() -> None:
    # Baseline 2/5/3, live 4/4/2 (shares 0.2/0.5/0.3 vs 0.4/0.4/0.2), computed term by term:
    # 0.2 ln 2 = 0.138629, -0.1 ln 0.8 = 0.022314, -0.1 ln(2/3) = 0.040547  -> 0.201490
    assert psi_from_counts([2, 5, 3], [4, 4, 2]) == pytest.approx(0.201490, abs=1e-6)
    # The same histograms through a baseline entry: live values binned at the edges 0 and 1.
    base = {"counts": [2, 5, 3], "bin_edges": [0.0, 1.0], "quantiles": [-1.0, 0.0, 1.0, 2.0]}
    assert psi(base, [-1, -1, -1, -1, 0.2, 0.5, 0.5, 0.9, 1.0, 1.5]) == pytest.approx(0.201490, abs=1e-6)


def test_lag1_autocorrelation_and_effective_size_hand_computed() -> None:
    # x = 1, 2, 3, 4: the pairs (1,2), (2,3), (3,4) lie on a line: rho = 1.
    assert lag1_autocorrelation([1.0, 2.0, 3.0, 4.0]) == pytest.approx(1.0)
    # Alternating signs: (1,-1), (-1,1), (1,-1): deviations (1,-1,1)-1/3 and (-1,1,-1)+1/3: rho = -1.
    assert lag1_autocorrelation([1.0, -1.0, 1.0, -1.0]) == pytest.approx(-1.0)
    assert lag1_autocorrelation([5.0, 5.0, 5.0]) == 0.0 and lag1_autocorrelation([1.0, np.nan]) == 0.0
    assert effective_sample_size(1000, 0.5) == pytest.approx(1000 * 0.5 / 1.5)
    assert effective_sample_size(1000, -0.5) == 1000  # negative rho is clipped to 0
    assert effective_sample_size(1000, 0.0, tau=10.0) == pytest.approx(100.0)  # the larger inflation wins
    assert effective_sample_size(10, 0.999) == 1.0 and effective_sample_size(0, 0.3) == 0.0


def _ar1(n: int, rho: float, seed: int, burn: int = 500) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=n + burn) * np.sqrt(1 - rho**2)  # unit stationary variance
    x = np.zeros(n + burn)
    for i in range(1, n + burn):
        x[i] = rho * x[i - 1] + e[i]
    return x[burn:]


def test_autocorrelation_time_of_ar1_is_one_plus_rho_over_one_minus_rho() -> None:
    for rho in (0.0, 0.5, 0.9):
        tau = autocorrelation_time(_ar1(40_000, rho, seed=1))
        assert tau == pytest.approx((1 + rho) / (1 - rho), rel=0.15)
    assert autocorrelation_time([1.0, 2.0]) == 1.0


def test_psi_noise_matches_the_chi_square_limit_for_large_samples() -> None:
    # For m draws, PSI ~ chi2(bins - 1) / m as m grows (PSI ~ the chi-square statistic / m).
    from scipy.stats import chi2

    shares = np.full(10, 0.1)
    assert psi_noise(shares, 20_000) == pytest.approx(chi2.ppf(0.99, 9) / 20_000, rel=0.15)
    assert psi_noise(shares, 20_000) == psi_noise(shares * 7, 20_000)  # deterministic, counts or shares
    # A handful of independent values leave most bins empty: chance alone gives a PSI of several units.
    assert psi_noise(shares, 5) > 3.0
    assert np.isnan(psi_noise([0, 0], 10))


def test_autocorrelated_same_distribution_does_not_drift_but_a_shift_does() -> None:
    # A level-like feature: AR(1) with rho 0.99 (an ATR or a 20-bar volatility moves like this).
    train = _ar1(20_000, 0.99, seed=2)
    base = make_baseline(train)
    same = _ar1(1000, 0.99, seed=3)  # the same process, a new stretch: 1000 bars, ~5 independent values
    s = drift_stats(base, same, psi_max=0.2)
    assert s["psi"] > 0.2  # the old rule (PSI > 0.2) would alert...
    assert s["n_eff"] < 20 and s["noise"] > s["psi"] and not s["significant"]  # ...but chance explains it
    shifted = same + 4.0  # four standard deviations higher: everything in the top bin
    t = drift_stats(base, shifted, psi_max=0.2)
    assert t["psi"] > t["threshold"] and t["significant"]
    # The same check with independent values: a small n_eff is not a licence to miss a modest shift.
    iid = make_baseline(np.random.default_rng(4).normal(size=20_000))
    calm = drift_stats(iid, np.random.default_rng(5).normal(size=1000), psi_max=0.2)
    moved = drift_stats(iid, np.random.default_rng(5).normal(0.6, 1.0, size=1000), psi_max=0.2)
    assert not calm["significant"] and calm["n_eff"] > 800 and calm["threshold"] == 0.2
    assert moved["significant"]


def test_monitor_alerts_on_shifted_autocorrelated_predictions_only() -> None:
    from aitrader.config import Monitoring
    from aitrader.monitoring.alerts import evaluate_alerts

    base = make_baseline(_ar1(20_000, 0.98, seed=6))
    cfg = Monitoring()
    for live, fires in ((_ar1(1000, 0.98, seed=7), False), (_ar1(1000, 0.98, seed=7) + 4.0, True)):
        drift = {"enough_samples": True, "features": [], "feature_score": 0.0,
                 "prediction": drift_stats(base, live, psi_max=cfg.psi_max)}
        alerts = evaluate_alerts({}, drift, {}, cfg, daily_loss_limit=0.02)
        assert [a["code"] for a in alerts] == (["psi_prediction"] if fires else [])
        if fires:
            message = alerts[0]["message"]
            assert "at n_eff" in message and "no feature drifted beyond its noise level" in message


def test_importance_weights_and_weighted_score() -> None:
    w, source = importance_weights(["a", "b", "c"], {"a": 3.0, "b": 1.0, "c": 0.0})
    assert w == {"a": 0.75, "b": 0.25, "c": 0.0} and source == "manifest"
    assert importance_weights(["a", "b"], None) == ({"a": 0.5, "b": 0.5}, "uniform")
    assert importance_weights(["a", "b"], {"a": 0.0, "b": float("nan")}) == ({"a": 0.5, "b": 0.5}, "uniform")
    rng = np.random.default_rng(8)
    baselines = {"a": make_baseline(rng.normal(size=5000)), "b": make_baseline(rng.normal(size=5000))}
    live = np.column_stack([rng.normal(3, 1, size=800), rng.normal(3, 1, size=800)])
    rows = drift_table(baselines, ["a", "b"], live, weights={"a": 0.9, "b": 0.1})
    assert [r["name"] for r in rows] == ["a", "b"]  # ranked by what matters to the model
    assert all(r["significant"] for r in rows)
    expected = 0.9 * rows[0]["psi"] + 0.1 * rows[1]["psi"]
    assert feature_drift_score(rows) == pytest.approx(expected)
    assert rows[0]["contribution"] == pytest.approx(0.9 * rows[0]["psi"])


def test_importance_section_is_normalised_in_feature_order() -> None:
    from aitrader.training.artifact import importance_section

    sec = importance_section({"b": 6.0, "a": 2.0, "c": 0.0}, ["a", "b", "c"], "lightgbm")
    assert sec == {"method": "gain", "features": {"a": 0.25, "b": 0.75, "c": 0.0}}
    assert list(sec["features"]) == ["a", "b", "c"]
    assert importance_section({"a": 0.0}, ["a"], "ridge") == {"method": "abs_coef_standardised",
                                                             "features": {"a": 0.0}}
