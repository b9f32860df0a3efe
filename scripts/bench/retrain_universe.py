"""Universe retrain throughput: jobs=1 vs jobs=2 (process pool) vs a Dask LocalCluster of 2 workers.

    PYTHONPATH=. .venv/bin/python scripts/bench/retrain_universe.py [--symbols 24] [--window 5000]
        [--trees 100] [--json out.json]

The universe: the equity (5) and crypto (10) files of ../shared/data plus seeded synthetic
symbols up to --symbols, each cut to the last --window bars (a retraining window). Each run
retrains the whole universe into a fresh registry (no champion: every challenger is registered),
one after the other in this one process, and prints per run:

* wall seconds, speedup over jobs=1 and efficiency (speedup / workers; the goal is >= 0.8 on an
  idle machine);
* CPU seconds per task (median of the workers' own process time; the first task of each worker
  also pays its imports, so the mean is shown too): this figure does not depend on how busy the
  machine is, so it is the one to size with;
* framework overhead per task: (workers x wall - the tasks' own wall time) / tasks, i.e. the time a
  worker was not inside a task (pool start-up, imports before the first task, waiting on the parent);
  and the parent's settle time per task (untar, champion/challenger scoring, register);
* peak memory (max RSS) per worker process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("AITRADER_SHARED_DATA", REPO.parent / "shared" / "data"))


def build_universe(root: Path, n_symbols: int, window: int, trees: int) -> Path:
    from aitrader.data.synthetic import generate_bars

    files = sorted((SHARED / "equity_1h").glob("*.csv.gz")) + sorted((SHARED / "crypto_5m").glob("*.csv.gz"))
    entries = [(f.name.split(".")[0], str(f)) for f in files][:n_symbols]
    (root / "bars").mkdir()
    for k in range(n_symbols - len(entries)):
        path = root / "bars" / f"SYN{k:02d}.csv"
        generate_bars(window + 500, seed=100 + k, freq="1h", signal=0.2).to_csv(path)
        entries.append((f"SYN{k:02d}", str(path)))
    (root / "train.yaml").write_text(
        f"model: {{kind: lightgbm, params: {{n_estimators: {trees}}}}}\n"
        f"split: {{n_folds: 5, embargo: 5, holdout: 0.2, min_train: 500, window: {window}}}\n"
    )
    lines = ["name: '{symbol}_bench'", "config: train.yaml", "symbols:"]
    lines += [f"  - {{symbol: {s}, data: '{p}'}}" for s, p in entries]
    (root / "universe.yaml").write_text("\n".join(lines) + "\n")
    return root / "universe.yaml"


def one_run(universe: Path, root: Path, label: str, executor: str, jobs: int) -> dict[str, Any]:
    from aitrader.monitoring.universe import run_universe

    started = time.perf_counter()
    summary = run_universe(universe, executor=executor, jobs=jobs, registry_root=root / f"reg_{label}",
                           lock_path=root / f"{label}.lock")
    wall = time.perf_counter() - started
    rows = [r for r in summary["results"] if r["outcome"] != "failed"]
    failed = [r for r in summary["results"] if r["outcome"] == "failed"]
    cpu = [r["cpu_s"] for r in rows]
    task_wall = sum(r["duration_s"] for r in rows)
    peak: dict[int, float] = {}
    for r in rows:
        peak[r["pid"]] = max(peak.get(r["pid"], 0.0), r["peak_rss_mb"] or 0.0)
    return {
        "label": label, "executor": executor, "workers": jobs, "tasks": len(summary["results"]),
        "failed": [f"{r['symbol']}: {r['error']}" for r in failed], "wall_s": wall,
        "cpu_s_per_task_median": statistics.median(cpu), "cpu_s_per_task_mean": statistics.fmean(cpu),
        "task_wall_s_median": statistics.median(r["duration_s"] for r in rows),
        "overhead_s_per_task": (jobs * wall - task_wall) / len(rows),
        "parent_settle_s_per_task": statistics.fmean(r["settle_s"] for r in rows),
        "parent_cpu_s_per_task_median": statistics.median(r["settle_cpu_s"] for r in rows),
        "peak_rss_mb_per_worker": max(peak.values()), "worker_processes": len(peak),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=24)
    ap.add_argument("--window", type=int, default=5000, help="bars per symbol (split.window)")
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"shared data not found at {SHARED}")
    with tempfile.TemporaryDirectory(prefix="aitrader-bench-universe-") as tmp:
        root = Path(tmp)
        universe = build_universe(root, args.symbols, args.window, args.trees)
        runs = [one_run(universe, root, "process_1", "process", 1), one_run(universe, root, "process_2", "process", 2),
                one_run(universe, root, "dask_local_2", "dask", 2)]
    base = runs[0]["wall_s"]
    print(f"{args.symbols} symbols, window {args.window} bars, lightgbm {args.trees} trees, 5 folds; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    head = ("run", "wall s", "speedup", "efficiency", "worker CPU s/task (median, mean)", "overhead s/task",
            "parent s/task (wall, CPU median)", "peak MB/worker")
    print(" | ".join(head))
    for r in runs:
        r["speedup"] = base / r["wall_s"]
        r["efficiency"] = r["speedup"] / r["workers"]
        print(f"{r['label']} | {r['wall_s']:.1f} | {r['speedup']:.2f}x | {r['efficiency']:.2f} | "
              f"{r['cpu_s_per_task_median']:.2f}, {r['cpu_s_per_task_mean']:.2f} | {r['overhead_s_per_task']:.2f} | "
              f"{r['parent_settle_s_per_task']:.2f}, {r['parent_cpu_s_per_task_median']:.2f} | "
              f"{r['peak_rss_mb_per_worker']:.0f}"
              + (f" | FAILED {r['failed']}" if r["failed"] else ""))
    worker = min(r["cpu_s_per_task_median"] for r in runs)
    parent = min(r["parent_cpu_s_per_task_median"] for r in runs)
    cpu = worker + parent
    print(f"sizing: {worker:.2f} worker + {parent:.2f} parent = {cpu:.2f} CPU-s per model -> "
          f"{3600 / cpu:.0f} models/hour/core; 500 symbols = {500 * cpu / 60:.1f} CPU-minutes; the parent is "
          f"serial, so more than {worker / parent:.1f} workers wait on it ({3600 / parent:.0f} models/hour at most)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
