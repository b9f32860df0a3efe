"""The trading loop, one engine for replay and live: a backtest is the same loop at speed 0.

Per step (all bars sharing a timestamp, by symbol): pending orders fill at the open, closes are
marked, features update, models predict, strategies vote, the signal handler turns changed
targets into orders for the next open, equity is marked. Every ``commit_every`` steps (1 in live
mode) the ledger commits the step's rows together with the cursors and the engine state, so a
killed run resumes at a step boundary and re-does the rest identically (see docs/trading.md).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aitrader.errors import TradingError
from aitrader.trading.broker import PaperBroker
from aitrader.trading.events import Bar, EquityMark, EventBus, EventType, Outcome
from aitrader.trading.ledger import Ledger
from aitrader.trading.model_runner import ModelSlot
from aitrader.trading.signals import Request, UnifiedSignalHandler, combine_votes
from aitrader.trading.sources import BarTuple, Step, pace


@dataclass
class TargetSchedule:
    """Precomputed target quantities per bar of one symbol (NaN: no opinion); benchmarks and tests."""

    symbol: str
    targets: list[float]


@dataclass(slots=True)
class EngineStats:
    steps: int = 0
    bars: int = 0
    warmed: int = 0
    equity: float = 0.0
    last_ts: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Engine:
    def __init__(
        self,
        bus: EventBus,
        broker: PaperBroker,
        handler: UnifiedSignalHandler,
        slots: list[ModelSlot],
        *,
        ledger: Ledger | None = None,
        schedules: Iterable[TargetSchedule] = (),
        buffer_size: int = 500,
        commit_every: int = 500,
    ) -> None:
        self.bus = bus
        self.broker = broker
        self.handler = handler
        self.slots = slots
        self.ledger = ledger
        self.commit_every = max(1, commit_every)
        self.buffer_size = buffer_size
        self.by_symbol: dict[str, list[ModelSlot]] = {}
        for slot in slots:
            self.by_symbol.setdefault(slot.symbol, []).append(slot)
        self.schedules = {s.symbol: s.targets for s in schedules}
        # Ring buffers: memory does not grow with the length of a replay.
        self.closes: dict[str, deque[float]] = {}
        # Predictions waiting for their outcome: (due bar index, model id, bar index, close then)
        self.pending_outcomes: dict[str, deque[tuple[int, str, int, float]]] = {}
        self.cursors: dict[str, tuple[int, str]] = {}
        self.stats = EngineStats(equity=broker.equity())
        self.last_equity = broker.initial_cash
        self.stop_event = threading.Event()
        #: SHA-256 of the bars consumed up to given cursors (see sources.ReplayFingerprint); saved in
        #: every checkpoint's state so that a resume on changed or shortened bars is refused.
        self.fingerprint: Callable[[dict[str, tuple[int, str]]], dict[str, Any]] | None = None
        self._saved_fingerprint: dict[str, Any] = {}
        self._resume_cursors: dict[str, tuple[int, str]] = {}
        self._caught: dict[str, int] = {}
        self._want_bar = False
        self._want_equity = False
        self._outcome_rows: Callable[[tuple[Any, ...]], None] | None = None
        #: False when no one would see an outcome: the only listener is a scratch ledger, which drops them
        #: (backtest's temporary ledger, :attr:`Ledger.scratch`); predictions then queue none (_direct_rows)
        self._track_outcomes = True
        # The equity curve goes straight into the ledger's buffer (flat bar_index, ts, cash, equity
        # values): one row per step, the largest table of a replay; an event per row cost more.
        self._equity_rows: Callable[[tuple[int, str, float, float]], None] | None = (
            ledger.equity_values.extend if ledger is not None else None
        )

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        extra = {"fingerprint": self.fingerprint(self.cursors)} if self.fingerprint is not None else {}
        return {
            **extra,
            "steps": self.stats.steps,
            "bars": self.stats.bars,
            "last_equity": self.last_equity,
            "broker": self.broker.state(),
            "handler": self.handler.state(),
            "slots": {f"{s.model_id}@{s.symbol}": s.state() for s in self.slots},
            "outcomes": {k: [list(x) for x in v] for k, v in sorted(self.pending_outcomes.items())},
        }

    def restore(self, state: dict[str, Any], cursors: dict[str, tuple[int, str]]) -> None:
        self.stats.steps = int(state["steps"])
        self.stats.bars = int(state["bars"])
        self.last_equity = float(state["last_equity"])
        self.broker.restore(state["broker"])
        self.handler.restore(state["handler"])
        saved = state["slots"]
        for slot in self.slots:
            key = f"{slot.model_id}@{slot.symbol}"
            if key not in saved:
                raise TradingError(f"cannot resume: the run's saved state has no model {key} (the state is damaged "
                                   "or from another run); start a new run")
            slot.restore(saved[key])
        self.pending_outcomes = {
            k: deque((int(a), str(b), int(c), float(d)) for a, b, c, d in v) for k, v in state["outcomes"].items()
        }
        self.cursors = dict(cursors)
        self._resume_cursors = dict(cursors)
        saved_fp = state.get("fingerprint")
        self._saved_fingerprint = dict(saved_fp) if isinstance(saved_fp, dict) else {}
        self.stats.equity = self.broker.equity()

    def _verify_past(self) -> None:
        """A resumed run's bars up to its cursors must be the ones it consumed: all there, same SHA-256."""
        for sym, (i, ts) in sorted(self._resume_cursors.items()):
            have = self._caught.get(sym, -1)
            if have < i:
                raise TradingError(
                    f"{sym}: the data now has {have + 1} bar(s) up to the run's cursor, but the run had consumed "
                    f"{i + 1} (up to {ts}): the bars changed since the run started; resume with the same bars or "
                    "start a new run"
                )
        if not self._saved_fingerprint or self.fingerprint is None:
            return  # a ledger from before fingerprints: the stamps were checked bar by bar
        now = self.fingerprint(self._resume_cursors)
        for sym, want in sorted(self._saved_fingerprint.items()):
            got = now.get(sym)
            if isinstance(want, dict) and got is not None and got != want:
                raise TradingError(
                    f"{sym}: the {want.get('bars')} bar(s) the run consumed (up to {self._resume_cursors[sym][1]}) "
                    f"changed since it started (SHA-256 {str(got.get('sha256'))[:12]}... vs "
                    f"{str(want.get('sha256'))[:12]}...); resume with the same bars or start a new run"
                )

    def checkpoint(self, meta: dict[str, Any] | None = None) -> None:
        """Commit the buffered rows with the cursors and state (``meta``: more meta keys, e.g. a swap's models)."""
        if self.ledger is None:
            return
        positions = [(s, p.quantity, p.avg_price, p.realised_pnl) for s, p in sorted(self.broker.positions.items())]
        self.ledger.checkpoint(self.cursors, positions, self.state(), meta)

    # ------------------------------------------------------------------ the loop
    def _warm(self, ts: str, bar: tuple[str, int, float, float, float, float, float]) -> None:
        sym, i, o, h, lo, c, v = bar
        saved = self.cursors[sym]
        if i == saved[0] and ts != saved[1]:
            raise TradingError(
                f"{sym} bar {i} is stamped {ts} but the ledger's cursor says {saved[1]}: the data changed "
                "since the run started; resume with the same bars or start a new run"
            )
        self._caught[sym] = i
        slots = self.by_symbol.get(sym)
        if slots:
            self._closes(sym).append(c)
            for slot in slots:
                slot.warm(ts, o, h, lo, c, v)
        self.stats.warmed += 1

    def _closes(self, sym: str) -> deque[float]:
        dq = self.closes.get(sym)
        if dq is None:
            dq = self.closes[sym] = deque(maxlen=self.buffer_size)
        return dq

    def _outcomes(self, ts: str, sym: str, i: int, c: float, pend: deque[tuple[int, str, int, float]]) -> None:
        publish, rows = self.bus.publish, self._outcome_rows
        while pend and pend[0][0] <= i:
            _, model_id, j, c0 = pend.popleft()
            if rows is not None:
                rows((c / c0 - 1.0, ts, sym, model_id, j))  # Ledger._on_outcome's row
            else:
                publish(Outcome(ts, sym, model_id, j, c / c0 - 1.0))

    def _decide(
        self, ts: str, sym: str, i: int, bar: tuple[Any, ...], equity: float, slots: list[ModelSlot], epoch: float
    ) -> Request | None:
        """The models of one symbol vote; a request when their combined target changed."""
        o, h, lo, c, v = bar[2], bar[3], bar[4], bar[5], bar[6]
        closes = self._closes(sym)  # the closes BEFORE this bar (the rule fallback reads them)
        for slot in slots:
            before = slot.n_predictions
            slot.step(ts, i, o, h, lo, c, v, closes, epoch)
            if slot.n_predictions != before and self._track_outcomes:
                self.pending_outcomes.setdefault(sym, deque()).append((i + slot.horizon, slot.model_id, i, c))
        closes.append(c)
        frac, conf = combine_votes([(s.vote, s.weight, s.confidence) for s in slots])
        if self.handler.unchanged(sym, frac):
            return None
        qty = frac * equity / c if c > 0 else 0.0
        return Request(sym, qty, conf, frac, ",".join(s.model_id for s in slots))

    def _decide_one(self, ts: str, sym: str, i: int, bar: tuple[Any, ...], equity: float, slot: ModelSlot,
                    epoch: float) -> Request | None:
        """:meth:`_decide` for a symbol traded by one model (the common case), float for float: the
        batch route's slot step called directly, and combine_votes of one vote written out."""
        c = bar[5]
        closes = self.closes.get(sym)
        if closes is None:
            closes = self._closes(sym)
        before = slot.n_predictions
        feed = slot.feed
        if feed is not None:
            slot.step_batch(feed, ts, i, c, closes, epoch)
        else:
            slot.step(ts, i, bar[2], bar[3], bar[4], c, bar[6], closes, epoch)
        if slot.n_predictions != before and self._track_outcomes:
            pend = self.pending_outcomes.get(sym)
            if pend is None:
                pend = self.pending_outcomes[sym] = deque()
            pend.append((i + slot.horizon, slot.model_id, i, c))
        closes.append(c)
        vote = slot.vote
        last_key = self.handler.last_key
        if vote is None:  # combine_votes: no vote -> flat, no confidence
            if last_key.get(sym, 0.0) == 0.0:  # handler.unchanged()
                return None
            frac = conf = 0.0
        else:  # combine_votes of one (vote, weight, confidence): the same additions and divisions
            weight = slot.weight
            total = 0.0 + weight
            frac = (0.0 + weight * vote) / total
            if last_key.get(sym, 0.0) == frac:
                return None
            conf = (0.0 + weight * slot.confidence) / total
        qty = frac * equity / c if c > 0 else 0.0
        return Request(sym, qty, conf, frac, slot.model_id)

    def _step(self, ts: str, bars: Sequence[BarTuple], epoch: float = 0.0) -> None:  # noqa: C901 - one flat hot path
        """One timestamp: fills at the open, marks, decisions, orders, the equity mark.

        This runs once per bar of a replay, so it is written for speed (see docs/trading.md,
        "Throughput"): per-bar work that is provably a no-op is skipped (no pending order for the
        symbol, no model on it, no outcome due), events are built only when someone subscribes,
        attributes are read once into locals, due outcomes go to the ledger's buffer as plain rows,
        a symbol with one model takes :meth:`_decide_one`, and the equity row goes to the ledger's
        buffer as plain values instead of an event.
        """
        if self._want_bar:
            self._publish_bars(ts, bars)
        broker = self.broker
        pending = broker.pending
        last_close = broker.last_close
        for bar in bars:
            if pending and bar[0] in pending:
                broker.on_open(ts, bar[0], bar[2])
            last_close[bar[0]] = bar[5]
        # broker.equity(), inlined (same operations in the same order: the same float)
        equity = broker.cash
        for sym, pos in broker.positions.items():
            if pos.quantity:
                equity += pos.quantity * last_close.get(sym, pos.avg_price)
        handler = self.handler
        if ts[:10] != handler.day:
            handler.check_day(ts[:10], self.last_equity)
        # Due outcomes, model votes and scheduled targets of each bar; the cursors advance.
        requests: list[Request] = []
        cursors = self.cursors
        outcomes = self.pending_outcomes
        by_symbol = self.by_symbol
        schedules = self.schedules
        out_rows = self._outcome_rows
        for bar in bars:
            sym, i = bar[0], bar[1]
            if outcomes and (pend := outcomes.get(sym)) and pend[0][0] <= i:
                if out_rows is not None:  # _outcomes(), inlined: Ledger._on_outcome's rows
                    c = bar[5]
                    while pend and pend[0][0] <= i:
                        _, model_id, j, c0 = pend.popleft()
                        out_rows((c / c0 - 1.0, ts, sym, model_id, j))
                else:
                    self._outcomes(ts, sym, i, bar[5], pend)
            if by_symbol and (slots := by_symbol.get(sym)):
                if len(slots) == 1:
                    req = self._decide_one(ts, sym, i, bar, equity, slots[0], epoch)
                else:
                    req = self._decide(ts, sym, i, bar, equity, slots, epoch)
                if req is not None:
                    requests.append(req)
            if schedules and (targets := schedules.get(sym)) is not None and i < len(targets):
                q = targets[i]
                # q == q: not NaN; then what handler.unchanged() reads: did the target change?
                if q == q and handler.last_key.get(sym, 0.0) != q:
                    requests.append(Request(sym, q, 1.0, q, "schedule"))
            cursors[sym] = (i, ts)
        if requests:
            handler.process(ts, requests, equity, last_close)
        self._end_step(ts, broker.cash, equity, len(bars))

    def _step_one(self, ts: str, bars: Sequence[BarTuple], epoch: float = 0.0) -> None:  # noqa: C901 - hot path
        """:meth:`_step` for a step of one bar (every step of a one-symbol replay): the same work in the
        same order without the loops over the step's bars and the list of requests."""
        if self._want_bar:
            self._publish_bars(ts, bars)
        bar = bars[0]
        sym = bar[0]
        broker = self.broker
        if broker.pending and sym in broker.pending:
            broker.on_open(ts, sym, bar[2])
        last_close = broker.last_close
        c = bar[5]
        last_close[sym] = c
        equity = broker.cash  # broker.equity(), inlined
        for s, pos in broker.positions.items():
            if pos.quantity:
                equity += pos.quantity * last_close.get(s, pos.avg_price)
        handler = self.handler
        day = ts[:10]
        if day != handler.day:
            handler.check_day(day, self.last_equity)
        i = bar[1]
        outcomes = self.pending_outcomes
        if outcomes and (pend := outcomes.get(sym)) and pend[0][0] <= i:
            if (out_rows := self._outcome_rows) is not None:
                while pend and pend[0][0] <= i:
                    _, model_id, j, c0 = pend.popleft()
                    out_rows((c / c0 - 1.0, ts, sym, model_id, j))
            else:
                self._outcomes(ts, sym, i, c, pend)
        req = None
        if slots := self.by_symbol.get(sym):
            if len(slots) == 1:
                req = self._decide_one(ts, sym, i, bar, equity, slots[0], epoch)
            else:
                req = self._decide(ts, sym, i, bar, equity, slots, epoch)
        sched = None
        schedules = self.schedules
        if schedules and (targets := schedules.get(sym)) is not None and i < len(targets):
            q = targets[i]
            if q == q and handler.last_key.get(sym, 0.0) != q:  # not NaN, and the target changed
                sched = Request(sym, q, 1.0, q, "schedule")
        self.cursors[sym] = (i, ts)
        if req is not None:
            handler.process(ts, [req] if sched is None else [req, sched], equity, last_close)
        elif sched is not None:
            handler.process(ts, [sched], equity, last_close)
        self._end_step(ts, broker.cash, equity, 1)

    def _end_step(self, ts: str, cash: float, equity: float, nbars: int) -> None:
        """The step's equity row and mark, and the counters (the end of :meth:`_step` and :meth:`_step_one`)."""
        stats = self.stats
        n = stats.steps
        if self._equity_rows is not None:
            self._equity_rows((n, ts, cash, equity))
        if self._want_equity:
            self.bus.publish(EquityMark(n, ts, cash, equity))
        self.last_equity = equity
        stats.steps = n + 1
        stats.bars += nbars
        stats.equity = equity
        stats.last_ts = ts

    def _publish_bars(self, ts: str, bars: Sequence[BarTuple]) -> None:
        for bar in bars:
            self.bus.publish(Bar(ts, *bar))

    def _already_done(self, ts: str, bars: Sequence[BarTuple]) -> bool:
        """Bars at or before the ledger's cursor (a resumed run): warm the features, decide nothing."""
        saved = self.cursors.get(bars[0][0])
        if saved is None or bars[0][1] > saved[0]:
            return False
        for bar in bars:
            self._warm(ts, bar)
        return True

    def _direct_rows(self) -> None:
        """When the ledger is the one listener, outcomes and predictions go straight into its buffers as
        plain tuples (the rows it would build from the events): no event object, no dispatch per bar.
        Slots also learn whether anyone listens to their FEATURE_UPDATE and SIGNAL events (the
        subscriptions are made before the loop starts)."""
        ledger, bus = self.ledger, self.bus
        for slot in self.slots:
            slot.may_publish_features = bus.wants(EventType.FEATURE_UPDATE)
            slot.may_publish_signals = bus.wants(EventType.SIGNAL)
        if ledger is None:
            return
        self._outcome_rows = ledger.outcome_rows.append if bus.only(EventType.OUTCOME, ledger._on_outcome) else None
        self._track_outcomes = not (getattr(ledger, "scratch", False) and self._outcome_rows is not None)
        direct = bus.only(EventType.MODEL_PREDICTION, ledger._on_prediction)
        for slot in self.slots:
            slot.prediction_rows = ledger.prediction_rows.append if direct else None

    def run(
        self,
        steps: Iterable[Step],
        *,
        speed: float = 0.0,
        max_bars: int | None = None,
        progress: Callable[[Engine], None] | None = None,
        progress_every_s: float = 0.25,
    ) -> str:
        """Run until the source ends ("finished"), max_bars or a stop request ("stopped")."""
        from aitrader.trading.heap import frozen_heap

        with frozen_heap():  # the loaded bars and model stay out of the collector's full passes
            return self._loop(steps, speed=speed, max_bars=max_bars, progress=progress,
                              progress_every_s=progress_every_s)

    def _loop(
        self,
        steps: Iterable[Step],
        *,
        speed: float,
        max_bars: int | None,
        progress: Callable[[Engine], None] | None,
        progress_every_s: float,
    ) -> str:
        self._want_bar = self.bus.wants(EventType.BAR)
        self._want_equity = self.bus.wants(EventType.EQUITY)
        self._direct_rows()
        since_commit = processed = 0
        next_progress = time.monotonic() + progress_every_s
        epoch0: float | None = None
        wall0 = 0.0
        status = "finished"
        stop_requested = self.stop_event.is_set
        step, step_one = self._step, self._step_one
        commit_every = self.commit_every
        # Only a resumed run has bars at or before its cursors, and they all come first.
        catching_up = bool(self.cursors)
        for ts, epoch, bars in steps:
            if catching_up:
                if self._already_done(ts, bars):
                    continue
                catching_up = False
                self._verify_past()
            if stop_requested() or (max_bars is not None and processed >= max_bars):
                status = "stopped"
                break
            if speed > 0:
                if epoch0 is None:
                    epoch0, wall0 = epoch, time.monotonic()
                pace(speed, epoch0, wall0, epoch)
            (step_one if len(bars) == 1 else step)(ts, bars, epoch)
            processed += len(bars)
            since_commit += 1
            if since_commit >= commit_every:
                self.checkpoint()
                since_commit = 0
            if progress is not None and time.monotonic() >= next_progress:
                progress(self)
                next_progress = time.monotonic() + progress_every_s
        if catching_up and not stop_requested():  # the data ended at (or before) the cursor
            self._verify_past()
        if stop_requested():  # a follow source ends its stream when asked to stop
            status = "stopped"
        self.stats.equity = self.broker.equity()
        self.checkpoint()
        if progress is not None:
            progress(self)
        return status
