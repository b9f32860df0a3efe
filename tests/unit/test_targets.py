"""Targets: forward returns and their direction, never in the feature matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrader.data.synthetic import generate_bars
from aitrader.errors import FeatureError
from aitrader.features import FeaturePipeline, FeatureRegistry
from aitrader.features.targets import direction, forward_return


def test_forward_return_values_and_tail() -> None:
    close = pd.Series([100.0, 110.0, 99.0, 99.0, 120.0], index=pd.RangeIndex(5))
    fwd = forward_return(close, 2)
    assert fwd.name == "fwd_return_2"
    np.testing.assert_allclose(fwd.to_numpy()[:3], [99 / 100 - 1, 99 / 110 - 1, 120 / 99 - 1])
    assert fwd.iloc[-2:].isna().all()
    assert fwd.index.equals(close.index)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 60), h=st.integers(1, 70))
def test_last_h_rows_are_nan(n: int, h: int) -> None:
    close = pd.Series(np.linspace(1.0, 2.0, n))
    fwd = forward_return(close, h)
    assert fwd.isna().sum() == min(n, h)
    assert fwd.iloc[: max(0, n - h)].notna().all()


def test_direction() -> None:
    fwd = pd.Series([0.1, -0.2, 0.0, np.nan], name="fwd_return_5")
    up = direction(fwd)
    assert up.name == "fwd_return_5_up"
    np.testing.assert_array_equal(up.to_numpy()[:3], [1.0, 0.0, 0.0])
    assert np.isnan(up.iloc[3])


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_horizon(bad) -> None:
    with pytest.raises(FeatureError, match="horizon must be an integer >= 1"):
        forward_return(pd.Series([1.0, 2.0]), bad)


def test_targets_never_in_feature_matrix() -> None:
    registry = FeatureRegistry.load()
    assert not any(name.startswith("fwd_") for name in registry.names())
    with pytest.raises(FeatureError, match="unknown feature 'fwd_return_5'"):
        registry.resolve("fwd_return_5")
    df = generate_bars(300, seed=4)
    features = FeaturePipeline(None, registry).transform(df)
    fwd = forward_return(df["close"], 5)
    assert fwd.name not in features.columns
    # No feature is the future return in disguise: none correlates (almost) perfectly with it.
    ok = features.notna().all(axis=1) & fwd.notna()
    corr = features[ok].corrwith(fwd[ok]).abs()
    assert (corr < 0.9).all(), corr[corr >= 0.9]
