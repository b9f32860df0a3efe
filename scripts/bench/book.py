"""Benchmark of the order-book features (a benchmark, not a test).

Prints, over one run of synthetic one-minute bars with ``--per-bar`` snapshots of 5 levels each:
  * reading: snapshots per second of ``load_book`` for the JSON-lines and the parquet file;
  * batch: bars per second of ``FeaturePipeline.transform`` for the seven shipped book features,
    and of the peer ``pandas.merge_asof`` aligning the same snapshots to the bars (alignment only,
    no feature arithmetic) with the ratio;
  * streaming: microseconds per bar of the book pipeline's ``update`` fed ISO stamps as the engine
    does, next to a bar-only pipeline of the same size (``ret_1 .. ret_60, rsi_14``) with the ratio;
  * the largest |batch - streaming| difference (must be <= 1e-7);
  * the machine's load average beside the figures (the machine may be shared).

Usage: .venv/bin/python scripts/bench/book.py [--bars N] [--per-bar K] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aitrader.data.book import load_book, write_book
from aitrader.data.synthetic import generate_bars, generate_book
from aitrader.features import FeaturePipeline, FeatureRegistry
from aitrader.trading.sources import iso_strings

BOOK = ["book_spread_bps", "book_mid", "book_mid_gap_bps", "book_microprice_bps", "book_imbalance_1",
        "book_imbalance_5", "book_depth_change_5"]
BARS_ONLY = ["ret_1", "ret_5", "ret_10", "ret_15", "ret_60", "rsi_14", "sma_ratio_10"]


def best(fn: object, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return min(times)


def stream_us(pipe: FeaturePipeline, bars: pd.DataFrame) -> float:
    stamps, _ = iso_strings(pd.DatetimeIndex(bars.index))
    cols = [bars[k].to_numpy().tolist() for k in ("open", "high", "low", "close", "volume")]
    update = pipe.stream().update
    t0 = time.perf_counter()
    for ts, a, b, x, y, z in zip(stamps, *cols, strict=True):
        update(ts, a, b, x, y, z)
    return (time.perf_counter() - t0) / len(bars) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=200_000, help="synthetic one-minute bars (default 200,000)")
    parser.add_argument("--per-bar", type=int, default=4, help="snapshots per bar (default 4)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    bars = generate_bars(args.bars, seed=42, freq="1min")
    book = generate_book(bars, seed=43, levels=5, per_bar=args.per_bar, missing=0.02)
    registry = FeatureRegistry.load()
    with tempfile.TemporaryDirectory() as tmp:
        jsonl, parquet = write_book(book, Path(tmp) / "b.jsonl"), write_book(book, Path(tmp) / "b.parquet")
        read_jsonl_s = best(lambda: load_book(jsonl), 1)
        read_parquet_s = best(lambda: load_book(parquet))

    pipe = FeaturePipeline(BOOK, registry).with_book(book)
    batch_s = best(lambda: pipe.transform(bars))
    frame = book.to_frame().reset_index()
    left = pd.DataFrame({"timestamp": bars.index})
    merge_s = best(lambda: pd.merge_asof(left, frame, on="timestamp", direction="backward",
                                         tolerance=pd.Timedelta(seconds=300)))
    n_stream = min(args.bars, 50_000)
    book_us = stream_us(pipe, bars.iloc[:n_stream])
    bar_us = stream_us(FeaturePipeline(BARS_ONLY, registry), bars.iloc[:n_stream])
    parity = float(np.nanmax(np.abs(pipe.transform(bars.iloc[:n_stream]).to_numpy()
                                    - pipe.transform_streaming(bars.iloc[:n_stream]).to_numpy())))
    result = {
        "bars": args.bars, "snapshots": len(book), "levels": book.levels,
        "read_jsonl_snapshots_per_s": len(book) / read_jsonl_s,
        "read_parquet_snapshots_per_s": len(book) / read_parquet_s,
        "batch_bars_per_s": args.bars / batch_s, "merge_asof_bars_per_s": args.bars / merge_s,
        "batch_vs_merge_asof": merge_s / batch_s,
        "stream_us_per_bar": book_us, "stream_bar_only_us_per_bar": bar_us,
        "stream_book_vs_bar_only": book_us / bar_us, "stream_bars": n_stream,
        "max_abs_batch_minus_streaming": parity,
        "load_avg_1m": [load_before, os.getloadavg()[0]], "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    load = f"(load {load_before:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)"
    print(f"order-book features: {args.bars:,} bars, {len(book):,} snapshots of {book.levels} levels {load}")
    print(f"  read        jsonl {result['read_jsonl_snapshots_per_s']:>12,.0f} snapshots/s   "
          f"parquet {result['read_parquet_snapshots_per_s']:>12,.0f} snapshots/s")
    print(f"  batch       {result['batch_bars_per_s']:>12,.0f} bars/s (7 features)   "
          f"peer pandas.merge_asof (alignment only) {result['merge_asof_bars_per_s']:>12,.0f} bars/s   "
          f"ratio {result['batch_vs_merge_asof']:.2f}x")
    print(f"  streaming   {book_us:.2f} us/bar (7 book features)   bar-only pipeline of 7 features {bar_us:.2f} us/bar"
          f"   ratio {book_us / bar_us:.2f}x   ({n_stream:,} bars)")
    print(f"  parity      max |batch - streaming| = {parity:.3g} (must be <= 1e-7)")


if __name__ == "__main__":
    main()
