"""Benchmark: ``aitrader paper-trade`` with a model, whole command, beside its peers, in one run.

Printed side by side, each with the machine's load average at the time (the machine may be shared:
compare figures from the same run only):

1. **Whole command with a model** (the headline): ``aitrader paper-trade`` in a subprocess, with a
   deployed 200-tree LightGBM (ONNX runner: ``--backend onnx``), on synthetic 1-minute bars, at two sizes (``--small``
   and ``--bars``), on both replay routes (``ml_trading.replay: batch``, the default: batch features
   and batch ONNX; ``streaming``: per bar, as live runs), which must agree on the fills and the
   final equity to the cent. bars/s = (big - small) / (t_big - t_small) cancels the start-up (Python, imports,
   loading and verifying the model, reading the CSV), which is printed separately. Also the ledger's
   bytes per bar (the big run's ledger.db / bars). The batch route runs as by default (``--workers
   auto``: a worker thread for the predictions when a core is free; the threads used are printed),
   with ``--workers 1`` (one thread) and with ``--ledger-thread`` (the ledger compressed and committed
   by a writer thread, opt-in), alternating within each round, and the ratios are printed.
   **The same with compiled trees** (``--backend auto``: the lleaves library the deploy compiled),
   both routes, same sizes, same run; the start-up, the ledger and the agreement with the ONNX runs
   (fills and final equity; the predictions differ by ONNX's float32 rounding) are printed too.
2. **Bare loop**: the same work in the plainest Python: streaming features + the same ONNX model
   (``ModelRunner.predict_one``) + a trivial broker (target = sign of the prediction). The limit
   the whole command is compared with (goal: >= 0.5x). Also with the compiled trees' runner.
3. **backtrader with the same model**: features precomputed by the batch evaluator, the same ONNX
   runner called once per bar in ``next()``, ``order_target_size`` to the prediction's sign
   (goal: aitrader >= 5x). backtrader is NOT a dependency: when it is missing this peer (and 4's
   backtrader half) is skipped with a message; install it for this script only:
   ``.venv/bin/python -m pip install backtrader``.
4. **Engine only** (labelled as such): ``run_session`` in-process with precomputed target positions
   and no model, against backtrader on the same targets; the two must agree on every fill and the
   final value to the cent.

5. The bar-to-order latency (p50/p99) of the streaming path with the 200-tree model.

6. **Whole ``aitrader backtest``** (the replay + the performance report, trades and buy-and-hold,
   no ledger kept) with the same model on the same bars, batch route, each backend, alternating run
   by run with the batch route's ``paper-trade`` (no ledger thread) so that both see the same load:
   bars/s of both (the two-size difference), their ratio (goal: backtest >= 1x paper-trade), the whole
   command's seconds on the big size (median, min-max: start-up included, steadier than the slope of two
   noisy medians) and whether the backtest's run summary has the same fills and final equity; both as
   they run by default (``--workers auto``: each run picks its threads, so two runs may differ) and both
   with ``--workers 1`` (the work alone, no second thread); and paired by round (``--backtest-repeat``
   rounds, default 5, each running both commands on both sizes within seconds): the median of the
   rounds' ratios and how many were >= 1x, which a drift of the host's speed between rounds does not
   move; and the best of the rounds per size (timeit's estimator: the host's slowdowns only add time).
   ``--backtest-only`` runs this part alone (after the world is built).

7. With ``--against DIR`` (another checkout, e.g. ``git worktree add /tmp/main main``): the batch
   route's whole command with that checkout's code and with this one, alternating run by run on the
   same world, printed beside each other and against backtrader: a change measured in the same
   minutes as the code it changes.

Before each timed command the script waits (``--quiet-wait``, default 30 s at most) until the other
processes use < 0.1 core, and prints beside the load the most they used during the runs of a line.

Usage: .venv/bin/python scripts/bench/paper_trade.py [--bars 120000] [--small 40000] [--engine-bars 50000]
       [--against DIR] [--backtest-only] [--quiet-wait SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _quiet  # scripts/bench/_quiet.py (this script's folder is on sys.path when it runs)
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


#: Before each timed command the script waits (at most ``--quiet-wait`` seconds) until the other processes
#: on the machine use less than 0.1 core over half a second, and records how many cores they used while the
#: command ran (``OTHERS``, shown and cleared by :func:`load`; ``_quiet.py``).
QUIET_WAIT = [30.0]
OTHERS: list[float] = []


def wait_quiet() -> tuple[int, int] | None:
    return _quiet.wait_quiet(QUIET_WAIT[0])


def note_others(start: tuple[int, int] | None, cpu: float, wall: float) -> None:
    used = _quiet.others_during(start, cpu, wall)
    if used is not None:
        OTHERS.append(used)


def others() -> str:
    """The most cores the other processes used during the runs since the last call (then forgotten)."""
    text = f", other processes <= {max(OTHERS):.2f} core during the runs" if OTHERS else ""
    OTHERS.clear()
    return text


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"[load {one:.1f}/{five:.1f} on {os.cpu_count()} cores{others()}]"


TRADE_CONFIG = """
ml_trading:
  models:
    - {{model_id: syn_lgbm, symbol: SYN, min_confidence: 0.6, position_size: 0.02}}
  replay: {route}
