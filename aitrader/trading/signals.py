"""UnifiedSignalHandler: model votes -> target positions -> risk limits -> orders.

Per symbol the votes of its models (signed fractions of equity) are combined by weight; a
combined target equal to the last accepted one is dropped, so a steady signal does not churn
the position as prices move. Targets become quantities at the bar's close,
``fraction * equity / close``, and pass the risk limits in this order:

* ``short_not_allowed``: a short target with ``allow_short: false`` is cut to flat;
* ``position_size``: ``|quantity * close|`` above ``max_ml_position_size * equity`` is cut to the cap;
* ``daily_loss_limit``: once equity is below the day's start equity (the last close of the
  previous day) by more than ``daily_ml_loss_limit``, opening, increasing or flipping is refused
  for the rest of that day; reducing and closing are always allowed;
* ``max_positions``: new positions beyond ``max_ml_positions`` open ones are refused, the most
  confident requests of the bar first.

Each cut or refusal publishes RISK_REJECTED with its reason (persisted in the ledger). A refused
request is tried again on the next bar (the target was not accepted), a cut one is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aitrader.trading.broker import QTY_DECIMALS, PaperBroker
from aitrader.trading.events import EventBus, RiskRejected


@dataclass(slots=True)
class Request:
    symbol: str
    target_qty: float
    confidence: float
    key: float  # what "unchanged" is judged on: the combined fraction (or the target quantity)
    source: str  # model id(s) behind the request


def combine_votes(votes: list[tuple[float | None, float, float]]) -> tuple[float, float]:
    """(fraction, confidence) from (vote, weight, confidence) triples; no votes -> flat."""
    total_w = 0.0
    frac = 0.0
    conf = 0.0
    for vote, weight, confidence in votes:
        if vote is None:
            continue
        total_w += weight
        frac += weight * vote
        conf += weight * confidence
    if total_w == 0.0:
        return 0.0, 0.0
    return frac / total_w, conf / total_w


class UnifiedSignalHandler:
    def __init__(
        self,
        bus: EventBus,
        broker: PaperBroker,
        *,
        max_position_size: float,
        max_positions: int,
        daily_loss_limit: float,
        allow_short: bool,
    ) -> None:
        self.bus = bus
        self.broker = broker
        self.max_position_size = max_position_size
        self.max_positions = max_positions
        self.daily_loss_limit = daily_loss_limit
        self.allow_short = allow_short
        self.last_key: dict[str, float] = {}
        self.day = ""
        self.day_start_equity = broker.initial_cash
        self.rejections: dict[str, int] = {}

    def unchanged(self, symbol: str, key: float) -> bool:
        return self.last_key.get(symbol, 0.0) == key

    def check_day(self, day: str, last_equity: float) -> None:
        """Start a new trading day at the first bar whose date differs; its start equity is the last mark."""
        if day != self.day:
            self.day = day
            self.day_start_equity = last_equity

    def _reject(self, ts: str, req: Request, reason: str, **payload: Any) -> None:
        self.rejections[reason] = self.rejections.get(reason, 0) + 1
        payload["requested_qty"] = req.target_qty
        self.bus.publish(RiskRejected(ts, req.symbol, req.source, reason, payload))

    def _limit(self, ts: str, req: Request, equity: float, price: float) -> float | None:
        """Apply the per-request limits in place; the symbol's effective quantity, None when refused."""
        # broker.effective_qty(), inlined (once per order: the hot path of a busy replay)
        pos = self.broker.positions.get(req.symbol)
        pending = self.broker.pending.get(req.symbol)
        cur = (pos.quantity if pos is not None else 0.0) + (pending.quantity if pending is not None else 0.0)
        target = req.target_qty
        if target < 0 and not self.allow_short:
            self._reject(ts, req, "short_not_allowed")
            target = 0.0
        raw_cap = self.max_position_size * max(equity, 0.0) / price if price > 0 else 0.0
        # round(raw_cap, 8) is within 0.5e-8 plus an ulp of raw_cap, so a target this far below it is
        # below the rounded cap too: the (slow) decimal rounding is only needed near or above the cap.
        if not abs(target) < raw_cap * (1.0 - 1e-12) - 1e-8:
            cap_qty = round(raw_cap, QTY_DECIMALS) if price > 0 else 0.0
            if abs(target) > cap_qty:
                self._reject(ts, req, "position_size", cap_qty=cap_qty, equity=equity, price=price)
                target = cap_qty if target > 0 else -cap_qty
        grows = abs(target) > abs(cur) or (target * cur < 0)
        if grows and equity < self.day_start_equity * (1.0 - self.daily_loss_limit):
            self._reject(ts, req, "daily_loss_limit", equity=equity, day_start_equity=self.day_start_equity)
            # Keep what may be kept: reduce toward flat only.
            target = cur if target * cur > 0 else 0.0
            if target == cur:
                return None
        req.target_qty = target
        return cur

    def process(self, ts: str, requests: list[Request], equity: float, prices: dict[str, float]) -> None:
        """Turn this bar's requests into orders (reductions first, then openings by confidence)."""
        openings: list[Request] = []
        for req in requests:
            cur = self._limit(ts, req, equity, prices[req.symbol])
            if cur is None:
                continue
            if cur == 0.0 and req.target_qty != 0.0:
                openings.append(req)
            else:
                self._order(ts, req, cur)
        if not openings:
            return
        broker = self.broker
        if len(openings) > 1:
            openings.sort(key=lambda r: (-r.confidence, r.symbol))
        if len(broker.positions) + len(broker.pending) + len(openings) <= self.max_positions:
            # at most that many symbols can be open, so no opening can reach the limit: no need to count
            for req in openings:
                self._order(ts, req, 0.0)
            return
        open_now = 0
        for s in set(broker.positions) | set(broker.pending):
            if broker.effective_qty(s):
                open_now += 1
        for req in openings:
            if open_now >= self.max_positions:
                self._reject(ts, req, "max_positions", open_positions=open_now, limit=self.max_positions)
                continue
            open_now += 1
            self._order(ts, req, 0.0)

    def _order(self, ts: str, req: Request, cur: float) -> None:
        self.last_key[req.symbol] = req.key
        delta = round(req.target_qty - cur, QTY_DECIMALS)
        if delta != 0.0:
            self.broker.queue(ts, req.symbol, delta, req.source)

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        return {
            "last_key": dict(sorted(self.last_key.items())),
            "day": self.day,
            "day_start_equity": self.day_start_equity,
            "rejections": dict(sorted(self.rejections.items())),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.last_key = {k: float(v) for k, v in state["last_key"].items()}
        self.day = state["day"]
        self.day_start_equity = float(state["day_start_equity"])
        self.rejections = {k: int(v) for k, v in state["rejections"].items()}
