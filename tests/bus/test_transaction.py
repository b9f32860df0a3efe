"""``Bus.transaction``: XADDs, XACKs and HSETs as one hand-packed server-side script, checked against
what redis-server itself reports (XRANGE, XPENDING, HGETALL) through a plain redis-py client."""

from __future__ import annotations

import redis

from aitrader.bus.client import Bus
from aitrader.bus.settings import BusSection
from tests.bus.conftest import RedisServer


def test_adds_acks_and_hashes_land_as_sent_also_past_luas_unpack_limit(redis_server: RedisServer,
                                                                       prefix: str) -> None:
    bus = Bus(BusSection(prefix=prefix), redis_server.url, role="test")
    plain = redis.Redis.from_url(redis_server.url)
    try:
        src, out, hkey = f"{prefix}:in", f"{prefix}:out", f"{prefix}:h"
        pipe = plain.pipeline(transaction=False)
        for k in range(9000):  # more ids than one Lua unpack() takes (~8,000 values with the others)
            pipe.xadd(src, {b"e": str(k).encode()})
        pipe.execute()
        plain.xgroup_create(src, "g", id="0")
        got = plain.xreadgroup("g", "c", {src: ">"}, count=20_000)
        ids = [eid.decode() for eid, _ in (got[0][1] if isinstance(got, list) else got[src.encode()][0])]
        assert len(ids) == 9000
        payloads = [bytes([k % 256]) * (k + 1) for k in range(300)]  # binary, \r\n inside, 1..300 bytes
        bus.transaction([(out, {b"e": p, b"x": b"\r\n"}) for p in payloads], [(src, "g", ids)],
                        [(hkey, {"SYN": 41, "SYX": 7})])
        entries = plain.xrange(out)
        assert [f for _, f in entries] == [{b"e": p, b"x": b"\r\n"} for p in payloads]
        assert plain.xpending(src, "g")["pending"] == 0
        assert plain.hgetall(hkey) == {b"SYN": b"41", b"SYX": b"7"}
        assert bus.counters["published"] == 300

        plain.script_flush()  # as after a server restart: the next call loads the script again
        bus.transaction([(out, {b"e": b"after-flush"})])
        assert plain.xrevrange(out, count=1)[0][1] == {b"e": b"after-flush"}
    finally:
        plain.close()
        bus.close()
