"""Every feature against a reference implementation (the `ta` package or plain numpy) after warm-up."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import ta

from aitrader.data.synthetic import generate_bars
from aitrader.features import FeaturePipeline, FeatureRegistry
from aitrader.features.kinds import BOOK_KINDS, KINDS

REGISTRY = FeatureRegistry.load()
# Fitted features (parameters learned at train time) have their own oracles: test_features_fitted.py;
# book kinds need snapshots: test_features_book.py.
ALL = [n for n in REGISTRY.names()
       if not KINDS[REGISTRY.spec(n).kind].fitted and REGISTRY.spec(n).kind not in BOOK_KINDS]


def _sample(shared: bool, shared_path=None) -> pd.DataFrame:
    if not shared:
        return generate_bars(1500, seed=11, start_price=250.0, volatility=0.02)
    from aitrader.data import load_bars

    return load_bars(shared_path / "equity_1h" / "IBM.csv.gz").iloc[:6000]


def _references(df: pd.DataFrame) -> dict[str, pd.Series]:
    c, h, low, v = df["close"], df["high"], df["low"], df["volume"]
    sma = {n: c.rolling(n).mean() for n in (10, 20, 50)}
    ema = {n: ta.trend.EMAIndicator(c, n).ema_indicator() for n in (12, 26)}
    macd = ta.trend.MACD(c, window_slow=26, window_fast=12, window_sign=9)
    hh, ll = h.rolling(20).max(), low.rolling(20).min()
    vol_std = v.rolling(20).apply(lambda w: np.std(w), raw=True)
    ref = {
        "current_price": c,
        "ret_1": c / c.shift(1) - 1, "ret_5": c / c.shift(5) - 1, "ret_10": c / c.shift(10) - 1,
        "ret_15": c / c.shift(15) - 1, "ret_60": c / c.shift(60) - 1,
        "sma_ratio_10": c / sma[10] - 1, "sma_ratio_20": c / sma[20] - 1, "sma_ratio_50": c / sma[50] - 1,
        "ema_ratio_12": c / ema[12] - 1, "ema_ratio_26": c / ema[26] - 1,
        "rsi_14": ta.momentum.RSIIndicator(c, 14).rsi(),
        "macd": macd.macd() / c, "macd_signal": macd.macd_signal() / c, "macd_hist": macd.macd_diff() / c,
        "bb_pctb_20": ta.volatility.BollingerBands(c, 20, 2).bollinger_pband(),
        "atr_14": ta.volatility.AverageTrueRange(h, low, c, 14).average_true_range() / c,
        "volatility_20": c.pct_change().rolling(20).apply(lambda w: np.std(w, ddof=1), raw=True),
        "volume_zscore_20": (v - v.rolling(20).apply(np.mean, raw=True)) / vol_std,
        "volume_ratio_5": v / v.rolling(5).apply(np.mean, raw=True),
        "hl_range": (h - low) / c,
        "close_location": ((c - low) - (h - c)) / (h - low),
        "stoch_k_14": ta.momentum.StochasticOscillator(h, low, c, 14, 3).stoch(),
        "williams_r_14": ta.momentum.WilliamsRIndicator(h, low, c, 14).williams_r(),
        "dist_high_20": c / hh - 1, "dist_low_20": c / ll - 1,
        "liquidity_shock_20": (v - v.rolling(20).apply(np.mean, raw=True)) / vol_std * (h - low)
        / ta.volatility.AverageTrueRange(h, low, c, 20).average_true_range(),
    }
    return ref


# RSI is seeded like TA-Lib (SMA of the first 14 changes), `ta` from a zero: after 300 bars the
# seeds' influence has decayed below 1e-9, so the comparison starts there for it.
LATE = {"rsi_14": 300}


def _compare(df: pd.DataFrame) -> None:
    got = FeaturePipeline(ALL, REGISTRY).transform(df)
    refs = _references(df)
    assert set(refs) == set(ALL), "every registered feature needs a reference"
    for name in ALL:
        start = max(REGISTRY.spec(name).warmup, LATE.get(name, 0))
        a = got[name].to_numpy()[start:]
        b = refs[name].to_numpy(dtype="float64")[start:]
        assert not np.isnan(a).any(), f"{name} has NaN after its warm-up"
        ok = np.isfinite(b)
        assert ok.mean() > 0.99, name
        scale = max(1.0, float(np.nanmax(np.abs(b))))
        np.testing.assert_allclose(a[ok], b[ok], rtol=0, atol=1e-9 * scale, err_msg=name)


def test_features_match_reference_on_synthetic_bars() -> None:
    _compare(_sample(False))


@pytest.mark.shared_data
def test_features_match_reference_on_real_bars(shared_data) -> None:
    _compare(_sample(True, shared_data))


def test_warmup_is_nan_then_values() -> None:
    df = generate_bars(200, seed=2)
    got = FeaturePipeline(ALL, REGISTRY).transform(df)
    for name in ALL:
        w = REGISTRY.spec(name).warmup
        col = got[name].to_numpy()
        assert np.isnan(col[:w]).all() and not np.isnan(col[w:]).any(), name
    assert (got.dtypes == "float64").all()
    assert got.index.equals(df.index)


def test_flat_market_has_defined_values() -> None:
    n = 120
    idx = pd.date_range("2021-01-01", periods=n, freq="1h", name="timestamp")
    df = pd.DataFrame({"open": 5.0, "high": 5.0, "low": 5.0, "close": 5.0, "volume": 0.0}, index=idx)
    row = FeaturePipeline(ALL, REGISTRY).transform(df).iloc[-1]
    assert row["bb_pctb_20"] == 0.5 and row["volume_zscore_20"] == 0.0 and row["volume_ratio_5"] == 1.0
    assert row["stoch_k_14"] == 50.0 and row["williams_r_14"] == -50.0 and row["close_location"] == 0.0
    assert row["rsi_14"] == 50.0 and row["volatility_20"] == 0.0 and row["sma_ratio_20"] == 0.0
