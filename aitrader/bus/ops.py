"""What ``aitrader bus status|tail|dlq`` show: streams, groups, pending, lag, processes, dead letters."""

from __future__ import annotations

import json
import time
from typing import Any

from aitrader.bus.client import Bus, id_key
from aitrader.bus.events import FIELD, BadEvent, decode
from aitrader.errors import BusError


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def streams(bus: Bus) -> list[str]:
    found = bus.call(lambda r: [_s(k) for k in r.scan_iter(match=f"{bus.cfg.prefix}:*", count=1000)])
    return sorted(k for k in found if bus.call(lambda r, k=k: _s(r.type(k))) == "stream")


def status(bus: Bus) -> dict[str, Any]:
    """Every stream of the prefix (length, groups with pending/consumers/lag) and every live process."""
    bus.ping()
    rows = []
    for name in streams(bus):
        length = int(bus.call(lambda r, n=name: r.xlen(n)))
        groups = []
        for g in bus.call(lambda r, n=name: r.xinfo_groups(n)):
            last = _s(g["last-delivered-id"])
            lag = g.get("lag")
            if lag is None:  # Redis < 7: count the entries after the last delivered one
                lag = len(bus.call(lambda r, n=name, lo=last: r.xrange(n, min=f"({lo}", max="+", count=100_000)))
            groups.append({"group": _s(g["name"]), "consumers": int(g["consumers"]), "pending": int(g["pending"]),
                           "last_delivered": last, "lag": int(lag)})
        rows.append({"stream": name, "length": length, "groups": groups})
    procs = []
    for key in sorted(bus.call(lambda r: [_s(k) for k in r.scan_iter(match=bus.key("proc", "*"), count=1000)])):
        raw = bus.call(lambda r, k=key: r.get(k))
        if raw:
            row = json.loads(raw)
            row["name"] = key.split(":", 2)[-1]
            row["age_s"] = round(time.time() - float(row.get("updated") or 0), 1)
            procs.append(row)
    leases = {}
    for shard in range(bus.cfg.shards):
        holder = bus.call(lambda r, s=shard: r.get(bus.key("lease", s)))
        leases[str(shard)] = _s(holder) if holder else None
    info = bus.call(lambda r: r.info("server"))
    mem = bus.call(lambda r: r.info("memory"))
    return {"url": bus.url, "redis_version": info.get("redis_version"), "used_memory": mem.get("used_memory"),
            "streams": rows, "processes": procs, "leases": leases}


def _entry(stream: str, eid: Any, flds: dict[Any, Any], max_bytes: int) -> dict[str, Any]:
    row: dict[str, Any] = {"stream": stream, "id": _s(eid)}
    for k, v in flds.items():
        if _s(k) != FIELD.decode():
            row[_s(k)] = _s(v)
    try:
        ev = decode(flds, max_bytes=max_bytes)
        row.update({"type": ev.type, "event_id": ev.id, "src": ev.src, "data": _plain(ev.data)})
    except BadEvent as exc:
        row["undecodable"] = exc.reason
    return row


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def resolve_stream(bus: Bus, name: str) -> str:
    full = name if name.startswith(bus.cfg.prefix + ":") else bus.key(name)
    if bus.call(lambda r: _s(r.type(full))) != "stream":
        known = [s.split(":", 1)[1] for s in streams(bus)]
        raise BusError(f"no stream {full} on {bus.url}; streams: {', '.join(known) or 'none'}")
    return full


def tail(bus: Bus, name: str, count: int = 20) -> list[dict[str, Any]]:
    """The last ``count`` entries of a stream, decoded (oldest first)."""
    bus.ping()
    full = resolve_stream(bus, name)
    got = bus.call(lambda r: r.xrevrange(full, max="+", min="-", count=count))
    return [_entry(full, eid, flds, bus.cfg.max_event_bytes) for eid, flds in reversed(got)]


def dlq(bus: Bus, *, requeue: bool = False) -> dict[str, Any]:
    """Every dead letter with its reason; ``requeue``: put each back on its stream (a new entry) and
    remove it from the dead-letter stream, in one transaction per entry."""
    bus.ping()
    out: list[dict[str, Any]] = []
    moved = 0
    for name in [s for s in streams(bus) if s.endswith(":dlq")]:
        for eid, flds in bus.call(lambda r, n=name: r.xrange(n, min="-", max="+")):
            row = _entry(name, eid, flds, bus.cfg.max_event_bytes)
            out.append(row)
            if requeue:
                origin = _s(flds.get(b"stream", name[: -len(":dlq")].encode()))
                raw = flds.get(FIELD, b"")

                def move(r: Any, n: str = name, e: Any = eid, o: str = origin, b: Any = raw) -> Any:
                    pipe = r.pipeline(transaction=True)
                    pipe.xadd(o, {FIELD: b}, maxlen=bus.cfg.maxlen, approximate=True)
                    pipe.xdel(n, e)
                    return pipe.execute()

                bus.call(move)
                moved += 1
    out.sort(key=lambda r: (r["stream"], id_key(r["id"])))
    return {"dead_letters": out, "count": len(out), "requeued": moved}
