"""Wall time of `aitrader train` (the library call) against bare LightGBM fits of the same matrices.

    .venv/bin/python scripts/bench/train.py [--rows 50000] [--folds 5] [--trees 200]

Prints these figures on the same data:
* the real command, ``aitrader train --data bars.csv`` in a child process (interpreter start,
  imports, CSV parsing and validation included) / one bare fit of the final training matrix: what
  a user waits for; it counts the n_folds + 1 fits that walk-forward evaluation needs by design;
* the library call / one bare fit (the same without process start and file loading);
* whole command / bare fits of exactly the same n_folds + 1 training matrices: the pipeline's
  overhead beyond fitting (features, splits, metrics, baselines, ONNX export and parity, manifest);
  the goal is <= 1.3x;
* the time breakdown (features, fits + scoring, artifact writing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from aitrader.config import TrainConfig, build_model
from aitrader.data.synthetic import generate_bars
from aitrader.models.boosters import LGBM_DEFAULTS
from aitrader.training.splits import purged_walk_forward
from aitrader.training.trainer import build_dataset, train


def bare_fit(X: np.ndarray, y: np.ndarray, params: dict, seed: int) -> float:
    # LightGBM's core accepts the wrapper names as aliases (subsample, reg_lambda, n_estimators...).
    core = {k: v for k, v in params.items() if k != "n_estimators"}
    core.update(objective="regression", seed=seed)
    start = time.perf_counter()
    lgb.train(core, lgb.Dataset(X, y, free_raw_data=True), num_boost_round=params["n_estimators"])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000, help="synthetic bars")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--trees", type=int, default=200)
    args = ap.parse_args()

    cfg = build_model(TrainConfig, {
        "target": {"horizon": 5},
        "model": {"kind": "lightgbm", "params": {"n_estimators": args.trees}, "random_state": 42},
        "split": {"n_folds": args.folds, "embargo": 5, "holdout": 0.2, "min_train": 2_000},
    })
    bars = generate_bars(args.rows, seed=0, freq="1h")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = train(cfg, bars=bars, out_dir=Path(tmp) / "art")
        total = time.perf_counter() - start
        command = cli_wall_time(cfg, bars, Path(tmp))

    data = build_dataset(cfg, bars)
    sp = cfg.split
    plan = purged_walk_forward(len(data.X), n_folds=sp.n_folds, horizon=cfg.target.horizon,
                               embargo=sp.embargo, holdout=sp.holdout, min_train=sp.min_train)
    X = data.X.to_numpy(dtype=np.float64)
    params = {**LGBM_DEFAULTS, **cfg.model.params}
    fits = [bare_fit(X[f.train], data.fwd[f.train], params, 42) for f in plan.folds]
    final = bare_fit(X[plan.final_train], data.fwd[plan.final_train], params, 42)
    bare_all = sum(fits) + final
    # The trainer fits the folds and the final model side by side on the machine's cores; the same
    # bare fits in the same layout isolate aitrader's own overhead from that parallelism.
    train_sets = [f.train for f in plan.folds] + [plan.final_train]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, min(len(os.sched_getaffinity(0)), len(train_sets)))) as pool:
        largest_first = sorted(train_sets, key=len, reverse=True)  # the trainer's order
        list(pool.map(lambda rows: bare_fit(X[rows], data.fwd[rows], params, 42), largest_first))
    bare_concurrent = time.perf_counter() - start

    t = result.timings
    print(f"matrix: {len(data.X)} rows x {X.shape[1]} features ({args.rows} bars), {args.trees} trees, "
          f"{args.folds} folds")
    print(f"aitrader train (command)      : {command:8.2f} s  (child process, --data bars.csv)")
    print(f"aitrader train (library call) : {total:8.2f} s  (features {t['features_s']:.2f}, "
          f"fits+scoring {t['fit_s']:.2f}, artifact+onnx {t['write_s']:.2f})")
    print(f"bare lightgbm.train, final    : {final:8.2f} s  -> command / one fit = {command / final:.2f}x, "
          f"library call / one fit = {total / final:.2f}x")
    print(f"bare lightgbm.train, {args.folds + 1} fits   : {bare_all:8.2f} s  one after another -> library call / "
          f"same fits = {total / bare_all:.2f}x, command / same fits = {command / bare_all:.2f}x")
    print(f"bare, same fits side by side  : {bare_concurrent:8.2f} s  as the trainer runs them -> library call / "
          f"same fits = {total / bare_concurrent:.2f}x  (goal <= 1.3x: aitrader's own overhead)")


def cli_wall_time(cfg: TrainConfig, bars: Any, tmp: Path) -> float:
    """Wall time of the real ``aitrader train`` on the bars written to a CSV file, config as YAML."""
    from aitrader.data import write_bars

    write_bars(bars, tmp / "bars.csv")
    (tmp / "train.yaml").write_text(json.dumps(cfg.model_dump()))  # JSON is valid YAML
    exe = Path(sys.executable).with_name("aitrader")
    cmd = [str(exe), "train", "-c", str(tmp / "train.yaml"), "--data", str(tmp / "bars.csv"),
           "--out", str(tmp / "cli_art"), "--json"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"aitrader train failed: {done.stderr.strip()}")
    json.loads(done.stdout)  # exactly one JSON document
    return wall


if __name__ == "__main__":
    main()
