"""Batch == streaming (property tests and real data), no look-ahead, and the streaming contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aitrader.data.synthetic import generate_bars
from aitrader.errors import DataError, FeatureError
from aitrader.features import FeaturePipeline, FeatureRegistry
from aitrader.features.kinds import BOOK_KINDS, KINDS

REGISTRY = FeatureRegistry.load()
# Every plain bar feature, current_price included (fitted features: test_features_fitted.py; order-book
# kinds need snapshots: test_features_book.py).
PLAIN = [n for n in REGISTRY.names()
         if not KINDS[REGISTRY.spec(n).kind].fitted and REGISTRY.spec(n).kind not in BOOK_KINDS]
PIPE = FeaturePipeline(PLAIN, REGISTRY)
TOL = 1e-7


def _bars(seed: int, n: int, price: float, vol: float, flat_volume: bool = False,
          flat_runs: bool = False) -> pd.DataFrame:
    """A random walk of OHLCV bars; optionally with stretches of constant prices or volume."""
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0, vol, n)))
    if flat_runs:  # hold the price for random stretches (illiquid markets, halted symbols)
        hold = rng.random(n) < 0.6
        for i in range(1, n):
            if hold[i]:
                close[i] = close[i - 1]
    opens = np.r_[close[0], close[:-1]]
    spread = np.abs(rng.normal(0, vol, n)) * close
    high = np.maximum(opens, close) + spread * rng.random(n)
    low = np.minimum(opens, close) - spread * rng.random(n) * 0.9
    volume = np.full(n, 1000.0) if flat_volume else rng.lognormal(8, 1, n).round()
    if flat_runs:
        volume[rng.random(n) < 0.3] = 0.0
    idx = pd.date_range("2022-01-01", periods=n, freq="5min", name="timestamp")
    return pd.DataFrame({"open": opens, "high": high, "low": low, "close": close, "volume": volume}, index=idx)


def _assert_equal(df: pd.DataFrame, pipe: FeaturePipeline = PIPE) -> None:
    batch = pipe.transform(df).to_numpy()
    stream = pipe.transform_streaming(df).to_numpy()
    assert np.array_equal(np.isnan(batch), np.isnan(stream)), "NaN (warm-up) positions differ"
    diff = np.abs(batch - stream)
    # Features in ratio units compare absolutely; the raw price in units of its own size.
    diff[:, pipe.names.index("current_price")] /= np.maximum(1.0, np.abs(batch[:, 0]))
    worst = np.nanmax(diff, axis=0, initial=0.0)
    bad = {n: float(w) for n, w in zip(pipe.names, worst, strict=True) if w > TOL}
    assert not bad, f"streaming differs from batch: {bad}"


# 150 examples up to 1,500 bars: past every warm-up and several of the streaming side's 256-bar refreshes.
# The example: a 0.1 price falling to 1.7e-4 in 663 bars, where a 1024-bar refresh let bb_pctb_20 drift 8.6e-7.
# Derandomised (a fixed sequence, no example database): nearly flat windows make bb_pctb ill-conditioned
# in both evaluators (docs/architecture.md, contract 1), and CI must not depend on the series drawn.
@example(seed=7, n=1046, price=0.1, vol=0.08, flat_volume=False, flat_runs=True)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True,
          database=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 1500),
       price=st.sampled_from([0.1, 0.5, 3.0, 100.0, 40_000.0]) | st.floats(0.1, 40_000.0),
       vol=st.floats(0.0005, 0.08), flat_volume=st.booleans(), flat_runs=st.booleans())
def test_batch_equals_streaming(seed: int, n: int, price: float, vol: float, flat_volume: bool,
                                flat_runs: bool) -> None:
    _assert_equal(_bars(seed, n, price, vol, flat_volume, flat_runs))


def test_long_series_from_40000_to_below_one() -> None:
    """Rounding must not drift: a long walk whose price spans four orders of magnitude."""
    df = _bars(7, 30_000, 40_000.0, 0.01)
    df[["open", "high", "low", "close"]] *= np.geomspace(1.0, 1e-5, len(df))[:, None]
    assert df["close"].iloc[-1] < 1.0
    _assert_equal(df, FeaturePipeline(None, REGISTRY).__class__(PLAIN, REGISTRY))


def test_no_look_ahead() -> None:
    """Features of a truncated series equal the prefix of those of the full series."""
    df = generate_bars(600, seed=5)
    full = PIPE.transform(df)
    for cut in (1, 30, 106, 333, 599):
        part = PIPE.transform(df.iloc[:cut])
        pd.testing.assert_frame_equal(part, full.iloc[:cut], check_exact=False, rtol=0, atol=1e-12)
        # Changing the future must not change the past either.
        future = df.copy()
        future.iloc[cut:, :4] *= 3.0
        pd.testing.assert_frame_equal(PIPE.transform(future).iloc[:cut], full.iloc[:cut], atol=1e-12, rtol=0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 400), data=st.data(), flat_runs=st.booleans())
def test_no_look_ahead_property(seed: int, n: int, data: st.DataObject, flat_runs: bool) -> None:
    """Any cut, any series: rows before the cut ignore what comes after it, in both evaluators."""
    df = _bars(seed, n, 50.0, 0.02, flat_runs=flat_runs)
    cut = data.draw(st.integers(1, n - 1), label="cut")
    full = PIPE.transform(df).to_numpy()[:cut]
    future = df.copy()
    future.iloc[cut:, :4] *= data.draw(st.sampled_from([0.25, 3.0]), label="scale")
    future.iloc[cut:, 4] += 1e6
    for got in (PIPE.transform(df.iloc[:cut]), PIPE.transform(future).iloc[:cut],
                PIPE.transform_streaming(future).iloc[:cut]):
        np.testing.assert_allclose(got.to_numpy(), full, rtol=0, atol=1e-9, equal_nan=True)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(0.01, 1e5), min_size=0, max_size=300), n=st.integers(1, 80))
def test_rolling_extreme_equals_pandas(values: list[float], n: int) -> None:
    from aitrader.features.batch import rolling_extreme

    x = np.array(values, dtype="float64")
    for op, name in ((np.maximum, "max"), (np.minimum, "min")):
        expected = getattr(pd.Series(x, dtype="float64").rolling(n, min_periods=n), name)().to_numpy()
        assert np.array_equal(rolling_extreme(x, n, op), expected, equal_nan=True)


@pytest.mark.shared_data
@pytest.mark.parametrize("rel", ["equity_1h/AAPL.csv.gz", "equity_1h/AIG.csv.gz", "crypto_5m/ADA_BTC.csv.gz",
                                 "crypto_5m/XMR_BTC.csv.gz", "intraday_1m/BTCPERP_2022-01.csv.gz",
                                 "intraday_1m/SPY_2011_utc_barend.csv.gz"])
def test_batch_equals_streaming_on_real_data(shared_data, rel: str) -> None:
    from aitrader.data import load_bars

    df = load_bars(shared_data / rel)
    if rel.startswith("equity"):
        df = df.iloc[:12_000]  # AAPL's sub-dollar adjusted prices (0.10) are in the early years
    if rel.endswith("AAPL.csv.gz"):
        assert df["close"].min() < 0.2
    _assert_equal(df)


def test_update_contract() -> None:
    df = generate_bars(150, seed=9)
    pipe = FeaturePipeline(["rsi_14", "ret_5", "macd_hist"], REGISTRY)
    stream = pipe.stream(buffer_size=64)
    first = stream.update(df.index[0], *df.iloc[0].to_numpy())
    assert isinstance(first, np.ndarray) and first.shape == (3,) and np.isnan(first).all()
    rows = [stream.update(ts, *row).copy() for ts, row in zip(df.index[1:], df.to_numpy()[1:], strict=True)]
    assert stream.bars_seen == 150 and stream.ready
    np.testing.assert_allclose(rows[-1], pipe.transform(df).to_numpy()[-1], rtol=0, atol=1e-12)
    assert not stream.ready or stream.warmup == pipe.warmup == 105


def test_buffer_too_small_and_bad_bar() -> None:
    with pytest.raises(FeatureError, match=r"buffer_size 30 is too small .* use buffer_size >= 61"):
        FeaturePipeline(["ret_60"], REGISTRY).stream(buffer_size=30)
    stream = FeaturePipeline(["ret_1"], REGISTRY).stream()
    stream.update(0, 1.0, 1.0, 1.0, 1.0, 10.0)
    with pytest.raises(DataError, match=r"bar 1 \(t1\): invalid values .*close=nan"):
        stream.update("t1", 1.0, 1.0, 1.0, float("nan"), 10.0)
    with pytest.raises(DataError, match="volume=-1.0"):
        stream.update("t1", 1.0, 1.0, 1.0, 1.0, -1.0)
    assert stream.bars_seen == 1  # a refused bar leaves the state untouched
    assert stream.update("t1", 1.0, 1.0, 1.0, 1.1, 1.0)[0] == pytest.approx(0.1)


def test_batch_rejects_invalid_bars() -> None:
    df = generate_bars(50, seed=1)
    df.iloc[7, df.columns.get_loc("low")] = 0.0
    with pytest.raises(DataError, match=r"bar 7 .*low=0.0"):
        PIPE.transform(df)
    with pytest.raises(DataError, match=r"lack columns \['volume'\]"):
        PIPE.transform(df.drop(columns="volume"))
