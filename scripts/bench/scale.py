"""Benchmark: how time and memory grow with the work (issue 11), printed as curves in one run.

Each measurement runs in its own child process, which reports the seconds of the work itself (after
its imports) and its own peak RSS (``VmHWM`` from /proc; else ``os.wait4``'s ``ru_maxrss``, which
includes the parent's size at the fork). Measured:

* ``paper-trade`` (``aitrader.trading.service.paper_trade``, the library path behind the command,
  with a deployed 50-tree LightGBM through ONNX) on 10k, 100k and 1M one-minute synthetic bars;
* ``backtest --json`` (``aitrader.trading.backtest.backtest`` and ``print_backtest_json`` to /dev/null, what
  the command runs: the replay into a scratch ledger, the report from the bars' blocks, the trades' text
  from their columns; no tearsheet) with the same model on the same 10k, 100k and 1M bars
  (``--only backtest``);
* ``monitor`` (``aitrader.monitoring.check.run_monitor``: the streamed pass of
  ``aitrader.monitoring.stream``) on the 10k, 100k and 1M-bar runs, and on the 1M-bar run the
  previous whole-table read (``read_ledger(features=True)``: every feature row parsed) for comparison;
* ``retrain``'s live feedback (``aitrader.monitoring.feedback.live_feedback``: each ledger streamed a
  block at a time, the challenger, here the deployed model through ONNX as ``retrain`` builds it,
  re-predicting the logged feature vectors) on the 10k, 100k and 1M-bar runs, each alone in a runs
  folder, and the previous whole-ledger path (``tests.unit.feedback_oracle.whole_ledger_feedback``) on the same runs for
  comparison, with whether both gave the same result;
* ``features build`` (``aitrader.features.build.build_features``) on 1M and 5M bars, and the
  previous whole-array path (``FeaturePipeline.transform`` then one ``to_parquet``) for comparison.

* several symbols: ``paper_trade`` on the 10 symbols of ``../shared/data/crypto_5m`` and on the first
  alone, on one thread, with the ledger writer thread, and with that plus ``workers`` 2 (median of
  ``--repeat`` runs): the loop's wall time, its CPU per bar (all threads, and the loop's own thread:
  the bound on what a second core can give), and whether the ledgers of the variants are identical.
  Skipped when the folder is absent.

For each: size, seconds, per-unit cost (us per bar), peak RSS (MB), RSS per bar above the smallest
size, the ratio of the peak to the smallest size's and the 1-minute load average at the time. The
machine's load average is printed before and after too: on a shared machine compare rows of the
same run only.

Usage: .venv/bin/python scripts/bench/scale.py [--quick] [--work DIR] [--json] [--only PARTS] [--repeat N]
``--quick`` uses sizes 100x smaller (a smoke run of a minute); the default takes several minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _quiet  # scripts/bench/_quiet.py (this script's folder is on sys.path when it runs)

CONFIG = """
ml_trading:
  models:
    - {model_id: syn_lgbm, symbol: SYN, min_confidence: 0.6, position_size: 0.02}
  errors: {prediction_timeout_ms: 5000}
