"""market_calendar reads a long, ordered index a piece at a time (aitrader.training.metrics): the
kind and bars per year must be exactly those of the whole-index formula it replaced, which is written
out again here as the oracle (whole-array pandas: diff().median(), groupby(normalize()).size())."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aitrader.training import metrics as M

DAY = pd.Timedelta(days=1)


def _oracle(index: pd.DatetimeIndex) -> tuple[str, float]:
    idx = pd.DatetimeIndex(index)
    idx = pd.DatetimeIndex(idx[~np.asarray(idx.isna())].unique().sort_values())
    if len(idx) < 3:
        return "exchange", 252.0
    step = pd.Timedelta(pd.Series(idx).diff().dropna().median())
    weekday = np.asarray(idx.day_of_week)
    if idx[-1] - idx[0] >= pd.Timedelta(days=7):
        counts = np.bincount(weekday, minlength=7)
        continuous = bool(counts.min() >= 0.5 * np.median(counts))
    elif np.mean(weekday >= 5) >= 0.1:
        continuous = True
    else:
        continuous = False
        weekend = pd.DatetimeIndex(idx[weekday >= 5])
        if step < DAY and len(weekend):
            per = pd.Series(1, index=weekend).groupby(weekend.normalize()).size()
            continuous = bool(per.max() >= 0.5 * (DAY / step))
    if continuous:
        return "crypto", float(365.25 * (DAY / step))
    if step >= 2 * DAY:
        return "exchange", float(pd.Timedelta(days=365.25) / step)
    per_date = pd.Series(1, index=idx).groupby(idx.normalize()).size()
    if step < DAY:
        dow = np.asarray(pd.DatetimeIndex(per_date.index).day_of_week)
        weekdays = per_date.to_numpy()[dow < 5]
        full = DAY / step
        if weekdays.size and float(np.median(weekdays)) >= 0.75 * full:
            return "forex", float(260.0 * full)
        return "exchange", float(252.0 * float(per_date.median()))
    days = pd.DatetimeIndex(idx.normalize().unique())
    local = days.tz_localize(None) if days.tz is not None else days
    ordinal = local.as_unit("s").asi8 // 86400
    _, counts = np.unique(ordinal - (ordinal + 3) % 7, return_counts=True)
    whole = counts[1:-1]
    if whole.size >= 26 and float(np.mean(whole < 5)) <= 0.05:
        return "forex", 260.0
    return "exchange", 252.0


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(M, "_CALENDAR_PIECE", 7)  # every date, week and interval cut by pieces


def _sessions(start: str, days: int, per_day: int, freq: str, tz: str | None) -> pd.DatetimeIndex:
    out = [pd.date_range(d + pd.Timedelta(hours=9, minutes=30), periods=per_day, freq=freq)
           for d in pd.bdate_range(start, periods=days)]
    idx = out[0].append(out[1:])
    return idx.tz_localize(tz) if tz else idx


CASES = {
    "crypto 5m": pd.date_range("2021-01-01", periods=3000, freq="5min", tz="UTC"),
    "exchange hourly NY": _sessions("2021-03-01", 60, 7, "h", "America/New_York"),
    "exchange minutes": _sessions("2021-03-01", 12, 390, "min", None),
    "forex hourly": pd.DatetimeIndex([t for t in pd.date_range("2021-01-04", periods=24 * 7 * 8, freq="h", tz="UTC")
                                      if t.day_of_week < 5]),
    "daily exchange": pd.bdate_range("2019-01-01", periods=400).delete([20, 90, 140, 200, 260, 330]),
    "daily forex": pd.bdate_range("2019-01-01", periods=400),
    "daily crypto (s unit)": pd.date_range("2019-01-01", periods=400, freq="D").as_unit("s"),
    "weekly": pd.date_range("2015-01-02", periods=120, freq="W-FRI"),
    "two bars": pd.DatetimeIndex(["2021-01-01", "2021-01-02"]),
    "even count, odd middle sum": pd.DatetimeIndex(np.cumsum([0, 60, 61, 60, 61, 3600, 61]) * 10**9),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_pieces_equal_the_whole_index_formula(name: str, small_pieces: None) -> None:
    index = CASES[name]
    assert M.market_calendar(index) == _oracle(index)


def test_hand_computed_even_median_keeps_the_half_second() -> None:
    # Two intervals 60 and 61 s: the median is their mean, 60.5 s (not truncated to 60 or 61).
    # Seven bars 60, 61, 60, 61, 3600, 61 s apart on Thursday 1970-01-01: median interval 61 s, no
    # weekend, 7 bars on the one date, far from 1 day / 61 s: an exchange with 252 x 7 bars a year.
    idx = pd.DatetimeIndex(np.cumsum([0, 60, 61]) * 10**9)
    assert M._median_step(idx) == pd.Timedelta(seconds=60.5)
    assert M.market_calendar(pd.DatetimeIndex(np.cumsum([0, 60, 61, 60, 61, 3600, 61]) * 10**9))[1] == 252.0 * 7


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(st.sampled_from([60, 60, 60, 300, 3600, 3600, 86400, 86400, 2 * 86400, 17 * 3600, 1]),
                   min_size=0, max_size=400),
    tz=st.sampled_from([None, "UTC", "America/New_York", "Asia/Tokyo"]),
    unit=st.sampled_from(["s", "ms", "ns"]),
    mess=st.sampled_from(["none", "shuffle", "dup", "nat"]),
    seed=st.integers(0, 2**16),
)
def test_any_index_matches_the_oracle(steps: list[int], tz: str | None, unit: str, mess: str, seed: int,
                                      small_pieces: None) -> None:
    seconds = 1_600_000_000 + np.cumsum([0, *steps])
    idx = pd.DatetimeIndex(pd.to_datetime(seconds, unit="s")).as_unit(unit)
    if tz:
        idx = idx.tz_localize("UTC").tz_convert(tz)
    rng = np.random.default_rng(seed)
    if mess == "shuffle":
        idx = idx[rng.permutation(len(idx))]
    elif mess == "dup" and len(idx):
        idx = idx.append(idx[rng.integers(0, len(idx), 3)])
    elif mess == "nat":
        idx = idx.insert(0, pd.NaT)
    assert M.market_calendar(idx) == _oracle(idx)
