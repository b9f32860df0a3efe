"""PaperBroker arithmetic: next-open fills, slippage, commission, average price, realised P&L."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aitrader.trading.broker import PaperBroker, Position
from aitrader.trading.events import EventBus, EventType


def make(**kw: float) -> tuple[PaperBroker, list]:
    bus = EventBus()
    seen: list = []
    bus.subscribe(EventType.FILL, seen.append)
    bus.subscribe(EventType.ORDER, seen.append)
    broker = PaperBroker(bus, initial_cash=kw.get("cash", 10_000.0), commission_bps=kw.get("comm", 10.0),
                         slippage_bps=kw.get("slip", 50.0))
    return broker, seen


def test_buy_fills_at_next_open_with_slippage_and_commission() -> None:
    broker, seen = make()
    broker.submit("t0", "X", 10, "m")
    assert broker.cash == 10_000.0  # nothing happens at the close
    broker.on_open("t1", "X", 100.0)
    price = 100.0 * 1.005
    commission = 10 * price * 0.001
    assert broker.cash == pytest.approx(10_000.0 - 10 * price - commission, abs=1e-9)
    fill = [e for e in seen if e.type == EventType.FILL][0]
    assert (fill.side, fill.quantity, fill.ts) == ("buy", 10, "t1")
    assert fill.price == pytest.approx(price)
    assert fill.commission == pytest.approx(commission)
    assert fill.slippage == pytest.approx(10 * 0.5)
    assert broker.positions["X"].avg_price == pytest.approx(price)
    assert not broker.pending


def test_sell_slips_down_and_realises_pnl() -> None:
    broker, _ = make(comm=0.0, slip=0.0)
    broker.submit("t0", "X", 10, "m")
    broker.on_open("t1", "X", 100.0)
    broker.submit("t1", "X", -4, "m")
    broker.on_open("t2", "X", 110.0)
    pos = broker.positions["X"]
    assert pos.quantity == 6
    assert pos.avg_price == 100.0
    assert pos.realised_pnl == pytest.approx(40.0)
    broker.last_close["X"] = 120.0
    assert broker.unrealised_pnl("X") == pytest.approx(120.0)
    assert broker.equity() == pytest.approx(10_000 - 1000 + 440 + 6 * 120)


def test_flip_opens_remainder_at_fill_price() -> None:
    pos = Position()
    pos.apply(5, 100.0)
    pos.apply(5, 110.0)
    assert pos.avg_price == pytest.approx(105.0)
    pos.apply(-15, 120.0)  # close 10 at 120 (+150 gain), open -5 at 120
    assert pos.quantity == -5
    assert pos.realised_pnl == pytest.approx(150.0)
    assert pos.avg_price == 120.0
    pos.apply(5, 100.0)  # cover the short at 100: +100
    assert pos.quantity == 0 and pos.avg_price == 0.0
    assert pos.realised_pnl == pytest.approx(250.0)


def test_short_credits_cash_and_state_round_trips() -> None:
    broker, _ = make(comm=0.0, slip=0.0)
    broker.submit("t0", "X", -3, "m")
    broker.on_open("t1", "X", 50.0)
    assert broker.cash == 10_150.0
    broker.last_close["X"] = 40.0
    assert broker.equity() == pytest.approx(10_030.0)
    broker.submit("t1", "X", 3, "m")
    other, _ = make(comm=0.0, slip=0.0)
    other.restore(broker.state())
    assert other.state() == broker.state()
    assert other.effective_qty("X") == 0.0


@given(st.lists(st.tuples(st.integers(-50, 50), st.floats(1.0, 500.0)), min_size=1, max_size=30))
def test_cash_plus_positions_conserves_value_without_costs(trades: list[tuple[int, float]]) -> None:
    """With no fees, equity at the last fill price = initial cash + realised + unrealised P&L."""
    broker, _ = make(comm=0.0, slip=0.0)
    for i, (qty, price) in enumerate(trades):
        if qty:
            broker.submit(f"t{i}", "X", qty, "m")
            broker.on_open(f"t{i + 1}", "X", price)
        broker.last_close["X"] = price
    pnl = broker.positions["X"].realised_pnl + broker.unrealised_pnl("X") if "X" in broker.positions else 0.0
    assert broker.equity() == pytest.approx(10_000.0 + pnl, abs=1e-6)