"""
TRAIN_BARS = 3000


# ---------------------------------------------------------------------------- children


def child(kind: str, size: int, work: Path) -> dict[str, Any]:
    """The work measured in a child process; returns its own seconds (imports excluded)."""
    if kind in ("paper", "backtest"):
        from aitrader._memory import settle_for_long_run

        settle_for_long_run()  # as the `paper-trade` and `backtest` commands do
    if kind == "paper":
        from aitrader.trading.service import paper_trade

        t0 = time.perf_counter()
        summary = paper_trade(config_path=str(work / "trading.yaml"), data=[str(work / f"bars_{size}.parquet")],
                              run_id=f"p{size}", registry_root=str(work / "models"), runs_dir=str(work / "runs"))
        return {"seconds": time.perf_counter() - t0, "bars": summary["bars"],
                "ledger_bytes": (work / "runs" / f"p{size}" / "ledger.db").stat().st_size}
    if kind == "backtest":
        return backtest_child(size, work)
    if kind in ("monitor", "monitor_whole"):
        from aitrader.config import load_trading_config
        from aitrader.monitoring.check import manifest_from_registry, run_monitor
        from aitrader.monitoring.ledger import read_ledger
        from aitrader.monitoring.monitor import monitor_ledger, select_model

        t0 = time.perf_counter()
        if kind == "monitor":
            res = run_monitor(run_id=f"p{size}", runs_dir=work / "runs", registry_root=work / "models",
                              config=work / "trading.yaml", state_path=None)
        else:  # the previous path: every feature row read and parsed in one go
            cfg = load_trading_config(work / "trading.yaml")
            ledger = read_ledger(work / "runs" / f"p{size}", features=True)
            man = manifest_from_registry(select_model(ledger), work / "models")
            res = monitor_ledger(ledger, man, cfg.monitoring)
        return {"seconds": time.perf_counter() - t0, "health": res.summary["health"],
                "n": res.summary["drift"]["n"]}
    if kind in ("feedback", "feedback_whole"):
        return feedback_child(kind, size, work)
    if kind == "features":
        from aitrader.features.build import build_features

        t0 = time.perf_counter()
        out = build_features(work / f"bars_{size}.parquet", work / f"features_{size}.parquet")
        return {"seconds": time.perf_counter() - t0, "rows": out["rows"]}
    if kind == "features_whole":  # the previous path: one evaluation over every bar, then one write
        from aitrader.data import load_bars
        from aitrader.features.pipeline import FeaturePipeline

        t0 = time.perf_counter()
        bars = load_bars(work / f"bars_{size}.parquet")
        frame = FeaturePipeline().transform(bars)
        frame.index.name = "timestamp"
        frame.to_parquet(work / f"features_whole_{size}.parquet", engine="pyarrow")
        return {"seconds": time.perf_counter() - t0, "rows": len(frame)}
    if kind.startswith("multi"):  # multiN:T: N crypto symbols, T = --ledger-thread (1/0), `size` = --workers
        n, _, thread = kind[5:].partition(":")
        return multi_child(int(n), size, work, thread == "1")
    raise SystemExit(f"unknown child kind {kind}")


def backtest_child(size: int, work: Path) -> dict[str, Any]:
    """``aitrader backtest --json`` on ``bars_{size}`` (the paper part's bars and model), no ledger kept:
    ``backtest()`` and its ``--json`` text (written to /dev/null), as the command does."""
    import contextlib

    from aitrader.cli.backtest import print_backtest_json
    from aitrader.trading.backtest import backtest

    t0 = time.perf_counter()
    result = backtest(models=None, data=[str(work / f"bars_{size}.parquet")], config_path=str(work / "trading.yaml"),
                      registry_root=str(work / "models"), runs_dir=str(work / "runs"))
    with Path(os.devnull).open("w") as sink, contextlib.redirect_stdout(sink):
        print_backtest_json(result)
    return {"seconds": time.perf_counter() - t0, "bars": result.run["bars"],
            "trades": result.performance["strategy"]["trades"],
            "final_equity": result.performance["strategy"]["final_equity"]}


def backtest_rows(paper: list[int], work: Path) -> list[dict[str, Any]]:
    """The backtest part: one child per size (each after the paper part's child of that size, if any)."""
    rows = []
    for n in paper:
        r = measure("backtest", n, work)
        r["load"] = os.getloadavg()[0]
        rows.append(r)
        print(f"backtest {n}: {r['seconds']:.1f} s", file=sys.stderr)
    return rows


# ---------------------------------------------------------------------------- retrain's feedback


def feedback_runs(work: Path, size: int) -> Path:
    """A runs folder holding only the ``size``-bar paper-trade run (feedback reads every run in it)."""
    folder = work / f"feedback_{size}"
    folder.mkdir(exist_ok=True)
    link = folder / f"p{size}"
    if not link.exists():
        link.symlink_to(work / "runs" / f"p{size}", target_is_directory=True)
    return folder


def feedback_child(kind: str, size: int, work: Path) -> dict[str, Any]:
    """Feedback of ``syn_lgbm`` on the ``size``-bar run; the challenger is the deployed artifact's
    runner built as ``retrain`` builds its challenger (``ModelRunner.from_artifact``), loaded before
    the clock starts."""
    from aitrader.models.runner import ModelRunner
    from aitrader.monitoring.feedback import live_feedback
    from aitrader.registry import Registry

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: the tests' oracle
    from tests.unit.feedback_oracle import whole_ledger_feedback

    loaded = Registry(work / "models").load("syn_lgbm@production")
    challenger = ModelRunner.from_artifact(loaded.path, loaded.manifest)
    names = list(loaded.manifest["features"]["names"])
    task = str(loaded.manifest["target"]["task"])
    run = live_feedback if kind == "feedback" else whole_ledger_feedback
    t0 = time.perf_counter()
    doc = run("syn_lgbm", feedback_runs(work, size), loaded.info.digest, challenger, names, task)
    return {"seconds": time.perf_counter() - t0, "outcomes": doc["outcomes"],
            "result": json.dumps(doc, sort_keys=True)}


# ---------------------------------------------------------------------------- several symbols

CRYPTO = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "crypto_5m"


def crypto_symbols() -> list[str]:
    return sorted(p.name.split(".")[0] for p in CRYPTO.glob("*.csv.gz"))


def prepare_multi(work: Path) -> None:
    """One 50-tree LightGBM trained on synthetic 5-minute bars before 2018 (so every crypto bar is
    unseen) and deployed as ``crypto``; a config trading it on each of the 10 symbols."""
    from aitrader.config import TrainConfig
    from aitrader.data.synthetic import generate_bars
    from aitrader.registry import Registry
    from aitrader.training.trainer import train

    bars = generate_bars(TRAIN_BARS, seed=3, signal=0.1, volatility=0.002, freq="5min", start="2017-06-01")
    cfg = TrainConfig.model_validate({
        "data": {"symbol": "SYN"},
        "model": {"kind": "lightgbm", "params": {"n_estimators": 50, "num_threads": 1}},
        "split": {"n_folds": 2, "min_train": 1000, "holdout": 0.2},
    })
    train(cfg, bars=bars, out_dir=work / "art5")
    reg = Registry(work / "models")
    reg.register(work / "art5", "crypto")
    reg.deploy("crypto", reason="bench")
    for n, syms in ((1, crypto_symbols()[:1]), (len(crypto_symbols()), crypto_symbols())):
        lines = "\n".join(f"    - {{model_id: crypto, symbol: {s}, min_confidence: 0.6, position_size: 0.02}}"
                          for s in syms)
        text = f"ml_trading:\n  models:\n{lines}\n  errors: {{prediction_timeout_ms: 5000}}\n"
        (work / f"multi{n}.yaml").write_text(text)


def multi_child(n_symbols: int, workers: int, work: Path, ledger_thread: bool) -> dict[str, Any]:
    """``paper_trade`` on ``n_symbols`` crypto symbols; the loop (Engine.run: batch features,
    predictions, strategy, broker, ledger) timed apart from start-up (model load, CSV reading)."""
    import aitrader.trading.engine as engine_mod
    from aitrader.trading.service import paper_trade

    loop: dict[str, float] = {}
    run = engine_mod.Engine.run

    def timed(self: Any, *a: Any, **k: Any) -> Any:
        # process CPU: the worker and ledger threads' too; thread CPU: the loop's own thread only
        t, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
        try:
            out = run(self, *a, **k)
            if self.ledger is not None:
                self.ledger.flush()  # the ledger writer's last commit belongs to the loop's time
            return out
        finally:
            loop["s"], loop["cpu"] = time.perf_counter() - t, time.process_time() - cpu
            loop["main"] = time.thread_time() - main

    engine_mod.Engine.run = timed  # type: ignore[method-assign]
    syms = crypto_symbols()[:n_symbols]
    rid = f"multi{n_symbols}_w{workers}_t{int(ledger_thread)}_{os.getpid()}"
    t0 = time.perf_counter()
    summary = paper_trade(config_path=str(work / f"multi{n_symbols}.yaml"),
                          data=[f"{s}={CRYPTO / (s + '.csv.gz')}" for s in syms], run_id=rid,
                          registry_root=str(work / "models"), runs_dir=str(work / "runs"),
                          allow_symbol_mismatch=True, workers=workers, ledger_thread=ledger_thread)
    return {"seconds": time.perf_counter() - t0, "loop_seconds": loop["s"], "loop_cpu": loop["cpu"],
            "loop_main_cpu": loop["main"],
            "bars": summary["bars"],
            "ledger": str(work / "runs" / rid / "ledger.db")}


#: (label, --workers, --ledger-thread): everything on the loop's thread; a batch-route worker thread for the
#: predictions (what --workers auto takes when a core is free); the ledger written by the writer thread
#: (aitrader.trading.ledger_writer); both.
MULTI_VARIANTS = (("one thread", 1, False), ("worker", 2, False), ("ledger thread", 1, True),
                  ("ledger+worker", 2, True))


def multi_symbol(work: Path, repeat: int) -> list[str]:
    """Bars/s of the loop on 1 and 10 symbols, for each of :data:`MULTI_VARIANTS` (median of ``repeat``
    runs each; the variants alternate within each round, so a change of load weighs on all alike)."""
    from aitrader.trading.ledger import ledger_content

    prepare_multi(work)
    n_all = len(crypto_symbols())
    rows = []
    contents = {}
    for n in (1, n_all):
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in MULTI_VARIANTS}
        for _ in range(repeat):
            for label, workers, thread in MULTI_VARIANTS:
                load = os.getloadavg()[0]
                r = measure(f"multi{n}:{int(thread)}", workers, work)
                r["load"] = load
                runs[label].append(r)
        for label, workers, _ in MULTI_VARIANTS:
            got = sorted(runs[label], key=lambda r: r["loop_seconds"])
            med = got[len(got) // 2]
            content = ledger_content(Path(med["ledger"]))  # the run id (in meta) differs by design
            content["meta"] = [r for r in content["meta"] if r[0] != "run_id"]
            contents[(n, label)] = content
            rows.append((n, label, workers, med, [r["loop_seconds"] for r in got]))
    lines = [f"several symbols: 5-minute crypto bars ({CRYPTO.resolve()}), 50-tree LightGBM (runner: backend auto), "
             "batch route; "
             f"median of {repeat} runs by loop wall time; bars/s = bars / loop seconds (start-up apart; the loop ends "
             "with the ledger's last commit); CPU us/bar = the process's CPU time in the loop (all threads) / bars, "
             "loop thread = the loop's own thread's: what the load does not change"]
    lines.append(f"  {'symbols':>7} {'variant':>13} {'workers':>7} {'bars':>7} {'loop s':>7} {'bars/s':>9} "
                 f"{'CPU us/bar':>10} {'loop thread':>11} {'whole s':>8} {'peak MB':>8} {'load':>5}  runs (loop s)")
    for n, label, workers, m, all_runs in rows:
        rate = m["bars"] / m["loop_seconds"]
        lines.append(f"  {n:>7} {label:>13} {workers:>7} {m['bars']:>7} {m['loop_seconds']:>7.2f} {rate:>9,.0f} "
                     f"{m['loop_cpu'] / m['bars'] * 1e6:>10.1f} {m['loop_main_cpu'] / m['bars'] * 1e6:>11.1f} "
                     f"{m['seconds']:>8.2f} {m['peak_rss_mb']:>8.0f} {m['load']:>5.2f}  "
                     + " ".join(f"{v:.2f}" for v in all_runs))
    rate = {(n, label): m["bars"] / m["loop_seconds"] for n, label, _, m, _ in rows}
    cpu = {(n, label): m["loop_cpu"] / m["bars"] for n, label, _, m, _ in rows}
    main = {(n, label): m["loop_main_cpu"] / m["bars"] for n, label, _, m, _ in rows}
    one = MULTI_VARIANTS[0][0]
    lines.append(f"  {n_all} symbols vs 1 symbol, bars/s of the loop: "
                 + ", ".join(f"{label} {rate[n_all, label] / rate[1, label]:.2f}x" for label, _, _ in MULTI_VARIANTS)
                 + f" (CPU per bar, one thread: {cpu[1, one] / cpu[n_all, one]:.2f}x)")
    for label, _, _ in MULTI_VARIANTS[1:]:
        lines.append(f"  {label} vs {one}: bars/s {rate[n_all, label] / rate[n_all, one]:.2f}x on {n_all} symbols, "
                     f"{rate[1, label] / rate[1, one]:.2f}x on 1; with a free core at most "
                     f"{cpu[n_all, one] / main[n_all, label]:.2f}x / {cpu[1, one] / main[1, label]:.2f}x "
                     f"(one thread's CPU per bar / the loop thread's); CPU of all threads "
                     f"{cpu[n_all, label] / cpu[n_all, one]:.2f}x / {cpu[1, label] / cpu[1, one]:.2f}x")
    same = all(contents[(n, label)] == contents[(n, one)] for n in (1, n_all) for label, _, _ in MULTI_VARIANTS)
    lines.append(f"  ledgers of every variant identical to {one}'s (ledger_content): {same}")
    return lines


#: Seconds a child may wait for a quiet machine before it starts (``--quiet-wait``; _quiet.py), and the
#: most cores the other processes used while a child ran (printed on the ``machine:`` line).
QUIET = {"wait": 30.0, "others": 0.0}


def measure(kind: str, size: int, work: Path) -> dict[str, Any]:
    """Run one child (once the machine is quiet); its result plus its peak RSS (MB), whole wall time and the
    cores the other processes used meanwhile."""
    cmd = [sys.executable, __file__, "--child", kind, str(size), "--work", str(work)]
    mark = _quiet.wait_quiet(QUIET["wait"])
    t0 = time.perf_counter()
    errors = work / f"{kind}_{size}.stderr"
    with errors.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = errors.read_text()[-2000:]
        raise SystemExit(f"{kind} {size} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    others = _quiet.others_during(mark, usage.ru_utime + usage.ru_stime, wall)
    QUIET["others"] = max(QUIET["others"], others or 0.0)
    doc = json.loads(out.strip().splitlines()[-1])
    peak = doc.pop("vm_hwm_mb") or usage.ru_maxrss / 1024  # ru_maxrss: an upper bound (see _vm_hwm_mb)
    return {"kind": kind, "size": size, **doc, "wall": wall, "peak_rss_mb": peak, "others": others}


def _vm_hwm_mb() -> float | None:
    """This process's peak resident set (``VmHWM``: reset by exec, unlike ``ru_maxrss``, which a
    child inherits from the parent it was forked from)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# ---------------------------------------------------------------------------- set-up


def prepare(work: Path, paper_sizes: list[int], feature_sizes: list[int]) -> None:
    from aitrader.config import TrainConfig
    from aitrader.data.synthetic import generate_bars
    from aitrader.registry import Registry
    from aitrader.training.trainer import train

    start = "2010-01-01"
    train_bars = generate_bars(TRAIN_BARS, seed=1, signal=0.1, volatility=0.001, freq="1min", start=start)
    cfg = TrainConfig.model_validate({
        "data": {"symbol": "SYN"},
        "model": {"kind": "lightgbm", "params": {"n_estimators": 50, "num_threads": 1}},
        "split": {"n_folds": 2, "min_train": 1000, "holdout": 0.2},
    })
    train(cfg, bars=train_bars, out_dir=work / "art")
    reg = Registry(work / "models")
    reg.register(work / "art", "syn_lgbm")
    reg.deploy("syn_lgbm", reason="bench")
    (work / "trading.yaml").write_text(CONFIG)
    after = train_bars.index[-1] + (train_bars.index[1] - train_bars.index[0])
    for n in sorted(set(paper_sizes) | set(feature_sizes)):
        bars = generate_bars(n, seed=2, signal=0.1, volatility=0.001, freq="1min", start=after)
        bars.rename_axis("timestamp").to_parquet(work / f"bars_{n}.parquet")


# ---------------------------------------------------------------------------- report


def curve(title: str, rows: list[dict[str, Any]], unit: str) -> list[str]:
    head = (f"  {'size':>10} {'seconds':>9} {'us/' + unit:>9} {'peak RSS MB':>12} {'RSS B/' + unit + ' vs first':>18}"
            f" {'vs first':>8} {'load':>5}")
    lines = [title, head]
    first = rows[0]
    for r in rows:
        per = r["seconds"] / r["size"] * 1e6
        grow = ((r["peak_rss_mb"] - first["peak_rss_mb"]) * 2**20 / (r["size"] - first["size"])
                if r["size"] != first["size"] else float("nan"))
        lines.append(f"  {r['size']:>10,} {r['seconds']:>9.2f} {per:>9.2f} {r['peak_rss_mb']:>12.1f} {grow:>18.1f}"
                     f" {r['peak_rss_mb'] / first['peak_rss_mb']:>7.2f}x {r.get('load', float('nan')):>5.2f}")
    return lines


def main() -> None:
    # the commands start as an installed package does, from cached bytecode (a shell with
    # PYTHONDONTWRITEBYTECODE would make each child compile aitrader's modules again: ~0.2-0.3 s of start-up)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="sizes 100x smaller (smoke run)")
    ap.add_argument("--work", default=None, help="folder for bars, models and runs (default: a temp folder)")
    ap.add_argument("--json", action="store_true", help="print the rows as one JSON document")
    ap.add_argument("--only", default="paper,backtest,monitor,retrain,features,multi",
                    help="comma-separated parts: paper, backtest, monitor and retrain (these three need paper), "
                         "features, multi (default: all)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per multi-symbol figure (the median is shown)")
    ap.add_argument("--quiet-wait", type=float, default=30.0, metavar="SECONDS",
                    help="before each child, wait up to this long for the other processes to use < 0.1 core "
                         "(0: do not wait); the most they used while a child ran is printed")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    QUIET["wait"] = max(0.0, args.quiet_wait)
    if args.child:
        doc = child(args.child[0], int(args.child[1]), Path(args.work))
        print(json.dumps({**doc, "vm_hwm_mb": _vm_hwm_mb()}))
        return
    parts = set(args.only.split(","))
    scale = 100 if args.quick else 1
    paper = [10_000 // scale, 100_000 // scale, 1_000_000 // scale] \
        if parts & {"paper", "monitor", "backtest", "retrain"} else []
    feats = [1_000_000 // scale, 5_000_000 // scale] if "features" in parts else []
    load0 = os.getloadavg()
    multi: list[str] = []
    with tempfile.TemporaryDirectory(prefix="aitrader-scale-", dir=args.work) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        prepare(work, paper, feats)
        print(f"set-up (train, deploy, bar files): {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        rows: dict[str, list[dict[str, Any]]] = {"paper-trade": [], "backtest": [], "monitor": [],
                                                 "monitor (whole read, before)": [],
                                                 "retrain feedback": [], "retrain feedback (whole read, before)": [],
                                                 "features build": [], "features (whole, before)": []}
        for n in paper if parts & {"paper", "monitor", "retrain"} else []:
            r = measure("paper", n, work)
            r["load"] = os.getloadavg()[0]
            rows["paper-trade"].append(r)
            print(f"paper-trade {n}: {rows['paper-trade'][-1]['seconds']:.1f} s", file=sys.stderr)
        if "backtest" in parts:
            rows["backtest"] = backtest_rows(paper, work)
        if "monitor" in parts:
            for n in paper:
                rows["monitor"].append(measure("monitor", n, work) | {"load": os.getloadavg()[0]})
            rows["monitor (whole read, before)"].append(measure("monitor_whole", paper[-1], work)
                                                        | {"load": os.getloadavg()[0]})
        if "retrain" in parts:
            for n in paper:
                feedback_runs(work, n)
                rows["retrain feedback"].append(measure("feedback", n, work) | {"load": os.getloadavg()[0]})
            for n in paper:
                rows["retrain feedback (whole read, before)"].append(measure("feedback_whole", n, work)
                                                                     | {"load": os.getloadavg()[0]})
        for n in feats:
            rows["features build"].append(measure("features", n, work) | {"load": os.getloadavg()[0]})
        for n in feats:
            rows["features (whole, before)"].append(measure("features_whole", n, work) | {"load": os.getloadavg()[0]})
        if "multi" in parts:
            if not CRYPTO.is_dir():
                multi = [f"several symbols: skipped ({CRYPTO} not found)"]
            else:
                multi = multi_symbol(work, args.repeat)
    load1 = os.getloadavg()
    rows = {k: v for k, v in rows.items() if v}
    if args.json:
        print(json.dumps({"load_before": load0, "load_after": load1, "cpus": os.cpu_count(), "rows": rows,
                          "multi": multi}, indent=1))
        return
    print(f"machine: {os.cpu_count()} CPUs, load average (1/5/15 min) before {load0[0]:.2f}/{load0[1]:.2f}/"
          f"{load0[2]:.2f}, after {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}; other processes used at most "
          f"{QUIET['others']:.2f} core while a child ran (each waited up to {QUIET['wait']:.0f} s for < 0.1)")
    for title, data in rows.items():
        for line in curve(title, data, "bar"):
            print(line)
    for r in rows.get("paper-trade", []):
        print(f"  ledger of {r['size']:,} bars: {r['ledger_bytes'] / r['size']:.0f} bytes/bar")
    paper_at = {r["size"]: r for r in rows.get("paper-trade", [])}
    for r in rows.get("backtest", []):
        p = paper_at.get(r["size"])
        if p is not None:
            print(f"  backtest / paper-trade at {r['size']:,} bars: {p['seconds'] / r['seconds']:.2f}x bars/s, "
                  f"peak RSS {r['peak_rss_mb']:.0f} vs {p['peak_rss_mb']:.0f} MB")
    for streamed, whole in zip(rows.get("retrain feedback", []), rows.get("retrain feedback (whole read, before)", []),
                               strict=True):
        print(f"  retrain feedback on {whole['size']:,} bars ({whole['outcomes']:,} outcomes): the same result "
              f"streamed and whole: {streamed['result'] == whole['result']}; peak RSS whole / streamed "
              f"{whole['peak_rss_mb'] / streamed['peak_rss_mb']:.1f}x, "
              f"seconds {whole['seconds'] / streamed['seconds']:.2f}x")
    for line in multi:
        print(line)


if __name__ == "__main__":
    main()
