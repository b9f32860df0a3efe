"""Prediction service benchmark: round trips and throughput of ``aitrader serve`` against in-process prediction.

One 200-tree LightGBM (the default 25 features, 5-bar target) is trained on synthetic 1-minute
bars, registered and deployed in a temporary registry; two real ``aitrader serve`` processes on
127.0.0.1 serve it, one with the default per-call deadline (model calls inline under the watchdog)
and one with ``--deadline-ms 0`` (inline, no watchdog). Measured in the same run, on the same feature
rows (the model's real rows):

* one row: p50/p99 round trip of ``ServiceClient.predict_rows`` (DEALER -> ROUTER -> model -> reply),
  against ``ModelRunner.predict_one`` in this process; the two servers in 10 alternating rounds;
* a 50-symbol bar step (50 rows in one request) against ``predict_batch`` of 50 rows in-process;
* throughput (requests/s) of 1 client, and of 8 client processes at once, each sending one-row
  requests back to back for a fixed time;
* the floor: a bare pyzmq ROUTER echo process (no aitrader, no model) and a bare DEALER client
  sending the same 200-byte payload, the transport's own round trip on this machine in this run.

The machine load (1-minute load average, cores) is printed beside every figure.

    .venv/bin/python scripts/bench/serve.py [--calls 5000] [--seconds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f} on {os.cpu_count()} cores"


def world(tmp: Path) -> tuple[Path, np.ndarray, Any]:
    """The deployed 200-tree model, its feature rows and its in-process runner."""
    from aitrader.config import TrainConfig
    from aitrader.data.synthetic import generate_bars
    from aitrader.features import FeaturePipeline
    from aitrader.registry import Registry
    from aitrader.training.trainer import train

    bars = generate_bars(6000, seed=7, signal=0.3, freq="1min")
    cfg = TrainConfig.model_validate({
        "data": {"symbol": "SYN"},
        "model": {"kind": "lightgbm", "params": {"n_estimators": 200, "max_depth": 6, "num_threads": 1}},
        "split": {"n_folds": 2, "min_train": 1000, "holdout": 0.2},
    })
    train(cfg, bars=bars, out_dir=tmp / "art")
    reg = Registry(tmp / "models")
    reg.register(tmp / "art", "bench")
    reg.deploy("bench", reason="bench")
    loaded = reg.load("bench@production")
    reg.close()
    X = FeaturePipeline.from_contract(loaded.manifest["features"]).transform(bars).to_numpy()
    return tmp / "models", X[np.isfinite(X).all(axis=1)], loaded.runner


def start(registry: Path, cwd: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    err = cwd / f"serve{len(extra)}.err"
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "aitrader", "serve", "--model", "bench", "--registry", str(registry),
         "--bind", "tcp://127.0.0.1:*", "--runs-dir", str(cwd / "runs"), *extra],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=err.open("wb"), env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if m := re.search(r"on (tcp://\S+)", err.read_text()):
            return proc, m.group(1)
        if proc.poll() is not None:
            sys.exit(f"aitrader serve exited: {err.read_text()}")
        time.sleep(0.05)
    proc.kill()
    sys.exit("aitrader serve did not start")


ECHO = """
import sys, zmq
ctx = zmq.Context(); s = ctx.socket(zmq.ROUTER); port = s.bind_to_random_port("tcp://127.0.0.1")
print(port, flush=True)
while True:
    s.send_multipart(s.recv_multipart())
