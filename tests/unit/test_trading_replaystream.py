"""Replays from bars streamed in blocks (issue 11): whatever the blocks' sizes, the same steps,
features, fingerprints and ledgers as from whole arrays.

Oracles: the whole-array feature evaluator (``batch.compute``, a separate code path), a copy of the
merge that sorted every bar at once (what ``_merged_steps`` was before it streamed), SHA-256 over
the whole frame's bytes, and the ledger of the same replay read in the default blocks.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from test_trading_batch import FirstFeature, real_spec  # noqa: E402
from trading_helpers import bars, config  # noqa: E402

from aitrader.data.stream import BarFile  # noqa: E402
from aitrader.data.synthetic import generate_bars  # noqa: E402
from aitrader.features import FeaturePipeline, batch  # noqa: E402
from aitrader.features.pipeline import validate_bars  # noqa: E402
from aitrader.trading.ledger import ledger_content  # noqa: E402
from aitrader.trading.session import RunOptions, run_session  # noqa: E402
from aitrader.trading.sources import BarSeries, ReplayFingerprint, _format_ns, replay_steps  # noqa: E402
from tests.unit.test_features_chunked import ALL, REGISTRY, _bars  # noqa: E402 - the same features and bars

COLUMNS = ("open", "high", "low", "close", "volume")


def blocky(symbol: str, df: pd.DataFrame, size: int | list[int]) -> BarFile:
    """A BarFile whose reader yields blocks of ``size`` rows (or the sizes of a list, cycled), whatever
    size is asked for: a file reader is free to yield its row groups as they are."""
    values = np.vstack([df[c].to_numpy(dtype="float64") for c in COLUMNS])
    sizes = [size] if isinstance(size, int) else size

    def read(lo: int, hi: int, _asked: int) -> Iterator[tuple[int, np.ndarray]]:
        start, k = lo, 0
        while start < hi:
            stop = min(hi, start + sizes[k % len(sizes)])
            yield start, np.ascontiguousarray(values[:, start:stop])
            start, k = stop, k + 1

    return BarFile(symbol, symbol, pd.DatetimeIndex(df.index), read)


# ---------------------------------------------------------------------------- compute_stream
def _streamed(specs: list[Any], arrays: tuple[np.ndarray, ...], sizes: list[int], chunk: int) -> np.ndarray:
    values = np.vstack(arrays)
    blocks, start, k = [], 0, 0
    while start < values.shape[1]:
        stop = min(values.shape[1], start + sizes[k % len(sizes)])
        blocks.append((start, values[:, start:stop]))
        start, k = stop, k + 1
    parts = list(batch.compute_stream(specs, iter(blocks), chunk))
    assert [s for s, _ in parts] == list(range(0, values.shape[1], parts[0][1].shape[0]))  # chunks in order
    return np.vstack([m for _, m in parts])


@pytest.mark.parametrize("sizes", [[1], [7], [4096], [65_536], [5, 3000, 1, 777, 20_000, 64]])
@pytest.mark.parametrize("chunk", [1, 16_384])
def test_compute_stream_equals_the_whole_array_evaluation(sizes: list[int], chunk: int) -> None:
    pipe = FeaturePipeline(ALL, REGISTRY)
    arrays = validate_bars(_bars(9000))
    whole = batch.compute(pipe.specs, *arrays)  # the oracle: one evaluation over the whole arrays
    got = _streamed(pipe.specs, arrays, sizes, chunk)
    assert got.shape == whole.shape
    assert np.array_equal(got, whole, equal_nan=True)
    assert np.array_equal(np.isnan(got), np.isnan(whole))


def test_compute_stream_across_a_large_block_boundary() -> None:
    """70k bars in blocks of 65,536 (the file reader's default) and random sizes, default feature chunk."""
    pipe = FeaturePipeline(["rsi_14", "macd_hist", "bb_pctb_20", "volatility_20", "atr_14", "ema_ratio_12"],
                           REGISTRY)
    arrays = validate_bars(generate_bars(70_000, seed=9, freq="1min"))
    whole = batch.compute(pipe.specs, *arrays)
    rng = np.random.default_rng(3)
    for sizes in ([65_536], rng.integers(1, 30_000, 40).tolist()):
        assert np.array_equal(_streamed(pipe.specs, arrays, sizes, 16_384), whole, equal_nan=True)


def test_compute_stream_refuses_blocks_out_of_order() -> None:
    pipe = FeaturePipeline(["ret_1"], REGISTRY)
    values = np.ones((5, 10))
    with pytest.raises(ValueError, match="consecutive"):
        list(batch.compute_stream(pipe.specs, [(0, values[:, :4]), (5, values[:, 5:])], 1))


# ---------------------------------------------------------------------------- the merge
def _old_merged_steps(frames: dict[str, pd.DataFrame], size: int) -> list[Any]:
    """The merge before it streamed (main at f6d96ad): one lexsort of every bar of every symbol by
    (epoch, symbol), then Python objects ``size`` bars at a time. Arrays built here from the frames."""
    series = []
    for sym in sorted(frames):
        df = frames[sym]
        index, suffix = pd.DatetimeIndex(df.index), ""
        if index.tz is not None:
            index, suffix = index.tz_convert("UTC").tz_localize(None), "+00:00"
        ns = np.array(index.as_unit("ns").asi8, dtype=np.int64)
        cols = [np.ascontiguousarray(df[c].to_numpy(dtype="float64")) for c in COLUMNS]
        series.append((sym, ns, ns / 1e9, cols, suffix, bool(len(ns)) and not (ns % 1_000_000_000).any()))
    epochs = np.concatenate([s[2] for s in series])
    which = np.concatenate([np.full(len(s[1]), k) for k, s in enumerate(series)])
    order = np.lexsort((which, epochs))
    offsets = np.cumsum([0] + [len(s[1]) for s in series])
    out: list[Any] = []
    cur_ep: float | None = None
    cur_ts = ""
    bars_: list[Any] = []
    for lo in range(0, len(order), size):
        idx = order[lo:lo + size]
        ks, eps = which[idx], epochs[idx]
        loc = idx - offsets[ks]
        ts: list[Any] = [None] * len(idx)
        vals = np.empty((len(idx), 5))
        for k, (_, ns, _, cols, suffix, whole) in enumerate(series):
            sel = np.flatnonzero(ks == k)
            if not sel.size:
                continue
            li = loc[sel]
            for j, col in enumerate(cols):
                vals[sel, j] = col[li]
            for pos, text in zip(sel.tolist(), _format_ns(ns[li], suffix, whole), strict=True):
                ts[pos] = text
        syms = [series[k][0] for k in ks.tolist()]
        for ep, sym, i, stamp, row in zip(eps.tolist(), syms, loc.tolist(), ts, vals.tolist(), strict=True):
            if ep != cur_ep:
                if bars_:
                    out.append((cur_ts, cur_ep, bars_))
                cur_ep, bars_ = ep, []
                cur_ts = stamp
            bars_.append((sym, i, row[0], row[1], row[2], row[3], row[4]))
    if bars_:
        out.append((cur_ts, cur_ep, bars_))
    return out


def _uneven(rng: np.random.Generator, n: int, step_s: int, span: int, frac: bool, tz: str | None) -> pd.DataFrame:
    secs = np.sort(rng.choice(np.arange(span) * step_s, size=min(n, span), replace=False)).astype(np.int64)
    ns = secs * 1_000_000_000 + (250_000_000 if frac else 0)
    idx = pd.DatetimeIndex(ns.astype("datetime64[ns]"))
    if tz is not None:
        idx = idx.tz_localize("UTC").tz_convert(tz)
    return pd.DataFrame(rng.normal(100, 1, (len(idx), 5)), columns=list(COLUMNS), index=idx)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 120), min_size=2, max_size=4),
    steps=st.lists(st.sampled_from([60, 120, 300, 420]), min_size=4, max_size=4),
    blocks=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    chunk=st.integers(1, 50),
    tz=st.sampled_from([None, "UTC", "America/New_York"]),
    frac=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_merge_of_uneven_calendars_equals_the_global_sort(sizes: list[int], steps: list[int], blocks: list[int],
                                                          chunk: int, tz: str | None, frac: bool, seed: int) -> None:
    """Symbols with different cadences, gaps and shared stamps, read in blocks of any sizes."""
    rng = np.random.default_rng(seed)
    frames = {f"S{k}": _uneven(rng, n, steps[k], 150, frac and k == 0, tz) for k, n in enumerate(sizes)}
    expected = _old_merged_steps(frames, 64)
    series = [BarSeries(blocky(sym, df, blocks)) for sym, df in reversed(frames.items())]
    got = [(ts, ep, list(b)) for ts, ep, b in replay_steps(series, chunk=chunk)]
    assert got == expected


