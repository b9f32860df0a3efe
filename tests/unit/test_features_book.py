"""Order-book features: hand-computed values, causal alignment with staleness, batch == streaming,
no look-ahead by truncation, and the pipeline contract that records the book input."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aitrader.data.book import Book, load_book
from aitrader.data.synthetic import generate_bars, generate_book
from aitrader.errors import DataError, FeatureError
from aitrader.features import FeaturePipeline, FeatureRegistry
from aitrader.features.kinds import BOOK_KINDS
from aitrader.features.registry import FeatureSpec

TOL = 1e-7


def _spec(name: str, kind: str, warmup: int = 0, **params: object) -> FeatureSpec:
    return FeatureSpec(name=name, description=name, group="book", kind=kind, params=dict(params), warmup=warmup)


def _registry(max_age: float) -> FeatureRegistry:
    return FeatureRegistry([
        _spec("spread", "book_spread_bps", max_age=max_age),
        _spec("mid", "book_mid", max_age=max_age, relative_to="none"),
        _spec("gap", "book_mid", max_age=max_age, relative_to="close"),
        _spec("micro", "book_microprice", max_age=max_age),
        _spec("imb1", "book_imbalance", max_age=max_age, levels=1),
        _spec("imb2", "book_imbalance", max_age=max_age, levels=2),
        _spec("dchg", "book_depth_change", 1, max_age=max_age, levels=2, window=1),
    ])


NAMES = ["spread", "mid", "gap", "micro", "imb1", "imb2", "dchg"]
# Three snapshots (two levels; B has one bid level) and five one-minute bars, as a file would give them.
BOOK_CSV = """timestamp,bid_px_1,bid_sz_1,ask_px_1,ask_sz_1,bid_px_2,bid_sz_2,ask_px_2,ask_sz_2
2024-01-02T10:00:00,100.0,30,100.2,10,99.9,10,100.3,50
2024-01-02T10:00:50,100.1,20,100.3,20,,,100.4,30
2024-01-02T10:02:30,100.0,10,101.0,30,99.0,10,102.0,10
"""
CLOSES = [100.0, 100.3, 100.2, 100.6, 100.0]
# Hand-computed, per snapshot: A mid 100.1, micro (100.0*10 + 100.2*30)/40 = 100.15, B mid 100.2 = micro,
# C mid 100.5, micro (100.0*30 + 101.0*10)/40 = 100.25; depth over 2 levels A 30+10+10+50 = 100, B 20+20+30 = 70.
A = [0.2 / 100.1 * 1e4, 100.1, (100.1 / 100.0 - 1) * 1e4, 0.05 / 100.1 * 1e4, 0.5, -0.2, np.nan]
B = [0.2 / 100.2 * 1e4, 100.2, (100.2 / 100.3 - 1) * 1e4, 0.0, 0.0, -3 / 7, -0.3]
C = [1.0 / 100.5 * 1e4, 100.5, (100.5 / 100.6 - 1) * 1e4, (100.25 / 100.5 - 1) * 1e4, -0.5, -1 / 3, np.nan]
NAN = [np.nan] * 7


def _bars() -> pd.DataFrame:
    idx = pd.date_range("2024-01-02T10:00", periods=5, freq="1min", name="timestamp")
    c = np.array(CLOSES)
    return pd.DataFrame({"open": c, "high": c + 0.5, "low": c - 0.5, "close": c, "volume": 1000.0}, index=idx)


@pytest.fixture
def book(tmp_path: Path) -> Book:
    (tmp_path / "book.csv").write_text(BOOK_CSV)
    return load_book(tmp_path / "book.csv")


def _both(pipe: FeaturePipeline, bars: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return pipe.transform(bars).to_numpy(), pipe.transform_streaming(bars).to_numpy()


def test_hand_computed_values_with_a_60s_staleness_limit(book: Book) -> None:
    pipe = FeaturePipeline(NAMES, _registry(60.0)).with_book(book)
    # bar 10:00 reads A (age 0: a snapshot at the bar's stamp counts), 10:01 reads B (age 10 s),
    # 10:02 B is 70 s old -> NaN, 10:03 C (30 s), 10:04 C is 90 s old -> NaN; depth change needs two fresh bars.
    expected = np.array([A, B, NAN, C, NAN])
    expected[0, 6] = np.nan  # warm-up 1
    for got in _both(pipe, _bars()):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9, equal_nan=True)


def test_a_snapshot_exactly_max_age_old_is_used(book: Book) -> None:
    pipe = FeaturePipeline(NAMES, _registry(70.0)).with_book(book)
    for got in _both(pipe, _bars()):
        # bar 10:02: B is exactly 70 s old -> used (with the bar's own close in the gap), depth unchanged since 10:01
        np.testing.assert_allclose(got[2], [B[0], 100.2, (100.2 / 100.2 - 1) * 1e4, 0.0, 0.0, -3 / 7, 0.0],
                                   atol=1e-9)
        assert np.isnan(got[4]).all()  # C is 90 s old at 10:04


def test_a_snapshot_one_nanosecond_after_the_bar_is_not_read(book: Book) -> None:
    stamps = pd.DatetimeIndex(book.ts_ns.astype("datetime64[ns]"), name="timestamp")
    c = np.array([100.0, 100.3, 100.6])
    pipe = FeaturePipeline(NAMES[:2], _registry(3600.0)).with_book(book)
    for shift, expected in ((0, [A[:2], B[:2], C[:2]]), (1, [NAN[:2], A[:2], B[:2]])):
        # bars stamped at each snapshot, then 1 ns before it: the snapshot belongs to the next bar
        bars = pd.DataFrame({"open": c, "high": c, "low": c, "close": c, "volume": 1.0},
                            index=stamps - pd.Timedelta(shift, "ns"))
        for got in _both(pipe, bars):
            np.testing.assert_allclose(got, expected, atol=1e-9)


def _full_pipe(book: Book) -> FeaturePipeline:
    names = ["ret_1", "rsi_14", "book_spread_bps", "book_mid", "book_mid_gap_bps", "book_microprice_bps",
             "book_imbalance_1", "book_imbalance_5", "book_depth_change_5", "volume_zscore_20"]
    reg = FeatureRegistry.load()
    # the packaged definitions with a staleness limit of half a bar (1h bars): bars without a snapshot go NaN
    specs = [reg.spec(n) for n in names]
    specs = [replace(s, params={**s.params, "max_age": 1800.0}) if s.kind in BOOK_KINDS else s for s in specs]
    return FeaturePipeline(names, FeatureRegistry(specs)).with_book(book)


def _partial(book: Book, seed: int) -> Book:
    """The book with random snapshots cut to fewer levels (absent levels are NaN)."""
    rng = np.random.default_rng(seed)
    keep = rng.integers(1, book.levels + 1, size=len(book))
    cols = np.arange(book.levels)[None, :] >= keep[:, None]
    arrays = [np.where(cols, np.nan, a) for a in (book.bid_px, book.bid_sz, book.ask_px, book.ask_sz)]
    return Book(book.ts_ns, *arrays, tz_aware=book.tz_aware, source="partial")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_equals_streaming_on_generated_books(seed: int) -> None:
    bars = generate_bars(700, seed=seed, freq="1h", tz="UTC" if seed == 1 else None)
    book = generate_book(bars, seed=seed + 10, levels=5, missing=0.15)
    if seed == 2:
        book = _partial(book, seed)
    pipe = _full_pipe(book)
    batch, stream = _both(pipe, bars)
    assert np.array_equal(np.isnan(batch), np.isnan(stream))
    assert np.nanmax(np.abs(batch - stream)) <= TOL
    book_cols = [pipe.names.index(n) for n in pipe.book_features]
    stale = np.isnan(batch[30:, book_cols[0]]).mean()
    assert 0.05 < stale < 0.3  # the bars without their own snapshot: the previous one is 1 h old > 30 min


def test_no_look_ahead_by_truncation_and_by_changing_the_future() -> None:
    bars = generate_bars(400, seed=5, freq="1h")
    book = generate_book(bars, seed=6, levels=5, missing=0.1)
    full_batch, full_stream = _both(_full_pipe(book), bars)
    for k in (50, 137, 399):
        cut = bars.iloc[:k]
        t = cut.index[-1].value
        # later snapshots replaced by a wildly different (still valid) book
        later = book.ts_ns > t
        shock = [a.copy() for a in (book.bid_px, book.bid_sz, book.ask_px, book.ask_sz)]
        shock[0][later] *= 0.5
        shock[1][later] *= 7.0
        shock[3][later] *= 0.1
        changed = Book(book.ts_ns, *shock, tz_aware=False, source="changed")
        trunc = Book(book.ts_ns[~later], *(a[~later] for a in (book.bid_px, book.bid_sz, book.ask_px, book.ask_sz)),
                     tz_aware=False, source="truncated")
        for variant in (changed, trunc):
            b, s = _both(_full_pipe(variant), cut)
            np.testing.assert_array_equal(b, full_batch[:k])
            np.testing.assert_array_equal(s, full_stream[:k])


def test_streaming_takes_pushed_snapshots_as_a_live_feed(book: Book) -> None:
    from aitrader.features.book import BookFeatures

    specs = [_registry(60.0).spec(n) for n in NAMES]
    live = BookFeatures(specs, tz_aware=False)
    rows = []
    bars = _bars()
    pushed = 0
    for ts, close in zip(bars.index, CLOSES, strict=True):
        while pushed < len(book) and book.ts_ns[pushed] <= ts.value:  # what a feed delivers before the close
            i = pushed
            live.push(int(book.ts_ns[i]), book.bid_px[i].tolist(), book.bid_sz[i].tolist(), book.ask_px[i].tolist(),
                      book.ask_sz[i].tolist())
            pushed += 1
        rows.append(live.on_bar(ts.value, close).copy())
    np.testing.assert_allclose(np.array(rows)[1:], np.array([B, NAN, C, NAN]), atol=1e-9)
    with pytest.raises(DataError, match="not after the previous one"):
        live.push(int(book.ts_ns[0]), [1.0], [1.0], [2.0], [1.0])


def test_without_a_book_the_pipeline_refuses_clearly() -> None:
    pipe = FeaturePipeline(["ret_1", "book_imbalance_1"])
    assert pipe.needs_book and pipe.book_features == ["book_imbalance_1"]
    for call in (lambda: pipe.transform(_bars()), lambda: pipe.stream()):
        with pytest.raises(FeatureError, match=r"order-book features \(book_imbalance_1\) need depth-of-market "
                                               r"snapshots; pass --book SYMBOL=PATH"):
            call()
    assert not FeaturePipeline(["ret_1"]).needs_book


def test_contract_records_the_book_input_and_round_trips(book: Book) -> None:
    pipe = FeaturePipeline(["ret_1", "book_spread_bps"])
    contract = pipe.contract()
    assert contract["inputs"] == ["bars", "book"]
    assert "inputs" not in FeaturePipeline(["ret_1"]).contract()  # bar-only contracts are unchanged
    again = FeaturePipeline.from_contract(contract)
    assert again.needs_book and again.spec_hash == pipe.spec_hash


def test_bars_and_book_must_agree_on_time_zones(book: Book) -> None:
    bars = _bars().tz_localize("UTC")
    pipe = FeaturePipeline(NAMES, _registry(60.0)).with_book(book)
    for call in (lambda: pipe.transform(bars), lambda: pipe.transform_streaming(bars)):
        with pytest.raises(DataError, match="the bars have a time zone and the order-book file has none"):
            call()


def test_book_kind_params_are_validated() -> None:
    from aitrader.features.kinds import KINDS, check_params

    assert check_params(KINDS["book_imbalance"], {"max_age": -1.0, "levels": 0}) == [
        "max_age: must be >= 0, got -1.0", "levels: must be >= 1, got 0"]
    assert check_params(KINDS["book_mid"], {"max_age": 1, "relative_to": "open"})[0].startswith(
        "relative_to: must be one of none, close")


def test_book_options_and_symbol_lookup(tmp_path: Path) -> None:
    from aitrader.errors import ConfigError
    from aitrader.features.book import book_for, parse_book_options

    assert parse_book_options(None) is None
    assert parse_book_options(["b.jsonl"]) == "b.jsonl"
    assert parse_book_options(["AAPL=a.jsonl", "MSFT=m.csv"]) == {"AAPL": "a.jsonl", "MSFT": "m.csv"}
    with pytest.raises(ConfigError, match="--book aapl=b.jsonl: aapl is given twice"):
        parse_book_options(["AAPL=a.jsonl", "aapl=b.jsonl"])
    with pytest.raises(ConfigError, match="each must be SYMBOL=PATH"):
        parse_book_options(["a.jsonl", "MSFT=m.csv"])
    odd = tmp_path / "x=y.csv"  # an existing file whose name has '=' is a path, not a pair
    odd.write_text(BOOK_CSV)
    assert parse_book_options([str(odd)]) == str(odd)
    assert len(book_for({"syn": str(odd)}, "SYN", ["f"], where="--book")) == 3  # symbols match case-insensitively
    with pytest.raises(FeatureError, match=r"snapshots for SYN, but --book names only AAPL; pass --book SYN=PATH"):
        book_for({"AAPL": str(odd)}, "SYN", ["f"], where="--book")


def test_the_engine_stamps_parse_as_pandas_parses_them() -> None:
    from aitrader.features.book import _stamp_ns
    from aitrader.trading.sources import iso_strings

    ns = np.random.default_rng(0).integers(0, 4 * 10**18, 500)
    for stamps in (ns, ns - ns % 10**9):  # with and without sub-second parts
        for tz in (None, "UTC"):
            idx = pd.DatetimeIndex(stamps.astype("datetime64[ns]"), tz=tz)
            text, _ = iso_strings(idx)
            expected = [pd.Timestamp(t).tz_convert("UTC").value if tz else pd.Timestamp(t).value for t in text]
            assert [_stamp_ns(t, tz is not None, "x") for t in text] == expected
    assert _stamp_ns("2024-01-02T05:00:00-05:00", True, "x") == pd.Timestamp("2024-01-02T10:00:00Z").value
    assert _stamp_ns(pd.Timestamp("2024-01-02"), False, "x") == pd.Timestamp("2024-01-02").value
