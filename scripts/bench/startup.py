"""Benchmark: start-up before the first bar (issue 11): load and verify a model, and short commands.

Each figure is a fresh interpreter (``--repeat`` times; the median and the best are printed, with
the machine's load average): the set-up deploys a 50-tree LightGBM with its ONNX export in a temp
registry, as ``scripts/bench/scale.py`` does. Measured:

* ``import``: ``python -c "import aitrader.registry"``, the floor every command pays;
* ``load+verify``: inside the child, ``Registry(root).load(name)`` (SHA-256 of every file, trust
  check, ONNX session) timed with ``perf_counter`` from before the import of ``aitrader.registry``;
  the child also reports whether scikit-learn / scipy / lightgbm got imported (they should not: the
  runner is ONNX);
* ``status``: the whole ``aitrader status --json`` command on a small finished run, wall time.

Usage: .venv/bin/python scripts/bench/startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

LOAD = """
import json, sys, time
t0 = time.perf_counter()
from aitrader.registry import Registry
loaded = Registry({root!r}).load("syn_lgbm")
seconds = time.perf_counter() - t0
print(json.dumps({{"seconds": seconds, "backend": loaded.runner.backend,
                  "heavy": [m for m in ("sklearn", "scipy", "lightgbm", "pandas") if m in sys.modules]}}))
"""


def wall(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return time.perf_counter() - t0, out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    import scale

    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="aitrader-startup-") as tmp:
        work = Path(tmp)
        scale.prepare(work, [2000], [])
        from aitrader.trading.service import paper_trade

        paper_trade(config_path=str(work / "trading.yaml"), data=[str(work / "bars_2000.parquet")], run_id="s1",
                    registry_root=str(work / "models"), runs_dir=str(work / "runs"))
        rows: dict[str, list[float]] = {"import aitrader.registry": [], "load+verify (in child)": [],
                                        "status --json (whole command)": []}
        heavy: list[str] = []
        backend = ""
        cli = [sys.executable, "-m", "aitrader.cli.main", "status", "s1", "--runs-dir", str(work / "runs"), "--json"]
        for _ in range(args.repeat):
            rows["import aitrader.registry"].append(wall([sys.executable, "-c", "import aitrader.registry"])[0])
            _, out = wall([sys.executable, "-c", LOAD.format(root=str(work / "models"))])
            doc = json.loads(out.strip().splitlines()[-1])
            rows["load+verify (in child)"].append(doc["seconds"])
            heavy, backend = doc["heavy"], doc["backend"]
            rows["status --json (whole command)"].append(wall(cli)[0])
    load1 = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average before {load0[0]:.2f}, after {load1[0]:.2f}")
    print(f"{'what':<32} {'median s':>9} {'best s':>8}")
    for what, values in rows.items():
        print(f"{what:<32} {statistics.median(values):>9.3f} {min(values):>8.3f}")
    print(f"runner backend: {backend}; heavy modules imported by load+verify: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