def test_merge_holds_only_the_current_blocks() -> None:
    """Three symbols of 3000 bars in blocks of 100: the merge reads each symbol's blocks as the
    replay reaches them (never every block before the first step)."""
    rng = np.random.default_rng(1)
    frames = {f"S{k}": _uneven(rng, 3000, 60, 3300, False, None) for k in range(3)}
    read: dict[str, int] = {}

    def counting(sym: str, df: pd.DataFrame) -> BarFile:
        f = blocky(sym, df, 100)
        inner = f._reader

        def reader(lo: int, hi: int, size: int) -> Iterator[tuple[int, np.ndarray]]:
            for block in inner(lo, hi, size):
                read[sym] = read.get(sym, 0) + block[1].shape[1]
                yield block

        return BarFile(sym, sym, f.index, reader)

    steps = replay_steps([BarSeries(counting(s, df)) for s, df in frames.items()])
    it = iter(steps)
    for _ in range(500):
        next(it)
    assert max(read.values()) <= 1000  # ~600 bars replayed per symbol: a few blocks ahead at most
    assert len(list(it)) + 500 == len(_old_merged_steps(frames, 10_000))


def test_one_symbol_in_any_blocks_equals_the_global_sort() -> None:
    df = _uneven(np.random.default_rng(5), 500, 60, 900, True, "America/New_York")
    expected = _old_merged_steps({"X": df}, 500)
    for size in (1, 7, 100, [3, 50, 1]):
        got = [(ts, ep, list(b)) for ts, ep, b in replay_steps([BarSeries(blocky("X", df, size))])]
        assert got == expected


