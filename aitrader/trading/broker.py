"""Paper broker: market orders fill at the next bar's open with slippage and commission.

Conventions (documented in docs/trading.md):

* an order created at bar t's close fills at the open of the *next bar of the same symbol*:
  ``price = open * (1 + slippage_bps / 1e4)`` for a buy, ``open * (1 - slippage_bps / 1e4)`` for
  a sell; ``commission = |quantity * price| * commission_bps / 1e4``;
* cash moves by ``-signed_quantity * price - commission``; shorts credit the proceeds;
* ``realised_pnl`` of a position is gross of commissions (fees are tracked separately), the
  average price follows adds, partial reductions and flips (a flip opens the rest at the fill price);
* equity = cash + sum(quantity * last close), marked at each close.

Quantities are fractional (rounded to 1e-8 units) so that a 2% position in a $40,000 asset is
not rounded to nothing; see docs/trading.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aitrader.trading.events import EventBus, EventType, Fill, Order

_ORDER, _FILL = EventType.ORDER, EventType.FILL  # module constants: an enum member lookup costs 3x more

QTY_DECIMALS = 8


@dataclass(slots=True)
class Position:
    quantity: float = 0.0
    avg_price: float = 0.0
    realised_pnl: float = 0.0

    def apply(self, qty: float, price: float) -> None:
        """Add a signed fill of ``qty`` at ``price``, updating average price and realised P&L."""
        old = self.quantity
        new = round(old + qty, QTY_DECIMALS)
        if old == 0.0 or (old > 0) == (qty > 0):  # opening or adding
            self.avg_price = (old * self.avg_price + qty * price) / new if new != 0 else 0.0
        else:
            closed = min(abs(qty), abs(old))
            self.realised_pnl += closed * (price - self.avg_price) * (1.0 if old > 0 else -1.0)
            if new == 0.0:
                self.avg_price = 0.0
            elif (new > 0) != (old > 0):  # flipped: the remainder opens at the fill price
                self.avg_price = price
        self.quantity = new


@dataclass(slots=True)
class PendingOrder:
    id: int
    symbol: str
    quantity: float  # signed
    created_ts: str
    reason: str


class PaperBroker:
    """Cash, positions and pending next-open market orders of one paper account."""

    def __init__(self, bus: EventBus, *, initial_cash: float, commission_bps: float, slippage_bps: float) -> None:
        self.bus = bus
        self.cash = float(initial_cash)
        self.initial_cash = float(initial_cash)
        self.commission_rate = commission_bps / 1e4
        self.slippage_rate = slippage_bps / 1e4
        self.positions: dict[str, Position] = {}
        self.pending: dict[str, PendingOrder] = {}  # at most one per symbol: decisions follow fills
        self.last_close: dict[str, float] = {}
        self.next_order_id = 1
        self.next_fill_id = 1
        self.fees = 0.0
        self.turnover = 0.0  # sum of |fill value|

    # ------------------------------------------------------------------ orders and fills
    def submit(self, ts: str, symbol: str, quantity: float, reason: str) -> int:
        """Queue a market order (signed quantity) for the next open of ``symbol``; returns its id."""
        return self.queue(ts, symbol, round(quantity, QTY_DECIMALS), reason)

    def queue(self, ts: str, symbol: str, quantity: float, reason: str) -> int:
        """:meth:`submit` for a quantity already rounded to ``QTY_DECIMALS`` (the signal handler's)."""
        order_id = self.next_order_id
        self.next_order_id = order_id + 1
        self.pending[symbol] = PendingOrder(order_id, symbol, quantity, ts, reason)
        if self.bus.wants(_ORDER):
            side = "buy" if quantity > 0 else "sell"
            self.bus.publish(Order(order_id, ts, symbol, side, abs(quantity), "pending", reason))
        return order_id

    def on_open(self, ts: str, symbol: str, open_price: float) -> None:
        """Fill the pending order of ``symbol`` (if any) at this bar's open."""
        order = self.pending.pop(symbol, None)
        if order is None:
            return
        qty = order.quantity
        buy = qty > 0
        price = open_price * (1.0 + self.slippage_rate) if buy else open_price * (1.0 - self.slippage_rate)
        value = abs(qty * price)
        commission = value * self.commission_rate
        self.cash -= qty * price + commission
        self.fees += commission
        self.turnover += value
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position()
        pos.apply(qty, price)
        fill_id = self.next_fill_id
        self.next_fill_id = fill_id + 1
        if self.bus.wants(_FILL):
            side = "buy" if buy else "sell"
            slip = abs(qty) * abs(price - open_price)
            self.bus.publish(Fill(fill_id, order.id, ts, symbol, side, abs(qty), price, commission, slip))

    # ------------------------------------------------------------------ valuation
    def position_qty(self, symbol: str) -> float:
        pos = self.positions.get(symbol)
        return pos.quantity if pos is not None else 0.0

    def effective_qty(self, symbol: str) -> float:
        """Position plus the pending order: what the account will hold after the next open."""
        pending = self.pending.get(symbol)
        return self.position_qty(symbol) + (pending.quantity if pending is not None else 0.0)

    def equity(self) -> float:
        value = self.cash
        last_close = self.last_close
        for symbol, pos in self.positions.items():
            q = pos.quantity
            if q:
                value += q * last_close.get(symbol, pos.avg_price)
        return value

    def unrealised_pnl(self, symbol: str) -> float:
        pos = self.positions.get(symbol)
        if pos is None or not pos.quantity:
            return 0.0
        return pos.quantity * (self.last_close.get(symbol, pos.avg_price) - pos.avg_price)

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        return {
            "cash": self.cash,
            "fees": self.fees,
            "turnover": self.turnover,
            "next_order_id": self.next_order_id,
            "next_fill_id": self.next_fill_id,
            "positions": {s: [p.quantity, p.avg_price, p.realised_pnl] for s, p in sorted(self.positions.items())},
            "pending": [[o.id, o.symbol, o.quantity, o.created_ts, o.reason] for o in self.pending.values()],
            "last_close": dict(sorted(self.last_close.items())),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.cash = float(state["cash"])
        self.fees = float(state["fees"])
        self.turnover = float(state["turnover"])
        self.next_order_id = int(state["next_order_id"])
        self.next_fill_id = int(state["next_fill_id"])
        self.positions = {s: Position(*map(float, v)) for s, v in state["positions"].items()}
        self.pending = {o[1]: PendingOrder(int(o[0]), o[1], float(o[2]), o[3], o[4]) for o in state["pending"]}
        self.last_close = {s: float(v) for s, v in state["last_close"].items()}
