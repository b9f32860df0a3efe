"""``aitrader features build``: bars file -> feature parquet, written atomically."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from aitrader.data.stream import BarFile
from aitrader.errors import DataError, FeatureError
from aitrader.features.pipeline import FeaturePipeline
from aitrader.features.registry import FeatureRegistry

log = logging.getLogger(__name__)

Mode = Literal["batch", "streaming"]

#: Rows computed and written (one parquet row group) at a time in batch mode: memory stays bounded
#: by the chunk (a whole 5M-bar evaluation peaked at ~3 GB and slowed down on page faults).
BUILD_CHUNK = 262_144


def build_features(data: str | Path, out: str | Path, *, names: list[str] | None = None, mode: Mode = "batch",
                   symbol: str | None = None, registry_path: str | Path | None = None,
                   repair: bool = False, book: str | dict[str, str] | None = None) -> dict[str, Any]:
    """Compute features over a bar file and write them to ``out`` (parquet, index ``timestamp``).

    ``mode="streaming"`` runs the streaming evaluator bar by bar; it writes the same columns and
    (to float rounding) the same values as ``"batch"``. ``repair`` loads the bars as
    ``aitrader data check --repair`` would (bad rows dropped, sorted, duplicates collapsed).
    ``book``: order-book snapshots for book features (``--book``; docs/orderbook.md); such a
    pipeline is evaluated whole (not in chunks). Returns a summary for the CLI.
    """
    from aitrader.data import load_bars
    from aitrader.data.stream import scan_bars

    if mode not in ("batch", "streaming"):
        raise FeatureError(f"unknown mode {mode!r}; expected batch or streaming")
    target = Path(out)
    if target.suffix.lower() != ".parquet":
        raise FeatureError(f"output {target} must end in .parquet; pass e.g. --out features.parquet")
    if not target.parent.is_dir():
        raise FeatureError(f"output folder {target.parent} does not exist; create it first")
    pipeline = FeaturePipeline(names, FeatureRegistry.load(registry_path))
    if pipeline.fitted_specs:
        raise FeatureError(f"{', '.join(s.name for s in pipeline.fitted_specs)}: fitted features learn their "
                           "parameters at train time and live in a model's artifact; `features build` computes "
                           "plain features only: leave them out of --features")
    # Without repair the bars are read in blocks (only their stamps held: data.stream); a repair sorts and
    # collapses the whole file, so it loads it whole.
    source = (BarFile.from_frame_of(load_bars(data, symbol=symbol, repair=True)) if repair
              else scan_bars(data, symbol=symbol))
    if len(source) == 0:
        raise DataError(f"{data}: no bars to compute features from")
    attrs = {"symbol": source.symbol, **source.attrs}
    if pipeline.needs_book:
        from aitrader.features.book import book_for

        pipeline.with_book(book_for(book, str(attrs.get("symbol") or ""), pipeline.book_features,
                                    where="--book"))
    log.info("computing %d features (%s, warm-up %d bars) over %d bars", len(pipeline.names), mode,
             pipeline.warmup, len(source))
    started = time.perf_counter()
    # Write next to the target, then rename: a failure never leaves a half-written file behind.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if mode == "batch" and not pipeline.needs_book:
            rows, ready = _write_chunked(pipeline, source, tmp)
        else:
            bars = source.frame()
            frame = pipeline.transform(bars) if mode == "batch" else pipeline.transform_streaming(bars)
            frame.index.name = "timestamp"
            frame.to_parquet(tmp, engine="pyarrow")
            rows, ready = len(frame), int(frame.notna().all(axis=1).sum())
        tmp.replace(target)
    except OSError as exc:
        raise FeatureError(f"cannot write {target}: {exc.strerror}; check the path and permissions") from exc
    finally:
        tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - started  # now includes writing the file
    log.info("wrote %s: %d rows x %d features in %.2f s (spec hash %s)", target, rows, len(pipeline.names),
             seconds, pipeline.spec_hash[:12])
    return {"out": str(target), "data": str(data), "symbol": attrs.get("symbol"), "mode": mode,
            "rows": rows, "repaired_rows": int(attrs.get("repaired_rows", 0)), "complete_rows": ready,
            "features": pipeline.names, "warmup": pipeline.warmup,
            "spec_hash": pipeline.spec_hash, "seconds": round(seconds, 4),
            "bars_per_second": round(rows / seconds) if seconds > 0 else None}


def _write_chunked(pipeline: FeaturePipeline, source: BarFile, path: Path) -> tuple[int, int]:
    """The batch features of ``source`` into the parquet file ``path``, :data:`BUILD_CHUNK` rows (one row
    group) at a time, the bars read block by block (``features.batch.compute_stream``): the same file
    content as writing ``pipeline.transform(bars)`` whole, in memory bounded by the chunk.
    Returns (rows, rows with every feature known)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aitrader.features import batch

    index = source.index
    writer: Any = None
    ready = 0
    try:
        blocks: Iterable[tuple[int, Any]] = source.blocks()  # (first row, (5, n) values): a row per column
        for start, values in batch.compute_stream(pipeline.specs, blocks, chunk=BUILD_CHUNK):
            part = pd.DataFrame(values, index=index[start:start + len(values)], columns=pipeline.names,
                                dtype="float64", copy=False)
            part.index.name = "timestamp"
            ready += int(part.notna().all(axis=1).sum())
            table = pa.Table.from_pandas(part, preserve_index=True)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return len(index), ready
