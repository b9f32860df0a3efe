"""Compiled-tree backends side by side: lleaves and treelite against ONNX and the native libraries.

For a 200-tree LightGBM (num_leaves 15, the trainer's default shape) and a 200-tree XGBoost (depth 4)
on 25 synthetic features, in one run, each with the machine's load beside it:

- compile seconds (the whole ``aitrader.models.compiled.compile_model``: codegen, optimisation, gcc);
- the library's size;
- single-row p50/p99 microseconds of ``ModelRunner.predict_one`` (the streaming path);
- batch rows/s of ``ModelRunner.predict_batch`` on 100k rows (the replay's batch route), one thread;
- parity against the native library on 20k held-out rows: max |diff| and max |diff| / the spread of the
  native predictions (the ONNX parity measure; deploy's tolerance is 1e-3).

The default order of ``--backend auto`` (``aitrader.models.compiled.DEFAULT_ORDER``) follows these figures.

    .venv/bin/python scripts/bench/compiled.py [--calls 20000] [--batch 100000] [--trees 200]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

N_FEATURES = 25


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"[load {one:.1f}/{five:.1f} on {os.cpu_count()} cores]"


def single_row(fn: Any, rows: np.ndarray, calls: int) -> tuple[float, float]:
    """p50 and p99 microseconds of fn(row), cycling through real rows after a warm-up."""
    n = rows.shape[0]
    for i in range(min(2000, calls)):
        fn(rows[i % n])
    times = np.empty(calls, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(calls):
        row = rows[i % n]
        t0 = clock()
        fn(row)
        times[i] = clock() - t0
    return float(np.percentile(times, 50)) / 1e3, float(np.percentile(times, 99)) / 1e3


def batch_rate(fn: Any, X: np.ndarray, repeats: int = 3) -> float:
    fn(X[:1000])
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(X)
        best = min(best, time.perf_counter() - t0)
    return X.shape[0] / best


def build(tmp: Path, kind: str, trees: int) -> tuple[Any, Path, dict[str, Any]]:
    from aitrader.models import create_model
    from aitrader.models.onnx import export_onnx

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, N_FEATURES))
    y = X[:, 0] * 0.5 - X[:, 1] * X[:, 2] * 0.3 + rng.normal(size=X.shape[0])
    params = {"n_estimators": trees, "num_leaves": 15} if kind == "lightgbm" else {"n_estimators": trees}
    model = create_model(kind, params=params).fit(X, y)
    folder = tmp / kind
    meta = model.save(folder)
    export_onnx(model, folder / "model.onnx")
    meta["files"]["onnx"] = "model.onnx"
    return model, folder, {"model": meta, "features": {"names": list(model.feature_names_in_)}}


def main() -> None:
    from aitrader.models.compiled import DEFAULT_ORDER, KINDS, compile_model, load_library
    from aitrader.models.onnx import parity_scale
    from aitrader.models.runner import ModelRunner

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="single-row calls per engine")
    parser.add_argument("--batch", type=int, default=100_000, help="rows of the batch figure")
    parser.add_argument("--trees", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    X = rng.normal(size=(args.batch, N_FEATURES))
    check = X[:20_000]
    print(f"{args.trees}-tree models, {N_FEATURES} features; single row = ModelRunner.predict_one, "
          f"batch = predict_batch on {args.batch:,} rows, 1 thread  {load()}")
    print(f"{'model':9} {'backend':9} {'compile s':>9} {'lib KB':>7} {'p50 us':>7} {'p99 us':>7} "
          f"{'batch rows/s':>13} {'max|diff|':>10} {'/spread':>8}  load")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        for kind in ("lightgbm", "xgboost"):
            model, folder, manifest = build(tmp, kind, args.trees)
            native = ModelRunner.from_model(model)
            reference = native.predict_batch(check)
            scale = parity_scale(reference)
            runners: list[tuple[str, Any, float | None, int | None]] = [
                ("native", native, None, None),
                ("onnx", ModelRunner.from_artifact(folder, manifest, prefer="onnx"), None, None)]
            for backend in DEFAULT_ORDER:
                if kind not in KINDS[backend]:
                    continue
                t0 = time.perf_counter()
                record = compile_model(backend, kind, "regression", folder / manifest["model"]["files"]["native"],
                                       tmp / f"{kind}-{backend}")
                seconds = time.perf_counter() - t0
                predictor = load_library(tmp / f"{kind}-{backend}", record, N_FEATURES)
                runners.append((backend, ModelRunner.from_compiled(predictor, task="regression",
                                                                   feature_names=manifest["features"]["names"]),
                                seconds, int(record["bytes"])))
            for name, runner, seconds, size in runners:
                p50, p99 = single_row(runner.predict_one, X, args.calls)
                rate = batch_rate(runner.predict_batch, X)
                diff = float(np.max(np.abs(runner.predict_batch(check) - reference)))
                comp = f"{seconds:9.2f}" if seconds is not None else f"{'-':>9}"
                kb = f"{size / 1024:7.0f}" if size is not None else f"{'-':>7}"
                print(f"{kind:9} {name:9} {comp} {kb} {p50:7.2f} {p99:7.2f} {rate:13,.0f} {diff:10.2e} "
                      f"{diff / scale:8.1e}  {load()}")


if __name__ == "__main__":
    main()
