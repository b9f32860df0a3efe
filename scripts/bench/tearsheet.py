"""Benchmark of the tearsheet: seconds to write the HTML report of a long run.

A synthetic run of ``--bars`` 5-minute bars on two symbols (an equity curve, a fill every 30 bars,
one prediction per bar with its outcome) is written as a ledger by the schema in
docs/architecture.md, then ``aitrader.monitoring.tearsheet.write_tearsheet`` renders it with the
bars (no manifest: no importance or drift chart). Prints the seconds and the report's size.

    PYTHONPATH=. python scripts/bench/tearsheet.py --bars 60000 200000
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np


def write_run(run: Path, n: int) -> dict:
    from aitrader.data.synthetic import generate_bars

    bars = {"AAA": generate_bars(n, seed=1, start="2024-01-01", freq="5min"),
            "BBB": generate_bars(n, seed=2, start="2024-01-01", freq="5min", start_price=40)}
    stamps = [t.isoformat() for t in bars["AAA"].index]
    rng = np.random.default_rng(0)
    equity = 100_000 * np.cumprod(1 + rng.normal(1e-5, 8e-4, n))
    run.mkdir(parents=True)
    conn = sqlite3.connect(run / "ledger.db")
    conn.executescript("""
        CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
        CREATE TABLE equity(bar_index INTEGER PRIMARY KEY, ts TEXT, cash REAL, equity REAL);
        CREATE TABLE fills(id INTEGER PRIMARY KEY, order_id INTEGER, ts TEXT, symbol TEXT, side TEXT,
                           quantity REAL, price REAL, commission REAL, slippage REAL);
        CREATE TABLE predictions(id INTEGER PRIMARY KEY, ts TEXT, bar_index INTEGER, symbol TEXT, model_id TEXT,
                                 digest TEXT, prediction REAL, confidence REAL, source TEXT, latency_us REAL,
                                 features TEXT, outcome REAL, outcome_ts TEXT, in_sample INTEGER);""")
    meta = {"run_id": run.name, "status": "finished",
            "config": {"ml_trading": {"execution": {"initial_cash": 100_000.0}}},
            "models": [{"model_id": "a:v1", "symbol": "AAA"}, {"model_id": "b:v1", "symbol": "BBB"}]}
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
    conn.executemany("INSERT INTO equity VALUES (?, ?, 0, ?)", zip(range(n), stamps, equity.tolist(), strict=True))
    fills = []
    for k, i in enumerate(range(100, n - 1, 30)):
        sym = "AAA" if k % 4 < 2 else "BBB"
        fills.append((stamps[i], sym, "buy" if k % 2 == 0 else "sell", 10.0, float(bars[sym]["close"].iloc[i])))
    conn.executemany("INSERT INTO fills (ts, symbol, side, quantity, price, commission, slippage) "
                     "VALUES (?, ?, ?, ?, ?, 0.1, 0.2)", fills)
    conn.executemany("INSERT INTO predictions (ts, bar_index, symbol, model_id, prediction, source, outcome) "
                     "VALUES (?, ?, ?, ?, ?, 'model', ?)",
                     [(stamps[i], i, "AAA" if i % 2 else "BBB", "a:v1" if i % 2 else "b:v1",
                       float(rng.normal()), float(rng.normal())) for i in range(100, n)])
    conn.commit()
    conn.close()
    return bars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, nargs="+", default=[60_000])
    args = parser.parse_args()
    from aitrader.monitoring.tearsheet import write_tearsheet

    with tempfile.TemporaryDirectory() as tmp:
        for n in args.bars:
            run = Path(tmp) / f"run{n}"
            bars = write_run(run, n)
            t0 = time.perf_counter()
            out = write_tearsheet(Path(tmp) / f"{n}.html", run_dir=run, bars=bars)
            secs = time.perf_counter() - t0
            print(f"{n:>9,} bars: {secs:6.2f} s, report {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
