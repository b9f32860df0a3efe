"""Every validation rule: refused with file, row and fix; repaired with a count."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrader.data import check_bars, load_bars
from aitrader.errors import DataError

HEADER = "timestamp,open,high,low,close,volume\n"
GOOD = [
    "2020-01-01,100,101,99,100.5,1000",
    "2020-01-02,100.5,102,100,101,1200",
    "2020-01-03,101,103,100.5,102,900",
    "2020-01-06,102,102.5,101,101.5,1100",
]


def write(tmp_path: Path, rows: list[str], name: str = "bars.csv", header: str = HEADER) -> Path:
    path = tmp_path / name
    path.write_text(header + "\n".join(rows) + "\n")
    return path


def with_row(index: int, row: str) -> list[str]:
    rows = list(GOOD)
    rows[index] = row
    return rows


# (rows, rule, message fragment, repaired rows, rows left)
CASES = {
    "unparseable timestamp": (
        with_row(2, "not-a-date,101,103,100.5,102,900"),
        "timestamp",
        "bars.csv: row 3: timestamp 'not-a-date' cannot be parsed",
        1,
        3,
    ),
    "empty timestamp": (with_row(1, ",100.5,102,100,101,1200"), "timestamp", "row 2: timestamp is empty", 1, 3),
    "nan price": (
        with_row(1, "2020-01-02,100.5,,100,101,1200"),
        "missing_price",
        "row 2 (2020-01-02): high is empty",
        1,
        3,
    ),
    "text price": (
        with_row(1, "2020-01-02,100.5,abc,100,101,1200"),
        "missing_price",
        "row 2 (2020-01-02): high 'abc' is not a number",
        1,
        3,
    ),
    "zero price": (
        with_row(3, "2020-01-06,102,102.5,0,101.5,1100"),
        "nonpositive_price",
        "row 4 (2020-01-06): low 0.0 is not positive",
        1,
        3,
    ),
    "negative price": (
        with_row(0, "2020-01-01,-100,101,99,100.5,1000"),
        "nonpositive_price",
        "row 1 (2020-01-01): open -100.0 is not positive",
        1,
        3,
    ),
    "negative volume": (
        with_row(2, "2020-01-03,101,103,100.5,102,-5"),
        "volume",
        "row 3 (2020-01-03): volume -5.0 is negative",
        1,
        3,
    ),
    "missing volume": (
        with_row(2, "2020-01-03,101,103,100.5,102,"),
        "volume",
        "row 3 (2020-01-03): volume is empty",
        1,
        3,
    ),
    "high below body": (
        with_row(1, "2020-01-02,100.5,100.8,100,101,1200"),
        "high_low",
        "row 2 (2020-01-02): high 100.8 is below max(open, close) 101.0; fix the row or pass --repair to drop it",
        1,
        3,
    ),
    "low above body": (
        with_row(1, "2020-01-02,100.5,102,100.7,101,1200"),
        "high_low",
        "row 2 (2020-01-02): low 100.7 is above min(open, close) 100.5",
        1,
        3,
    ),
    "unsorted": (
        [GOOD[0], GOOD[2], GOOD[1], GOOD[3]],
        "unsorted",
        "row 3 (2020-01-02): timestamp is earlier than 2020-01-03 on row 2; sort the file",
        1,
        4,
    ),
    "duplicate": (
        [*GOOD[:2], "2020-01-02,100.6,102,100,101.2,1300", *GOOD[2:]],
        "duplicate",
        "row 3 (2020-01-02): duplicate timestamp (also on row 2)",
        1,
        4,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rule_refused_then_repaired(tmp_path: Path, case: str) -> None:
    rows, rule, fragment, repaired, left = CASES[case]
    path = write(tmp_path, rows)
    with pytest.raises(DataError) as info:
        load_bars(path)
    assert fragment in str(info.value)
    report = check_bars(path)
    assert not report.valid
    assert [p.rule for p in report.symbols[0].problems] == [rule]
    bars = load_bars(path, repair=True)
    assert bars.attrs["repaired_rows"] == repaired
    assert len(bars) == left
    assert bars.index.is_monotonic_increasing and bars.index.is_unique
    assert check_bars(path, repair=True).valid


def test_duplicate_repair_keeps_last(tmp_path: Path) -> None:
    path = write(tmp_path, CASES["duplicate"][0])
    bars = load_bars(path, repair=True)
    assert bars.loc["2020-01-02", "close"] == 101.2


def test_repair_logs_a_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, CASES["negative volume"][0])
    with caplog.at_level("WARNING", logger="aitrader"):
        load_bars(path, repair=True)
    assert "bars.csv: repaired 1 row(s): dropped invalid rows 1" in caplog.text


def test_several_rules_and_counts(tmp_path: Path) -> None:
    rows = [*GOOD, "2020-01-07,100,99,98,99.5,-1", "2020-01-08,100,99,98,99.5,-2", "2020-01-05,1,2,0.5,1,3"]
    with pytest.raises(DataError) as info:
        load_bars(write(tmp_path, rows))
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert "row 5 (2020-01-07): volume -1.0 is negative" in lines[0] and "(1 more row like this)" in lines[0]
    assert "row 5 (2020-01-07): high 99.0 is below" in lines[1]
    assert "row 7 (2020-01-05): timestamp is earlier than 2020-01-06 on row 4" in lines[2]


def test_empty_after_repair(tmp_path: Path) -> None:
    path = write(tmp_path, ["2020-01-01,-1,1,1,1,1", "2020-01-02,1,1,1,1,-1"])
    with pytest.raises(DataError, match="no valid rows left after repair"):
        load_bars(path, repair=True)


@pytest.mark.parametrize(
    ("content", "name", "fragment"),
    [
        ("", "empty.csv", "the file is empty"),
        (HEADER, "header.csv", "no data rows"),
        (
            "timestamp,open,high,low,close\n2020-01-01,1,1,1,1\n",
            "novol.csv",
            "missing column(s) volume; found timestamp, open, high, low, close",
        ),
        ("when,open,high,low,close,volume\n2020-01-01,1,1,1,1,1\n", "nots.csv", "missing column(s) timestamp"),
        ("hello", "bars.json", "unsupported file type"),
    ],
)
def test_structural_errors(tmp_path: Path, content: str, name: str, fragment: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_bars(path)


def test_binary_garbage_is_not_a_csv(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv.gz"
    path.write_bytes(b"\x00\x01\x02not gzip at all")
    with pytest.raises(DataError, match="bars.csv.gz"):
        load_bars(path)
    parquet = tmp_path / "bars.parquet"
    parquet.write_bytes(b"PAR1 garbage")
    with pytest.raises(DataError, match="not a readable parquet file"):
        load_bars(parquet)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_bars(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="no such file or directory"):
        check_bars(tmp_path / "nope.csv")


def test_structural_problem_goes_into_check_report(tmp_path: Path) -> None:
    path = tmp_path / "novol.csv"
    path.write_text("timestamp,open,high,low,close\n2020-01-01,1,1,1,1\n")
    report = check_bars(path)
    assert not report.valid
    assert report.problems[0].rule == "file" and "volume" in report.problems[0].message


def test_many_rows_vectorised(tmp_path: Path) -> None:
    # A broken row deep in a large file is found with the right row number.
    from aitrader.data import generate_bars

    bars = generate_bars(50_000, freq="1min")
    bars.iloc[40_000, bars.columns.get_loc("high")] = 1e-3
    path = tmp_path / "big.csv"
    bars.to_csv(path)
    with pytest.raises(DataError, match=r"row 40001 \(2020-01-28 18:40:00\): high 0.001 is below"):
        load_bars(path)
    assert len(load_bars(path, repair=True)) == 49_999
    pd.testing.assert_index_equal(load_bars(path, repair=True).index, bars.index.delete(40_000))


CORRUPTIONS = {
    "high": "0.0001",
    "low": "1e9",
    "close": "",
    "open": "-3",
    "volume": "-1",
    "timestamp": "garbage",
}


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    hits=st.lists(st.tuples(st.integers(0, 59), st.sampled_from(sorted(CORRUPTIONS))), min_size=1, max_size=8),
    swap=st.booleans(),
)
def test_repair_always_yields_contract_bars(tmp_path_factory, seed: int, hits: list, swap: bool) -> None:
    from aitrader.data import generate_bars

    frame = generate_bars(60, seed=seed).reset_index()
    text = frame.astype(str)
    for row, col in hits:
        text.loc[row, col] = CORRUPTIONS[col]
    if swap:  # out of order and a duplicate stamp
        text.loc[[10, 11]] = text.loc[[11, 10]].to_numpy()
        text.loc[20, "timestamp"] = text.loc[19, "timestamp"]
    path = tmp_path_factory.mktemp("prop") / "bars.csv"
    text.to_csv(path, index=False)
    with pytest.raises(DataError, match="bars.csv: row "):
        load_bars(path)
    bars = load_bars(path, repair=True)
    assert bars.attrs["repaired_rows"] >= 1
    assert bars.index.is_monotonic_increasing and bars.index.is_unique
    assert (bars[["open", "high", "low", "close"]] > 0).all().all() and (bars["volume"] >= 0).all()
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert len(bars) >= 60 - len(hits) - (1 if swap else 0)
