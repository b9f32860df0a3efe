"""One process's connection to the bus: streams, consumer groups, dead letters, circuit breaker.

Every Redis call goes through :meth:`Bus.call`, which counts failures in a :class:`CircuitBreaker`
and retries with exponential backoff (redis-py reconnects on the next call): a restarted
redis-server is picked up where it left off. :meth:`Bus.publish` does not block while the breaker
is open: events wait in a bounded in-memory buffer and are flushed, in order, on the next call that
gets through; a full buffer stops the process with a :class:`BusError` rather than drop an event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import redis

from aitrader.bus.events import ALERT, FIELD, encode, source_name
from aitrader.bus.settings import BusSection, connection_kwargs, redacted
from aitrader.errors import BusError

log = logging.getLogger("aitrader.bus")
Entry = tuple[str, str, dict[bytes, bytes]]  # stream, entry id, fields
# What a dead or restarting server looks like from redis-py (BusyLoadingError: replaying its AOF).
TRANSIENT: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
RETRYABLE: tuple[type[Exception], ...] = (BusError, *TRANSIENT)


class BusStopped(Exception):
    """The process was asked to stop while it waited for the bus."""


class CircuitBreaker:
    """closed -> (``failures`` in a row) open -> (``reset_seconds``) half_open -> success: closed."""

    def __init__(self, failures: int, reset_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.reset_seconds = reset_seconds
        self.clock = clock
        self.state = "closed"
        self.count = 0
        self.opened_at = 0.0
        self.trips = 0

    def allow(self) -> bool:
        if self.state == "open" and self.clock() - self.opened_at >= self.reset_seconds:
            self.state = "half_open"
        return self.state != "open"

    def wait_s(self) -> float:
        """Seconds until an open breaker half-opens (0 when it allows calls)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self.reset_seconds - (self.clock() - self.opened_at))

    def success(self) -> None:
        self.state, self.count = "closed", 0

    def failure(self) -> None:
        self.count += 1
        if self.state == "half_open" or (self.state == "closed" and self.count >= self.failures):
            self.state, self.opened_at = "open", self.clock()
            self.trips += 1


