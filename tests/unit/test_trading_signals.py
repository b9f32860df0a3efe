"""UnifiedSignalHandler: combining votes, dropping unchanged targets, each risk limit."""

from __future__ import annotations

import pytest

from aitrader.trading.broker import PaperBroker
from aitrader.trading.events import EventBus, EventType
from aitrader.trading.signals import Request, UnifiedSignalHandler, combine_votes


def make(**kw: object) -> tuple[UnifiedSignalHandler, PaperBroker, list]:
    bus = EventBus()
    rejected: list = []
    bus.subscribe(EventType.RISK_REJECTED, rejected.append)
    broker = PaperBroker(bus, initial_cash=100_000, commission_bps=0, slippage_bps=0)
    args = {"max_position_size": 0.05, "max_positions": 2, "daily_loss_limit": 0.02, "allow_short": True}
    args.update(kw)
    handler = UnifiedSignalHandler(bus, broker, **args)  # type: ignore[arg-type]
    handler.check_day("2021-01-04", 100_000)
    return handler, broker, rejected


def req(sym: str, qty: float, conf: float = 0.8) -> Request:
    return Request(sym, qty, conf, qty, "m")


def test_combine_votes_weights_and_ignores_missing() -> None:
    assert combine_votes([(0.02, 1.0, 0.8), (-0.02, 3.0, 0.6), (None, 5.0, 0.0)]) == (
        pytest.approx(-0.01), pytest.approx(0.65))
    assert combine_votes([(None, 1.0, 0.0)]) == (0.0, 0.0)


def test_order_for_difference_and_unchanged_detection() -> None:
    handler, broker, rejected = make()
    handler.process("t", [req("A", 40)], 100_000, {"A": 100.0})
    assert broker.pending["A"].quantity == 40
    assert handler.unchanged("A", 40) and not handler.unchanged("A", 30)
    assert not rejected


def test_position_size_cap_cuts_the_target() -> None:
    handler, broker, rejected = make()
    handler.process("t", [req("A", 80)], 100_000, {"A": 100.0})  # 8,000 > 5% of 100,000
    assert broker.pending["A"].quantity == 50
    assert [r.reason for r in rejected] == ["position_size"]


def test_short_not_allowed_goes_flat() -> None:
    handler, broker, rejected = make(allow_short=False)
    handler.process("t", [req("A", -10)], 100_000, {"A": 100.0})
    assert "A" not in broker.pending
    assert [r.reason for r in rejected] == ["short_not_allowed"]


def test_max_positions_keeps_the_most_confident() -> None:
    handler, broker, rejected = make()
    reqs = [req("A", 10, 0.7), req("B", 10, 0.9), req("C", 10, 0.8)]
    handler.process("t", reqs, 100_000, {"A": 100.0, "B": 100.0, "C": 100.0})
    assert sorted(broker.pending) == ["B", "C"]
    assert [(r.reason, r.symbol) for r in rejected] == [("max_positions", "A")]
    assert not handler.unchanged("A", 10)  # refused, so it is tried again on the next bar


def test_daily_loss_limit_blocks_increases_but_allows_reductions() -> None:
    handler, broker, rejected = make()
    broker.submit("t0", "A", 20, "m")
    broker.on_open("t1", "A", 100.0)
    handler.process("t", [req("A", 40)], 97_000, {"A": 100.0})  # down 3% on the day
    assert "A" not in broker.pending
    assert [r.reason for r in rejected] == ["daily_loss_limit"]
    handler.process("t", [req("A", 5)], 97_000, {"A": 100.0})
    assert broker.pending["A"].quantity == -15
    broker.pending.clear()
    handler.process("t", [req("A", -20)], 97_000, {"A": 100.0})  # a flip is cut to flat
    assert broker.pending["A"].quantity == -20
    handler.check_day("2021-01-05", 97_000)  # a new day resets the reference
    handler.process("t", [req("B", 10)], 97_000, {"B": 100.0})
    assert broker.pending["B"].quantity == 10


def test_state_round_trip() -> None:
    handler, broker, _ = make()
    handler.process("t", [req("A", 80)], 100_000, {"A": 100.0})
    other, _, _ = make()
    other.restore(handler.state())
    assert other.state() == handler.state()
