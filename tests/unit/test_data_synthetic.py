"""aitrader.data.synthetic: deterministic, always-valid bars with a weak planted signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrader.data.synthetic import generate_bars
from aitrader.errors import DataError


def _assert_valid(df: pd.DataFrame, n: int) -> None:
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert (df.dtypes == "float64").all()
    assert isinstance(df.index, pd.DatetimeIndex) and df.index.name == "timestamp"
    assert df.index.is_monotonic_increasing and df.index.is_unique
    assert len(df) == n
    values = df.to_numpy()
    assert np.isfinite(values).all()
    assert (df[["open", "high", "low", "close"]] > 0).all().all()
    assert (df["high"] >= df[["open", "close"]].max(axis=1)).all()
    assert (df["low"] <= df[["open", "close"]].min(axis=1)).all()
    assert (df["volume"] > 0).all()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=3000),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    volatility=st.floats(min_value=1e-4, max_value=0.1),
    signal=st.floats(min_value=0.0, max_value=0.9),
)
def test_always_valid(n: int, seed: int, volatility: float, signal: float) -> None:
    _assert_valid(generate_bars(n, seed=seed, volatility=volatility, signal=signal), n)


def test_deterministic_for_a_seed() -> None:
    a = generate_bars(500, seed=7)
    b = generate_bars(500, seed=7)
    c = generate_bars(500, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["close"].to_numpy(), c["close"].to_numpy())


def test_index_options() -> None:
    df = generate_bars(10, start="2021-03-01 09:30", freq="5min", tz="America/New_York")
    assert str(df.index.tz) == "America/New_York"
    assert df.index[0] == pd.Timestamp("2021-03-01 09:30", tz="America/New_York")
    assert (df.index[1:] - df.index[:-1] == pd.Timedelta("5min")).all()
    assert df.attrs["repaired_rows"] == 0


def test_volatility_matches() -> None:
    df = generate_bars(20_000, seed=1, volatility=0.02, signal=0.0)
    intrabar = np.log(df["close"] / df["open"])
    assert intrabar.std() == pytest.approx(0.02, rel=0.05)


def test_planted_signal_is_weak_but_present() -> None:
    # Momentum predicts the next returns when a signal is planted and not when it is absent.
    def ic(signal: float) -> float:
        corrs = []
        for seed in range(4):
            logc = np.log(generate_bars(20_000, seed=seed, signal=signal)["close"])
            corrs.append(logc.diff(20).corr(logc.shift(-5) - logc))
        return float(np.mean(corrs))

    planted, noise = ic(0.3), ic(0.0)
    assert 0.1 < planted < 0.5
    assert abs(noise) < 0.05


def test_million_bars() -> None:
    # Correctness only: its speed (< 1 s on an idle core) is measured in scripts/bench/, never asserted.
    df = generate_bars(1_000_000, freq="1min")
    assert len(df) == 1_000_000
    assert df.index[-1] - df.index[0] == pd.Timedelta(minutes=999_999)
    assert np.isfinite(df.to_numpy()).all() and (df["low"] <= df[["open", "close"]].min(axis=1)).all()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"n": 0}, "n must be a positive integer"),
        ({"n": 10, "start_price": 0.0}, "start_price must be > 0"),
        ({"n": 10, "volatility": -1.0}, "volatility must be > 0"),
        ({"n": 10, "signal": 1.0}, "signal must be in [0, 1)"),
        ({"n": 200_000, "freq": "1D"}, "timestamps must end before 2262"),
    ],
)
def test_bad_arguments(kwargs: dict, needle: str) -> None:
    with pytest.raises(DataError, match=needle.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        generate_bars(**kwargs)