def test_window_of_a_file_numbers_its_bars_from_zero() -> None:
    df = bars(50)
    s = BarSeries(blocky("X", df, 7), 10, 30)
    got = list(replay_steps([s]))
    assert len(got) == 20 and len(s) == 20
    assert got[0][2][0] == ("X", 0, *df.iloc[10].tolist())
    assert got[-1][2][0] == ("X", 19, *df.iloc[29].tolist())
    assert s.index.equals(df.index[10:30])
    pd.testing.assert_frame_equal(s.frame(), df.iloc[10:30], check_freq=False, check_names=False)


# ---------------------------------------------------------------------------- fingerprint
def test_fingerprint_in_blocks_equals_the_hash_of_the_whole_frame() -> None:
    df = bars(300, seed=8)
    fp = ReplayFingerprint([BarSeries(blocky("X", df, 7), 20, 300)])
    for cursor in (0, 6, 7, 150, 279, 279, 12):  # forwards, the same cursor again, then back
        rows = df.iloc[20:21 + cursor]
        epoch = rows.index.as_unit("ns").asi8 / 1e9
        table = np.column_stack([epoch, *(rows[c].to_numpy() for c in COLUMNS)]).astype("<f8")
        assert fp({"X": (cursor, "")}) == {"X": {"bars": cursor + 1, "sha256": hashlib.sha256(table.tobytes())
                                                 .hexdigest()}}


