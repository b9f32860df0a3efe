"""Bars read in blocks (aitrader.data.stream) give what the whole-file loader gives.

The oracle is :func:`aitrader.data.load_bars` / :func:`load_universe` reading the same file whole:
the same bars (index, tz, floats), or the same error message. Blocks are made tiny (``READ_ROWS``
5 or 7) so every rule meets block boundaries: an order or a duplicate across two blocks, a bad cell
in a later block, offsets that change between blocks, formats a single block would read otherwise.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st_

from aitrader.data import generate_bars, load_bars, load_data_items, load_universe
from aitrader.data import stream as st
from aitrader.data.stream import BarFile, scan_bars, scan_data_items, scan_universe
from aitrader.errors import DataError

COLS = ["open", "high", "low", "close", "volume"]


@pytest.fixture(autouse=True)
def tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(st, "READ_ROWS", 7)


def outcome(fn: Any, *args: Any, **kw: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args, **kw)
    except DataError as exc:
        return "error", str(exc)


def same(path: Path, symbol: str | None = None) -> BarFile | None:
    """scan_bars == load_bars (bars or error); the BarFile when there are bars."""
    want = outcome(load_bars, path, symbol=symbol)
    got = outcome(scan_bars, path, symbol=symbol)
    assert got[0] == want[0], (got, want)
    if want[0] == "error":
        assert got[1] == want[1]
        return None
    df, bf = want[1], got[1]
    assert bf.symbol == df.attrs["symbol"]
    assert len(bf) == len(df)
    pd.testing.assert_frame_equal(bf.frame(), df[COLS])
    pd.testing.assert_index_equal(bf.index, df.index)
    return bf


def streamed(bf: BarFile) -> bool:
    """True when the BarFile reads its file in blocks (not a whole-file load wrapped)."""
    return "_reader" in bf._reader.__qualname__


def bars_csv(tmp: Path, name: str, df: pd.DataFrame, **kw: Any) -> Path:
    path = tmp / name
    df.rename_axis("timestamp").to_csv(path, **kw)
    return path


# ---------------------------------------------------------------------------- clean files


@pytest.mark.parametrize("tz", [None, "UTC", "America/New_York", "Asia/Kolkata"])
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_clean_files_read_in_blocks_give_the_whole_file_bars(tmp_path: Path, tz: str | None, suffix: str) -> None:
    df = generate_bars(53, seed=2, freq="1h", tz=tz)
    path = tmp_path / f"AAA{suffix}"
    if suffix == ".parquet":
        df.rename_axis("timestamp").to_parquet(path)
    else:
        df.rename_axis("timestamp").to_csv(path, compression="gzip" if suffix.endswith(".gz") else None)
    bf = same(path)
    assert bf is not None and streamed(bf)  # one offset in the file (no DST change in these 53 hours)
    # the values of one bar, by hand from the frame written
    v = dict(zip(COLS, next(b for lo, b in bf.blocks(17, 18))[:, 0], strict=True))
    assert v == {c: float(df[c].iloc[17]) for c in COLS}


def test_blocks_cover_any_window_in_pieces_of_at_most_size(tmp_path: Path) -> None:
    df = generate_bars(40, seed=5)
    bf = same(bars_csv(tmp_path, "X.csv", df))
    assert bf is not None and streamed(bf)
    for lo, hi, size in [(0, 40, 3), (5, 6, 1), (13, 40, 100), (39, 40, 2), (20, 20, 4), (0, 99, 8)]:
        got = list(bf.blocks(lo, hi, size=size))
        firsts = [first for first, _ in got]
        widths = [v.shape[1] for _, v in got]
        assert all(0 < w <= size for w in widths)
        assert firsts == [lo + sum(widths[:i]) for i in range(len(widths))]
        joined = np.concatenate([v for _, v in got], axis=1) if got else np.empty((5, 0))
        assert np.array_equal(joined, df[COLS].to_numpy().T[:, lo:min(hi, 40)])


@pytest.mark.parametrize("kind", ["epoch_s", "epoch_ms", "yyyymmdd", "date_text", "iso_z", "date_time_cols",
                                  "adj_close"])
def test_timestamp_kinds_and_adjusted_close(tmp_path: Path, kind: str) -> None:
    df = generate_bars(30, seed=3)
    out = df.reset_index(names="timestamp")
    if kind == "epoch_s":
        out["timestamp"] = out["timestamp"].astype("int64") // 10**9
    elif kind == "epoch_ms":
        out["timestamp"] = out["timestamp"].astype("int64") // 10**6
    elif kind == "yyyymmdd":
        out["timestamp"] = out["timestamp"].dt.strftime("%Y%m%d").astype(int)
    elif kind == "date_text":
        out["timestamp"] = out["timestamp"].dt.strftime("%Y-%m-%d")
    elif kind == "iso_z":
        out["timestamp"] = out["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    elif kind == "date_time_cols":
        out = out.assign(date=out["timestamp"].dt.strftime("%Y-%m-%d"), time="09:30").drop(columns="timestamp")
    elif kind == "adj_close":
        out["adj_close"] = out["close"] * np.where(np.arange(30) < 12, 0.5, 1.0)
    path = tmp_path / "B.csv"
    out.to_csv(path, index=False)
    bf = same(path)
    assert bf is not None


def test_long_file_symbols_universe_and_data_items(tmp_path: Path) -> None:
    parts = []
    for k, sym in enumerate(["BBB", "AAA", "CCC"]):
        parts.append(generate_bars(23 + k, seed=k).reset_index(names="timestamp").assign(symbol=sym))
    long = pd.concat(parts).sort_values(["timestamp", "symbol"], kind="stable")
    path = tmp_path / "long.csv"
    long.to_csv(path, index=False)
    for sym in ("AAA", "bbb", "CCC", "ZZZ"):
        same(path, sym)
    same(path)  # several symbols and none named: the loader's error
    want = load_universe(path)
    got = scan_universe(path)
    assert list(got) == list(want) == ["AAA", "BBB", "CCC"]
    for s in want:
        assert streamed(got[s])
        pd.testing.assert_frame_equal(got[s].frame(), want[s][COLS])
    # --data items: a directory, SYMBOL=PATH
    folder = tmp_path / "dir"
    folder.mkdir()
    for sym in ("AAA", "BBB"):
        generate_bars(19, seed=len(sym) + ord(sym[0])).rename_axis("timestamp").to_csv(folder / f"{sym}.csv")
    items = [str(folder), f"XYZ={folder / 'AAA.csv'}"]
    frames, explicit = load_data_items(items)
    found, explicit2 = scan_data_items(items)
    assert explicit and explicit2 and list(found) == list(frames)
    for s, df in frames.items():
        assert found[s].symbol == s
        pd.testing.assert_frame_equal(found[s].frame(), df[COLS])


# ---------------------------------------------------------------------------- broken and odd files


def _rows(tmp: Path, name: str, edit: Any) -> Path:
    out = generate_bars(31, seed=7, freq="1h").reset_index(names="timestamp")
    out["timestamp"] = out["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")
    out = edit(out)
    path = tmp / name
    out.to_csv(path, index=False)
    return path


BROKEN = {
    # row 8 is the first row of the second block of 7
    "unsorted_across_blocks": lambda o: o.iloc[[*range(6), 7, 6, *range(8, 31)]],
    "duplicate_across_blocks": lambda o: o.assign(timestamp=o["timestamp"].where(o.index != 7, o["timestamp"][6])),
    "nan_price_late": lambda o: o.assign(close=o["close"].where(o.index != 29, np.nan)),
    "negative_volume": lambda o: o.assign(volume=o["volume"].where(o.index != 20, -1.0)),
    "bad_stamp_late": lambda o: o.assign(timestamp=o["timestamp"].where(o.index != 25, "not a time")),
    "other_format": lambda o: o.assign(timestamp=pd.to_datetime(o["timestamp"]).dt.strftime("%m/%d/%Y %H:%M")),
    "offset_changes": lambda o: o.assign(timestamp=[t + ("-05:00" if i < 10 else "-04:00")
                                                    for i, t in enumerate(o["timestamp"])]),
    "missing_column": lambda o: o.drop(columns="volume"),
    "high_below_close": lambda o: o.assign(high=o["high"].where(o.index != 16, o["low"] * 0.5)),
    "empty_symbol": lambda o: o.assign(symbol=["A"] * 12 + [""] + ["A"] * 18),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_or_odd_files_give_the_loaders_bars_or_error(tmp_path: Path, case: str) -> None:
    path = _rows(tmp_path, "C.csv", BROKEN[case])
    same(path)
    want = outcome(load_universe, path)
    got = outcome(scan_universe, path)
    assert got[0] == want[0] and (got[1] == want[1] if want[0] == "error" else list(got[1]) == list(want[1]))


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    (tmp_path / "E.csv").write_text("")
    (tmp_path / "H.csv").write_text("timestamp,open,high,low,close,volume\n")
    same(tmp_path / "E.csv")
    same(tmp_path / "H.csv")
    same(tmp_path / "missing.csv")


def test_the_bars_scanned_are_the_bars_read_whatever_happens_to_the_file(tmp_path: Path) -> None:
    df = generate_bars(30, seed=9)
    path = bars_csv(tmp_path, "D.csv", df)
    want = load_bars(path)[COLS]  # the oracle: the whole-file loader on the file as scanned
    bf = scan_bars(path)
    assert streamed(bf)
    changed = df.copy()
    changed.iloc[22, changed.columns.get_loc("close")] *= 1.0001  # still a valid bar
    changed["high"] = changed[["high", "close"]].max(axis=1)
    bars_csv(tmp_path, "D.csv", changed)
    pd.testing.assert_frame_equal(bf.frame(), want)  # the validated bars, not the file's new ones
    path.unlink()
    got = [(first, values) for first, values in bf.blocks(0, 30, size=4)]
    sizes = [v.shape[1] for _, v in got]
    assert [first for first, _ in got] == np.cumsum([0, *sizes[:-1]]).tolist() and max(sizes) <= 4
    np.testing.assert_array_equal(np.concatenate([v for _, v in got], axis=1), want.to_numpy().T)


def test_the_spill_leaves_no_file_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gc
    import tempfile

    spill_dir = tmp_path / "tmp"
    spill_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill_dir))
    path = bars_csv(tmp_path, "D.csv", generate_bars(40, seed=3))
    bf = scan_bars(path)
    assert streamed(bf) and len(bf.frame()) == 40
    assert list(spill_dir.iterdir()) == []  # unlinked from the start
    spill = bf._reader.__closure__  # type: ignore[attr-defined]
    files = [c.cell_contents for c in spill if isinstance(c.cell_contents, st._Spill)]
    assert len(files) == 1 and files[0].size == 40 * 5 * 8  # 40 bytes a bar, raw float64
    fd = files[0]._fd
    del bf, spill, files
    gc.collect()
    with pytest.raises(OSError):
        import os

        os.fstat(fd)  # closed with the bars


def test_a_spill_that_cannot_be_written_falls_back_to_the_whole_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def full(self: Any, values: np.ndarray) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(st._Spill, "write", full)
    path = bars_csv(tmp_path, "D.csv", generate_bars(20, seed=5))
    with caplog.at_level(logging.WARNING):
        bf = same(path)
    assert bf is not None and not streamed(bf)
    assert any("cannot spill" in r.getMessage() and "TMPDIR" in r.getMessage() for r in caplog.records)


def test_data_warnings_are_logged_as_the_loader_logs_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    df = generate_bars(60, seed=4)
    df.loc[df.index[33]:, ["open", "high", "low", "close"]] /= 2.0  # an unadjusted 2-for-1 split
    df.loc[df.index[40]:df.index[50], ["open", "high", "low", "close"]] = df["close"].iloc[40]  # stale
    path = bars_csv(tmp_path, "S.csv", df)
    with caplog.at_level(logging.WARNING):
        load_bars(path)
    want = sorted(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        bf = scan_bars(path)
    got = sorted(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert streamed(bf)
    assert any("split" in m for m in want) and got == want


def test_a_long_gz_file_is_read_in_bounded_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(st, "READ_ROWS", 1000)
    df = generate_bars(5000, seed=1, freq="1min")
    path = tmp_path / "G.csv.gz"
    with gzip.open(path, "wt") as fh:
        df.rename_axis("timestamp").to_csv(fh)
    seen: list[int] = []
    real = st._raw_blocks

    def spy(p: Path, rows: int) -> Any:
        for block in real(p, rows):
            seen.append(len(block))
            yield block

    monkeypatch.setattr(st, "_raw_blocks", spy)
    bf = same(path)
    assert bf is not None and streamed(bf)
    assert max(seen) == 1000 and sum(seen) == 5000  # one read: the frame comes from the spill


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st_.integers(1, 9), n=st_.integers(1, 40), edits=st_.lists(
    st_.tuples(st_.sampled_from(["nan", "neg", "swap", "dup", "zero_vol", "huge", "text"]), st_.integers(0, 39)),
    max_size=3), tz=st_.sampled_from([None, "+02:00"]))
def test_any_block_size_and_damage_give_the_loaders_outcome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             rows: int, n: int, edits: list[tuple[str, int]],
                                                             tz: str | None) -> None:
    monkeypatch.setattr(st, "READ_ROWS", rows)
    out = generate_bars(n, seed=n, freq="1h").reset_index(names="timestamp")
    out["timestamp"] = out["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S") + (tz or "")
    out = out.astype({"close": object})
    for what, at in edits:
        i = at % n
        if what == "nan":
            out.loc[i, "open"] = np.nan
        elif what == "neg":
            out.loc[i, "low"] = -1.0
        elif what == "swap" and i + 1 < n:
            out.iloc[[i, i + 1]] = out.iloc[[i + 1, i]].to_numpy()
        elif what == "dup" and i + 1 < n:
            out.loc[i + 1, "timestamp"] = out.loc[i, "timestamp"]
        elif what == "zero_vol":
            out.loc[i, "volume"] = 0.0
        elif what == "huge":
            out.loc[i, "high"] = 1e300
        elif what == "text":
            out.loc[i, "close"] = "n/a"
    path = tmp_path / f"F{rows}_{n}.csv"
    out.to_csv(path, index=False)
    same(path)


def test_the_spill_reads_back_without_preadv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    df = generate_bars(50, seed=8)
    path = bars_csv(tmp_path, "P.csv", df)
    monkeypatch.delattr(st.os, "preadv")  # a system with pread only (macOS before 11)
    bf = same(path)
    assert bf is not None and streamed(bf)
