"""Where a bar's time goes in ``paper-trade``'s loop: CPU microseconds per bar by stage, in one run.

The setup of ``paper_trade.py`` (a deployed 200-tree LightGBM, synthetic 1-minute bars, the ONNX
runner or ``--backend auto``), run in-process ``--repeat`` times on ``--bars`` bars; each stage is
timed on the loop thread's CPU clock (a shared machine's load moves the wall clock far more), and
the minimum and median over the runs are printed with the load average:

* ``loop``: ``Engine.run``, the whole loop, everything below included;
* ``ledger checkpoints``: ``Ledger.checkpoint`` (encoding the buffered rows, SQLite, COMMIT);
* ``predictions``: the batch route's model calls (``BatchFeed._predict_from``); on the streaming
  route they happen per bar inside the Python loop;
* ``features``: the batch route's chunked feature evaluation (``features.batch.compute_chunked``);
* ``garbage collector``: the collector's passes during the loop (``gc.callbacks``);
* ``python loop``: the rest: reading the steps, strategy, signal handler, risk, broker, events,
  handing rows to the ledger's buffers (on the streaming route also the streaming features and
  the per-bar model call).

``--profile`` adds a cProfile listing of one more run (its overhead inflates small functions).
Run it with ``PYTHONPATH`` on two checkouts back to back to compare them.

Usage: .venv/bin/python scripts/bench/loop_stages.py [--bars 120000] [--repeat 5] [--route batch] [--backend onnx]
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import gc
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import paper_trade as bench  # noqa: E402 - the same world as the whole-command benchmark

STAGES = ("loop", "ledger checkpoints", "predictions", "features", "garbage collector")


def instrument(spent: collections.Counter[str]) -> None:
    """Wrap the stages' functions so that each adds its thread CPU seconds to ``spent``."""
    from aitrader.features import batch as fbatch
    from aitrader.trading import batch, engine, ledger

    def timed(owner: Any, name: str, key: str) -> None:
        inner = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[key] += time.thread_time() - t0

        setattr(owner, name, wrapper)

    timed(engine.Engine, "run", "loop")
    timed(ledger.Ledger, "checkpoint", "ledger checkpoints")
    timed(batch.BatchFeed, "_predict_from", "predictions")
    chunked = fbatch.compute_chunked

    def compute_chunked(*args: Any, **kwargs: Any) -> Iterator[Any]:
        chunks = chunked(*args, **kwargs)
        while True:
            t0 = time.thread_time()
            item = next(chunks, None)
            spent["features"] += time.thread_time() - t0
            if item is None:
                return
            yield item

    fbatch.compute_chunked = compute_chunked  # batch.attach looks it up on the module at each call
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.thread_time()
        else:
            spent["garbage collector"] += time.thread_time() - started[0]

    gc.callbacks.append(on_gc)


def runner(w: dict[str, Any], n: int, route: str, backend: str) -> Callable[[], dict[str, Any]]:
    from aitrader.trading.service import paper_trade

    tmp: Path = w["tmp"]
    data = tmp / f"n{n}" / "SYN.csv"
    data.parent.mkdir(exist_ok=True)
    if not data.exists():
        w["bars"].iloc[:n].rename_axis("timestamp").to_csv(data)
    count = iter(range(10**9))

    def run() -> dict[str, Any]:
        return paper_trade(config_path=str(tmp / f"trading-{route}.yaml"), data=[str(data)],
                           registry_root=str(tmp / "models"), runs_dir=str(tmp / "runs"),
                           run_id=f"stages-{next(count)}", backend=backend)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=120_000)
    parser.add_argument("--train-bars", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs (min and median printed)")
    parser.add_argument("--route", choices=bench.ROUTES, default="batch")
    parser.add_argument("--backend", choices=bench.BACKENDS, default="onnx")
    parser.add_argument("--profile", action="store_true", help="also print cProfile's top functions of one run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        w = bench.world(Path(tmp_s), args.train_bars, args.bars)
        spent: collections.Counter[str] = collections.Counter()
        instrument(spent)
        run = runner(w, args.bars, args.route, args.backend)
        os.chdir(tmp_s)
        run()  # warm-up: imports, first-call allocations
        per_run: dict[str, list[float]] = collections.defaultdict(list)
        loads = []
        for _ in range(max(1, args.repeat)):
            spent.clear()
            summary = run()
            loads.append(os.getloadavg()[0])
            for key in STAGES:
                per_run[key].append(1e6 * spent[key] / args.bars)
            rest = spent["loop"] - sum(spent[k] for k in STAGES[1:])
            per_run["python loop"].append(1e6 * rest / args.bars)
        print(f"paper-trade loop, {args.route} route, {summary['runners']['syn_lgbm:v1']} runner, {args.bars:,} bars, "
              f"{summary['fills']:,} fills, {summary['predictions']:,} predictions; CPU us/bar over {args.repeat} runs "
              f"[load {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores]")
        for key, values in per_run.items():
            print(f"  {key:<20} min {min(values):6.2f}  median {statistics.median(values):6.2f}")
        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(run)
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