"""


def echo_round_trip(calls: int) -> tuple[float, float, str]:
    """p50/p99 us of a bare DEALER -> ROUTER echo (another process) with a 200-byte payload."""
    import zmq

    proc = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)  # noqa: S603
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.connect(f"tcp://127.0.0.1:{port}")
        payload = b"x" * 200

        def once(_: int) -> None:
            sock.send(payload)
            sock.recv()

        p50, p99 = timed(once, calls)
        sock.close(0)
        ctx.term()
    finally:
        proc.kill()
        proc.wait()
    return p50, p99, load()


def timed_all(fn: Callable[[int], Any], calls: int) -> np.ndarray:
    """Microseconds of each of ``calls`` calls fn(i), after up to 500 untimed ones."""
    for i in range(min(500, calls)):
        fn(i)
    out = np.empty(calls)
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        fn(i)
        out[i] = clock() - t0
    return out / 1e3


def timed(fn: Callable[[int], Any], calls: int) -> tuple[float, float]:
    """p50, p99 in microseconds of fn(i)."""
    out = timed_all(fn, calls)
    return float(np.percentile(out, 50)), float(np.percentile(out, 99))


def _client_loop(endpoint: str, rows: np.ndarray, seconds: float, barrier: Any, out: Any) -> None:
    """One client process: after every client is connected (``barrier``), one-row requests back to back
    for ``seconds``; puts its count on ``out``."""
    from aitrader.serve.client import ServiceClient

    c = ServiceClient(endpoint, timeout_ms=30_000)
    for i in range(50):
        c.predict_rows(rows[i % len(rows)].reshape(1, -1))
    barrier.wait()
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        c.predict_rows(rows[n % len(rows)].reshape(1, -1))
        n += 1
    c.close()
    out.put(n)


def throughput(endpoint: str, rows: np.ndarray, clients: int, seconds: float) -> float:
    """Requests per second of ``clients`` processes at once (each counts over the same ``seconds``)."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(clients), ctx.Queue()
    procs = [ctx.Process(target=_client_loop, args=(endpoint, rows[k::clients], seconds, barrier, out))
             for k in range(clients)]
    for p in procs:
        p.start()
    counts = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    return sum(counts) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=5000, help="timed calls per latency figure")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each throughput run")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    a = ap.parse_args()
    from aitrader.serve.client import ServiceClient

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        registry, X, runner = world(tmp)
        n = len(X)
        batches = [X[(k * 50) % (n - 50):(k * 50) % (n - 50) + 50] for k in range(64)]
        results["in_process_one_row"] = (*timed(lambda i: runner.predict_one(X[i % n]), a.calls), load())
        results["in_process_50_rows"] = (*timed(lambda i: runner.predict_batch(batches[i % 64]), a.calls // 5),
                                         load())
        results["zmq_echo_200_bytes"] = echo_round_trip(a.calls)
        servers = {"deadline": start(registry, tmp, []), "inline": start(registry, tmp, ["--deadline-ms", "0"])}
        try:
            # One-row latency of both servers in alternating rounds, so a change in the machine's load
            # during the run weighs on both alike.
            rows = [X[i].reshape(1, -1) for i in range(min(n, 4096))]
            clients = {mode: ServiceClient(endpoint, timeout_ms=10_000) for mode, (_, endpoint) in servers.items()}
            samples: dict[str, list[np.ndarray]] = {mode: [] for mode in servers}
            for _ in range(10):
                for mode, c in clients.items():
                    samples[mode].append(timed_all(lambda i, c=c: c.predict_rows(rows[i % len(rows)]),
                                                   max(1, a.calls // 10)))
            for mode in servers:
                both = np.concatenate(samples[mode])
                results[f"service_one_row_{mode}"] = (float(np.percentile(both, 50)), float(np.percentile(both, 99)),
                                                      load())
                clients[mode].close()
            for mode, (_, endpoint) in servers.items():
                c = ServiceClient(endpoint, timeout_ms=10_000)
                results[f"service_50_rows_{mode}"] = (*timed(lambda i, c=c: c.predict_rows(batches[i % 64]),
                                                             a.calls // 5), load())
                c.close()
                for k in (1, 8):
                    results[f"throughput_{k}_clients_{mode}"] = (throughput(endpoint, X[:4096], k, a.seconds), load())
        finally:
            for proc, _ in servers.values():
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
    if a.json:
        print(json.dumps(results, indent=2))
        return
    one, fifty = results["in_process_one_row"], results["in_process_50_rows"]
    print(f"200-tree LightGBM (ONNX runner), 25 features, {n} real rows; {os.cpu_count()} cores")
    print(f"{'what':44s} {'p50 us':>9s} {'p99 us':>9s} {'p50 vs in-process':>18s}  load")
    print(f"{'in-process predict_one':44s} {one[0]:9.1f} {one[1]:9.1f} {'1.0x':>18s}  {one[2]}")
    print(f"{'in-process predict_batch(50)':44s} {fifty[0]:9.1f} {fifty[1]:9.1f} {'1.0x':>18s}  {fifty[2]}")
    echo = results["zmq_echo_200_bytes"]
    print(f"{'bare pyzmq DEALER/ROUTER echo, 200 bytes':44s} {echo[0]:9.1f} {echo[1]:9.1f} {'':>18s}  {echo[2]}")
    for mode in ("deadline", "inline"):
        for what, ref in (("one_row", one), ("50_rows", fifty)):
            r = results[f"service_{what}_{mode}"]
            label = f"service {what.replace('_', ' ')} ({mode})"
            print(f"{label:44s} {r[0]:9.1f} {r[1]:9.1f} {r[0] / ref[0]:17.1f}x  {r[2]}"
                  + (f"  ({r[0] - echo[0]:+.0f} us over the echo)" if what == "one_row" else ""))
    for mode in ("deadline", "inline"):
        for k in (1, 8):
            r = results[f"throughput_{k}_clients_{mode}"]
            print(f"{f'throughput, {k} client(s), one-row requests ({mode})':44s} {r[0]:9.0f} req/s"
                  f"{'':>20s}  {r[1]}")


if __name__ == "__main__":
    main()
