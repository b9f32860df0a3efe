"""Poisoned bar values: +inf, -inf and absurd magnitudes are refused by the file validator, by the
one-bar validator (``validate_bar``) and by both feature evaluators (issue 10, "Bars")."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrader.data import check_bars, load_bars, validate_bar
from aitrader.data.validate import RULES
from aitrader.errors import DataError
from tests.unit.test_data_validate import GOOD, HEADER, with_row, write  # the same four good bars

# (row 2 replaced by, rule, message fragment)
POISON = {
    "+inf close": ("2020-01-02,100.5,102,100,inf,1200", "nonfinite", "row 2 (2020-01-02): close inf is not finite"),
    "-inf open": ("2020-01-02,-inf,102,100,101,1200", "nonfinite", "row 2 (2020-01-02): open -inf is not finite"),
    "+inf volume": ("2020-01-02,100.5,102,100,101,inf", "nonfinite", "row 2 (2020-01-02): volume inf is not finite"),
    "1e300 prices": (
        "2020-01-02,1e300,1e300,1e300,1e300,1200",
        "implausible",
        "row 2 (2020-01-02): open 1e+300 is implausibly large (a price above 1e+12",
    ),
    "1e-300 low": (
        "2020-01-02,100.5,102,1e-300,101,1200",
        "implausible",
        "row 2 (2020-01-02): low 1e-300 is implausibly small (a price below 1e-12",
    ),
    "1e400 reads as inf": ("2020-01-02,100.5,1e400,100,101,1200", "nonfinite", "high inf is not finite"),
    "1e20 volume": (
        "2020-01-02,100.5,102,100,101,1e20",
        "implausible",
        "volume 1e+20 is implausibly large (a volume above 1e+18",
    ),
}


@pytest.mark.parametrize("case", list(POISON))
def test_poisoned_value_fails_validation_and_is_repaired(tmp_path: Path, case: str) -> None:
    row, rule, fragment = POISON[case]
    path = write(tmp_path, with_row(1, row))
    with pytest.raises(DataError) as info:
        load_bars(path)
    assert fragment in str(info.value)
    report = check_bars(path)
    assert not report.valid
    assert [p.rule for p in report.symbols[0].problems] == [rule]
    bars = load_bars(path, repair=True)
    assert len(bars) == 3 and bars.attrs["repaired_rows"] == 1
    assert np.isfinite(bars.to_numpy()).all()


def test_the_bounds_themselves_are_accepted(tmp_path: Path) -> None:
    # 1e12 and 1e18 are the largest plausible values (inclusive); 1e-8 (a satoshi) is a fine price.
    rows = [*GOOD, "2020-01-07,1e12,1e12,1e12,1e12,1e18", "2020-01-08,1e-8,1e-8,1e-8,1e-8,0"]
    bars = load_bars(write(tmp_path, rows))
    assert bars["close"].max() == 1e12 and bars["volume"].max() == 1e18


def test_parquet_inf_is_refused(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {"open": [1.0, 2.0], "high": [1.0, math.inf], "low": [1.0, 2.0], "close": [1.0, 2.0], "volume": [1.0, 1.0]},
        index=pd.DatetimeIndex(["2020-01-01", "2020-01-02"], name="timestamp"),
    )
    path = tmp_path / "bars.parquet"
    df.to_parquet(path)
    with pytest.raises(DataError, match=r"row 2 \(2020-01-02\): high inf is not finite"):
        load_bars(path)


# validate_bar: (args, expected rule or None)
BAR_CASES: dict[str, tuple[tuple[object, ...], dict[str, object], str | None]] = {
    "valid": (("2020-01-02", 1.0, 2.0, 0.5, 1.5, 10.0), {}, None),
    "valid numeric strings": (("2020-01-02", "1", "2", "0.5", "1.5", "10"), {}, None),
    "zero volume is valid": (("2020-01-02", 1.0, 1.0, 1.0, 1.0, 0.0), {}, None),
    "unparseable stamp": (("soon", 1.0, 2.0, 0.5, 1.5, 10.0), {}, "timestamp"),
    "missing stamp": ((None, 1.0, 2.0, 0.5, 1.5, 10.0), {}, "timestamp"),
    "NaN close": (("2020-01-02", 1.0, 2.0, 0.5, math.nan, 10.0), {}, "missing_price"),
    "text high": (("2020-01-02", 1.0, "abc", 0.5, 1.5, 10.0), {}, "missing_price"),
    "NaN volume": (("2020-01-02", 1.0, 2.0, 0.5, 1.5, math.nan), {}, "volume"),
    "+inf close": (("2020-01-02", 1.0, 2.0, 0.5, math.inf, 10.0), {}, "nonfinite"),
    "-inf low": (("2020-01-02", 1.0, 2.0, -math.inf, 1.5, 10.0), {}, "nonfinite"),
    "+inf volume": (("2020-01-02", 1.0, 2.0, 0.5, 1.5, math.inf), {}, "nonfinite"),
    "zero open": (("2020-01-02", 0.0, 2.0, 0.5, 1.5, 10.0), {}, "nonpositive_price"),
    "negative volume": (("2020-01-02", 1.0, 2.0, 0.5, 1.5, -1.0), {}, "volume"),
    "1e300 high": (("2020-01-02", 1.0, 1e300, 0.5, 1.5, 10.0), {}, "implausible"),
    "1e-13 close": (("2020-01-02", 1e-13, 1e-13, 1e-13, 1e-13, 10.0), {}, "implausible"),
    "1e19 volume": (("2020-01-02", 1.0, 2.0, 0.5, 1.5, 1e19), {}, "implausible"),
    "high below body": (("2020-01-02", 1.0, 1.2, 0.5, 1.5, 10.0), {}, "high_low"),
    "low above body": (("2020-01-02", 1.0, 2.0, 1.2, 1.5, 10.0), {}, "high_low"),
    "earlier than previous": (("2020-01-02", 1.0, 2.0, 0.5, 1.5, 10.0), {"prev_ts": "2020-01-03"}, "unsorted"),
    "same as previous": (("2020-01-02", 1.0, 2.0, 0.5, 1.5, 10.0), {"prev_ts": "2020-01-02"}, "duplicate"),
    "after previous": (("2020-01-02", 1.0, 2.0, 0.5, 1.5, 10.0), {"prev_ts": "2020-01-01"}, None),
    "zone appears": (
        (pd.Timestamp("2020-01-02", tz="UTC"), 1.0, 2.0, 0.5, 1.5, 10.0),
        {"prev_ts": pd.Timestamp("2020-01-01")},
        "timezone",
    ),
    "other zone, later instant": (
        (pd.Timestamp("2020-01-02 10:00", tz="America/New_York"), 1.0, 2.0, 0.5, 1.5, 10.0),
        {"prev_ts": pd.Timestamp("2020-01-02 14:00", tz="UTC")},
        None,
    ),
    "other zone, earlier instant": (
        (pd.Timestamp("2020-01-02 08:00", tz="America/New_York"), 1.0, 2.0, 0.5, 1.5, 10.0),
        {"prev_ts": pd.Timestamp("2020-01-02 14:00", tz="UTC")},
        "unsorted",
    ),
}


@pytest.mark.parametrize("case", list(BAR_CASES))
def test_validate_bar(case: str) -> None:
    args, kwargs, rule = BAR_CASES[case]
    problem = validate_bar(*args, **kwargs)  # type: ignore[arg-type]
    if rule is None:
        assert problem is None
    else:
        assert problem is not None and problem.rule == rule
        assert problem.row is None
        assert problem.message.startswith("bar ")


def test_validate_bar_message_names_the_value() -> None:
    problem = validate_bar("2020-01-02 09:30", 1.0, 1e300, 0.5, 1.5, 10.0)
    assert problem is not None
    assert problem.timestamp == "2020-01-02 09:30:00"
    assert problem.message == (
        "bar 2020-01-02 09:30:00: high 1e+300 is implausibly large (a price above 1e+12 is a corrupt value)"
    )


def test_validate_bar_agrees_with_the_file_validator(tmp_path: Path) -> None:
    """Every row rule gives the same verdict one bar at a time as in a file (second formula)."""
    extra = [row.replace("2020-01-02", "2020-01-07") for row, _rule, _ in POISON.values()]
    extra += ["2020-01-07,1,1.5,0.5,2,1", "2020-01-07,1,2,0,1,1", "2020-01-07,1,2,1,1,-3", "2020-01-07,1,2,1,1,x"]
    for row in extra:
        report = check_bars(write(tmp_path, [*GOOD, row]))
        file_rules = [p.rule for p in report.symbols[0].problems]
        ts, *values = row.split(",")
        problem = validate_bar(ts, *values)
        assert ([problem.rule] if problem else []) == file_rules, row


# Bars that the feature evaluators must refuse: (open, high, low, close, volume)
EVALUATOR_POISON = {
    "+inf close": (100.0, 101.0, 99.0, math.inf, 10.0),
    "+inf volume": (100.0, 101.0, 99.0, 100.0, math.inf),
    "1e300 bar": (1e300, 1e300, 1e300, 1e300, 10.0),
    "1e300 volume": (100.0, 101.0, 99.0, 100.0, 1e300),
    "subnormal prices": (5e-324, 5e-324, 5e-324, 5e-324, 10.0),
}


@pytest.mark.parametrize("case", list(EVALUATOR_POISON))
def test_streaming_refuses_a_poisoned_bar_and_keeps_its_state(case: str) -> None:
    from aitrader.data import generate_bars
    from aitrader.features import FeaturePipeline

    bars = generate_bars(120, seed=3)
    pipe = FeaturePipeline()
    stream, clean = pipe.stream(), pipe.stream()
    for ts, row in zip(bars.index[:100], bars.to_numpy()[:100], strict=True):
        stream.update(ts, *row)
        clean.update(ts, *row)
    with pytest.raises(DataError, match=r"bar 100 .*invalid values"):
        stream.update("poison", *EVALUATOR_POISON[case])
    assert stream.bars_seen == 100
    # The refused bar left no trace: the next bars give what a stream that never saw it gives.
    for ts, row in zip(bars.index[100:], bars.to_numpy()[100:], strict=True):
        np.testing.assert_array_equal(stream.update(ts, *row), clean.update(ts, *row))


@pytest.mark.parametrize("case", list(EVALUATOR_POISON))
def test_batch_refuses_a_poisoned_bar(case: str) -> None:
    from aitrader.data import generate_bars
    from aitrader.features import FeaturePipeline

    bars = generate_bars(60, seed=4)
    bars.iloc[30] = EVALUATOR_POISON[case]
    with pytest.raises(DataError, match=r"bar 30 .*invalid values"):
        FeaturePipeline().transform(bars)
    with pytest.raises(DataError, match=r"bar 30 .*invalid values"):
        FeaturePipeline().transform_streaming(bars)


def test_an_adjusted_close_that_pushes_values_past_the_bounds(tmp_path: Path) -> None:
    header = "timestamp,open,high,low,close,adj_close,volume\n"
    rows = [
        "2020-01-01,100,101,99,100,50,1000",
        "2020-01-02,100,101,99,100,1e12,1000",  # ratio 1e10: open 1e12, high 1.01e12 > 1e12
        "2020-01-03,100,101,99,100,1e-12,1000",  # ratio 1e-14: low 9.9e-13 < 1e-12
        "2020-01-06,100,101,99,100,1e-11,1e6",  # ratio 1e-13: prices fine (9.9e-12..1e-11), volume 1e19
    ]
    path = tmp_path / "bars.csv"
    path.write_text(header + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as info:
        load_bars(path)
    message = str(info.value)
    assert message == (
        "bars.csv: row 2 (2020-01-02): adj_close / close = 10000000000.0 makes the adjusted high 1010000000000.0, "
        "outside [1e-12, 1e+12] (a corrupt adj_close?); fix the row or pass --repair to drop it (2 more rows like this)"
    )
    bars = load_bars(path, repair=True)
    assert list(bars["close"]) == [50.0] and list(bars["volume"]) == [2000.0]


ANYTHING = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.binary(max_size=8), st.sampled_from(["inf", "-inf", "nan", "1e400", " 12 ", "1_000", "0x10"]),
)
STAMPS = st.one_of(
    ANYTHING, st.datetimes(), st.sampled_from(["2020-01-01", "2020-01-01T09:30:00+05:00", "2020-02-30", "now"]),
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(ts=STAMPS, values=st.lists(ANYTHING, min_size=5, max_size=5), prev=STAMPS)
def test_validate_bar_never_raises(ts: object, values: list[object], prev: object) -> None:
    problem = validate_bar(ts, *values, prev_ts=prev)
    assert problem is None or (problem.rule in (*RULES, "timezone") and problem.message.startswith("bar "))


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(values=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(
    [0.0, -1.0, 1e-12, 1e-13, 1e12, 1.0000001e12, 1e18, 1.0000001e18, 5e-324])), min_size=5, max_size=5))
def test_validate_bar_agrees_with_the_file_validator_on_any_numbers(values: list[float]) -> None:
    """Second formula: the vectorised file validator on a one-row file gives the same verdict."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "one.csv"
        path.write_text(HEADER + "2020-01-01," + ",".join(repr(v) for v in values) + "\n")
        file_rules = {p.rule for p in check_bars(path).symbols[0].problems}
    problem = validate_bar("2020-01-01", *values)
    if problem is None:
        assert file_rules == set()
    else:
        assert problem.rule in file_rules
