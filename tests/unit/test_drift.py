"""PSI and KS against a manifest-style baseline."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrader.errors import ModelError
from aitrader.monitoring.drift import (
    EPSILON,
    bin_counts,
    drift_table,
    ks_statistic,
    make_baseline,
    psi,
    psi_from_counts,
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
