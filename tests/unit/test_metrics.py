"""Metrics against reference implementations, the backtest's accounting, and the baselines."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import log_loss, mean_absolute_error, r2_score, roc_auc_score

from aitrader.training.metrics import (
    backtest,
    baseline_predictions,
    classification_metrics,
    evaluate,
    hit_rate,
    ic,
    market_calendar,
    max_drawdown,
    mean_metrics,
    periods_per_year,
    rank_ic,
    regression_metrics,
    sharpe_ratio,
    simple_returns,
    sortino_ratio,
    turnover,
)

finite = st.floats(-0.2, 0.2, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(3, 60), elements=finite), st.data())
def test_regression_metrics_match_references(y, data):
    pred = data.draw(arrays(np.float64, y.size, elements=finite))
    m = regression_metrics(y, pred)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, pred), abs=1e-12)
    assert m["rmse"] == pytest.approx(math.sqrt(np.mean((y - pred) ** 2)), abs=1e-12)
    if np.ptp(y) > 1e-9:
        assert m["r2"] == pytest.approx(r2_score(y, pred), rel=1e-6, abs=1e-9)
    if np.ptp(y) > 1e-9 and np.ptp(pred) > 1e-9:
        s_y, s_p = pd.Series(y), pd.Series(pred)
        assert m["ic"] == pytest.approx(s_y.corr(s_p), abs=1e-9)
        assert m["rank_ic"] == pytest.approx(s_y.rank().corr(s_p.rank()), abs=1e-9)
    assert 0.0 <= m["hit_rate"] <= 1.0


def test_hit_rate_excludes_zero_targets_and_counts_zero_predictions_as_misses():
    assert hit_rate([0.1, -0.1, 0.0, 0.2], [1, -1, 5, 0]) == pytest.approx(2 / 3)
    assert hit_rate([0.0, 0.0], [1, 1]) is None  # undefined: no outcome has a direction
    assert regression_metrics([0.0, 0.0, 0.0], [1, -1, 1])["hit_rate"] == 0.0  # the training tables store 0.0


def test_a_spread_whose_variance_underflows_gives_a_finite_ic():
    import warnings

    y = np.array([0.0, 0.0, 1e-170])  # its variance underflows to 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = regression_metrics(y, np.array([0.01, -0.02, 0.03]))
    assert np.isfinite(m["ic"]) and np.isfinite(m["rank_ic"])


def test_constant_prediction_has_zero_ic():
    m = regression_metrics([0.1, -0.2, 0.3, 0.05], [0.0, 0.0, 0.0, 0.0])
    assert m["ic"] == 0.0 and m["rank_ic"] == 0.0 and m["hit_rate"] == 0.0


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    fwd = rng.normal(0, 0.01, 200)
    p = np.clip(0.5 + 20 * fwd + rng.normal(0, 0.1, 200), 0.01, 0.99)
    m = classification_metrics(fwd, p)
    label = (fwd > 0).astype(int)
    assert m["log_loss"] == pytest.approx(log_loss(label, p), rel=1e-9)
    assert m["auc"] == pytest.approx(roc_auc_score(label, p), rel=1e-9)
    assert m["accuracy"] == pytest.approx(np.mean((p > 0.5) == label))
    assert m["rmse"] ** 2 == pytest.approx(np.mean((p - label) ** 2))  # Brier score
    assert m["auc"] > 0.8 and m["ic"] > 0.5


def test_backtest_accounting_by_hand():
    signal = [1.0, 1.0, -1.0, 0.0]
    ret1 = [0.01, 0.02, -0.01, 0.05]
    out = backtest(signal, ret1, fees_bps=5, slippage_bps=5, short=True, periods=252)
    cost = 10 / 1e4
    pnl = np.array([0.01 - cost, 0.02, 0.01 - 2 * cost, 0.0 - cost])
    equity = np.cumprod(1 + pnl)
    assert out["total_return"] == pytest.approx(equity[-1] - 1)
    # traded notional |position change| x equity before the bar, over the summed equity before each bar
    before = np.r_[1.0, equity[:-1]]
    assert before == pytest.approx([1.0, 1.009, 1.009 * 1.02, 1.009 * 1.02 * 1.008])
    assert out["turnover"] == pytest.approx((1 * before[0] + 2 * before[2] + 1 * before[3]) / before.sum())
    # pnl 0.009, 0.02, 0.008, -0.001: equity rises to its peak at bar 3, then the exit's cost is the
    # only fall: 0.1% below the running peak, reported negative.
    assert out["max_drawdown"] == pytest.approx(-0.001, rel=1e-9)
    assert out["sharpe"] == pytest.approx(pnl.mean() / pnl.std(ddof=1) * math.sqrt(252))


def test_backtest_long_flat_and_costs():
    ret1 = np.array([-0.01, -0.02, 0.03])
    no_short = backtest([-1, -1, 1], ret1, fees_bps=0, slippage_bps=0, short=False)
    assert no_short["total_return"] == pytest.approx(0.03)
    flat = backtest([0, 0, 0], ret1)
    assert flat == {"total_return": 0.0, "sharpe": 0.0, "max_drawdown": 0.0, "turnover": 0.0}
    cheap = backtest([1, -1, 1], ret1, fees_bps=0, slippage_bps=0)
    dear = backtest([1, -1, 1], ret1, fees_bps=10, slippage_bps=10)
    assert dear["total_return"] < cheap["total_return"]


def _nyse_days(start: str, end: str) -> pd.DatetimeIndex:
    """Weekdays less the US federal holidays: an exchange calendar with ~10 closed weekdays a year."""
    from pandas.tseries.holiday import USFederalHolidayCalendar

    holidays = USFederalHolidayCalendar().holidays(start, end)
    return pd.bdate_range(start, end).difference(holidays)


def _forex_hours(start: str, weeks: int, tz: str = "UTC") -> pd.DatetimeIndex:
    """Hourly 24x5: Sunday 22:00 UTC to Friday 22:00 UTC, every week (120 bars a week)."""
    sundays = pd.date_range(start, periods=weeks, freq="W-SUN")
    stamps = [s + pd.Timedelta(hours=22 + h) for s in sundays for h in range(120)]
    return pd.DatetimeIndex(stamps, tz="UTC").tz_convert(tz)


def test_periods_per_year_by_calendar():
    # Constants by hand: 252 sessions x 1 or 7 bars; 260 weekdays x 24 hours; 365.25 days x 288 bars.
    daily = _nyse_days("2019-01-01", "2020-12-31")
    assert market_calendar(daily) == ("exchange", 252.0)
    hours = pd.DatetimeIndex(
        [d + pd.Timedelta(hours=h) for d in _nyse_days("2020-01-01", "2020-03-31") for h in range(9, 16)],
        tz="America/New_York",
    )
    assert market_calendar(hours) == ("exchange", 1764.0)
    assert market_calendar(_forex_hours("2021-01-03", 20)) == ("forex", 6240.0)
    assert market_calendar(_forex_hours("2021-01-03", 20, tz="America/New_York")) == ("forex", 6240.0)
    assert market_calendar(_forex_hours("2021-01-03", 20, tz="Asia/Tokyo")) == ("forex", 6240.0)
    crypto = pd.date_range("2020-01-01", periods=3000, freq="5min", tz="UTC")  # 10.4 days
    assert market_calendar(crypto) == ("crypto", 105192.0)
    # under a week with no weekend, round-the-clock bars cannot be told from 24x5: forex
    assert market_calendar(crypto[:500]) == ("forex", 260.0 * 288)
    assert periods_per_year(crypto) == 105192.0
    assert market_calendar(pd.date_range("2020-01-01", periods=400, freq="D")) == ("crypto", 365.25)
    assert market_calendar(pd.date_range("2020-01-03", periods=100, freq="W-FRI"))[1] == pytest.approx(365.25 / 7)
    assert market_calendar(daily[:2]) == ("exchange", 252.0)


def test_daily_weekdays_without_holidays_are_forex_and_with_holidays_an_exchange():
    # A whole year of weekdays, Christmas and New Year closed: 24x5 (260 a year).
    weekdays = pd.bdate_range("2021-01-01", "2022-12-31")
    fx = weekdays[~((weekdays.month == 12) & (weekdays.day == 25)) & ~((weekdays.month == 1) & (weekdays.day == 1))]
    assert market_calendar(fx) == ("forex", 260.0)
    # a feed that stamps each day's bar at the previous evening (Sunday..Thursday 22:00) is the same calendar
    assert market_calendar(fx - pd.Timedelta(hours=2)) == ("forex", 260.0)
    # under half a year decides nothing: an exchange (the common convention for daily bars)
    assert market_calendar(weekdays[:100]) == ("exchange", 252.0)
    assert market_calendar(_nyse_days("2010-01-01", "2011-12-31")) == ("exchange", 252.0)


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_market_calendar_does_not_depend_on_the_datetime_resolution(unit):
    hours = _forex_hours("2021-01-03", 8)
    assert market_calendar(hours.as_unit(unit)) == ("forex", 6240.0)
    crypto = pd.date_range("2020-01-01", periods=3000, freq="5min").as_unit(unit)
    assert market_calendar(crypto) == ("crypto", 105192.0)
    daily = _nyse_days("2019-01-01", "2020-12-31").as_unit(unit)
    assert market_calendar(daily) == ("exchange", 252.0)


def test_periods_per_year_ignores_a_utc_after_hours_spill_into_saturday():
    # An exchange session 13:00-01:00 UTC (extended hours stamped in UTC): Friday's last bars land
    # on Saturday, yet it is a 5-day calendar of 12 hourly bars a day (by UTC date: 11 + 1).
    bars = pd.DatetimeIndex([d + pd.Timedelta(hours=h) for d in pd.bdate_range("2021-01-04", periods=60)
                             for h in range(13, 25)], tz="UTC")
    assert np.any(bars.day_of_week == 5)
    assert periods_per_year(bars) == 252.0 * 12
    # a continuous market with a few missing bars, stamped in a local time zone, stays continuous
    crypto = pd.date_range("2021-01-01", periods=3000, freq="1h", tz="Asia/Tokyo").delete(range(100, 160))
    assert periods_per_year(crypto) == pytest.approx(365.25 * 24)
    weekend = pd.date_range("2021-01-02", periods=300, freq="5min")  # a Saturday, under a week
    assert periods_per_year(weekend) == pytest.approx(365.25 * 24 * 12)


def test_baselines_regression_and_classification():
    y_train = np.array([0.01, -0.03, 0.02])
    prev = np.array([0.5, -0.1, np.nan, 0.0])
    b = baseline_predictions("regression", y_train, prev)
    assert b["zero"].tolist() == [0, 0, 0, 0]
    assert b["always_long"] == pytest.approx([0.02] * 4)
    assert b["prev_sign"] == pytest.approx([0.02, -0.02, 0.0, 0.0])
    c = baseline_predictions("classification", y_train, prev)
    assert c["zero"].tolist() == [0.5] * 4
    assert np.all(c["always_long"] > 0.5)
    assert c["prev_sign"][0] > 0.5 > c["prev_sign"][1]


def test_evaluate_and_mean():
    rng = np.random.default_rng(1)
    fwd, ret1 = rng.normal(0, 0.01, 50), rng.normal(0, 0.005, 50)
    reg = evaluate("regression", fwd, fwd * 0.5, ret1, backtest_kwargs={"periods": 252})
    assert reg["ic"] == pytest.approx(1.0) and set(reg) >= {"sharpe", "turnover", "rank_ic"}
    cls = evaluate("classification", fwd, 0.5 + fwd, ret1, backtest_kwargs={})
    assert {"accuracy", "log_loss", "auc"} <= set(cls)
    assert mean_metrics([{"a": 1.0}, {"a": 3.0}]) == {"a": 2.0}


# ---------------------------------------------------------------------------- hand-computed constants
# r = [0.01, -0.02, 0.03, 0.0, 0.01]: mean 0.006; squared deviations 1.6e-5 + 6.76e-4 + 5.76e-4 +
# 3.6e-5 + 1.6e-5 = 1.32e-3, variance (ddof=1) 3.3e-4; downside: only -0.02, mean square 4e-4 / 5 = 8e-5.
R = [0.01, -0.02, 0.03, 0.0, 0.01]


def test_sharpe_by_hand():
    assert sharpe_ratio(R, 252) == pytest.approx(0.006 / math.sqrt(3.3e-4) * math.sqrt(252), rel=1e-12)
    assert sharpe_ratio(R, 252) == pytest.approx(5.2431774, rel=1e-7)
    assert sharpe_ratio(R, 1.0) == pytest.approx(0.3302891, rel=1e-6)
    assert sharpe_ratio([0.01], 252) == 0.0 and sharpe_ratio([0.0, 0.0, 0.0], 252) == 0.0  # undefined


def test_sortino_by_hand():
    assert sortino_ratio(R, 252) == pytest.approx(0.006 / math.sqrt(8e-5) * math.sqrt(252), rel=1e-12)
    assert sortino_ratio(R, 1.0) == pytest.approx(0.6708204, rel=1e-6)
    assert sortino_ratio([0.01, 0.02], 252) is None  # no losing bar: undefined


def test_returns_and_drawdown_by_hand():
    equity = [120.0, 90.0, 108.0, 60.0, 130.0]
    assert simple_returns(equity, initial=100.0) == pytest.approx([0.2, -0.25, 0.2, -4 / 9, 13 / 6 - 1])
    assert simple_returns(equity) == pytest.approx([-0.25, 0.2, -4 / 9, 13 / 6 - 1])
    assert max_drawdown(equity, initial=100.0) == pytest.approx(-0.5)  # peak 120, trough 60
    assert max_drawdown([95.0, 99.0], initial=100.0) == pytest.approx(-0.05)  # the initial cash is a peak
    assert max_drawdown([95.0, 99.0]) == 0.0
    assert max_drawdown([100.0, 101.0], initial=100.0) == 0.0 and max_drawdown([]) == 0.0


def test_turnover_by_hand():
    # 75 traded over 4 bars whose equity before them sums to 425: 75 / 425 per bar
    assert turnover([0.0, 50.0, 0.0, -25.0], [100.0, 100.0, 125.0, 100.0]) == pytest.approx(75 / 425)
    assert turnover([75.0], [100.0, 100.0, 125.0, 100.0]) == pytest.approx(75 / 425)  # only the total matters
    assert turnover([1.0, 2.0], [1.0, 1.0]) == pytest.approx(1.5)  # equity 1: the mean |position change|
    assert turnover([], []) == 0.0


def test_ic_and_rank_ic_by_hand():
    # pred deviations -1.5 -.5 .5 1.5, y deviations -3 -1 0 4: cov sum 11, sums of squares 5 and 26.
    assert ic([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(11 / math.sqrt(130), rel=1e-12)
    assert rank_ic([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(1.0)
    # ties share their mean rank: pred ranks 1, 2.5, 2.5, 4 against 1, 3, 2, 4 -> 4.5 / sqrt(4.5 * 5)
    assert rank_ic([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5), rel=1e-12)
    assert ic([1.0, 1.0, 1.0], [1, 2, 3]) is None and ic([1, 2], [2, 1]) is None  # undefined


def test_hit_rate_with_zero_outcomes_by_hand_in_train_and_monitor():
    from aitrader.monitoring.accuracy import accuracy_metrics

    y = [0.01, -0.02, 0.0, 0.03, 0.0, -0.01]
    pred = [0.5, 0.1, -1.0, 0.2, 0.3, 0.0]
    # rows with y == 0 are left out; of the other 4: hit, miss, hit, miss (a 0 prediction takes no side)
    assert hit_rate(y, pred) == 0.5
    assert regression_metrics(y, pred)["hit_rate"] == 0.5
    assert accuracy_metrics(np.array(pred), np.array(y))["hit_rate"] == 0.5
    # classification: the side of P(up) - 0.5; P = 0.5 takes no side
    proba = [0.7, 0.6, 0.1, 0.55, 0.9, 0.5]
    assert accuracy_metrics(np.array(proba), np.array(y), task="classification")["hit_rate"] == 0.5
    assert classification_metrics(y, proba)["hit_rate"] == 0.5


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 40), elements=st.floats(0.5, 2.0)))
def test_max_drawdown_is_the_worst_pairwise_fall(growth):
    # Oracle: the worst e[j] / e[i] - 1 over every pair i <= j, by brute force (the initial 1.0 included).
    path = np.concatenate(([1.0], np.cumprod(growth)))
    worst = min(0.0, min(path[j] / path[i] - 1 for i in range(path.size) for j in range(i, path.size)))
    assert max_drawdown(path[1:], initial=1.0) == pytest.approx(worst, rel=1e-12, abs=1e-15)
    assert max_drawdown(path[1:], initial=1.0) <= 0.0


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 40), elements=st.floats(0.5, 2.0)), st.integers(1, 7))
def test_max_drawdown_in_pieces_is_the_worst_pairwise_fall(growth, piece):
    # max_drawdown walks the curve in pieces with the running peak carried: tiny pieces give the brute force
    import aitrader.training.metrics as M

    path = np.concatenate(([1.0], np.cumprod(growth)))
    worst = min(0.0, min(path[j] / path[i] - 1 for i in range(path.size) for j in range(i, path.size)))
    old = M._DRAWDOWN_PIECE
    M._DRAWDOWN_PIECE = piece
    try:
        assert M.max_drawdown(path[1:], initial=1.0) == pytest.approx(worst, rel=1e-12, abs=1e-15)
        assert M.max_drawdown(path, initial=None) == pytest.approx(worst, rel=1e-12, abs=1e-15)
    finally:
        M._DRAWDOWN_PIECE = old


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.integers(2, 50), elements=finite), st.floats(0.1, 10.0))
def test_sharpe_matches_the_textbook_formula_and_ignores_scale(r, scale):
    # Oracle: statistics module (pure Python) mean / sample stdev.
    import statistics

    if statistics.stdev(r.tolist()) < 1e-9:
        return
    want = statistics.fmean(r.tolist()) / statistics.stdev(r.tolist()) * math.sqrt(252)
    assert sharpe_ratio(r, 252) == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert sharpe_ratio(r * scale, 252) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_market_calendar_of_the_shared_real_data(shared_data):
    from aitrader.data import load_bars

    spy = load_bars(shared_data / "equity_1h" / "SPY.csv.gz")  # naive New York stamps, 7 bars a session
    assert market_calendar(spy.index) == ("exchange", 1764.0)
    utc = spy.index.tz_localize("America/New_York", ambiguous="NaT", nonexistent="NaT").tz_convert("UTC")
    assert market_calendar(utc) == ("exchange", 1764.0)
    ada = load_bars(shared_data / "crypto_5m" / "ADA_BTC.csv.gz")  # UTC, a few missing bars
    assert market_calendar(ada.index) == ("crypto", 105192.0)
    btc = load_bars(shared_data / "intraday_1m" / "BTCPERP_2022-01.csv.gz")
    assert market_calendar(btc.index) == ("crypto", 365.25 * 1440)
    assert market_calendar(btc.index.as_unit("us")) == ("crypto", 365.25 * 1440)
