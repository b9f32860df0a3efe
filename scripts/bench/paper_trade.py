"""Benchmark: aitrader's paper-trading engine vs backtrader on the same bars and precomputed signals.

Both engines replay the same bars with the same precomputed target positions (shares per bar),
market orders filled at the next bar's open with the same slippage and commission; the script
checks that they produce the same fills and the same final value to the cent, then prints bars/s
for each and the ratio.

What is timed, for aitrader: the library path behind ``aitrader paper-trade`` in this process, i.e.
``BarSeries.from_frame`` + ``replay_steps`` + ``run_session`` (ledger creation, the engine, every
SQLite write: orders, fills, the equity curve, cursors and state checkpoints every 2000 steps, then
the summary read back from the ledger). NOT timed: the Python/CLI process start-up, reading the
CSV, loading and verifying a model (the bars carry precomputed targets, no model runs). For
backtrader: Cerebro set-up, the feed and the run. Each engine runs ``--repeat`` times (after one
small warm-up run each); the best and the median are printed, the ratio from the bests and from
the medians. The machine may be shared: compare ratios from the same run only.

Then it measures the bar-to-order latency of the streaming path with a 200-tree LightGBM
(bar -> streaming features -> ONNX runner -> strategy -> signal handler -> order), p50/p99.

backtrader is NOT a dependency of aitrader; install it for this script only:

    .venv/bin/python -m pip install backtrader

Usage: .venv/bin/python scripts/bench/paper_trade.py [--bars 50000] [--repeat 3] [--latency-bars 3000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aitrader.config import TradingConfig
from aitrader.trading.engine import TargetSchedule
from aitrader.trading.ledger import connect
from aitrader.trading.session import RunOptions, run_session
from aitrader.trading.sources import BarSeries, replay_steps

COMMISSION_BPS = 1.0
SLIPPAGE_BPS = 2.0
CASH = 1_000_000.0
#: CPU seconds (this process, all threads) of each run: on a shared machine the wall-clock ratio
#: swings with the load, the CPU-time ratio much less.
CPU: dict[str, list[float]] = {"aitrader": [], "backtrader": []}


def make_bars(n: int, seed: int = 0) -> pd.DataFrame:
    """Random-walk bars whose open sits strictly inside [low, high] by more than the slippage,
    so backtrader's slip_match never caps a fill (the two engines then price fills identically)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0, 0.002, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0.001, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0.001, 0.01, n))
    idx = pd.date_range("2000-01-03", periods=n, freq="1h", name="timestamp")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": 1e6}, index=idx)


def make_targets(n: int, seed: int = 1) -> list[float]:
    """Target shares: a new random position in {-300..300} step 100 every ~10 bars."""
    rng = np.random.default_rng(seed)
    change = rng.random(n) < 0.1
    level = rng.integers(-3, 4, n) * 100.0
    out = np.empty(n)
    cur = 0.0
    for i in range(n):
        if change[i]:
            cur = float(level[i])
        out[i] = cur
    return out.tolist()


def config() -> TradingConfig:
    return TradingConfig.model_validate({"ml_trading": {
        "models": [],
        "risk_limits": {"max_ml_position_size": 1.0, "max_ml_positions": 100, "daily_ml_loss_limit": 1.0},
        "execution": {"initial_cash": CASH, "commission_bps": COMMISSION_BPS, "slippage_bps": SLIPPAGE_BPS,
                      "allow_short": True},
    }})


def run_aitrader(df: pd.DataFrame, targets: list[float], tmp: Path) -> tuple[float, list[tuple], float]:
    t0 = time.perf_counter()
    c0 = time.process_time()
    steps = replay_steps([BarSeries.from_frame("X", df)])
    summary = run_session(config(), [], steps, tmp / "bench", run_id="bench",
                          opts=RunOptions(handle_signals=False), schedules=[TargetSchedule("X", targets)])
    elapsed = time.perf_counter() - t0
    CPU["aitrader"].append(time.process_time() - c0)
    conn = connect(tmp / "bench" / "ledger.db", readonly=True)
    fills = conn.execute("SELECT ts, side, quantity, price, commission FROM fills ORDER BY id").fetchall()
    conn.close()
    return elapsed, fills, summary["final_equity"]


def run_backtrader(df: pd.DataFrame, targets: list[float]) -> tuple[float, list[tuple], float]:
    import backtrader as bt

    fills: list[tuple] = []

    class Schedule(bt.Strategy):
        def __init__(self) -> None:
            self.last = 0.0

        def notify_order(self, order) -> None:  # noqa: ANN001
            if order.status == order.Completed:
                ex = order.executed
                ts = bt.num2date(ex.dt).isoformat()
                fills.append((ts, "buy" if ex.size > 0 else "sell", abs(ex.size), ex.price, ex.comm))

        def next(self) -> None:
            t = targets[len(self) - 1]
            if t != self.last:
                self.order_target_size(target=t)
                self.last = t

    t0 = time.perf_counter()
    c0 = time.process_time()
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=df))
    cerebro.addstrategy(Schedule)
    cerebro.broker.setcash(CASH)
    cerebro.broker.setcommission(commission=COMMISSION_BPS / 1e4)
    cerebro.broker.set_slippage_perc(SLIPPAGE_BPS / 1e4, slip_open=True, slip_limit=True, slip_match=True,
                                     slip_out=False)
    cerebro.broker.set_checksubmit(False)
    cerebro.run()
    elapsed = time.perf_counter() - t0
    CPU["backtrader"].append(time.process_time() - c0)
    return elapsed, fills, cerebro.broker.getvalue()


