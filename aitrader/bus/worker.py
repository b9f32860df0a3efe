"""``aitrader predict-worker``: bars -> streaming features -> model -> ``ml.prediction.ready``.

Shards and leases: the bar streams ``{prefix}:bars:{k}`` are read by the consumer group
``ml-pipeline``; a worker reads only the shards it leases (``{prefix}:lease:{k}``, SET NX PX
``lease_ms``, renewed every ``lease_ms/3``), so one worker at a time keeps a symbol's streaming
features. Live workers register in ``{prefix}:workers`` (a sorted set scored by expiry); each
takes up to ``ceil(shards / live workers)`` shards and gives back the extras when others join.
When a worker dies its leases expire; the worker that takes a shard over *recovers* it: entries of
the group already acknowledged only warm the features again (XRANGE, nothing republished), the
dead consumer's pending entries are claimed (XAUTOCLAIM) and processed, then new entries follow.

Each prediction event carries the bar and, per model of the symbol, the prediction (or the
error), its latency and the feature row (float64 bytes): the trader needs nothing else. The
output and the acknowledgement of the bars it came from are one atomic script (``Bus.transaction``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from aitrader.bus.client import Bus, BusStopped, Entry, id_key
from aitrader.bus.events import ALERT, BAR, BAR_END, PREDICTION, BadEvent, check_bar, decode, fields
from aitrader.errors import AitraderError

log = logging.getLogger("aitrader.bus.worker")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class _Model:
    """One model on one symbol: its predictor and a factory of fresh feature streams."""

    def __init__(self, spec: Any, new_stream: Callable[[], Any], timeout_ms: float) -> None:
        self.model_id, self.digest, self.predictor = spec.model_id, spec.digest, spec.predictor
        self.new_stream = new_stream
        self.stream = new_stream()
        self.timeout_s = timeout_ms / 1000.0

    def reset(self) -> None:
        self.stream = self.new_stream()

    def warm(self, d: dict[str, Any]) -> None:
        self.stream.update(d["ts"], d["o"], d["h"], d["l"], d["c"], d["v"])

    def predict(self, d: dict[str, Any]) -> list[Any]:
        """[model_id, digest, value, error, latency_us, features] (value None: features not ready)."""
        row = self.stream.update(d["ts"], d["o"], d["h"], d["l"], d["c"], d["v"])
        if np.isnan(row).any():
            return [self.model_id, self.digest, None, None, 0.0, None]
        t0 = time.perf_counter()
        error = None
        try:
            value = float(self.predictor.predict_one(row))
        except Exception as exc:  # noqa: BLE001 - a model failure is an ml.error for the trader, never a crash
            value, error = math.nan, f"{type(exc).__name__}: {exc}"
        latency_us = (time.perf_counter() - t0) * 1e6
        if error is None and latency_us > self.timeout_s * 1e6:
            # As aitrader.trading.model_runner: a thread's CPU time never exceeds its wall time, so only
            # a call late on the wall clock can have used too much CPU; that one call is repeated on the
            # thread's CPU clock (a system call, too dear to pay on every bar; the model is pure).
            c0 = time.thread_time()
            with contextlib.suppress(Exception):
                self.predictor.predict_one(row)
            cpu_ms = (time.thread_time() - c0) * 1000
            if cpu_ms > self.timeout_s * 1000:
                error = f"timeout: prediction used CPU time {cpu_ms:.3f} ms > {self.timeout_s * 1000:g} ms"
        return [self.model_id, self.digest, value, error, latency_us, np.asarray(row, dtype="<f8").tobytes()]


class PredictWorker:
    def __init__(self, cfg: Any, url: str | None, *, registry_root: str | None = None,
                 models: list[str] | None = None, stop: threading.Event | None = None,
                 books: str | dict[str, str] | None = None) -> None:
        """``books``: order-book snapshots (``--book``) for models with book features: every worker that may
        hold a book model's shard needs them (features are computed here, not in the trader)."""
        from aitrader.trading.service import load_models, with_models

        if models:
            cfg = with_models(cfg, models, None)
        self.cfg = cfg.bus
        self.bus = Bus(cfg.bus, url, role="worker", stop=stop)
        self.bus.ping()
        specs = load_models(cfg, registry_root, source="for predict-worker", books=books)
        buffer = cfg.ml_trading.feature_pipeline.buffer_size
        self.models: dict[str, list[_Model]] = {}
        for spec in specs:
            # load_models' own pipeline: rebuilding it from the bare contract would lose fitted parameters
            # (read from the artifact folder) and order-book snapshots
            def factory(p: Any = spec.pipeline) -> Any:
                return p.stream(buffer)

            self.models.setdefault(spec.symbol, []).append(
                _Model(spec, factory, cfg.ml_trading.errors.prediction_timeout_ms))
        self.group = cfg.bus.consumer_group
        self.out = self.bus.key("predictions")
        self.held: set[int] = set()
        self.last_i: dict[str, int] = {}
        self.workers_key = self.bus.key("workers")
        self.next_lease = 0.0
        self.lost: set[int] = set()
        self._renewer_stop = threading.Event()
        self.stats = {"bars": 0, "predictions": 0, "recovered": 0, "claimed": 0, "warmed": 0, "duplicates": 0}

    # ------------------------------------------------------------------ leases
    def lease_key(self, shard: int) -> str:
        return self.bus.key("lease", shard)

    def _renew_loop(self) -> None:
        """Renew the held leases every ``lease_ms/3`` on a connection of its own, so a long batch (a
        loaded machine, a slow model) does not let a lease lapse; a lease found lost is dropped."""
        import redis

        client = redis.Redis(connection_pool=self.bus.redis.connection_pool)
        period = self.cfg.lease_ms / 3000
        while not self._renewer_stop.wait(period):
            for shard in sorted(self.held):
                try:
                    kept = client.eval(_RENEW, 1, self.lease_key(shard), self.bus.name, self.cfg.lease_ms)
                except redis.RedisError:
                    continue  # the server is away: the main loop's calls wait for it
                if not kept:
                    self.lost.add(shard)

    def maintain(self) -> None:
        """Publish presence, give back extras, take free shards up to the fair share."""
        cfg, bus, now_ms = self.cfg, self.bus, int(time.time() * 1000)

        def presence(r: Any) -> int:
            pipe = r.pipeline(transaction=False)
            pipe.zadd(self.workers_key, {bus.name: now_ms + cfg.lease_ms})
            pipe.zremrangebyscore(self.workers_key, "-inf", now_ms)
            pipe.zcard(self.workers_key)
            return int(pipe.execute()[-1])

        live = max(1, bus.call(presence))
        for shard in sorted(self.held):
            if shard in self.lost or not bus.call(
                    lambda r, s=shard: r.eval(_RENEW, 1, self.lease_key(s), bus.name, cfg.lease_ms)):
                log.warning("%s lost the lease of shard %d", bus.name, shard)
                self.held.discard(shard)
        self.lost.clear()
        target = -(-cfg.shards // live)
        for shard in sorted(self.held, reverse=True)[: max(0, len(self.held) - target)]:
            bus.call(lambda r, s=shard: r.eval(_RELEASE, 1, self.lease_key(s), bus.name))
            self.held.discard(shard)
        for shard in range(cfg.shards):
            if len(self.held) >= target:
                break
            if shard in self.held:
                continue
            if bus.call(lambda r, s=shard: r.set(self.lease_key(s), bus.name, nx=True, px=cfg.lease_ms)):
                self.held.add(shard)
                self.recover(shard)
        bus.heartbeat({"shards": sorted(self.held), **self.stats}, ttl_ms=3 * cfg.lease_ms)
        self.next_lease = time.monotonic() + cfg.lease_ms / 3000

    def recover(self, shard: int) -> None:
        """Take a shard over: warm the features on its acknowledged entries, process the pending ones."""
        bus, stream = self.bus, self.bus.bar_stream(shard)
        bus.ensure_group(stream, self.group, "0")
        for sym in self._symbols_of(shard):
            for m in self.models[sym]:
                m.reset()
            self.last_i.pop(sym, None)
        claimed = bus.claim_idle(stream, self.group, min_idle_ms=0)  # the lease makes the shard ours
        pending = {e[1] for e in claimed}
        groups = bus.call(lambda r: r.xinfo_groups(stream))
        info = next(g for g in groups if _s(g["name"]) == self.group)
        last = _s(info["last-delivered-id"])
        start = "-"
        while last != "0-0":
            chunk = bus.call(lambda r, lo=start: r.xrange(stream, min=lo, max=last, count=1000))
            for entry_id, flds in chunk:
                eid = _s(entry_id)
                if eid not in pending:
                    self._warm(flds)
            if len(chunk) < 1000:
                break
            start = "(" + _s(chunk[-1][0])
        self.stats["recovered"] += 1
        self.stats["claimed"] += len(claimed)
        if claimed:
            log.info("%s took over shard %d: %d pending entries claimed", bus.name, shard, len(claimed))
            self.process(claimed, claimed=True)

    def _symbols_of(self, shard: int) -> list[str]:
        return [s for s in self.models if self.bus.shard_of(s) == shard]

    def _warm(self, flds: dict[Any, Any]) -> None:
        try:
            ev = decode(flds, max_bytes=self.cfg.max_event_bytes)
        except BadEvent:
            return  # it went to the dead-letter stream when it was first read
        d = ev.data
        if ev.type != BAR or d["i"] <= self.last_i.get(d["symbol"], -1) or check_bar(d) is not None:
            return
        for m in self.models.get(d["symbol"], ()):
            try:
                m.warm(d)
            except AitraderError:
                return
        self.last_i[d["symbol"]] = d["i"]
        self.stats["warmed"] += 1

    # ------------------------------------------------------------------ the loop
    def run(self, *, max_idle_s: float | None = None) -> dict[str, Any]:
        """Until stopped (SIGTERM/SIGINT), or ``max_idle_s`` without a new entry (tests, benchmarks)."""
        idle_since = time.monotonic()
        renewer = threading.Thread(target=self._renew_loop, name="lease-renewer", daemon=True)
        renewer.start()
        try:
            while not self.bus.stop.is_set():
                if time.monotonic() >= self.next_lease or self.lost:
                    self.maintain()
                    for shard in sorted(self.held):  # entries a lost consumer left behind
                        stale = self.bus.claim_idle(self.bus.bar_stream(shard), self.group)
                        if stale:
                            self.stats["claimed"] += len(stale)
                            self.process(stale, claimed=True)
                streams = {self.bus.bar_stream(s): ">" for s in sorted(self.held)}
                entries = self.bus.read(streams, self.group)
                if entries:
                    self.process(entries)
                    idle_since = time.monotonic()
                elif max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                    break
        except BusStopped:
            pass
        finally:
            self._renewer_stop.set()
            renewer.join()
            self.release()
        return {"consumer": self.bus.name, **self.stats}

    def release(self) -> None:
        """A clean exit gives the shards back at once (a killed worker's leases expire instead)."""
        import contextlib

        with contextlib.suppress(Exception):
            for shard in self.held:
                self.bus.redis.eval(_RELEASE, 1, self.lease_key(shard), self.bus.name)
            self.bus.redis.zrem(self.workers_key, self.bus.name)
        self.held.clear()
        self.bus.close()

    def process(self, entries: list[Entry], *, claimed: bool = False) -> None:
        """Predict a batch; its events and the acknowledgement of its entries in one transaction."""
        bus, group = self.bus, self.group
        if claimed:  # dead-letter what was delivered too often without being acknowledged
            by_stream: dict[str, list[str]] = {}
            for s, eid, _ in entries:
                by_stream.setdefault(s, []).append(eid)
            counts = {s: bus.deliveries(s, group, ids) for s, ids in by_stream.items()}
            keep = []
            for s, eid, flds in entries:
                n = counts[s].get(eid, 0)
                if n > self.cfg.max_deliveries:
                    self._dead(s, eid, flds, f"delivered {n - 1} times without acknowledgement "
                                             f"(max_deliveries {self.cfg.max_deliveries})")
                else:
                    keep.append((s, eid, flds))
            entries = keep
        adds: list[tuple[str, dict[bytes, bytes]]] = []
        acks: dict[str, list[str]] = {}
        for s, eid, flds in sorted(entries, key=lambda e: (e[0], id_key(e[1]))):
            try:
                ev = decode(flds, max_bytes=self.cfg.max_event_bytes)
                out = self._handle(ev)
            except BadEvent as exc:
                self._dead(s, eid, flds, exc.reason)
                continue
            if out is not None:
                adds.append((self.out, out))
            acks.setdefault(s, []).append(eid)
        if adds or acks:
            bus.transaction(adds, [(s, group, ids) for s, ids in acks.items()])

    def _dead(self, stream: str, eid: str, flds: dict[Any, Any], reason: str) -> None:
        """Dead-letter an entry; a bar whose symbol and index are known is also announced as skipped on
        the prediction stream, so the trader does not wait for it."""
        self.bus.dead_letter(stream, self.group, eid, flds, reason)
        try:
            ev = decode(flds, max_bytes=self.cfg.max_event_bytes)
        except BadEvent:
            return
        d = ev.data
        if ev.type == BAR and isinstance(d.get("symbol"), str) and isinstance(d.get("i"), int):
            self.bus.transaction([(self.out, fields(ALERT, f"skip:{d['symbol']}:{d['i']}", self.bus.name, {
                "reason": "bad_bar", "symbol": d["symbol"], "i": d["i"], "ts": str(d.get("ts")), "detail": reason,
            }))])
            self.last_i[d["symbol"]] = max(self.last_i.get(d["symbol"], -1), d["i"])

    def _handle(self, ev: Any) -> dict[bytes, bytes] | None:
        d = ev.data
        if ev.type == BAR_END:
            return fields(BAR_END, ev.id, self.bus.name, d)
        if ev.type != BAR:
            raise BadEvent(f"a bar stream carries {BAR} and {BAR_END}, not {ev.type}")
        sym, i = d["symbol"], d["i"]
        if i <= self.last_i.get(sym, -1):
            self.stats["duplicates"] += 1
            return None  # a restarted feeder's repeat, or a bar already predicted before a takeover
        if (problem := check_bar(d)) is not None:
            raise BadEvent(f"bad bar {sym} #{i}: {problem}")
        preds = []
        for m in self.models.get(sym, ()):
            try:
                preds.append(m.predict(d))
            except AitraderError as exc:  # the feature evaluators refuse a value the bar checks let through
                raise BadEvent(f"bad bar {sym} #{i}: {exc}") from None
        self.last_i[sym] = i
        self.stats["bars"] += 1
        self.stats["predictions"] += sum(1 for p in preds if p[2] is not None)
        return fields(PREDICTION, f"pred:{sym}:{i}", self.bus.name, {
            "symbol": sym, "i": i, "ts": d["ts"], "epoch": d["epoch"],
            "bar": [d["o"], d["h"], d["l"], d["c"], d["v"]], "models": preds,
        })


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
