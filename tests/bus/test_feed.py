"""``feed``: bars in order on their symbol's shard, a restarted feed publishes nothing twice, --follow tails."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgpack
import redis

from aitrader.bus.settings import BusSection
from tests.bus.conftest import RedisServer


def _bars(url: str, stream: str) -> list[tuple[str, int]]:
    r = redis.Redis.from_url(url)
    try:
        out = []
        for _, f in r.xrange(stream):
            ev = msgpack.unpackb(f[b"e"])
            out.append((ev["type"], ev["data"]["i"]))
        return out
    finally:
        r.close()


def test_feed_then_a_restarted_feed_publishes_nothing_twice(tmp_path: Path, redis_server: RedisServer,
                                                            prefix: str) -> None:
    from aitrader.bus.client import Bus
    from aitrader.bus.feed import feed
    from aitrader.data.synthetic import generate_bars

    generate_bars(40, seed=1).rename_axis("timestamp").to_csv(tmp_path / "SYN.csv")
    cfg = BusSection(prefix=prefix, batch_size=7)
    first = feed(cfg, redis_server.url, [f"SYN={tmp_path / 'SYN.csv'}"])
    again = feed(cfg, redis_server.url, [f"SYN={tmp_path / 'SYN.csv'}"])
    assert (first["published"], first["skipped"]) == (40, 0)
    assert (again["published"], again["skipped"]) == (0, 40)
    stream = Bus(cfg, redis_server.url, role="t").bar_stream(Bus(cfg, redis_server.url, role="t").shard_of("SYN"))
    got = _bars(redis_server.url, stream)
    # bars 0..39 in order, then one end marker per run (a consumer reads the count, not the marker's place)
    assert got == [("market.data.update", i) for i in range(40)] + [("market.data.end", 40)] * 2


def test_follow_publishes_appended_lines_until_stopped(tmp_path: Path, redis_server: RedisServer, prefix: str) -> None:
    from aitrader.bus.feed import feed
    from aitrader.data.synthetic import generate_bars

    bars = generate_bars(12, seed=2).rename_axis("timestamp")
    path = tmp_path / "live.csv"
    bars.iloc[:5].to_csv(path)
    lines = bars.iloc[5:].to_csv(header=False).splitlines(keepends=True)
    cfg = BusSection(prefix=prefix)
    stop = threading.Event()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(feed(cfg, redis_server.url, [f"SYN={path}"],
                                                                  follow=True, stop=stop)))
    thread.start()
    import zlib

    stream = f"{prefix}:bars:{zlib.crc32(b'SYN') % cfg.shards}"
    deadline = time.monotonic() + 30
    while len(_bars(redis_server.url, stream)) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    with path.open("a") as fh:
        fh.write(lines[0])
        fh.write("2099-13-45,not,a,bar,at,all\n")  # skipped (FollowSource's live-bar rules), no index taken
        fh.writelines(lines[1:])
    while len(_bars(redis_server.url, stream)) < 12 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(30)
    assert _bars(redis_server.url, stream) == [("market.data.update", i) for i in range(12)]
    assert result["published"] == 12
