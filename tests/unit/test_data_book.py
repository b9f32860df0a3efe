"""Order-book snapshot files: the formats, every validation rule, the writer and the seeded generator."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aitrader.data.book import load_book, write_book
from aitrader.data.synthetic import generate_bars, generate_book
from aitrader.errors import DataError

HEADER = "timestamp,bid_px_1,bid_sz_1,ask_px_1,ask_sz_1,bid_px_2,bid_sz_2,ask_px_2,ask_sz_2\n"
GOOD = [
    "2024-01-02T10:00:00,100.0,30,100.2,10,99.9,10,100.3,50",
    "2024-01-02T10:00:50,100.1,20,100.3,20,,,100.4,30",
    "2024-01-02T10:02:30,100.0,10,101.0,30,99.0,10,102.0,10",
]


def _csv(tmp_path: Path, rows: list[str], name: str = "book.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "\n".join(rows) + "\n")
    return path


def test_wide_csv_reads_levels_best_first_with_absent_levels_as_nan(tmp_path: Path) -> None:
    book = load_book(_csv(tmp_path, GOOD))
    assert len(book) == 3 and book.levels == 2 and not book.tz_aware
    assert book.ts_ns.tolist() == [pd.Timestamp("2024-01-02T10:00:00").value, pd.Timestamp("2024-01-02T10:00:50").value,
                                   pd.Timestamp("2024-01-02T10:02:30").value]
    assert book.bid_px[0].tolist() == [100.0, 99.9] and book.ask_sz[0].tolist() == [10.0, 50.0]
    assert book.bid_px[1, 0] == 100.1 and np.isnan(book.bid_px[1, 1]) and np.isnan(book.bid_sz[1, 1])


def test_design_json_lines_with_epoch_and_iso_stamps(tmp_path: Path) -> None:
    path = tmp_path / "book.jsonl"
    path.write_text('{"ts": 1704189600, "bids": [[100.0, 30], [99.9, 10]], "asks": [[100.2, 10]]}\n\n'
                    '{"ts": 1704189660.5, "bids": [[100.1, 20]], "asks": [[100.3, 20], [100.4, 30], [100.5, 1]]}\n')
    book = load_book(path)
    assert book.tz_aware and book.levels == 3  # epoch numbers are UTC
    assert book.index()[1] == pd.Timestamp("2024-01-02T10:01:00.5Z")
    assert book.ask_px[1].tolist() == [100.3, 100.4, 100.5] and np.isnan(book.ask_px[0, 1:]).all()
    iso = tmp_path / "iso.jsonl.gz"
    with gzip.open(iso, "wt") as f:
        f.write(json.dumps({"ts": "2024-01-02T10:00:00Z", "bids": [[1.0, 2.0]], "asks": [[1.5, 3.0]]}) + "\n")
    assert load_book(iso).index()[0] == pd.Timestamp("2024-01-02T10:00:00Z")


@pytest.mark.parametrize("suffix", ["csv", "csv.gz", "parquet", "jsonl", "jsonl.gz"])
def test_write_then_load_is_exact(tmp_path: Path, suffix: str) -> None:
    bars = generate_bars(60, seed=3, freq="1h", tz="UTC")
    book = generate_book(bars, seed=4, levels=3)
    back = load_book(write_book(book, tmp_path / f"b.{suffix}"))
    assert back.tz_aware
    for name in ("ts_ns", "bid_px", "bid_sz", "ask_px", "ask_sz"):
        assert np.array_equal(getattr(back, name), getattr(book, name), equal_nan=True), name
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed, not left behind


# One broken rule each: (the rows after the header, the row reported, words of the message).
RULES = [
    ([GOOD[0], "2024-01-02T10:00:50,100.3,20,100.2,20,,,100.4,30"], 2, "crossed book: best bid 100.3 > best ask 100.2"),
    ([GOOD[0], "2024-01-02T10:00:50,100.1,-20,100.3,20,,,100.4,30"], 2, "bid_sz_1 = -20.0; sizes must be numbers > 0"),
    ([GOOD[0], "2024-01-02T10:00:50,100.1,20,100.3,0,,,100.4,30"], 2, "ask_sz_1 = 0.0; sizes must be numbers > 0"),
    (["2024-01-02T10:00:00,100.0,30,100.2,10,100.1,10,100.3,50"], 1, "bid_px_2 = 100.1 is not below bid_px_1 = 100.0"),
    (["2024-01-02T10:00:00,100.0,30,100.2,10,99.9,10,100.2,50"], 1, "ask_px_2 = 100.2 is not above ask_px_1 = 100.2"),
    ([GOOD[1], GOOD[0]], 2, "timestamp goes back in time (previous row 2024-01-02 10:00:50)"),
    ([GOOD[0], GOOD[0]], 2, "same timestamp as the previous row"),
    (["2024-01-02T10:00:00,,,100.2,10,,,100.3,50"], 1, "no bid level 1 (the bid side is empty)"),
    (["2024-01-02T10:00:00,100.0,30,100.2,10,99.9,,100.3,50"], 1, "bid level 2 has a price without a size"),
    (["2024-01-02T10:00:00,100.0,30,,,99.9,10,100.3,50"], 1, "no ask level 1"),
    (["not a time,100.0,30,100.2,10,99.9,10,100.3,50"], 1, "timestamp 'not a time' is not a date or time"),
    (["2024-01-02T10:00:00,100.0,lots,100.2,10,99.9,10,100.3,50"], 1, "bid_sz_1 = a non-number"),
    (["2024-01-02T10:00:00,-1,30,100.2,10,,,100.3,50"], 1, "bid_px_1 = -1.0; prices must be numbers in"),
]


@pytest.mark.parametrize(("rows", "row", "words"), RULES)
def test_each_broken_rule_names_file_row_and_fix(tmp_path: Path, rows: list[str], row: int, words: str) -> None:
    with pytest.raises(DataError) as info:
        load_book(_csv(tmp_path, rows))
    message = str(info.value)
    line = next(x for x in message.splitlines() if words in x)
    assert line.startswith((f"book.csv: row {row} (", f"book.csv: row {row}: "))
    assert "; " in line  # the fix follows the problem


def test_several_rules_one_line_each_with_counts(tmp_path: Path) -> None:
    rows = [GOOD[0], "2024-01-02T10:00:50,100.4,20,100.3,20,,,100.4,30",
            "2024-01-02T10:00:40,100.1,-1,100.3,20,,,100.4,30", "2024-01-02T10:01:00,100.5,-2,100.3,20,,,100.4,30"]
    with pytest.raises(DataError) as info:
        load_book(_csv(tmp_path, rows))
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert any(x.startswith("book.csv: row 3 ") and "back in time" in x for x in lines)
    assert any(x.startswith("book.csv: row 3 ") and "bid_sz_1 = -1.0" in x and "(1 more row like this)" in x
               for x in lines)
    assert any(x.startswith("book.csv: row 2 ") and "crossed" in x and "(1 more row like this)" in x for x in lines)


@pytest.mark.parametrize(("text", "words"), [
    ('{"ts": 1, "bids": [[1, 2]]}\n', "row 1 (line 1): expected an object with ts, bids and asks"),
    ('{"ts": 1, "bids": [[1, 2]], "asks": [[2, 1]]}\n{"ts": 2, "bids": [1, 2], "asks": []}\n',
     "row 2: bids must be a list of [price, size] pairs"),
    ("not json\n", "row 1 (line 1): not a JSON object"),
    ("", "has no snapshots"),
])
def test_malformed_json_lines(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text(text)
    with pytest.raises(DataError, match="^b.jsonl: ") as info:
        load_book(path)
    assert words in str(info.value)


def test_file_level_problems(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="order-book file not found"):
        load_book(tmp_path / "none.csv")
    (tmp_path / "b.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported order-book file type"):
        load_book(tmp_path / "b.txt")
    (tmp_path / "c.csv").write_text("timestamp,bid_px_1,bid_sz_1,ask_px_1\n2024-01-01,1,1,2\n")
    with pytest.raises(DataError, match="missing columns ask_sz_1"):
        load_book(tmp_path / "c.csv")
    (tmp_path / "d.csv").write_text("when,bid_px_1,bid_sz_1,ask_px_1,ask_sz_1\n2024-01-01,1,1,2,1\n")
    with pytest.raises(DataError, match="no timestamp column"):
        load_book(tmp_path / "d.csv")
    (tmp_path / "e.csv").write_text("timestamp,close\n2024-01-01,1\n")
    with pytest.raises(DataError, match="no order-book level columns"):
        load_book(tmp_path / "e.csv")


def test_generator_is_seeded_valid_and_aligned_to_the_bars() -> None:
    bars = generate_bars(400, seed=1)
    a, b = generate_book(bars, seed=7, per_bar=4, missing=0.1), generate_book(bars, seed=7, per_bar=4, missing=0.1)
    assert np.array_equal(a.bid_px, b.bid_px) and np.array_equal(a.ts_ns, b.ts_ns)
    assert not np.array_equal(a.bid_px[:10], generate_book(bars, seed=8).bid_px[:10])
    assert (np.diff(a.ts_ns) > 0).all() and (a.bid_px[:, 0] < a.ask_px[:, 0]).all()
    assert (np.diff(a.bid_px, axis=1) < 0).all() and (np.diff(a.ask_px, axis=1) > 0).all() and (a.bid_sz > 0).all()
    stamps = set(bars.index.asi8.tolist())
    at_bar = np.array([t in stamps for t in a.ts_ns.tolist()])
    # one snapshot at each kept bar's stamp, the other three inside the bar before it; ~10% of bars have none
    assert at_bar.sum() * 4 == len(a) and 0.05 < 1 - at_bar.sum() / len(bars) < 0.15
    last = a.ts_ns[at_bar]
    mids = (a.bid_px[at_bar, 0] + a.ask_px[at_bar, 0]) / 2
    close = bars["close"].reindex(pd.DatetimeIndex(last)).to_numpy()
    assert np.abs(mids / close - 1).max() < 5e-4  # the snapshot at a bar's stamp is priced at its close
    aware = generate_book(generate_bars(50, seed=1, tz="America/New_York"), seed=2)
    assert aware.tz_aware and str(aware.index().tz) == "UTC"


def test_generator_refuses_bad_arguments() -> None:
    bars = generate_bars(10, seed=1)
    with pytest.raises(DataError, match="levels must be in 1..50"):
        generate_book(bars, levels=0)
    with pytest.raises(DataError, match="missing"):
        generate_book(bars, missing=1.0)
    with pytest.raises(DataError, match="at least 2 bars"):
        generate_book(bars.iloc[:1])
