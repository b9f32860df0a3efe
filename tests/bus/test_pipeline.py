"""The pipeline across processes against a real redis-server: its ledger equals the in-process one.

One deployed 20-tree LightGBM, 300 daily bars. The reference is ``aitrader paper-trade`` in one
process (the default batch replay route); each test runs ``feed``, ``predict-worker`` and
``paper-trade --bus`` as separate processes, breaks something (a worker SIGKILLed while it holds
the shard, the trader SIGKILLed and resumed, redis-server SIGKILLed and restarted from its AOF),
and compares the exported fills, orders and equity byte for byte.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis

from aitrader.cli.main import app
from tests.bus.conftest import BARS, RedisServer, bus_config, cli, exports, runner

DAY_SPEED = "8640000"  # --speed for daily bars: 100 bars a second
class Pipeline:
    """The processes of one test, in the test's own folder, on the test's own stream prefix."""

    def __init__(self, world: dict[str, Any], folder: Path, url: str, prefix: str, *, batch: int = 16) -> None:
        self.world, self.folder, self.url, self.prefix = world, folder, url, prefix
        self.config = folder / "trading.yaml"
        self.config.write_text(bus_config(prefix, batch))
        self.env = {"AITRADER_REGISTRY": str(world["registry"])}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        proc = cli(*args, "--config", str(self.config), "--bus", self.url, cwd=self.folder, env=self.env)
        self.procs.append(proc)
        return proc

    def feed(self, *extra: str) -> subprocess.Popen[bytes]:
        return self.start("feed", "--json", "--data", f"SYN={self.world['data']}", *extra)

    def worker(self) -> subprocess.Popen[bytes]:
        return self.start("predict-worker", "--json")  # until SIGTERM (see stop)

    def trader(self, *extra: str) -> subprocess.Popen[bytes]:
        return self.start("paper-trade", "--json", *extra)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def count(self, stream: str) -> int:
        try:
            client = self.client()
            try:
                return int(client.xlen(f"{self.prefix}:{stream}"))
            finally:
                client.close()
        except redis.ConnectionError:
            return 0

    def event_ids(self, stream: str) -> set[str]:
        """The distinct event ids of a stream (a lapsed lease may repeat a prediction: same id)."""
        import msgpack

        client = self.client()
        try:
            return {msgpack.unpackb(f[b"e"])["id"] for _, f in client.xrange(f"{self.prefix}:{stream}")}
        finally:
            client.close()

    def events(self, stream: str) -> list[tuple[str, dict[str, Any]]]:
        import msgpack

        client = self.client()
        try:
            return [(ev["type"], ev["data"]) for ev in (msgpack.unpackb(f[b"e"]) for _, f in
                                                         client.xrange(f"{self.prefix}:{stream}"))]
        finally:
            client.close()

    def groups(self, stream: str) -> int:
        client = self.client()
        try:
            return len(client.xinfo_groups(f"{self.prefix}:{stream}"))
        except redis.ResponseError:  # no such stream yet
            return 0
        finally:
            client.close()

    def shard_holder(self) -> int | None:
        """pid of the worker holding the lease of SYN's shard."""
        import zlib

        client = self.client()
        try:
            holder = client.get(f"{self.prefix}:lease:{zlib.crc32(b'SYN') % 4}")
        finally:
            client.close()
        return int(holder.decode().rsplit("-", 1)[1]) if holder else None

    def stop(self, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
        """SIGTERM a worker (its loop ends cleanly, exit 0) and read its result."""
        proc.send_signal(signal.SIGTERM)
        return self.finish(proc)

    def finish(self, proc: subprocess.Popen[bytes], timeout: float = 90) -> dict[str, Any]:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err.decode()[-3000:]
        assert out.strip(), err.decode()[-3000:]
        return json.loads(out) if out.strip() else {}

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture
def pipeline(world: dict[str, Any], tmp_path: Path, redis_server: RedisServer, prefix: str) -> Any:
    made: list[Pipeline] = []

    def make(url: str | None = None, **kw: Any) -> Pipeline:
        made.append(Pipeline(world, tmp_path, url or redis_server.url, prefix, **kw))
        return made[-1]

    yield make
    for p in made:
        p.close()


def wait_until(what: str, cond: Callable[[], bool], timeout: float = 60) -> None:
    """Poll ``cond`` (the timeout only bounds a hung test; nothing here measures time)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_multi_process_ledger_equals_in_process(world: dict[str, Any], pipeline: Any, tmp_path: Path) -> None:
    p = pipeline()
    trader = p.trader("--run-id", "bus")  # waits for the feeder's symbol announcement
    workers = [p.worker(), p.worker()]
    p.finish(p.feed())
    summary = p.finish(trader)
    assert summary["bars"] == BARS and summary["status"] == "finished"
    assert summary["bus"]["steps"] == BARS and summary["bus"]["dead_letters"] == 0
    assert exports(tmp_path / "runs", "bus") == world["reference"]
    for w in workers:
        p.stop(w)
    assert p.event_ids("predictions") == {f"pred:SYN:{i}" for i in range(BARS)} | {f"end:SYN:{BARS}"}
    trades = p.events("trades")
    fills = pd.read_csv(io.StringIO(world["reference"]["fills"]))
    equity = pd.read_csv(io.StringIO(world["reference"]["equity"]))
    assert sorted(d["fill_id"] for t, d in trades if t == "trade.executed") == sorted(fills["id"].tolist())
    assert [d["price"] for t, d in trades if t == "trade.executed"] == fills["price"].tolist()
    last = [d for t, d in trades if t == "performance.update"][-1]
    assert (last["step"], last["equity"]) == (len(equity) - 1, equity["equity"].iloc[-1])
    opened = sum(t == "position.opened" for t, _ in trades)
    closed = sum(t == "position.closed" for t, _ in trades)
    assert opened > 0 and opened - closed in (0, 1)  # at most the last one still open
    # the live feedback equals what the ledger records: the last 100 (prediction, outcome) pairs
    from aitrader.bus.feedback import follow_feedback
    from aitrader.config import load_trading_config

    rows: list[dict[str, Any]] = []
    follow_feedback(load_trading_config(p.config), p.url, emit=rows.append, max_idle_s=0.3)
    result = runner.invoke(app, ["export", "bus", "predictions", "--runs-dir", str(tmp_path / "runs")])
    ledger = pd.read_csv(io.StringIO(result.stdout)).dropna(subset=["outcome"]).tail(100)
    pred, out = ledger["prediction"].to_numpy(), ledger["outcome"].to_numpy()
    assert rows[-1]["n"] == 100 and rows[-1]["hit_rate"] == pytest.approx(float(np.mean(
        np.sign(pred[out != 0]) == np.sign(out[out != 0]))), abs=1e-12)
    assert rows[-1]["mae"] == pytest.approx(float(np.mean(np.abs(pred - out))), rel=1e-12)


def test_worker_and_trader_sigkilled_mid_run(world: dict[str, Any], pipeline: Any, tmp_path: Path) -> None:
    """The worker holding SYN's shard dies (the other takes its lease and pending entries over), then
    the trader dies and is resumed: the ledger is still the in-process one."""
    from aitrader.trading.ledger import ledger_content

    p = pipeline(batch=4)
    trader = p.trader("--run-id", "bus")
    first = p.worker()
    feeder = p.feed("--speed", DAY_SPEED)
    wait_until("the first worker's predictions", lambda: p.count("predictions") >= 60)
    second = p.worker()  # joins while the first holds SYN's shard
    holder = p.shard_holder()  # the first one, unless its lease lapsed on a very loaded machine
    assert holder in (first.pid, second.pid)
    victim, survivor = (first, second) if holder == first.pid else (second, first)
    os.kill(holder, signal.SIGKILL)
    victim.wait()
    ledger = tmp_path / "runs" / "bus" / "ledger.db"

    def cursor() -> int:
        try:
            rows = ledger_content(ledger)["cursors"] if ledger.is_file() else []
        except Exception:  # noqa: BLE001 - the trader may be writing the file right now
            return -1
        return int(rows[0][1]) if rows else -1

    wait_until("the trader's cursor", lambda: cursor() >= 150)
    trader.send_signal(signal.SIGKILL)
    trader.wait()
    p.finish(feeder)
    summary = p.finish(p.trader("--resume", "bus"))
    assert summary["bars"] == BARS and summary["status"] == "finished"
    assert exports(tmp_path / "runs", "bus") == world["reference"]
    plain = runner.invoke(app, ["paper-trade", "--resume", "bus", "--runs-dir", str(tmp_path / "runs")])
    assert plain.exit_code == 1 and "resume it with aitrader paper-trade --bus URL --resume bus" in plain.stderr
    stats = p.stop(survivor)
    assert stats["recovered"] >= 1
    if survivor is second:
        assert stats["warmed"] >= 60  # it rebuilt the dead worker's features from the acknowledged bars


def test_redis_server_killed_and_restarted(world: dict[str, Any], pipeline: Any, tmp_path: Path,
                                           restartable_redis: RedisServer) -> None:
    p = pipeline(url=restartable_redis.url)
    trader = p.trader("--run-id", "bus")
    p.worker()
    feeder = p.feed("--speed", DAY_SPEED)
    wait_until("predictions before the crash", lambda: p.count("predictions") >= 100)
    wait_until("the trader's consumer group", lambda: p.groups("predictions") > 0)  # it started (and pinged)
    restartable_redis.kill()
    time.sleep(0.3)  # the processes see the server gone and retry with backoff
    restartable_redis.start()  # replays its append-only file
    p.finish(feeder)
    summary = p.finish(trader)
    assert summary["bars"] == BARS
    assert exports(tmp_path / "runs", "bus") == world["reference"]