# ---------------------------------------------------------------------------- ledgers
def _run(tmp: Path, name: str, frames: dict[str, pd.DataFrame], size: int | None, route: str = "batch",
         **opts: Any) -> dict[str, Any]:
    """A replay of ``frames`` read in blocks of ``size`` (None: BarSeries.from_frame's default blocks)."""
    series = [BarSeries.from_frame(s, df) if size is None else BarSeries(blocky(s, df, size))
              for s, df in frames.items()]
    specs = [real_spec(FirstFeature(raise_above=0.03, nan_below=-0.035), symbol=s) for s in frames]
    cfg = config(replay=route, models=[{"model_id": "m", "symbol": s} for s in frames])
    run_opts = RunOptions(handle_signals=False, **{"commit_every": 50, **opts})
    steps = replay_steps(series)
    run_opts.fingerprint = ReplayFingerprint(series)
    return run_session(cfg, specs, steps, tmp / name, run_id=name, opts=run_opts, resume=(tmp / name).exists())


def _content(tmp: Path, name: str) -> dict[str, Any]:
    return ledger_content(tmp / name / "ledger.db")


@pytest.mark.parametrize("route", ["batch", "streaming"])
def test_ledger_from_tiny_blocks_equals_the_default(tmp_path: Path, route: str) -> None:
    frames = {"AAA": bars(700, seed=41)}
    _run(tmp_path, "default", frames, None, route)
    for size in (1, 7, 100):
        _run(tmp_path, f"b{size}", frames, size, route)
        assert _content(tmp_path, f"b{size}") == _content(tmp_path, "default")


def test_multi_symbol_ledger_from_tiny_blocks_equals_the_default(tmp_path: Path) -> None:
    frames = {"AAA": bars(400, seed=42, freq="1h"), "BBB": bars(300, seed=43, freq="90min"),
              "CCC": bars(250, seed=44, freq="2h", start="2021-01-05")}
    summary = _run(tmp_path, "default", frames, None)
    assert summary["fills"] > 0
    for size in (1, 7, 100):
        _run(tmp_path, f"b{size}", frames, size)
        assert _content(tmp_path, f"b{size}") == _content(tmp_path, "default")


@pytest.mark.parametrize(("size", "stop_at"), [(100, 157), (7, 350), (64, 128)])
def test_resume_in_the_middle_of_a_block_equals_the_full_run(tmp_path: Path, size: int, stop_at: int) -> None:
    frames = {"AAA": bars(600, seed=45), "BBB": bars(500, seed=46, freq="30h")}
    _run(tmp_path, "full", frames, None)
    part = _run(tmp_path, "part", frames, size, commit_every=13, max_bars=stop_at)
    assert part["status"] == "stopped"
    _run(tmp_path, "part", frames, size)
    assert _content(tmp_path, "part") == _content(tmp_path, "full")


def test_resume_on_changed_bars_is_refused_whatever_the_blocks(tmp_path: Path) -> None:
    from aitrader.errors import TradingError

    df = bars(400, seed=47)
    _run(tmp_path, "r", {"AAA": df}, 7, commit_every=10, max_bars=200)
    changed = df.copy()
    changed.iloc[50, changed.columns.get_loc("close")] *= 1.0 + 1e-9
    with pytest.raises(TradingError, match="changed since it started"):
        _run(tmp_path, "r", {"AAA": changed}, 64)


def test_a_replay_holds_no_price_arrays() -> None:
    """The series of a replay is a window of a file (stamps only): prices come from its blocks."""
    s = BarSeries(blocky("X", bars(100), 10), 5, 95)
    assert not any(isinstance(getattr(s, name), np.ndarray) for name in s.__slots__)
    assert sum(v.shape[1] for _, _, v in s.blocks()) == 90


