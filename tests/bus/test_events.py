"""Envelopes, validation, circuit breaker, settings and the bounded publish buffer (no server needed)."""

from __future__ import annotations

import math
from pathlib import Path

import msgpack
import pytest

from aitrader.bus.client import Bus, CircuitBreaker
from aitrader.bus.events import BAR, FIELD, PREDICTION, BadEvent, check_bar, decode, fields
from aitrader.bus.settings import BusSection, connection_kwargs, redacted
from aitrader.errors import BusError, ConfigError

GOOD_BAR = {"symbol": "SYN", "i": 7, "ts": "2024-01-02T00:00:00", "epoch": 1704153600.0, "o": 10.0, "h": 11.0,
            "l": 9.5, "c": 10.5, "v": 1000.0}


def raw(obj: object) -> dict[bytes, bytes]:
    return {FIELD: msgpack.packb(obj, use_bin_type=True)}


def envelope(**over: object) -> dict[str, object]:
    env = {"v": 1, "id": "bar:SYN:7", "type": BAR, "src": "feed-h-1", "ts": 1.5, "data": dict(GOOD_BAR)}
    env.update(over)
    return env


def test_an_event_round_trips_exactly() -> None:
    ev = decode(fields(BAR, "bar:SYN:7", "feed-h-1", GOOD_BAR), max_bytes=65536)
    assert (ev.type, ev.id, ev.src, ev.v) == (BAR, "bar:SYN:7", "feed-h-1", 1)
    assert ev.data == GOOD_BAR  # floats travel as float64: bit for bit


@pytest.mark.parametrize(("entry", "reason"), [
    ({b"x": b"1"}, "no field 'e'"),
    ({FIELD: b"\xc1\xc1"}, "not msgpack"),
    (raw([1, 2]), "not a map"),
    (raw(envelope(v=2)), "schema version 2"),
    (raw(envelope(v=None)), "schema version None"),
    (raw(envelope(type="market.data.frobnicate")), "unknown event type"),
    (raw(envelope(id=5)), "envelope key 'id'"),
    (raw(envelope(data={**GOOD_BAR, "i": "7"})), "payload key 'i'"),
    (raw(envelope(data={**GOOD_BAR, "i": True})), "payload key 'i'"),
    (raw(envelope(data={**GOOD_BAR, "c": math.nan})), "payload key 'c' is nan"),
    (raw(envelope(data={k: v for k, v in GOOD_BAR.items() if k != "ts"})), "payload key 'ts'"),
    (raw(envelope(type=PREDICTION)), "payload key 'bar'"),
])
def test_what_a_consumer_cannot_use_is_a_bad_event_with_its_reason(entry: dict[bytes, bytes], reason: str) -> None:
    with pytest.raises(BadEvent) as info:
        decode(entry, max_bytes=65536)
    assert reason in info.value.reason


def test_an_oversized_event_is_refused_before_it_is_unpacked() -> None:
    entry = raw(envelope(data={**GOOD_BAR, "pad": "x" * 2000}))
    assert len(entry[FIELD]) > 2000
    with pytest.raises(BadEvent, match="oversized"):
        decode(entry, max_bytes=1024)


def test_bar_values_follow_the_live_bar_rules() -> None:
    assert check_bar(GOOD_BAR) is None
    assert check_bar({**GOOD_BAR, "c": -1.0, "l": -2.0}) is not None
    assert check_bar({**GOOD_BAR, "h": 9.0}) is not None  # high below the close
    assert check_bar({**GOOD_BAR, "i": -1}) == "bar index -1 < 0"


def test_circuit_breaker_opens_half_opens_and_closes() -> None:
    now = [0.0]
    b = CircuitBreaker(3, 30.0, clock=lambda: now[0])
    for _ in range(2):
        b.failure()
    assert b.state == "closed" and b.allow()
    b.failure()
    assert b.state == "open" and not b.allow() and b.wait_s() == 30.0
    now[0] = 29.9
    assert not b.allow()
    now[0] = 30.0
    assert b.allow() and b.state == "half_open"
    b.failure()  # one failure while half-open opens it again
    assert b.state == "open" and b.trips == 2
    now[0] = 60.0
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.count == 0


def test_publishing_while_the_server_is_down_buffers_up_to_the_bound_then_stops(tmp_path: Path) -> None:
    cfg = BusSection(breaker={"failures": 1, "reset_seconds": 600, "buffer_max": 3})
    bus = Bus(cfg, f"unix://{tmp_path}/nothing.sock", role="test")
    for k in range(3):
        bus.publish("s", BAR, f"bar:SYN:{k}", GOOD_BAR)
    assert len(bus.buffer) == 3 and bus.breaker.state == "open"
    with pytest.raises(BusError, match="buffer_max"):
        bus.publish("s", BAR, "bar:SYN:3", GOOD_BAR)
    assert len(bus.buffer) == 3  # nothing dropped, nothing half-added


def test_settings_validate_and_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from aitrader.config import TradingConfig, build_model

    with pytest.raises(ConfigError, match="bus.url"):
        build_model(TradingConfig, {"bus": {"url": "http://localhost"}}, "t.yaml")
    with pytest.raises(ConfigError, match="bus.max_deliveries"):
        build_model(TradingConfig, {"bus": {"max_deliveries": 0}}, "t.yaml")
    monkeypatch.setenv("MY_BUS_PW", "s3cret")
    kw = connection_kwargs(BusSection(password_env="MY_BUS_PW", db=2), "redis://127.0.0.1:7/0")
    assert kw == {"url": "redis://127.0.0.1:7/0", "password": "s3cret", "db": 2}
    assert redacted("redis://user:s3cret@127.0.0.1:6379/0") == "redis://user:***@127.0.0.1:6379/0"
    assert BusSection().url.startswith("redis://127.0.0.1")  # loopback by default


def test_a_feed_keeps_its_bars_in_memory_while_the_bus_is_down_then_stops(tmp_path: Path) -> None:
    from aitrader.bus.feed import Feeder

    cfg = BusSection(batch_size=2, breaker={"failures": 1, "reset_seconds": 600, "buffer_max": 5})
    feeder = Feeder(cfg, f"unix://{tmp_path}/nothing.sock")
    for i in range(4):
        feeder.add("SYN", i, "2024-01-02T00:00:00", 1.7e9 + i, [10.0, 11.0, 9.0, 10.5, 100.0])
    assert [p[3] for p in feeder.pending] == [0, 1, 2, 3] and feeder.published == 0  # kept, in order
    with pytest.raises(BusError, match="buffer_max"):
        for i in range(4, 6):
            feeder.add("SYN", i, "2024-01-02T00:00:00", 1.7e9 + i, [10.0, 11.0, 9.0, 10.5, 100.0])
