"""Inference latency benchmark: single-row p50/p99 (us) and batch rows/s, in one table.

Engines on a 200-tree, depth-6 model with 20 features (synthetic data): native LightGBM
``Booster.predict``, native XGBoost ``inplace_predict``, the scikit-learn wrappers
(``LGBMRegressor.predict``, ``XGBRegressor.predict``), ONNX Runtime (``session.run``, 1 thread),
and aitrader's ModelRunner (ONNX backend and native backends). The last column is the
runner's p50 speed-up against each engine.

    .venv/bin/python scripts/bench/inference.py [--calls 20000] [--batch 100000] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

N_FEATURES = 20
N_TREES = 200


def single_row(fn: Callable[[np.ndarray], Any], rows: np.ndarray, calls: int) -> tuple[float, float]:
    """p50 and p99 latency in microseconds of fn(row), cycling through real rows."""
    n = rows.shape[0]
    for i in range(min(2000, calls)):  # warm-up: caches, lazy allocations
        fn(rows[i % n])
    times = np.empty(calls, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(calls):
        row = rows[i % n]
        t0 = clock()
        fn(row)
        times[i] = clock() - t0
    return float(np.percentile(times, 50)) / 1e3, float(np.percentile(times, 99)) / 1e3


def batch_rate(fn: Callable[[np.ndarray], Any], X: np.ndarray, repeats: int = 3) -> float:
    """Best-of-``repeats`` rows per second of fn(X)."""
    fn(X[:1000])
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(X)
        best = min(best, time.perf_counter() - t0)
    return X.shape[0] / best


def build(tmp: Path, seed: int) -> dict[str, Any]:
    import lightgbm as lgb
    import onnxruntime as ort
    import xgboost as xgb

    from aitrader.models import create_model
    from aitrader.models.onnx import export_onnx, onnx_parity
    from aitrader.models.runner import ModelRunner

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(20_000, N_FEATURES))
    y = X[:, 0] * 0.5 - X[:, 1] * X[:, 2] * 0.3 + rng.normal(size=X.shape[0])

    lgbm = create_model(
        "lightgbm",
        params={"n_estimators": N_TREES, "num_leaves": 63, "max_depth": 6, "min_child_samples": 20},
    ).fit(X, y)
    xgbm = create_model("xgboost", params={"n_estimators": N_TREES, "max_depth": 6}).fit(X, y)
    lgbm_dir, xgb_dir = tmp / "lgbm", tmp / "xgb"
    manifests = {}
    for model, d in ((lgbm, lgbm_dir), (xgbm, xgb_dir)):
        meta = model.save(d)
        export_onnx(model, d / "model.onnx")
        meta["files"]["onnx"] = "model.onnx"
        manifests[model.kind] = {"model": meta, "features": {"names": list(model.feature_names_in_)}}
    parity = {
        k: onnx_parity(m, d / "model.onnx", X[:5000])
        for k, m, d in (("lightgbm", lgbm, lgbm_dir), ("xgboost", xgbm, xgb_dir))
    }

    # The sklearn wrappers, as a user would train them (same hyper-parameters).
    lgb_wrapper = lgb.LGBMRegressor(
        n_estimators=N_TREES, num_leaves=63, max_depth=6, min_child_samples=20, n_jobs=1, verbose=-1
    ).fit(X, y)
    xgb_wrapper = xgb.XGBRegressor(n_estimators=N_TREES, max_depth=6, n_jobs=1, tree_method="hist").fit(X, y)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(lgbm_dir / "model.onnx"), sess_options=opts, providers=["CPUExecutionProvider"])
    return {
        "X": X,
        "lgbm": lgbm,
        "xgbm": xgbm,
        "lgb_wrapper": lgb_wrapper,
        "xgb_wrapper": xgb_wrapper,
        "session": session,
        "parity": parity,
        "runner_onnx": ModelRunner.from_artifact(lgbm_dir, manifests["lightgbm"], prefer="onnx"),
        "runner_onnx_xgb": ModelRunner.from_artifact(xgb_dir, manifests["xgboost"], prefer="onnx"),
        "runner_lgbm": ModelRunner.from_artifact(lgbm_dir, manifests["lightgbm"], prefer="native"),
        "runner_xgb": ModelRunner.from_artifact(xgb_dir, manifests["xgboost"], prefer="native"),
    }


def engines(m: dict[str, Any]) -> list[tuple[str, Callable[[np.ndarray], Any], Callable[[np.ndarray], Any]]]:
    """(name, single-row fn taking a 1-D float64 row, batch fn taking a float64 matrix)."""
    booster = m["lgbm"].booster_
    xbooster = m["xgbm"].booster_.copy()
    xbooster.set_param({"nthread": 1})
    session = m["session"]
    in_name = session.get_inputs()[0].name
    # What a careful user writes by hand: reshape the row, cast to float32, call run.
    return [
        (
            "lightgbm Booster.predict",
            lambda r: booster.predict(r.reshape(1, -1), num_threads=1),
            lambda X: booster.predict(X, num_threads=1),
        ),
        (
            "xgboost inplace_predict",
            lambda r: xbooster.inplace_predict(r.reshape(1, -1)),
            lambda X: xbooster.inplace_predict(X),
        ),
        (
            "LGBMRegressor.predict",
            lambda r: m["lgb_wrapper"].predict(r.reshape(1, -1)),
            lambda X: m["lgb_wrapper"].predict(X),
        ),
        (
            "XGBRegressor.predict",
            lambda r: m["xgb_wrapper"].predict(r.reshape(1, -1)),
            lambda X: m["xgb_wrapper"].predict(X),
        ),
        (
            "onnxruntime session.run",
            lambda r: session.run(None, {in_name: r.reshape(1, -1).astype(np.float32)}),
            lambda X: session.run(None, {in_name: X.astype(np.float32)}),
        ),
        ("runner onnx (lightgbm)", m["runner_onnx"].predict_one, m["runner_onnx"].predict_batch),
        ("runner onnx (xgboost)", m["runner_onnx_xgb"].predict_one, m["runner_onnx_xgb"].predict_batch),
        ("runner native lightgbm", m["runner_lgbm"].predict_one, m["runner_lgbm"].predict_batch),
        ("runner native xgboost", m["runner_xgb"].predict_one, m["runner_xgb"].predict_batch),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="single-row calls per engine")
    parser.add_argument("--batch", type=int, default=100_000, help="rows in the batch test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        m = build(Path(tmp), args.seed)
        rows = m["X"][:5000].copy()
        big = np.random.default_rng(args.seed + 1).normal(size=(args.batch, N_FEATURES))
        results = []
        for name, one, batch in engines(m):
            p50, p99 = single_row(one, rows, args.calls)
            results.append({"engine": name, "p50_us": p50, "p99_us": p99, "batch_rows_s": batch_rate(batch, big)})
    runner_p50 = next(r["p50_us"] for r in results if r["engine"] == "runner onnx (lightgbm)")
    for r in results:
        r["runner_speedup_p50"] = r["p50_us"] / runner_p50
    doc = {
        "model": f"{N_TREES} trees, depth 6, {N_FEATURES} features",
        "calls": args.calls,
        "batch_rows": args.batch,
        "onnx_parity": m["parity"],
        "results": results,
    }
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(
        f"{doc['model']}; {args.calls} single-row calls, batch of {args.batch} rows; "
        f"runner = ModelRunner ONNX backend on the LightGBM model"
    )
    print(f"{'engine':<28}{'p50 us':>10}{'p99 us':>10}{'batch rows/s':>15}{'runner x':>10}")
    for r in results:
        print(
            f"{r['engine']:<28}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}{r['batch_rows_s']:>15,.0f}"
            f"{r['runner_speedup_p50']:>10.2f}"
        )
    print("ONNX parity (first 5000 training rows):", json.dumps(m["parity"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