def compare(a: list[tuple], b: list[tuple], value_a: float, value_b: float) -> None:
    if len(a) != len(b):
        sys.exit(f"MISMATCH: aitrader {len(a)} fills, backtrader {len(b)}")
    for x, y in zip(a, b, strict=True):
        same = x[0] == y[0] and x[1] == y[1] and abs(x[2] - y[2]) < 1e-9 and round(x[3], 6) == round(y[3], 6) \
            and round(x[4], 2) == round(y[4], 2)
        if not same:
            sys.exit(f"MISMATCH: aitrader fill {x} vs backtrader {y}")
    if round(value_a, 2) != round(value_b, 2):
        sys.exit(f"MISMATCH: final value aitrader {value_a:.2f} vs backtrader {value_b:.2f}")


def latency(n: int, tmp: Path) -> tuple[float, float, str]:
    """p50/p99 microseconds from a bar to its order decision with a 200-tree LightGBM (ONNX runner)."""
    from aitrader.config import TrainConfig
    from aitrader.data.synthetic import generate_bars
    from aitrader.features import FeaturePipeline
    from aitrader.models.runner import ModelRunner
    from aitrader.trading.events import EventBus
    from aitrader.trading.ledger import Ledger
    from aitrader.trading.session import ModelSpec, build_engine
    from aitrader.training.trainer import train

    bars = generate_bars(2000 + n, seed=5, signal=0.3)
    cfg = TrainConfig.model_validate({"data": {"symbol": "SYN"}, "split": {"n_folds": 2, "min_train": 400},
                                      "model": {"kind": "lightgbm",
                                                "params": {"n_estimators": 200, "num_threads": 1}}})
    res = train(cfg, bars=bars.iloc[:2000], out_dir=tmp / "art")
    runner = ModelRunner.from_artifact(res.out_dir, res.manifest, prefer="onnx")
    stream = FeaturePipeline.from_contract(res.manifest["features"]).stream(500)
    spec = ModelSpec(model_id="syn:v1", symbol="SYN", digest="-", predictor=runner, stream=stream,
                     manifest=res.manifest, min_confidence=0.6, position_size=0.02)
    tcfg = TradingConfig.model_validate({"ml_trading": {"models": [{"model_id": "syn", "symbol": "SYN"}]}})
    bus = EventBus()
    ledger = Ledger(tmp / "lat.db")
    ledger.attach(bus)
    engine = build_engine(tcfg, [spec], bus, ledger, RunOptions())
    times = []
    for k, (ts, ep, bars_) in enumerate(replay_steps([BarSeries.from_frame("SYN", bars)])):
        t0 = time.perf_counter_ns()
        engine._step(ts, bars_, ep)
        times.append(time.perf_counter_ns() - t0)
        if k % 500 == 499:
            engine.checkpoint()
    warm = res.manifest["features"]["warmup"] + 10
    arr = np.array(times[warm:]) / 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99)), runner.backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per engine (best and median)")
    parser.add_argument("--latency-bars", type=int, default=3000)
    args = parser.parse_args()
    try:
        import backtrader  # noqa: F401
    except ImportError:
        sys.exit("backtrader is not installed; for this benchmark only: .venv/bin/python -m pip install backtrader")
    df = make_bars(args.bars)
    targets = make_targets(args.bars)
    with tempfile.TemporaryDirectory() as tmp:
        # One small warm-up run each (first-call imports and allocations), then the timed runs.
        run_aitrader(df.iloc[:2000], targets[:2000], Path(tmp) / "warm")
        run_backtrader(df.iloc[:2000], targets[:2000])
        a_times, b_times = [], []
        CPU["aitrader"].clear()
        CPU["backtrader"].clear()
        for k in range(max(1, args.repeat)):  # interleaved, so a burst of load hits both engines
            a_s, a_fills, a_val = run_aitrader(df, targets, Path(tmp) / f"run{k}")
            b_s, b_fills, b_val = run_backtrader(df, targets)
            compare(a_fills, b_fills, a_val, b_val)
            a_times.append(a_s)
            b_times.append(b_s)
        print(f"same fills ({len(a_fills)}) and final value ({a_val:,.2f}) to the cent, {args.bars:,} bars")
        print("aitrader: run_session in-process (engine + SQLite ledger + summary; no process start-up, no model)")
        for name, times in (("aitrader", a_times), ("backtrader", b_times)):
            best, med = min(times), statistics.median(times)
            print(f"{name:<10} best {args.bars / best:>10,.0f} bars/s ({1e6 * best / args.bars:6.2f} us/bar)  "
                  f"median {args.bars / med:>10,.0f} bars/s  ({len(times)} runs)")
        print(f"ratio      best {min(b_times) / min(a_times):.1f}x  median "
              f"{statistics.median(b_times) / statistics.median(a_times):.1f}x  (wall clock)")
        a_cpu, b_cpu = min(CPU["aitrader"]), min(CPU["backtrader"])
        print(f"cpu time   aitrader {1e6 * a_cpu / args.bars:.2f} us/bar, backtrader {1e6 * b_cpu / args.bars:.2f} "
              f"us/bar (best): ratio {b_cpu / a_cpu:.1f}x")
        p50, p99, backend = latency(args.latency_bars, Path(tmp))
        print(f"bar->order latency, 200-tree LightGBM ({backend} runner): p50 {p50:.1f} us, p99 {p99:.1f} us")


if __name__ == "__main__":
    main()
