"""features build in chunks (issue 11): bit-identical to the whole-array batch evaluation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aitrader.data.synthetic import generate_bars
from aitrader.features import FeaturePipeline, FeatureRegistry, batch
from aitrader.features.build import build_features
from aitrader.features.kinds import BOOK_KINDS, KINDS
from aitrader.features.pipeline import validate_bars

REGISTRY = FeatureRegistry.load()
# fitted: not in `features build`; book kinds: test_features_book.py
ALL = [n for n in REGISTRY.names()
       if not KINDS[REGISTRY.spec(n).kind].fitted and REGISTRY.spec(n).kind not in BOOK_KINDS]


def _bars(n: int) -> pd.DataFrame:
    df = generate_bars(n, seed=4, start_price=300.0, volatility=0.02, freq="1min")
    df.iloc[700:900, df.columns.get_indexer(["open", "high", "low", "close"])] = 123.0  # a flat stretch
    return df


def _whole_and_chunks(names: list[str], df: pd.DataFrame, chunk: int) -> tuple[np.ndarray, list[int], np.ndarray]:
    pipe = FeaturePipeline(names, REGISTRY)
    arrays = validate_bars(df)
    whole = batch.compute(pipe.specs, *arrays)  # the oracle: the unchunked evaluator
    parts = list(batch.compute_chunked(pipe.specs, *arrays, chunk=chunk))
    return whole, [s for s, _ in parts], np.vstack([m for _, m in parts])


def test_every_feature_chunked_is_bit_identical_to_the_whole_evaluation() -> None:
    df = _bars(9000)
    whole, starts, chunked = _whole_and_chunks(ALL, df, chunk=1)  # the smallest chunk allowed
    assert len(starts) >= 3  # boundaries crossed, recursions carried over more than once
    np.testing.assert_array_equal(chunked, whole)


@pytest.mark.parametrize("chunk", [2500, 4096, 100_000])
def test_chunk_sizes_that_do_not_divide_the_series(chunk: int) -> None:
    df = _bars(7777)
    whole, starts, chunked = _whole_and_chunks(ALL, df, chunk=chunk)
    assert starts[0] == 0 and chunked.shape == whole.shape
    np.testing.assert_array_equal(chunked, whole)


def test_features_build_in_chunks_writes_the_unchunked_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    df = _bars(6000)
    data = tmp_path / "bars.parquet"
    df.rename_axis("timestamp").to_parquet(data)
    expected = FeaturePipeline(None, REGISTRY).transform(df)  # the unchunked frame
    expected.index.name = "timestamp"
    monkeypatch.setattr("aitrader.features.build.BUILD_CHUNK", 1)
    summary = build_features(data, tmp_path / "out.parquet")
    got = pd.read_parquet(tmp_path / "out.parquet")
    pd.testing.assert_frame_equal(got, expected, check_exact=True, check_freq=False)
    assert summary["rows"] == 6000 and summary["complete_rows"] == int(expected.notna().all(axis=1).sum())


@pytest.mark.parametrize("read_rows", [7, 1000])
def test_features_build_from_blocks_of_the_file_writes_the_whole_evaluation(
        tmp_path, monkeypatch: pytest.MonkeyPatch, read_rows: int) -> None:
    """``features build`` reads the bars in blocks (aitrader.data.stream): blocks of any size give the
    file the whole-frame evaluation gives, and the bars are never held whole (the loader is not called)."""
    import aitrader.data.loader as loader
    from aitrader.data import stream

    df = _bars(3000)
    data = tmp_path / "bars.csv"
    df.rename_axis("timestamp").to_csv(data)
    expected = FeaturePipeline(None, REGISTRY).transform(df)
    expected.index.name = "timestamp"
    monkeypatch.setattr(stream, "READ_ROWS", read_rows)

    def no_whole_load(*a: object, **k: object) -> None:
        raise AssertionError("the bars were loaded whole")

    monkeypatch.setattr(loader, "load_bars", no_whole_load)
    monkeypatch.setattr(stream, "load_bars", no_whole_load)
    summary = build_features(data, tmp_path / "out.parquet")
    got = pd.read_parquet(tmp_path / "out.parquet")
    pd.testing.assert_frame_equal(got, expected, check_exact=True, check_freq=False)
    assert summary["rows"] == 3000