# ---------------------------------------------------------------------------- one pass, several readers
def _counted(df: pd.DataFrame, size: int, fail_after: int | None = None) -> tuple[BarFile, list[int]]:
    """A BarFile in blocks of ``size`` that counts its passes (and raises DataError after
    ``fail_after`` blocks of a pass, like a file changed under the reader)."""
    from aitrader.errors import DataError

    inner = blocky("X", df, size)._reader
    passes: list[int] = []

    def read(lo: int, hi: int, asked: int) -> Iterator[tuple[int, np.ndarray]]:
        passes.append(lo)
        for k, block in enumerate(inner(lo, hi, asked)):
            if fail_after is not None and k >= fail_after:
                raise DataError("X: the file changed while it was read")
            yield block

    return BarFile("X", "X", pd.DatetimeIndex(df.index), read), passes


def _flat(blocks: Iterator[tuple[int, np.ndarray, np.ndarray]]) -> tuple[list[int], np.ndarray, np.ndarray]:
    got = list(blocks)
    return ([f for f, _, _ in got], np.concatenate([ns for _, ns, _ in got]),
            np.concatenate([v for _, _, v in got], axis=1))


def test_readers_at_their_own_pace_share_one_pass() -> None:
    df = bars(500, seed=50)
    expected_ns = df.index.as_unit("ns").asi8
    expected = np.vstack([df[c].to_numpy() for c in COLUMNS])
    f, passes = _counted(df, 7)
    s = BarSeries(f)
    readers = [s.blocks() for _ in range(3)]
    out: list[list[Any]] = [[], [], []]
    rng = np.random.default_rng(0)
    live = [0, 1, 2]
    while live:  # interleaved at random: each reader takes 0-3 blocks per turn
        k = int(rng.choice(live))
        for _ in range(int(rng.integers(0, 4))):
            block = next(readers[k], None)
            if block is None:
                live.remove(k)
                break
            out[k].append(block)
    assert passes == [0]
    for got in out:
        _, ns, values = _flat(iter(got))
        assert np.array_equal(ns, expected_ns) and np.array_equal(values, expected)


def test_a_reader_left_behind_reads_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    import aitrader.trading.sources as src

    monkeypatch.setattr(src, "SHARED_LAG", 20)
    df = bars(300, seed=51)
    f, passes = _counted(df, 7)
    s = BarSeries(f)
    lagging, leading = s.blocks(), s.blocks()
    assert next(lagging)[0] == 0
    firsts, _, values = _flat(leading)
    held = s._shared._held_bars  # type: ignore[union-attr]
    assert held <= 20 + 7  # the pass let go of what the lagging reader had not taken
    rest = list(lagging)
    assert rest[0][0] == 7 and len(passes) == 2 and passes[1] == 7  # its own pass, from its next bar
    assert np.array_equal(np.concatenate([v for _, _, v in rest], axis=1), values[:, 7:])
    assert firsts == list(range(0, 300, 7))


def test_a_reader_started_late_reads_on_its_own() -> None:
    df = bars(100, seed=52)
    f, passes = _counted(df, 10)
    s = BarSeries(f)
    first = s.blocks()
    list(first)  # the pass is over and let every block go
    _, _, values = _flat(s.blocks())
    assert passes == [0, 0]
    assert np.array_equal(values, np.vstack([df[c].to_numpy() for c in COLUMNS]))


def test_a_reader_on_another_thread_gets_the_same_blocks() -> None:
    import threading

    df = bars(2000, seed=53)
    f, passes = _counted(df, 3)
    s = BarSeries(f)
    mine, theirs = s.blocks(), s.blocks()
    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(_flat(theirs)))
    t.start()
    got = _flat(mine)
    t.join(timeout=60)
    assert passes == [0]
    assert got[0] == box[0][0] and np.array_equal(got[2], box[0][2])


def test_an_error_of_the_pass_reaches_every_reader() -> None:
    from aitrader.errors import DataError

    f, _ = _counted(bars(100, seed=54), 10, fail_after=3)
    s = BarSeries(f)
    a, b = s.blocks(), s.blocks()
    with pytest.raises(DataError, match="changed"):
        list(a)
    with pytest.raises(DataError, match="changed"):
        list(b)  # not a silently shorter replay