"""
ROUTES = ("batch", "streaming")  # ml_trading.replay: batch features + batch ONNX, or per bar (as live runs)
BACKENDS = ("onnx", "auto")  # paper-trade --backend: ONNX, and the compiled trees the deploy made


def world(tmp: Path, n_train: int, n_trade: int) -> dict[str, Any]:
    """A 200-tree LightGBM trained on 1-minute synthetic bars, registered and deployed; the later bars."""
    from aitrader.config import TrainConfig
    from aitrader.data.synthetic import generate_bars
    from aitrader.registry import Registry
    from aitrader.training.trainer import train

    bars = generate_bars(n_train + n_trade, seed=7, signal=0.3, freq="1min")
    cfg = TrainConfig.model_validate({"data": {"symbol": "SYN"}, "split": {"n_folds": 2, "min_train": 1000},
                                      "model": {"kind": "lightgbm",
                                                "params": {"n_estimators": 200, "num_threads": 1}}})
    res = train(cfg, bars=bars.iloc[:n_train], out_dir=tmp / "art")
    reg = Registry(tmp / "models")
    reg.register(tmp / "art", "syn_lgbm")
    t0 = time.perf_counter()
    result = reg.deploy("syn_lgbm", reason="bench", backend="auto")  # compiles the trees (lleaves, else treelite)
    deploy_s = time.perf_counter() - t0
    backend = next(c for c in result.checks if c.name == "backend")
    onnx = res.manifest.get("onnx") or {}
    print(f"train: model.onnx {'kept' if onnx.get('file') else 'dropped: ' + str(onnx.get('warning'))}")
    print(f"deploy --backend auto {deploy_s:.1f} s: {backend.detail}  {load()}")
    reg.close()
    for route in ROUTES:
        (tmp / f"trading-{route}.yaml").write_text(TRADE_CONFIG.format(route=route))
    return {"bars": bars.iloc[n_train:], "res": res, "tmp": tmp}


#: The batch route's variants (key suffix -> options): the default (``--workers auto``: a worker thread for
#: the predictions when a core is free), one thread, and the ledger writer thread beside the default.
VARIANTS: dict[str, tuple[str, ...]] = {"": (), "/workers-1": ("--workers", "1"),
                                        "/ledger-thread": ("--ledger-thread",)}


def whole_command(w: dict[str, Any], n: int, run_id: str, route: str = "batch",
                  backend: str = "onnx", extra: tuple[str, ...] = ()) -> tuple[float, float, dict[str, Any], int]:
    """Wall and CPU seconds of ``aitrader paper-trade`` on the first ``n`` trading bars; its summary; ledger bytes.
    ``extra``: more options (``--workers 1``, ``--ledger-thread``)."""
    tmp: Path = w["tmp"]
    data = tmp / f"n{n}" / "SYN.csv"
    data.parent.mkdir(exist_ok=True)
    if not data.exists():
        w["bars"].iloc[:n].rename_axis("timestamp").to_csv(data)
    cmd = [sys.executable, "-m", "aitrader.cli.main", "paper-trade", "--config", str(tmp / f"trading-{route}.yaml"),
           "--registry", str(tmp / "models"), "--data", str(data), "--runs-dir", str(tmp / "runs"),
           "--run-id", run_id, "--backend", backend, "--json", *extra]
    mark = wait_quiet()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, check=False)
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    note_others(mark, cpu, elapsed)
    if proc.returncode != 0:
        sys.exit(f"paper-trade failed: {proc.stderr[-2000:]}")
    size = sum(p.stat().st_size for p in (tmp / "runs" / run_id).glob("ledger.db*"))
    summary = json.loads(proc.stdout)
    conn = connect(tmp / "runs" / run_id / "ledger.db", readonly=True)
    try:  # how the run was threaded (--workers auto's choice): a meta key of the ledger, not in the summary
        row = conn.execute("SELECT value FROM meta WHERE key = 'threads'").fetchone()
    finally:
        conn.close()
    summary["threads"] = json.loads(row[0]) if row else None
    return elapsed, cpu, summary, size


def backtest_command(w: dict[str, Any], n: int, backend: str = "onnx",
                     extra: tuple[str, ...] = ()) -> tuple[float, float, dict[str, Any]]:
    """Wall and CPU seconds of ``aitrader backtest --json`` (batch route) on the first ``n`` trading bars
    (the bars :func:`whole_command` writes), and its JSON. ``backtest`` has no ``--backend``: the
    runner comes from ``$AITRADER_BACKEND``, set for the child."""
    tmp: Path = w["tmp"]
    data = tmp / f"n{n}" / "SYN.csv"
    data.parent.mkdir(exist_ok=True)
    if not data.exists():
        w["bars"].iloc[:n].rename_axis("timestamp").to_csv(data)
    cmd = [sys.executable, "-m", "aitrader.cli.main", "backtest", "--config", str(tmp / "trading-batch.yaml"),
           "--registry", str(tmp / "models"), "--data", str(data), "--runs-dir", str(tmp / "runs"), "--json", *extra]
    mark = wait_quiet()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, check=False,
                          env={**os.environ, "AITRADER_BACKEND": backend})
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    note_others(mark, cpu, elapsed)
    if proc.returncode != 0:
        sys.exit(f"backtest failed: {proc.stderr[-2000:]}")
    return elapsed, cpu, json.loads(proc.stdout)


def backtest_vs_paper(w: dict[str, Any], small: int, big: int, repeat: int) -> None:
    """``aitrader backtest`` beside ``aitrader paper-trade`` (batch route, no ledger thread), same model
    and bars, alternating run by run; bars/s of each from the two-size difference of medians. Twice: as
    both run by default (``--workers auto``: each run picks its threads from how idle the machine was at
    its start, so two runs may differ), and both with ``--workers 1`` (no second thread: the work alone)."""
    for backend in BACKENDS:
        for variant, extra in BACKTEST_VARIANTS.items():
            _backtest_vs_paper(w, small, big, repeat, backend, variant, extra)


#: backtest_vs_paper's runs: the options given to both commands
BACKTEST_VARIANTS: dict[str, tuple[str, ...]] = {"default": (), "--workers 1": ("--workers", "1")}


def _backtest_vs_paper(w: dict[str, Any], small: int, big: int, repeat: int, backend: str, variant: str,
                       extra: tuple[str, ...]) -> None:
    runs: dict[str, dict[int, list[tuple[float, float]]]] = {k: {small: [], big: []} for k in ("paper", "backtest")}
    loads = []
    finals: dict[str, tuple[int, float]] = {}
    for i in range(max(1, repeat)):
        for n in (small, big):
            for who in (("paper", "backtest") if i % 2 == 0 else ("backtest", "paper")):
                if who == "paper":
                    run_id = f"bt-paper-{backend}-{'-'.join(extra).strip('-') or 'default'}-{n}-{i}"
                    t, cpu, summary, _ = whole_command(w, n, run_id, "batch", backend, extra)
                else:
                    t, cpu, doc = backtest_command(w, n, backend, extra)
                    summary = doc["run"]
                runs[who][n].append((t, cpu))
                finals[who] = (summary["fills"], round(summary["final_equity"], 2))
                loads.append(os.getloadavg()[0])
    rate: dict[str, tuple[float, float, float]] = {}
    for who in ("paper", "backtest"):
        med = {n: [statistics.median(r[k] for r in runs[who][n]) for k in (0, 1)] for n in (small, big)}
        wall, cpu = ((big - small) / (med[big][k] - med[small][k]) for k in (0, 1))
        rate[who] = (wall, cpu, med[small][0] - small / wall)
    for who, label in (("paper", "paper-trade"), ("backtest", "backtest")):
        wall, cpu, startup = rate[who]
        print(f"whole command, {label:11}, batch route, {backend:4} runner, {variant:11} {wall:>10,.0f} bars/s "
              f"({1e6 / wall:6.2f} us/bar wall, {1e6 / cpu:6.2f} us/bar cpu), start-up {startup:.2f} s")
    same = finals["paper"] == finals["backtest"]
    walls = {who: (statistics.median(r[0] for r in runs[who][big]), min(r[0] for r in runs[who][big]),
                   max(r[0] for r in runs[who][big])) for who in ("paper", "backtest")}
    print(f"  whole command on {big:,} bars (start-up included; less noisy than the two-size slope): backtest "
          f"{walls['backtest'][0]:.2f} s ({walls['backtest'][1]:.2f}-{walls['backtest'][2]:.2f}), paper-trade "
          f"{walls['paper'][0]:.2f} s ({walls['paper'][1]:.2f}-{walls['paper'][2]:.2f}): "
          f"{walls['paper'][0] / walls['backtest'][0]:.2f}x")
    # paired: each round ran both commands on both sizes within seconds of each other, so a drift of the
    # host's speed (this 2-core VM's runs of one command swing up to 1.6x within minutes) hits both alike
    rounds = range(len(runs["paper"][big]))
    slope = [(runs["paper"][big][i][0] - runs["paper"][small][i][0])
             / (runs["backtest"][big][i][0] - runs["backtest"][small][i][0]) for i in rounds]
    whole = [runs["paper"][big][i][0] / runs["backtest"][big][i][0] for i in rounds]
    print(f"  paired by round: backtest / paper-trade bars/s {statistics.median(slope):.2f}x (median; "
          f"{sum(r >= 1.0 for r in slope)} of {len(slope)} rounds >= 1x: {' '.join(f'{r:.2f}' for r in slope)}), "
          f"whole command on {big:,} bars {statistics.median(whole):.2f}x ({sum(r >= 1.0 for r in whole)} of "
          f"{len(whole)} >= 1x)")
    # best of the rounds (timeit's estimator: a slowdown of the host only ever adds time to a run)
    best = {who: {n: min(r[0] for r in runs[who][n]) for n in (small, big)} for who in ("paper", "backtest")}
    best_rate = {who: (big - small) / (best[who][big] - best[who][small]) for who in best}
    print(f"  best of {len(whole)} per size: backtest {best_rate['backtest']:,.0f} vs paper-trade "
          f"{best_rate['paper']:,.0f} bars/s, {best_rate['backtest'] / best_rate['paper']:.2f}x; whole command on "
          f"{big:,} bars {best['backtest'][big]:.2f} vs {best['paper'][big]:.2f} s, "
          f"{best['paper'][big] / best['backtest'][big]:.2f}x")
    print(f"  backtest / paper-trade ({backend}, {variant}): "
          f"{rate['backtest'][0] / rate['paper'][0]:.2f}x bars/s wall, "
          f"{rate['backtest'][1] / rate['paper'][1]:.2f}x cpu (goal >= 1x); fills and final equity "
          f"{'the same' if same else 'DIFFERENT'} (alternating run by run, medians of {max(1, repeat)} per size) "
          f"[load {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores{others()}]")


def against(w: dict[str, Any], other: Path, small: int, big: int, repeat: int) -> dict[str, tuple[float, float]]:
    """The batch route's whole command with another checkout's code (``--against DIR``: its folder goes
    first on PYTHONPATH) and with this one, alternating run by run on the same world and bars, so a
    change is measured in the same minutes as the code it changes. Prints wall and CPU us/bar of
    both (the two-size difference of medians of ``repeat`` runs per size); returns {key: (wall, cpu)}."""
    here = str(Path(__file__).resolve().parents[2])
    saved = os.environ.get("PYTHONPATH")
    out: dict[str, tuple[float, float]] = {}
    try:
        for backend in BACKENDS:
            runs: dict[str, dict[int, list[tuple[float, float]]]] = {"other": {small: [], big: []},
                                                                     "this": {small: [], big: []}}
            fills: dict[str, tuple[int, float]] = {}
            loads = []
            for i in range(max(1, repeat)):
                order = [("other", str(other)), ("this", here)]
                for n in (small, big):
                    for who, path in order if i % 2 == 0 else order[::-1]:
                        os.environ["PYTHONPATH"] = path
                        t, cpu, summary, _ = whole_command(w, n, f"ab-{who}-{backend}-{n}-{i}", "batch", backend)
                        runs[who][n].append((t, cpu))
                        fills[who] = (summary["fills"], round(summary["final_equity"], 2))
                        loads.append(os.getloadavg()[0])
            for who in ("other", "this"):
                per = [1e6 * (statistics.median(r[k] for r in runs[who][big])
                              - statistics.median(r[k] for r in runs[who][small])) / (big - small) for k in (0, 1)]
                out[f"{who}/{backend}"] = (per[0], per[1])
                label = f"{other}" if who == "other" else "this checkout"
                print(f"  --against, batch route, {backend:4}: {label:<28} {per[0]:6.2f} us/bar wall "
                      f"({1e6 / per[0]:>9,.0f} bars/s), {per[1]:6.2f} us/bar cpu; {fills[who][0]:,} fills, "
                      f"final equity {fills[who][1]:,.2f}")
            print(f"  (alternating run by run, medians of {max(1, repeat)} per size) [load {min(loads):.1f}-"
                  f"{max(loads):.1f} on {os.cpu_count()} cores{others()}]")
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    return out


def bare_loop(w: dict[str, Any], n: int, backend: str = "onnx") -> tuple[float, float, str]:
    """Streaming features + the same model (ONNX, or ``auto``: the deployed compiled trees) + a trivial
    broker, in the plainest Python."""
    from aitrader.features import FeaturePipeline
    from aitrader.models.runner import ModelRunner
    from aitrader.registry import Registry

    res = w["res"]
    if backend == "onnx":  # the artifact's model.onnx; its native model when the trainer dropped the export
        runner = ModelRunner.from_artifact(res.out_dir, res.manifest, prefer="onnx")
    else:
        runner = Registry(w["tmp"] / "models").load("syn_lgbm", backend=backend).runner
    stream = FeaturePipeline.from_contract(res.manifest["features"]).stream(500)
    df = w["bars"].iloc[:n]
    stamps = [t.isoformat() for t in df.index]
    cols = [df[c].to_numpy(float).tolist() for c in ("open", "high", "low", "close", "volume")]
    isnan, predict, update = np.isnan, runner.predict_one, stream.update
    t0, c0 = time.perf_counter(), time.process_time()
    cash, pos, trades = 1_000_000.0, 0.0, 0
    for ts, o, h, lo, c, v in zip(stamps, *cols, strict=True):
        row = update(ts, o, h, lo, c, v)
        if isnan(row).any():
            continue
        target = 100.0 if predict(row) > 0 else -100.0
        if target != pos:
            cash -= (target - pos) * c
            pos, trades = target, trades + 1
    return time.perf_counter() - t0, time.process_time() - c0, runner.backend


def backtrader_model(w: dict[str, Any], n: int) -> tuple[float, float] | None:
    """The same model inside backtrader: precomputed features, the ONNX runner once per bar in next()."""
    try:
        import backtrader as bt
    except ImportError:
        return None
    from aitrader.features import FeaturePipeline
    from aitrader.models.runner import ModelRunner

    res = w["res"]
    runner = ModelRunner.from_artifact(res.out_dir, res.manifest, prefer="onnx")
    df = w["bars"].iloc[:n]
    feats = FeaturePipeline.from_contract(res.manifest["features"]).transform(df).to_numpy(float)
    predict = runner.predict_one

    class WithModel(bt.Strategy):
        def next(self) -> None:
            x = feats[len(self) - 1]
            if np.isnan(x).any():
                return
            self.order_target_size(target=100 if predict(x) > 0 else -100)

    t0, c0 = time.perf_counter(), time.process_time()
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=df))
    cerebro.addstrategy(WithModel)
    cerebro.broker.setcash(CASH)
    cerebro.broker.set_checksubmit(False)
    cerebro.run()
    return time.perf_counter() - t0, time.process_time() - c0


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
    # the commands start as an installed package does, from cached bytecode (a shell with
    # PYTHONDONTWRITEBYTECODE would make each child compile aitrader's modules again: ~0.2-0.3 s of start-up)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=120_000, help="bars of the big whole-command run")
    parser.add_argument("--small", type=int, default=40_000, help="bars of the small run (start-up cancelled)")
    parser.add_argument("--train-bars", type=int, default=5_000)
    parser.add_argument("--engine-bars", type=int, default=50_000, help="engine-only comparison (0: skip)")
    parser.add_argument("--repeat", type=int, default=1, help="timed engine-only runs per engine")
    parser.add_argument("--latency-bars", type=int, default=3000, help="bar-to-order latency sample (0: skip)")
    parser.add_argument("--whole-repeat", type=int, default=3,
                        help="whole-command runs per size (medians: one pair of runs swung 30k-79k bars/s)")
    parser.add_argument("--backtest-repeat", type=int, default=5,
                        help="rounds of the backtest vs paper-trade part (both commands, both sizes, each round)")
    parser.add_argument("--against", type=Path, default=None, metavar="DIR",
                        help="also run the batch route with the code of another checkout (e.g. a worktree of main), "
                             "alternating run by run with this one, and print both beside backtrader")
    parser.add_argument("--quiet-wait", type=float, default=30.0, metavar="SECONDS",
                        help="before each timed command, wait up to this long for the other processes to use "
                             "< 0.1 core (0: do not wait); what they used during the runs is printed")
    parser.add_argument("--backtest-only", action="store_true",
                        help="only the backtest vs paper-trade rows (part 6), after building the world")
    args = parser.parse_args()
    QUIET_WAIT[0] = max(0.0, args.quiet_wait)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        w = world(tmp, args.train_bars, args.bars)
        print(f"200-tree LightGBM, synthetic 1-minute bars; whole command on {args.small:,} and {args.bars:,} bars")
        whole_command(w, 2_000, "warm")  # first-run disk caches and bytecode
        if args.backtest_only:
            backtest_vs_paper(w, args.small, args.bars, args.backtest_repeat)
            return
        diff = args.bars - args.small
        rates: dict[str, tuple[float, float]] = {}
        finals: dict[str, tuple[float, int]] = {}
        for backend in BACKENDS:
            for route in ROUTES:  # ml_trading.replay (docs/trading.md, "Replay routes")
                # the batch route as it runs by default (--workers auto), on one thread (--workers 1) and with
                # the ledger writer thread, alternating within each round
                variants = VARIANTS if route == "batch" else {"": ()}
                runs: dict[str, tuple[list[Any], list[Any]]] = {v: ([], []) for v in variants}
                for i in range(max(1, args.whole_repeat)):  # alternate sizes so drifting load hits both
                    for v, extra in variants.items():
                        tag = f"{route}-{backend}-{v.replace('/', '')}-{i}"
                        runs[v][0].append(whole_command(w, args.small, f"small-{tag}", route, backend, extra))
                        ld_small = load()
                        runs[v][1].append(whole_command(w, args.bars, f"big-{tag}", route, backend, extra))
                        ld_big = load()
                for v, extra in variants.items():
                    smalls, bigs = runs[v]
                    key = f"{route}/{backend}{v}"
                    t_small, c_small = (statistics.median(r[k] for r in smalls) for k in (0, 1))
                    t_big, c_big = (statistics.median(r[k] for r in bigs) for k in (0, 1))
                    summary, size = bigs[-1][2], bigs[-1][3]
                    rate, cpu_rate = diff / (t_big - t_small), diff / (c_big - c_small)
                    rates[key] = (rate, cpu_rate)
                    finals[key] = (summary["final_equity"], summary["fills"])
                    runner = summary["runners"]["syn_lgbm:v1"]
                    used = sorted({json.dumps(r[2].get("threads"), sort_keys=True) for r in smalls + bigs})
                    label = " ".join(extra) or "default"
                    print(f"whole command, {route:9} route, {runner:8} runner, {label:16} {rate:>10,.0f} bars/s  "
                          f"({1e6 / rate:6.2f} us/bar wall; medians of {len(bigs)}: {t_small:.2f} s and "
                          f"{t_big:.2f} s)  cpu {1e6 / cpu_rate:6.2f} us/bar  "
                          f"{ld_small} {ld_big}")
                    print(f"  threads used   {', '.join(used)}")
                    print(f"  start-up       {t_small - args.small / rate:>10.2f} s wall, "
                          f"{c_small - args.small / cpu_rate:.2f} s cpu "
                          "(before the first bar: imports, model load and verify, reading the CSV)")
                    print(f"  ledger         {size / args.bars:>10.1f} bytes/bar ({size / 1e6:.1f} MB for "
                          f"{args.bars:,} bars, {summary['predictions']:,} predictions, {summary['fills']:,} fills)")
        for backend in BACKENDS:
            r_n, c_n = rates[f"batch/{backend}"]
            for v in VARIANTS:
                if not v:
                    continue
                r_v, c_v = rates[f"batch/{backend}{v}"]
                same = finals[f"batch/{backend}"] == finals[f"batch/{backend}{v}"]
                print(f"  default / {' '.join(VARIANTS[v])} ({backend}, batch): {r_n / r_v:.2f}x bars/s wall, "
                      f"CPU of all threads per bar {c_v / c_n:.2f}x; fills and final equity "
                      f"{'the same' if same else 'DIFFERENT'}")
        for backend in BACKENDS:
            (eq_b, f_b), (eq_s, f_s) = finals[f"batch/{backend}"], finals[f"streaming/{backend}"]
            print(f"  routes agree ({backend}): {f_b} vs {f_s} fills, final equity {eq_b:,.2f} vs {eq_s:,.2f} "
                  f"({'same' if f_b == f_s and abs(eq_b - eq_s) < 0.005 else 'DIFFERENT'} to the cent)")
        (eq_o, f_o), (eq_c, f_c) = finals["batch/onnx"], finals["batch/auto"]
        same = f_c == f_o and abs(eq_c - eq_o) < 0.005
        print(f"  compiled vs ONNX (batch): {f_c} vs {f_o} fills, final equity {eq_c:,.2f} vs {eq_o:,.2f} "
              f"({'same' if same else 'DIFFERENT: float32 rounding at a threshold'})")
        backtest_vs_paper(w, args.small, args.bars, args.backtest_repeat)
        ab = against(w, args.against, args.small, args.bars, args.whole_repeat) if args.against else {}
        bares: dict[str, tuple[float, float]] = {}
        for backend in BACKENDS:
            t_bare, c_bare, name = bare_loop(w, args.bars, backend)
            bares[backend] = (args.bars / t_bare, c_bare)
            print(f"bare loop, {name:8} runner {args.bars / t_bare:>10,.0f} bars/s  "
                  f"({1e6 * t_bare / args.bars:6.2f} us/bar wall) cpu {1e6 * c_bare / args.bars:6.2f} us/bar: "
                  f"streaming features + model + trivial broker  {load()}")
        bare, c_bare = bares["onnx"]
        for key, (r, cr) in rates.items():
            route, backend = key.split("/")[:2]
            b_rate, b_cpu = bares[backend]
            print(f"  whole command ({key}) / bare loop ({backend}): {r / b_rate:.2f}x wall, "
                  f"{cr * b_cpu / args.bars:.2f}x cpu; / bare loop (onnx): {r / bare:.2f}x wall (goal >= 0.5x)")
        got = backtrader_model(w, args.bars)
        if got is None:
            print("backtrader       skipped: not installed (pip install backtrader, for this script only)")
        else:
            btr = args.bars / got[0]
            print(f"backtrader+model {btr:>10,.0f} bars/s  ({1e6 / btr:6.2f} us/bar wall) cpu "
                  f"{1e6 * got[1] / args.bars:6.2f} us/bar: the same ONNX model per bar in next()  {load()}")
            for key, (r, cr) in rates.items():
                print(f"  whole command ({key}) / backtrader: {r / btr:.1f}x wall, "
                      f"{got[1] / args.bars * cr:.1f}x cpu (goal >= 5x)")
            for key, (wall_us, cpu_us) in ab.items():
                who, backend = key.split("/")
                name = str(args.against) if who == "other" else "this checkout"
                print(f"  --against, batch/{backend}, {name}: {1e6 / btr / wall_us:.1f}x backtrader wall, "
                      f"{1e6 * got[1] / args.bars / cpu_us:.1f}x cpu")
    if args.engine_bars:
        engine_only(args.engine_bars, args.repeat)
    if args.latency_bars:
        with tempfile.TemporaryDirectory() as tmp_s:
            p50, p99, backend = latency(args.latency_bars, Path(tmp_s))
        print(f"bar->order latency, 200-tree LightGBM ({backend} runner): p50 {p50:.1f} us, p99 {p99:.1f} us  {load()}")


def engine_only(n_bars: int, repeat: int) -> None:
    """The engine alone on precomputed targets (no model), against backtrader on the same targets."""
    try:
        import backtrader  # noqa: F401
    except ImportError:
        print("engine only: backtrader not installed, skipped")
        return
    df = make_bars(n_bars)
    targets = make_targets(n_bars)
    with tempfile.TemporaryDirectory() as tmp:
        # One small warm-up run each (first-call imports and allocations), then the timed runs.
        run_aitrader(df.iloc[:2000], targets[:2000], Path(tmp) / "warm")
        run_backtrader(df.iloc[:2000], targets[:2000])
        a_times, b_times = [], []
        CPU["aitrader"].clear()
        CPU["backtrader"].clear()
        for k in range(max(1, repeat)):  # interleaved, so a burst of load hits both engines
            a_s, a_fills, a_val = run_aitrader(df, targets, Path(tmp) / f"run{k}")
            b_s, b_fills, b_val = run_backtrader(df, targets)
            compare(a_fills, b_fills, a_val, b_val)
            a_times.append(a_s)
            b_times.append(b_s)
        print(f"ENGINE ONLY (precomputed targets, no model; run_session in-process): same fills ({len(a_fills)}) "
              f"and final value ({a_val:,.2f}) as backtrader to the cent, {n_bars:,} bars  {load()}")
        for name, times in (("aitrader", a_times), ("backtrader", b_times)):
            best, med = min(times), statistics.median(times)
            print(f"  {name:<10} best {n_bars / best:>10,.0f} bars/s ({1e6 * best / n_bars:6.2f} us/bar)  "
                  f"median {n_bars / med:>10,.0f} bars/s  ({len(times)} runs)")
        print(f"  ratio      best {min(b_times) / min(a_times):.1f}x  median "
              f"{statistics.median(b_times) / statistics.median(a_times):.1f}x  (wall clock)")


if __name__ == "__main__":
    main()
