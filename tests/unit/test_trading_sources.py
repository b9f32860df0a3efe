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