class Bus:
    """Streams of one prefix on one server, seen by one process (``role`` names its consumer)."""

    def __init__(self, cfg: BusSection, url: str | None = None, *, role: str,
                 stop: threading.Event | None = None, client: Any = None) -> None:
        kwargs = connection_kwargs(cfg, url)
        self.url = redacted(kwargs["url"])
        self.cfg = cfg
        try:
            self.redis: Any = client or redis.Redis.from_url(
                **kwargs, socket_timeout=max(5.0, cfg.block_ms / 1000 + 2), socket_connect_timeout=2.0,
                health_check_interval=0)
        except ValueError as exc:
            raise BusError(f"--bus {self.url}: {exc}; use redis://HOST:PORT/DB or unix:///PATH") from exc
        self.name = source_name(role)
        self.role = role
        self.breaker = CircuitBreaker(cfg.breaker.failures, cfg.breaker.reset_seconds)
        self.buffer: deque[tuple[str, dict[bytes, bytes]]] = deque()
        self.stop = stop or threading.Event()
        self.counters = {"published": 0, "consumed": 0, "dead_letters": 0, "reconnects": 0}
        self.started = time.time()
        self._down_since: float | None = None
        self._sha: bytes | None = None

    # ------------------------------------------------------------------ names
    def key(self, *parts: str | int) -> str:
        return ":".join([self.cfg.prefix, *map(str, parts)])

    def bar_stream(self, shard: int) -> str:
        return self.key("bars", shard)

    def shard_of(self, symbol: str) -> int:
        import zlib

        return zlib.crc32(symbol.encode()) % self.cfg.shards

    # ------------------------------------------------------------------ calls
    def call(self, fn: Callable[..., Any], *, retry: bool = True) -> Any:
        """``fn(redis)`` through the breaker; transient failures retried with backoff until it works
        (or :class:`BusStopped` once ``stop`` is set). ``retry=False``: one try, the error raised."""
        delay = 0.05
        while True:
            if not self.breaker.allow():
                if not retry:
                    raise BusError(f"the bus at {self.url} is unreachable (circuit breaker open)")
                self._sleep(min(self.breaker.wait_s(), 1.0) or 0.01)
                continue
            try:
                out = fn(self.redis)
            except TRANSIENT as exc:
                self.breaker.failure()
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.warning("bus %s unreachable (%s): retrying, breaker %s", self.url, exc, self.breaker.state)
                if not retry:
                    raise
                self._sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except redis.ResponseError as exc:
                if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                    raise BusError(f"the bus at {self.url} refused the credentials ({exc}); set the password "
                                   f"in ${self.cfg.password_env}") from exc
                raise
            if self._down_since is not None:
                self.counters["reconnects"] += 1
                log.warning("bus %s back after %.1f s", self.url, time.monotonic() - self._down_since)
                self._down_since = None
            self.breaker.success()
            return out

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise BusStopped

    def ping(self) -> None:
        """Fail fast (one try) with a clear error when nothing answers at the url."""
        try:
            self.redis.ping()
        except TRANSIENT as exc:
            raise BusError(f"cannot reach the bus at {self.url}: {exc}; start redis-server or pass --bus URL") \
                from exc
        except redis.AuthenticationError as exc:
            raise BusError(f"the bus at {self.url} refused the credentials; set ${self.cfg.password_env}") from exc
        except redis.ResponseError as exc:
            raise BusError(f"the bus at {self.url} answered {exc}; set ${self.cfg.password_env}") from exc

    # ------------------------------------------------------------------ producing
    def publish(self, stream: str, type_: str, event_id: str, data: dict[str, Any]) -> None:
        """Queue one event and flush what the breaker lets through (never blocks while it is open)."""
        if len(self.buffer) >= self.cfg.breaker.buffer_max:
            self.flush(block=False)
            if len(self.buffer) >= self.cfg.breaker.buffer_max:
                raise BusError(f"the bus at {self.url} has been unreachable for {self.breaker.trips} breaker trip(s) "
                               f"and {len(self.buffer)} events wait in memory (bus.breaker.buffer_max); stopping "
                               "without dropping any: restart redis-server, then run the process again")
        self.buffer.append((stream, {FIELD: encode(type_, event_id, self.name, data)}))
        self.flush(block=False)

    def flush(self, *, block: bool = True) -> None:
        """Send the buffered events in order (``block``: retry until they are all sent)."""
        while self.buffer:
            items = [self.buffer[k] for k in range(min(len(self.buffer), 1000))]
            try:
                cmd = _apply_args(self.cfg.maxlen, items, (), ())
                self.call(lambda r, cmd=cmd: self._run_script(r, cmd), retry=block)
            except RETRYABLE:
                return
            for _ in items:
                self.buffer.popleft()
            self.counters["published"] += len(items)

    def transaction(self, adds: Sequence[tuple[str, dict[bytes, bytes]]],
                    acks: Sequence[tuple[str, str, Sequence[str]]] = (),
                    hashes: Sequence[tuple[str, dict[str, Any]]] = (), *, retry: bool = True) -> None:
        """XADDs, XACKs (stream, group, ids) and HSETs (key, mapping) as ONE command: a server-side
        script (:data:`_APPLY`), which Redis runs atomically as it would a MULTI/EXEC, so the
        downstream events exist exactly when the entries they came from are acknowledged. One command
        packed here instead of one per event through redis-py's pipeline: ~3-4x fewer microseconds
        per event on the client (docs/bus.md, *Performance*)."""
        if not adds and not any(ids for _, _, ids in acks) and not any(m for _, m in hashes):
            return
        cmd = _apply_args(self.cfg.maxlen, adds, acks, hashes)
        self.call(lambda r: self._run_script(r, cmd), retry=retry)
        self.counters["published"] += len(adds)

    def _run_script(self, r: Any, cmd: list[bytes]) -> Any:
        """EVALSHA of :data:`_APPLY` (loaded again after a server restart: NOSCRIPT)."""
        if self._sha is None:
            self._sha = _b(r.script_load(_APPLY))
        try:
            return _send(r, [b"EVALSHA", self._sha, *cmd])
        except redis.exceptions.NoScriptError:
            self._sha = None
            return _send(r, [b"EVAL", _APPLY.encode(), *cmd])

    # ------------------------------------------------------------------ consuming
    def ensure_group(self, stream: str, group: str, start: str = "0") -> bool:
        """Create ``group`` on ``stream`` (and the stream) unless it exists; True when created."""
        def create(r: redis.Redis) -> bool:
            try:
                r.xgroup_create(stream, group, id=start, mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
                return False
            return True

        return self.call(create)

    def read(self, streams: dict[str, str], group: str, *, count: int | None = None,
             block: int | None = None) -> list[Entry]:
        """XREADGROUP as this process's consumer (ids ``>``: new entries; ``0``: its own pending), waiting
        up to ``block`` ms (default ``block_ms``; 0: not at all) for an entry."""
        wait = self.cfg.block_ms if block is None else block
        if not streams:
            self._sleep(wait / 1000)
            return []
        got = self.call(lambda r: r.xreadgroup(group, self.name, streams, count=count or self.cfg.batch_size,
                                               block=wait or None))
        out: list[Entry] = []
        for stream, entries in got or []:
            s = stream.decode() if isinstance(stream, bytes) else stream
            for entry_id, fields in entries:
                if fields is None:  # trimmed away while pending
                    continue
                out.append((s, entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields))
        self.counters["consumed"] += len(out)
        return out

    def claim_idle(self, stream: str, group: str, min_idle_ms: int | None = None) -> list[Entry]:
        """XAUTOCLAIM every entry of ``group`` idle for ``min_idle_ms`` (default ``claim_idle_ms``):
        a dead consumer's pending entries become this process's, in id order."""
        idle = self.cfg.claim_idle_ms if min_idle_ms is None else min_idle_ms
        out: list[Entry] = []
        cursor = "0-0"
        while True:
            res = self.call(lambda r, c=cursor: r.xautoclaim(stream, group, self.name, idle, start_id=c,
                                                             count=self.cfg.batch_size))
            cursor = res[0].decode() if isinstance(res[0], bytes) else res[0]
            for entry_id, fields in res[1]:
                if fields:
                    out.append((stream, entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields))
            if cursor == "0-0":
                break
        out.sort(key=lambda e: _id_key(e[1]))
        return out

    def deliveries(self, stream: str, group: str, ids: Sequence[str]) -> dict[str, int]:
        """How many times each pending entry was delivered (XPENDING's counter)."""
        if not ids:
            return {}
        lo, hi = min(ids, key=_id_key), max(ids, key=_id_key)
        rows = self.call(lambda r: r.xpending_range(stream, group, min=lo, max=hi, count=len(ids) + 1000))
        return {(x["message_id"].decode() if isinstance(x["message_id"], bytes) else x["message_id"]):
                int(x["times_delivered"]) for x in rows}

    def dead_letter(self, stream: str, group: str, entry_id: str, fields: dict[Any, Any], reason: str) -> None:
        """Move one entry to ``{stream}:dlq`` with its reason, report it as an ``alert``, acknowledge it."""
        raw = fields.get(FIELD, fields.get(FIELD.decode(), b""))
        if isinstance(raw, str):
            raw = raw.encode()
        dlq = {FIELD: raw, b"reason": reason.encode(), b"stream": stream.encode(), b"id": entry_id.encode(),
               b"consumer": self.name.encode(), b"at": str(time.time()).encode()}
        alert = {FIELD: encode(ALERT, f"dlq:{stream}:{entry_id}", self.name,
                               {"reason": "dead_letter", "stream": stream, "entry": entry_id, "detail": reason})}

        def run(r: Any) -> Any:
            pipe = r.pipeline(transaction=True)
            pipe.xadd(f"{stream}:dlq", dlq, maxlen=self.cfg.maxlen, approximate=True)
            pipe.xadd(self.key("errors"), alert, maxlen=self.cfg.maxlen, approximate=True)
            pipe.xack(stream, group, entry_id)
            return pipe.execute()

        self.call(run)
        self.counters["dead_letters"] += 1
        log.warning("dead letter %s %s: %s", stream, entry_id, reason)

    # ------------------------------------------------------------------ presence
    def heartbeat(self, extra: dict[str, Any], ttl_ms: int) -> None:
        """This process's row in ``bus status`` (a hash that expires when the process dies)."""
        import json

        elapsed = max(1e-9, time.time() - self.started)
        row = {"role": self.role, "breaker": self.breaker.state, "buffered": len(self.buffer),
               "events_per_s": round(self.counters["consumed"] / elapsed, 1), "updated": time.time(),
               **self.counters, **extra}
        key = self.key("proc", self.name)

        def run(r: redis.Redis) -> Any:
            pipe = r.pipeline(transaction=False)
            pipe.set(key, json.dumps(row, default=str), px=ttl_ms)
            return pipe.execute()

        try:
            self.call(run, retry=False)
        except RETRYABLE:
            pass  # presence is best effort; the loop's own calls retry

    def close(self) -> None:
        import contextlib

        with contextlib.suppress(Exception):
            self.redis.delete(self.key("proc", self.name))
        with contextlib.suppress(Exception):
            self.redis.close()


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


id_key = _id_key


#: The body of :meth:`Bus.transaction`: KEYS are the keys touched; ARGV[1] the streams' approximate
#: MAXLEN, then three runs, each led by its count: XADDs (key index, field count, field, value, ...),
#: XACKs (key index, group, id count, ids ...), HSETs (key index, pair count, field, value, ...).
_APPLY = """
local a, k = ARGV, 2
local maxlen = a[1]
for _ = 1, tonumber(a[k]) do
  local key, n = KEYS[tonumber(a[k + 1])], tonumber(a[k + 2])
  local cmd = {'XADD', key, 'MAXLEN', '~', maxlen, '*'}
  for j = 1, 2 * n do cmd[6 + j] = a[k + 2 + j] end
  redis.call(unpack(cmd))
  k = k + 2 + 2 * n
end
k = k + 1
for _ = 1, tonumber(a[k]) do
  local key, group, n = KEYS[tonumber(a[k + 1])], a[k + 2], tonumber(a[k + 3])
  local cmd = {'XACK', key, group}
  for j = 1, n do cmd[3 + j] = a[k + 3 + j] end
  redis.call(unpack(cmd))
  k = k + 3 + n
end
k = k + 1
for _ = 1, tonumber(a[k]) do
  local key, n = KEYS[tonumber(a[k + 1])], tonumber(a[k + 2])
  local cmd = {'HSET', key}
  for j = 1, 2 * n do cmd[2 + j] = a[k + 2 + j] end
  redis.call(unpack(cmd))
  k = k + 2 + 2 * n
end
return 1
"""


def _b(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)).encode()


