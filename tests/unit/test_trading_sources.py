"""Bar sources: the fast ISO formatting and the one-symbol replay path match their plain versions."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrader.trading.sources import BarSeries, _merged_steps, iso_strings, replay_steps


def reference(index: pd.DatetimeIndex) -> list[str]:
    """numpy formatting of every stamp (what iso_strings did before its fast path)."""
    suffix = ""
    if index.tz is not None:
        index, suffix = index.tz_convert("UTC").tz_localize(None), "+00:00"
    ns = index.as_unit("ns").asi8
    unit = "s" if not (ns % 1_000_000_000).any() else "us"
    return [s + suffix for s in np.datetime_as_string(ns.astype("datetime64[ns]"), unit=unit).tolist()]


@settings(max_examples=60, deadline=None)
@given(
    seconds=st.lists(st.integers(-2_000_000_000, 4_000_000_000), min_size=1, max_size=300),
    tz=st.sampled_from([None, "UTC", "America/New_York", "Asia/Kolkata"]),
    frac=st.booleans(),
)
def test_iso_strings_match_numpy(seconds: list[int], tz: str | None, frac: bool) -> None:
    ns = np.sort(np.array(seconds, dtype=np.int64)) * 1_000_000_000 + (250_000_000 if frac else 0)
    index = pd.DatetimeIndex(ns.astype("datetime64[ns]"))
    if tz is not None:
        index = index.tz_localize("UTC").tz_convert(tz)
    text, epoch = iso_strings(index)
    assert text == reference(index)
    assert epoch.tolist() == (ns / 1e9).tolist()


def test_one_symbol_replay_equals_the_merged_path() -> None:
    idx = pd.date_range("2021-03-01", periods=50, freq="1h", name="timestamp")
    df = pd.DataFrame({c: np.arange(50.0) + k for k, c in enumerate(("open", "high", "low", "close", "volume"))},
                      index=idx)
    series = [BarSeries.from_frame("X", df)]
    fast = [(ts, ep, list(bars)) for ts, ep, bars in replay_steps(series)]
    assert fast == list(_merged_steps(series))
    assert fast[3] == ("2021-03-01T03:00:00", idx[3].value / 1e9, [("X", 3, 3.0, 4.0, 5.0, 6.0, 7.0)])


def _list_reference(series: list[BarSeries]) -> list:
    """What replay_steps yielded before it streamed: whole Python lists, merged bar by bar."""
    series = sorted(series, key=lambda s: s.symbol)
    rows = []
    for k, s in enumerate(series):
        ts, epoch = iso_strings(s.index)
        df = s.frame()
        cols = [df[c].tolist() for c in ("open", "high", "low", "close", "volume")]
        rows += [(float(epoch[i]), k, ts[i], (s.symbol, i, *(c[i] for c in cols))) for i in range(len(s))]
    rows.sort(key=lambda r: (r[0], r[1]))
    steps: list = []
    for ep, _, ts_i, bar in rows:
        if steps and steps[-1][1] == ep:
            steps[-1][2].append(bar)
        else:
            steps.append((ts_i, ep, [bar]))
    return steps


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=3),
    chunk=st.integers(1, 17),
    tz=st.sampled_from([None, "UTC", "America/New_York"]),
    frac=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_chunked_replay_equals_the_whole_list_replay(sizes: list[int], chunk: int, tz: str | None, frac: bool,
                                                     seed: int) -> None:
    rng = np.random.default_rng(seed)
    series = []
    for k, n in enumerate(sizes):
        secs = np.sort(rng.choice(np.arange(0, 200) * 60, size=n, replace=False)).astype(np.int64)
        ns = secs * 1_000_000_000 + (500_000_000 if frac and k == 0 else 0)
        idx = pd.DatetimeIndex(ns.astype("datetime64[ns]"))
        if tz is not None:
            idx = idx.tz_localize("UTC").tz_convert(tz)
        df = pd.DataFrame(rng.normal(100, 1, (n, 5)), columns=["open", "high", "low", "close", "volume"], index=idx)
        series.append(BarSeries.from_frame(f"S{k}", df))
    expected = _list_reference(series)
    got = [(ts, ep, list(bars)) for ts, ep, bars in replay_steps(series, chunk=chunk)]
    assert got == expected
    for _, ep, bars in got:  # plain Python types, as the hot loop expects
        assert type(ep) is float and all(type(v) is float for bar in bars for v in bar[2:])
