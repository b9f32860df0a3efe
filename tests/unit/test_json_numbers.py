"""backtest --json's numbers and stamps written a column at a time (orjson) == the json module's text.

Oracles: ``json.dumps`` of each Python float and int (``float.__repr__`` / ``int.__repr__``, what
``to_json`` writes), and pandas' ``Timestamp.isoformat`` for the stamps. The floats run over random
64-bit patterns (every exponent, subnormals), the boundaries where ``repr`` switches to an exponent
(1e-4, 1e16) and hypothesis' floats.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrader.trading.sources import json_ns
from aitrader.trading.trips import _floats, _ints


def dumps_each(values: np.ndarray) -> list[str]:
    return [json.dumps(v) if math.isfinite(v) else "null" for v in values.tolist()]


def test_floats_on_random_bit_patterns_are_the_json_modules_text() -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(0, 2**64, size=200_000, dtype=np.uint64).view(np.float64)  # NaNs and infinities among them
    assert _floats(a) == dumps_each(a)


def test_floats_at_the_exponent_boundaries_and_odd_values() -> None:
    edges = [1e-4, 1e16, 1e-5, 1e15, 1e17, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308]
    values = [0.0, -0.0, 0.1, 0.2 + 0.1, 1.0, 100.0, 2.5, 123456789.125, 9007199254740993.0, math.nan,
              math.inf, -math.inf]
    with np.errstate(over="ignore"):  # the largest float's next is inf
        for e in edges:
            for v in (e, np.nextafter(e, 0.0), np.nextafter(e, math.inf)):
                values += [float(v), -float(v)]
    a = np.array(values)
    got = _floats(a)
    assert got == dumps_each(a)
    assert got[:3] == ["0.0", "-0.0", "0.1"]  # hand-written: the text a reader sees
    assert _floats(np.array([1e-4, 9.999999999999999e-05, 1e16])) == ["0.0001", "9.999999999999999e-05", "1e+16"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=40))
def test_floats_of_any_list_are_the_json_modules_text(values: list[float]) -> None:
    a = np.array(values, dtype=np.float64)
    assert _floats(a) == dumps_each(a)
    assert _floats(a[::2]) == dumps_each(a[::2])  # a strided view


def test_ints_are_the_json_modules_text() -> None:
    a = np.array([0, 1, -1, 399, 2**63 - 1, -(2**63)], dtype=np.int64)
    assert _ints(a) == [json.dumps(v) for v in a.tolist()]
    assert _ints(np.array([], dtype=np.int64)) == [] == _floats(np.array([]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=-2_000_000_000, max_value=7_000_000_000), min_size=1, max_size=30),
       st.booleans())
def test_whole_second_stamps_are_pandas_iso_text_quoted(seconds: list[int], utc: bool) -> None:
    ns = np.array(seconds, dtype=np.int64) * 1_000_000_000
    tz = "UTC" if utc else None
    want = [json.dumps(pd.Timestamp(v, tz=tz).isoformat()) for v in ns.tolist()]
    assert json_ns(ns, "+00:00" if utc else "", True) == want


def test_sub_second_stamps_are_microsecond_text_quoted() -> None:
    ns = np.array([1_262_304_000_123_456_789, 1_262_304_001_000_000_000], dtype=np.int64)
    assert json_ns(ns, "", False) == ['"2010-01-01T00:00:00.123456"', '"2010-01-01T00:00:01.000000"']
    assert json_ns(ns[:0], "", True) == []
