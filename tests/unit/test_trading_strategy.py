"""Confidence and signals of MLRegressionStrategy; the event bus."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aitrader.errors import TradingError
from aitrader.trading.events import EventBus, EventType, Signal
from aitrader.trading.strategy import ConfidenceModel, MLRegressionStrategy

QUANTILES = list(np.linspace(-0.02, 0.02, 101))  # uniform holdout predictions on [-2%, 2%]


def test_quantile_confidence_is_share_of_holdout_predictions_smaller_in_size() -> None:
    cm = ConfidenceModel(quantiles=QUANTILES)
    assert cm.score(0.0)[1] == pytest.approx(0.0)
    assert cm.score(0.01)[1] == pytest.approx(0.5)
    assert cm.score(-0.012)[1] == pytest.approx(0.6)
    assert cm.score(0.5)[1] == 1.0


def test_residual_std_fallback_and_classification() -> None:
    cm = ConfidenceModel(residual_std=0.04)
    assert cm.score(0.01) == (0.01, pytest.approx(0.5))
    cls = ConfidenceModel(task="classification")
    score, conf = cls.score(0.8)
    assert score == pytest.approx(0.3) and conf == pytest.approx(0.6)


def test_missing_baseline_is_a_clear_error() -> None:
    with pytest.raises(TradingError, match="residual_std"):
        ConfidenceModel.from_manifest({"target": {"task": "regression"}, "baseline": {}})


def test_strategy_trades_only_above_min_confidence() -> None:
    strat = MLRegressionStrategy(ConfidenceModel(quantiles=QUANTILES), min_confidence=0.6, position_size=0.02)
    assert strat.decide(0.005).target_fraction == 0.0
    d = strat.decide(-0.015)
    assert (d.direction, d.target_fraction) == (-1, -0.02)
    assert d.confidence == pytest.approx(0.75)
    assert strat.decide(float("nan")).direction == 0


@given(st.floats(-1.0, 1.0, allow_nan=False))
def test_confidence_in_unit_interval_and_symmetric(x: float) -> None:
    cm = ConfidenceModel(quantiles=QUANTILES)
    c = cm.score(x)[1]
    assert 0.0 <= c <= 1.0
    assert c == pytest.approx(cm.score(-x)[1])


def test_bus_delivers_in_order_and_skips_unwanted_types() -> None:
    bus = EventBus()
    got: list[str] = []
    assert not bus.wants(EventType.SIGNAL)
    bus.publish(Signal("t", "X", "m", 1, 1.0, 1.0, 0.02))  # no subscriber: nothing happens
    bus.subscribe(EventType.SIGNAL, lambda e: got.append("a"))
    bus.subscribe(EventType.SIGNAL, lambda e: got.append("b"))
    bus.publish(Signal("t", "X", "m", 1, 1.0, 1.0, 0.02))
    assert got == ["a", "b"] and bus.wants(EventType.SIGNAL)
