"""``aitrader paper-trade --bus URL``: the trading side of the pipeline, over the SAME loop.

The trader reads ``ml.prediction.ready`` events (each carries its bar and the predictions of the
symbol's models) from ``{prefix}:predictions`` with its own consumer group
``{consumer_group}:{run_id}``, puts each symbol's bars back in index order (duplicates dropped: the
idempotency key is (symbol, bar index)), merges the symbols by timestamp exactly as a replay does
(a step waits until every traded symbol has its next bar or has ended), and hands the steps to
:func:`aitrader.trading.session.run_session`: strategy, signal handler, risk, broker and ledger are
the in-process ones. Each model's streaming features and predictor are replaced by
:class:`RemoteModel`, which answers with what the worker computed for that bar.

Delivery: the trader commits the ledger when its input is drained (no entry for ``commit_idle_ms``,
before it blocks for more), every ``batch_size`` steps, or ``block_ms`` after the oldest step not
committed yet. The steps' downstream events are published as soon as the input is drained, and at
each commit first (``trade.executed``, ``position.*``, ``feedback.prediction.outcome``, ``performance.update``,
``ml.error``, ``alert``, deterministic ids: a crash repeats them rather than losing them), then
commits (``Engine.checkpoint``), then acknowledges the steps' entries. ``--resume`` re-reads the prediction stream
(XRANGE) to warm the engine up to the ledger's cursors, claims the dead trader's pending entries and
continues.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aitrader.bus.client import Bus, BusStopped
from aitrader.bus.events import (
    ALERT,
    BAR_END,
    ML_ERROR,
    OUTCOME,
    PERFORMANCE,
    POSITION_CLOSED,
    POSITION_OPENED,
    PREDICTION,
    TRADE,
    BadEvent,
    decode,
    fields,
)
from aitrader.errors import BusError, TradingError

log = logging.getLogger("aitrader.bus.trader")


class RemoteModelError(Exception):
    """The worker reported an error for this bar (the slot's fallback applies as in-process)."""


class RemoteModel:
    """A model slot's feature stream AND predictor, answering with the worker's row and prediction."""

    def __init__(self, n_features: int) -> None:
        self.nan_row = np.full(n_features, np.nan)
        self.row = self.nan_row
        self.value = math.nan
        self.error: str | None = None

    def set(self, entry: list[Any] | None, digest: str) -> None:
        self.row, self.value, self.error = self.nan_row, math.nan, None
        if entry is None:
            self.row, self.error = np.zeros(len(self.nan_row)), "the worker sent no prediction for this model"
        elif entry[1] != digest:
            self.row = np.zeros(len(self.nan_row))
            self.error = f"the worker predicts with digest {str(entry[1])[:12]}, the run trades {digest[:12]}"
        elif entry[2] is not None:
            self.value = float(entry[2])
            self.error = entry[3]
            self.row = np.frombuffer(entry[5], dtype="<f8") if entry[5] else np.zeros(len(self.nan_row))

    def update(self, ts: Any, o: float, h: float, l: float, c: float, v: float) -> np.ndarray:  # noqa: E741
        return self.row

    def predict_one(self, x: np.ndarray) -> float:
        if self.error is not None:
            raise RemoteModelError(self.error)
        return self.value


class Publisher:
    """The run's events for other processes, flushed with the acknowledgements before each commit."""

    def __init__(self, bus: Bus, run_id: str, every: int) -> None:
        self.bus, self.run_id, self.every = bus, run_id, every
        self.trades, self.feedback, self.errors = bus.key("trades"), bus.key("feedback"), bus.key("errors")
        self.events: list[tuple[str, dict[bytes, bytes]]] = []
        self.acks: list[str] = []  # entries whose steps are committed
        self.ack_target: tuple[str, str] = ("", "")
        self.positions: dict[str, list[float]] = {}  # symbol -> [quantity, avg price, pnl so far]
        self.predictions: dict[tuple[str, str, int], float] = {}
        self.last_mark: Any = None

    def attach(self, ebus: Any) -> None:
        from aitrader.trading.events import EventType

        ebus.subscribe(EventType.FILL, self.on_fill)
        ebus.subscribe(EventType.OUTCOME, self.on_outcome)
        ebus.subscribe(EventType.ML_ERROR, self.on_error)
        ebus.subscribe(EventType.ALERT, self.on_alert)
        ebus.subscribe(EventType.EQUITY, self.on_equity)

    def _add(self, stream: str, type_: str, event_id: str, data: dict[str, Any]) -> None:
        self.events.append((stream, fields(type_, f"{self.run_id}:{event_id}", self.bus.name,
                                           {"run_id": self.run_id, **data})))

    def on_fill(self, e: Any) -> None:
        self._add(self.trades, TRADE, f"fill:{e.id}", {
            "fill_id": e.id, "order_id": e.order_id, "symbol": e.symbol, "side": e.side, "quantity": e.quantity,
            "price": e.price, "commission": e.commission, "slippage": e.slippage, "ts": e.ts})
        pos = self.positions.setdefault(e.symbol, [0.0, 0.0, 0.0])
        signed = e.quantity if e.side == "buy" else -e.quantity
        pos[2] -= e.commission
        left = signed
        if pos[0] and (pos[0] > 0) != (signed > 0):  # reducing (or flipping) the position
            closing = math.copysign(min(abs(pos[0]), abs(signed)), signed)
            pos[2] += (e.price - pos[1]) * -closing
            pos[0] += closing
            left = signed - closing
            if abs(pos[0]) < 1e-12:
                self._add(self.trades, POSITION_CLOSED, f"closed:{e.id}", {
                    "symbol": e.symbol, "pnl": pos[2], "price": e.price, "ts": e.ts})
                pos[:] = [0.0, 0.0, 0.0]
        if abs(left) > 1e-12:
            opened = not pos[0]
            pos[1] = (pos[0] * pos[1] + left * e.price) / (pos[0] + left)
            pos[0] += left
            if opened:
                self._add(self.trades, POSITION_OPENED, f"opened:{e.id}", {
                    "symbol": e.symbol, "quantity": pos[0], "price": e.price, "ts": e.ts})

    def on_outcome(self, e: Any) -> None:
        pred = self.predictions.pop((e.symbol, e.model_id, e.bar_index), None)
        self._add(self.feedback, OUTCOME, f"outcome:{e.symbol}:{e.model_id}:{e.bar_index}", {
            "symbol": e.symbol, "model_id": e.model_id, "i": e.bar_index, "outcome": e.outcome, "ts": e.ts,
            "prediction": pred})

    def on_error(self, e: Any) -> None:
        self._add(self.errors, ML_ERROR, f"ml_error:{e.symbol}:{e.model_id}:{e.ts}", {
            "symbol": e.symbol, "model_id": e.model_id, "reason": e.reason, "ts": e.ts, "detail": e.payload})

    def on_alert(self, e: Any) -> None:
        self._add(self.errors, ALERT, f"alert:{e.symbol}:{e.reason}:{e.ts}", {
            "symbol": e.symbol, "model_id": e.model_id, "reason": e.reason, "ts": e.ts, "detail": e.payload})

    def on_equity(self, e: Any) -> None:
        self.last_mark = e
        if e.bar_index % self.every == 0:
            self.performance(e)

    def performance(self, e: Any) -> None:
        self._add(self.trades, PERFORMANCE, f"perf:{e.bar_index}", {
            "step": e.bar_index, "ts": e.ts, "cash": e.cash, "equity": e.equity})

    def flush(self) -> None:
        if self.events or self.acks:
            stream, group = self.ack_target
            self.bus.transaction(self.events, [(stream, group, self.acks)])
            self.events, self.acks = [], []


class BusSteps:
    """The steps of a run rebuilt from the prediction stream (see the module docstring)."""

    def __init__(self, bus: Bus, group: str, specs: list[Any], publisher: Publisher, *, resume: bool,
                 max_idle_s: float | None = None) -> None:
        self.bus, self.group, self.publisher = bus, group, publisher
        self.stream = bus.key("predictions")
        publisher.ack_target = (self.stream, group)
        self.resume = resume
        self.max_idle_s = max_idle_s
        self.remotes: dict[str, list[tuple[Any, RemoteModel]]] = {}
        for spec in specs:
            self.remotes.setdefault(spec.symbol, []).append((spec, spec.predictor))
        self.symbols = sorted(self.remotes)
        self.heads: dict[str, dict[int, tuple[dict[str, Any] | None, list[str]]]] = {s: {} for s in self.symbols}
        self.expect: dict[str, int | None] = dict.fromkeys(self.symbols)
        self.ended: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.step_ids: list[str] = []  # entries of the step handed out last
        self.uncommitted: list[str] = []  # entries of steps the engine processed since its last checkpoint
        self.engine: Any = None  # set by RunOptions.on_engine
        self.commit_every = bus.cfg.batch_size
        self.commit_idle_ms = bus.cfg.commit_idle_ms
        self.stats = {"steps": 0, "commits": 0, "duplicates": 0, "dead_letters": 0, "skipped_bars": 0}

    def __iter__(self) -> Iterator[tuple[str, float, list[tuple[Any, ...]]]]:
        return self._steps()

    def _steps(self) -> Iterator[tuple[str, float, list[tuple[Any, ...]]]]:
        bus = self.bus
        self._start()
        idle_since = beat = time.monotonic()
        since = 0
        commit_by = 0.0  # the oldest uncommitted step's commit is due then
        try:
            while True:
                step = self._next_step()
                if step is not None:
                    yield step
                    # the engine asks for the next step only after it processed this one
                    self.uncommitted.extend(self.step_ids)
                    self.step_ids = []
                    self.stats["steps"] += 1
                    if not since:
                        commit_by = time.monotonic() + bus.cfg.block_ms / 1000
                    since += 1
                    if since >= self.commit_every:
                        self._commit()
                        since = 0
                    idle_since = time.monotonic()
                    continue
                if since:  # the input is drained
                    # the steps' events go out now (events before the commit, as ever); the commit waits
                    # commit_idle_ms for more input, so back-to-back bars share one SQLite transaction
                    self.publisher.flush()
                    if self.commit_idle_ms and time.monotonic() < commit_by and self._read(self.commit_idle_ms):
                        idle_since = time.monotonic()
                        continue
                    self._commit()
                    since = 0
                if self._finished():
                    return
                if time.monotonic() - beat > 1.0:
                    self._heartbeat()
                    beat = time.monotonic()
                if self._read(None):
                    idle_since = time.monotonic()
                elif self.max_idle_s is not None and time.monotonic() - idle_since > self.max_idle_s:
                    return
        except BusStopped:
            return

    def _read(self, block: int | None) -> bool:
        """Take the next entries (waiting up to ``block`` ms, default ``block_ms``); False: none came."""
        entries = self.bus.read({self.stream: ">"}, self.group, block=block)
        for _, eid, flds in entries:
            self._take(eid, flds, ack=True)
        return bool(entries)

    def _start(self) -> None:
        if self.engine is not None:  # a resumed run's open positions (restored by now), for position.* events
            for sym, pos in self.engine.broker.positions.items():
                if pos.quantity:
                    self.publisher.positions[sym] = [pos.quantity, pos.avg_price, 0.0]
        self.bus.ensure_group(self.stream, self.group, "0")
        if self.resume:
            self._history()
            for _, eid, flds in self.bus.claim_idle(self.stream, self.group, min_idle_ms=0):
                self._take(eid, flds, ack=True)

    def _commit(self) -> None:
        """The steps' downstream events, then the ledger commit, then the acknowledgement of their entries."""
        self.publisher.flush()
        if self.engine is not None:
            self.engine.checkpoint()
            self.stats["commits"] += 1
        self.publisher.acks.extend(self.uncommitted)
        self.uncommitted = []
        self.publisher.flush()

    def _heartbeat(self) -> None:
        waiting = [s for s in self.symbols if self.expect[s] is None or self.expect[s] not in self.heads[s]]
        self.bus.heartbeat({"run_id": self.publisher.run_id, "waiting_for": waiting, **self.stats},
                           ttl_ms=max(3 * self.bus.cfg.lease_ms, 3000))

    def _history(self) -> None:
        """Every entry still in the stream, in order: the bars up to the ledger's cursors warm the engine."""
        start = "-"
        while True:
            chunk = self.bus.call(lambda r, lo=start: r.xrange(self.stream, min=lo, max="+", count=1000))
            for eid, flds in chunk:
                self._take(eid.decode() if isinstance(eid, bytes) else eid, flds, ack=False)
            if len(chunk) < 1000:
                return
            last = chunk[-1][0]
            start = "(" + (last.decode() if isinstance(last, bytes) else last)

    def _take(self, eid: str, flds: dict[Any, Any], *, ack: bool) -> None:
        """Put one entry where it belongs; ``ack``: it was delivered to the group and needs an XACK."""
        try:
            ev = decode(flds, max_bytes=self.bus.cfg.max_event_bytes)
            d = ev.data
            if ev.type not in (PREDICTION, BAR_END, ALERT):
                raise BadEvent(f"the prediction stream carries {PREDICTION}, {BAR_END} and {ALERT}, not {ev.type}")
            if ev.type == PREDICTION and not (len(d["bar"]) == 5 and all(_finite(x) for x in d["bar"])):
                raise BadEvent(f"{PREDICTION}: bar must be 5 finite numbers")
        except BadEvent as exc:
            if ack:
                self.bus.dead_letter(self.stream, self.group, eid, flds, exc.reason)
                self.stats["dead_letters"] += 1
            return
        ids = [eid] if ack else []
        sym = d.get("symbol")
        if sym not in self.heads or not isinstance(d.get("i"), int):
            self.publisher.acks.extend(ids)  # another run's symbol, or an alert without a bar
            return
        i = d["i"]
        if ev.type == BAR_END:
            self.ended[sym] = i
            self.publisher.acks.extend(ids)
            return
        if self.expect[sym] is None:
            self.expect[sym] = i
        if i < (self.expect[sym] or 0) or i in self.heads[sym]:
            self.stats["duplicates"] += bool(ack)
            if i in self.heads[sym]:
                self.heads[sym][i][1].extend(ids)
            else:
                self.publisher.acks.extend(ids)
            return
        self.heads[sym][i] = (d if ev.type == PREDICTION else None, ids)

    def _ready(self, sym: str) -> dict[str, Any] | None:
        """The next bar of ``sym`` (skipping the bars the workers dead-lettered), None: not here yet."""
        heads = self.heads[sym]
        while (i := self.expect[sym]) is not None and i in heads and heads[i][0] is None:
            self.step_ids.extend(heads.pop(i)[1])
            self.expect[sym] = i + 1
            self.stats["skipped_bars"] += 1
        i = self.expect[sym]
        return heads[i][0] if i is not None and i in heads else None

    def _is_ended(self, sym: str) -> bool:
        n = self.ended.get(sym)
        return n is not None and (self.expect[sym] is None or (self.expect[sym] or 0) >= n)

    def _finished(self) -> bool:
        return all(self._is_ended(s) and not self.heads[s] for s in self.symbols)

    def _next_step(self) -> tuple[str, float, list[tuple[Any, ...]]] | None:
        ready: dict[str, dict[str, Any]] = {}
        for sym in self.symbols:
            d = self._ready(sym)
            if d is not None:
                ready[sym] = d
            elif not self._is_ended(sym):
                return None  # a step waits until every live symbol's next bar is here
        if not ready:
            return None
        epoch = min(d["epoch"] for d in ready.values())
        bars: list[tuple[Any, ...]] = []
        ts = ""
        for sym in self.symbols:  # ties in symbol order, as a replay merges them
            d = ready.get(sym)
            if d is None or d["epoch"] != epoch:
                continue
            i = d["i"]
            self.step_ids.extend(self.heads[sym].pop(i)[1])
            self.expect[sym] = i + 1
            self.done[sym] = i
            ts = ts or d["ts"]
            by_model = {m[0]: m for m in d["models"] if isinstance(m, list) and len(m) == 6}
            for spec, remote in self.remotes[sym]:
                entry = by_model.get(spec.model_id)
                remote.set(entry, spec.digest)
                if entry is not None and entry[2] is not None:
                    self.publisher.predictions[(sym, spec.model_id, i)] = float(entry[2])
            bars.append((sym, i, *map(float, d["bar"])))
        return ts, float(epoch), bars


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _wait_meta(bus: Bus, symbols: list[str]) -> dict[str, dict[str, Any]]:
    """The feeder's per-symbol calendar (written before its first bar); waits for the feeder."""
    import json

    key = bus.key("feed", "meta")
    told = False
    while True:
        got = bus.call(lambda r: r.hmget(key, symbols))
        if all(g is not None for g in got):
            return {s: json.loads(g) for s, g in zip(symbols, got, strict=True)}
        if not told:
            log.warning("waiting for the feeder to announce %s on %s", ", ".join(symbols), bus.url)
            told = True
        bus._sleep(0.1)


def _costs(cfg: Any, metas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """:func:`aitrader.training.backtest.resolve_costs`, with the asset classes the feeder read."""
    import dataclasses

    from aitrader.errors import ConfigError
    from aitrader.training.backtest import resolve_costs

    ex = cfg.ml_trading.execution
    if ex.asset_class != "auto":
        return resolve_costs(ex).to_dict()
    found = sorted({m["asset_class"] for m in metas.values()})
    if len(found) > 1:
        raise ConfigError(f"ml_trading.execution.asset_class is auto but the traded bars look like "
                          f"{' and '.join(found)}; set asset_class in the trading config")
    costs = resolve_costs(ex.model_copy(update={"asset_class": found[0]}))
    return dataclasses.replace(costs, detected=True).to_dict()


def paper_trade_bus(*, url: str | None, config_path: str | None = None, run_id: str | None = None,
                    resume: str | None = None, registry_root: str | None = None, runs_dir: str = "runs",
                    state_dir: str | None = None, models: list[str] | None = None, allow_in_sample: bool = False,
                    stop: threading.Event | None = None, max_idle_s: float | None = None) -> dict[str, Any]:
    """Start (or ``resume``) a run fed by the bus; returns the run's summary (plus ``bus`` counters)."""
    from aitrader.config import load_trading_config
    from aitrader.trading import service as S
    from aitrader.trading.ledger import validate_run_id
    from aitrader.trading.session import RunOptions, new_run_id, run_session

    stop = stop or threading.Event()
    if resume is not None:
        if models or allow_in_sample:
            raise TradingError("--model and --allow-in-sample cannot change a resumed run; it continues as it started")
        run_dir = S.resolve_run(runs_dir, resume, state_dir, "--resume")
        saved, _cursors, _ = S._saved_run(run_dir)
        cfg, request, saved_models = S._resumed_config(saved, run_dir)
        if not isinstance(request.get("bus"), dict):
            raise TradingError(f"run {run_dir.name} was not started with --bus; resume it with aitrader paper-trade "
                               f"--resume {run_dir.name}")
        allow_in_sample = bool(request.get("allow_in_sample"))
        specs = S.load_models(cfg, registry_root, saved_models, remote=RemoteModel)
        rid = str(saved.get("run_id") or run_dir.name)
    else:
        cfg = load_trading_config(config_path)
        if models:
            cfg = S.with_models(cfg, models, None)
        rid = validate_run_id(run_id) if run_id is not None else new_run_id()
        run_dir = Path(state_dir) if state_dir else Path(runs_dir) / rid
        specs = S.load_models(cfg, registry_root, source="for paper-trade --bus", remote=RemoteModel)
        cfg = S._resolved_models(cfg, specs)
    S._follow_window(Path(), specs, S.Window(allow_in_sample=allow_in_sample))
    bus = Bus(cfg.bus, url, role="trader", stop=stop)
    bus.ping()
    group = f"{cfg.bus.consumer_group}:{rid}"
    try:
        meta: dict[str, Any] = {}
        if resume is None:
            metas = _wait_meta(bus, sorted({s.symbol for s in specs}))
            longest = max(metas.values(), key=lambda m: int(m.get("rows") or 0))
            meta = {"request": {"data": None, "follow": False, "from": None, "to": None,
                                "allow_in_sample": allow_in_sample, "pin": True,
                                "bus": {"url": bus.url, "group": group}},
                    "costs": _costs(cfg, metas), "calendar": longest["calendar"]}
        publisher = Publisher(bus, rid, cfg.bus.performance_every)
        steps = BusSteps(bus, group, specs, publisher, resume=resume is not None, max_idle_s=max_idle_s)
        # the engine's own checkpoints only at the end: BusSteps commits when its input is drained or
        # every batch_size steps
        opts = RunOptions(commit_every=2**62, subscribers=[publisher.attach],
                          on_engine=lambda e: setattr(steps, "engine", e))
        summary = run_session(cfg, specs, steps, run_dir, run_id=rid, resume=resume is not None, meta=meta,
                              opts=opts, stop_event=stop)
        publisher.acks.extend(steps.uncommitted)  # the engine's final checkpoint committed them
        if summary.get("status") == "finished":  # else the step handed out last was not processed
            publisher.acks.extend(steps.step_ids)
        if publisher.last_mark is not None:
            publisher.performance(publisher.last_mark)
        publisher.flush()
    except BusStopped as exc:
        raise BusError(f"stopped while waiting for the bus at {bus.url}") from exc
    finally:
        bus.close()
    return {**summary, "bus": {"url": bus.url, "group": group, **steps.stats}} if "steps" in locals() else summary