def _apply_args(maxlen: int, adds: Sequence[tuple[str, dict[bytes, bytes]]],
                acks: Sequence[tuple[str, str, Sequence[str]]],
                hashes: Sequence[tuple[str, dict[str, Any]]]) -> list[bytes]:
    """numkeys, KEYS and ARGV of :data:`_APPLY` (see there)."""
    keys: dict[str, bytes] = {}

    def index(key: str) -> bytes:
        got = keys.get(key)
        if got is None:
            got = keys[key] = str(len(keys) + 1).encode()
        return got

    argv: list[bytes] = [str(maxlen).encode(), str(len(adds)).encode()]
    for stream, flds in adds:
        argv += [index(stream), str(len(flds)).encode()]
        for f, v in flds.items():
            argv += [_b(f), _b(v)]
    # in runs of 1,000 ids: Lua's unpack() stops at ~8,000 values
    acks = [(s, g, ids[k:k + 1000]) for s, g, ids in acks for k in range(0, len(ids), 1000)]
    argv.append(str(len(acks)).encode())
    for stream, group, ids in acks:
        argv += [index(stream), group.encode(), str(len(ids)).encode(), *(_b(i) for i in ids)]
    hashes = [(key, m) for key, m in hashes if m]
    argv.append(str(len(hashes)).encode())
    for key, mapping in hashes:
        argv += [index(key), str(len(mapping)).encode()]
        for name, value in mapping.items():
            argv += [_b(name), _b(value)]
    return [str(len(keys)).encode(), *(k.encode() for k in keys), *argv]


def _send(r: Any, args: list[bytes]) -> Any:
    """One command packed here (RESP) on a pooled connection: redis-py packs each argument in Python
    with type checks, which costs more than the script's work for a batch of events."""
    buf = b"".join([b"*%d\r\n" % len(args), *(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)])
    pool = r.connection_pool
    try:
        conn = pool.get_connection()
    except TypeError:  # redis-py < 5.3 wants the command name
        conn = pool.get_connection("EVALSHA")
    try:
        conn.send_packed_command([buf])
        return conn.read_response()
    except redis.ResponseError:
        raise  # the whole reply was read: the connection stays usable
    except BaseException:  # a half-read reply (a lost socket, an interrupt) must not reach the next caller
        conn.disconnect()
        raise
    finally:
        pool.release(conn)
