"""Malformed, oversized, wrong-version, bad-valued and too-often-delivered events go to the dead-letter
stream with their reason; the worker and the trader keep going; ``bus dlq --requeue`` puts them back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis
from typer.testing import CliRunner

from aitrader.cli.main import app
from tests.bus.conftest import RedisServer, bus_config

runner = CliRunner()
N = 80


def test_bad_events_are_dead_lettered_and_nothing_crashes(world: dict[str, Any], tmp_path: Path,
                                                         redis_server: RedisServer, prefix: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from aitrader.bus.events import FIELD
    from aitrader.bus.feed import Feeder, read_data, symbol_meta
    from aitrader.bus.trader import paper_trade_bus
    from aitrader.bus.worker import PredictWorker
    from aitrader.config import load_trading_config
    from aitrader.trading.sources import BarSeries

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "trading.yaml"
    config.write_text(bus_config(prefix, 16))
    cfg = load_trading_config(config)
    url = redis_server.url
    frame = read_data([f"SYN={world['data']}"])["SYN"].iloc[:N]
    s = BarSeries.from_frame("SYN", frame)
    feeder = Feeder(cfg.bus, url)
    feeder.start_symbols({"SYN": symbol_meta(frame)})
    cols = [frame[c].to_numpy(dtype="float64") for c in ("open", "high", "low", "close", "volume")]
    for i, (ts, ep) in enumerate(zip(s.ts, (s.ns() / 1e9).tolist(), strict=True)):
        vals = [float(a[i]) for a in cols]
        if i == 50:
            vals[2] = vals[3] = -1.0  # a negative low and close: breaks the price rules
        feeder.add("SYN", i, ts, ep, vals)
    feeder.end("SYN", N)
    stream = feeder.bus.bar_stream(feeder.bus.shard_of("SYN"))
    r = redis.Redis.from_url(url)
    env = {"v": 1, "id": "x", "type": "market.data.update", "src": "t", "ts": 0.0, "data": {}}
    r.xadd(stream, {FIELD: b"\xc1 not msgpack"})
    r.xadd(stream, {FIELD: msgpack.packb({**env, "data": {"pad": "x" * 70_000}})})
    r.xadd(stream, {FIELD: msgpack.packb({**env, "v": 99})})
    r.xadd(stream, {FIELD: msgpack.packb({**env, "type": "market.data.frobnicate"})})
    # bar 0 was delivered three times to consumers that died without acknowledging it
    r.xgroup_create(stream, cfg.bus.consumer_group, id="0", mkstream=True)
    first = r.xreadgroup(cfg.bus.consumer_group, "worker-gone-1", {stream: ">"}, count=1)[0][1][0][0]
    for name in ("worker-gone-2", "worker-gone-3"):
        r.xclaim(stream, cfg.bus.consumer_group, name, 0, [first])
    r.xadd(f"{prefix}:predictions", {FIELD: msgpack.packb([1, 2, 3])})  # garbage for the trader too

    worker = PredictWorker(cfg, url, registry_root=str(world["registry"]))
    stats = worker.run(max_idle_s=0.5)
    assert stats["bars"] == N - 2 and stats["claimed"] == 1
    summary = paper_trade_bus(url=url, config_path=str(config), run_id="dlq", registry_root=str(world["registry"]),
                              runs_dir=str(tmp_path / "runs"))
    assert summary["status"] == "finished" and summary["bars"] == N - 2
    assert summary["bus"]["skipped_bars"] == 2 and summary["bus"]["dead_letters"] == 1

    result = runner.invoke(app, ["bus", "dlq", "--json", "--bus", url, "--config", str(config)])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    reasons = sorted(d["reason"] for d in doc["dead_letters"])
    assert doc["count"] == 7
    expected = ["bad bar SYN #50", "delivered 3 times without acknowledgement", "not msgpack", "not a map",
                "oversized", "schema version 99", "unknown event type 'market.data.frobnicate'"]
    for want in expected:
        assert sum(want in reason for reason in reasons) == 1, (want, reasons)
    assert r.xlen(f"{prefix}:errors") == 7  # each reported as an alert

    status = runner.invoke(app, ["bus", "status", "--json", "--bus", url, "--config", str(config)])
    assert status.exit_code == 0, status.stderr
    lengths = {x["stream"]: x["length"] for x in json.loads(status.stdout)["streams"]}
    assert lengths[f"{stream}:dlq"] == 6 and lengths[f"{prefix}:predictions:dlq"] == 1

    before = r.xlen(stream)
    again = runner.invoke(app, ["bus", "dlq", "--requeue", "--json", "--bus", url, "--config", str(config)])
    assert json.loads(again.stdout)["requeued"] == 7
    assert r.xlen(f"{stream}:dlq") == 0 and r.xlen(stream) == before + 6
    r.close()


def test_an_unreachable_bus_is_one_clean_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bus", "status", "--bus", f"unix://{tmp_path}/none.sock"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach the bus at unix://") and "start redis-server" in result.stderr
    bad = runner.invoke(app, ["bus", "status", "--bus", "http://x"])
    assert bad.exit_code == 1 and "redis://HOST:PORT/DB" in bad.stderr
