"""``aitrader features build``: bars file -> feature parquet, written atomically."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from aitrader.errors import DataError, FeatureError
from aitrader.features.pipeline import FeaturePipeline
from aitrader.features.registry import FeatureRegistry

log = logging.getLogger(__name__)

Mode = Literal["batch", "streaming"]


def build_features(data: str | Path, out: str | Path, *, names: list[str] | None = None, mode: Mode = "batch",
                   symbol: str | None = None, registry_path: str | Path | None = None,
                   repair: bool = False) -> dict[str, Any]:
    """Compute features over a bar file and write them to ``out`` (parquet, index ``timestamp``).

    ``mode="streaming"`` runs the streaming evaluator bar by bar; it writes the same columns and
    (to float rounding) the same values as ``"batch"``. ``repair`` loads the bars as
    ``aitrader data check --repair`` would (bad rows dropped, sorted, duplicates collapsed).
    Returns a summary for the CLI.
    """
    from aitrader.data import load_bars

    if mode not in ("batch", "streaming"):
        raise FeatureError(f"unknown mode {mode!r}; expected batch or streaming")
    target = Path(out)
    if target.suffix.lower() != ".parquet":
        raise FeatureError(f"output {target} must end in .parquet; pass e.g. --out features.parquet")
    if not target.parent.is_dir():
        raise FeatureError(f"output folder {target.parent} does not exist; create it first")
    pipeline = FeaturePipeline(names, FeatureRegistry.load(registry_path))
    bars = load_bars(data, symbol=symbol, repair=repair)
    if len(bars) == 0:
        raise DataError(f"{data}: no bars to compute features from")
    log.info("computing %d features (%s, warm-up %d bars) over %d bars", len(pipeline.names), mode,
             pipeline.warmup, len(bars))
    started = time.perf_counter()
    frame = pipeline.transform(bars) if mode == "batch" else pipeline.transform_streaming(bars)
    seconds = time.perf_counter() - started
    frame.index.name = "timestamp"
    # Write next to the target, then rename: a failure never leaves a half-written file behind.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        frame.to_parquet(tmp, engine="pyarrow")
        tmp.replace(target)
    except OSError as exc:
        raise FeatureError(f"cannot write {target}: {exc.strerror}; check the path and permissions") from exc
    finally:
        tmp.unlink(missing_ok=True)
    ready = int(frame.notna().all(axis=1).sum())
    log.info("wrote %s: %d rows x %d features in %.2f s (spec hash %s)", target, len(frame), len(pipeline.names),
             seconds, pipeline.spec_hash[:12])
    return {"out": str(target), "data": str(data), "symbol": bars.attrs.get("symbol"), "mode": mode,
            "rows": len(frame), "repaired_rows": int(bars.attrs.get("repaired_rows", 0)), "complete_rows": ready,
            "features": pipeline.names, "warmup": pipeline.warmup,
            "spec_hash": pipeline.spec_hash, "seconds": round(seconds, 4),
            "bars_per_second": round(len(frame) / seconds) if seconds > 0 else None}
