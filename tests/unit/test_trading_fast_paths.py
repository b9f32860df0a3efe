"""The loop's fast paths against the generic code they stand in for (issue 11, per-bar cost).

Each shortcut must give what the generic path gives, float for float: ``decide_many`` is ``decide``
value by value; ``BatchFeed.batch`` is ``row``/``prediction`` bar by bar; a one-bar step
(``Engine._step_one``), a one-model symbol (``Engine._decide_one``) and the batch decisions write the
ledger the generic ``_step``/``_decide``/``decide`` write; the signal handler's two shortcuts (the
position cap's rounding, the open-position count) take the same orders and rejections as the
hand-computed limits.
"""

from __future__ import annotations

import math
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from trading_helpers import FirstFeature, bars, config, series  # noqa: E402

from aitrader.features import FeaturePipeline  # noqa: E402
from aitrader.trading import model_runner  # noqa: E402
from aitrader.trading.batch import BatchFeed  # noqa: E402
from aitrader.trading.broker import PaperBroker  # noqa: E402
from aitrader.trading.engine import Engine, TargetSchedule  # noqa: E402
from aitrader.trading.events import EventBus, EventType  # noqa: E402
from aitrader.trading.ledger import ledger_content  # noqa: E402
from aitrader.trading.session import ModelSpec, RunOptions, run_session  # noqa: E402
from aitrader.trading.signals import Request, UnifiedSignalHandler  # noqa: E402
from aitrader.trading.sources import replay_steps  # noqa: E402
from aitrader.trading.strategy import ConfidenceModel, Decision, MLRegressionStrategy, batch_decider  # noqa: E402


def bits(x: float) -> bytes:
    """The float's bytes: 0.0 and -0.0 differ, NaN equals NaN."""
    return struct.pack("<d", x)


QUANTILES_WITH_TIES = [-0.03, -0.01, -0.01, -0.002, 0.0, 0.0, 0.001, 0.004, 0.004, 0.004, 0.02]
MODELS = {
    "quantiles": ConfidenceModel(quantiles=list(np.linspace(-0.02, 0.02, 101))),
    "quantile ties": ConfidenceModel(quantiles=QUANTILES_WITH_TIES),
    "residual": ConfidenceModel(residual_std=0.013),
    "classification": ConfidenceModel(task="classification"),
}
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-0.05, max_value=1.05),
    st.sampled_from([0.0, -0.0, 0.5, 1e-300, -1e-300, 5e-324, *QUANTILES_WITH_TIES,
                     *(-q for q in QUANTILES_WITH_TIES)]),
)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(values=st.lists(VALUES, min_size=1, max_size=40), name=st.sampled_from(sorted(MODELS)),
       min_conf=st.sampled_from([0.0, 0.3, 0.6, 1.0]))
def test_decide_many_is_decide_value_by_value(values: list[float], name: str, min_conf: float) -> None:
    strategy = MLRegressionStrategy(MODELS[name], min_confidence=min_conf, position_size=0.035)
    dirs, confs, targets = strategy.decide_many(np.array(values))
    for k, x in enumerate(values):
        want = strategy.decide(x)  # the oracle: the per-value code path
        assert (dirs[k], bits(confs[k]), bits(targets[k])) == (
            want.direction, bits(want.confidence), bits(want.target_fraction)), (x, k)
        assert type(dirs[k]) is int and type(confs[k]) is float and type(targets[k]) is float


def test_only_a_class_defining_decide_many_beside_decide_decides_in_batches() -> None:
    class Doubled(MLRegressionStrategy):  # overrides decide only: its parent's decide_many would be wrong
        def decide(self, raw_prediction: float) -> Decision:
            d = super().decide(raw_prediction)
            return Decision(d.direction, d.confidence, 2 * d.target_fraction)

    class OwnScore(ConfidenceModel):  # a confidence model overriding score alone
        def score(self, raw: float) -> tuple[float, float]:
            return raw, 1.0

    base = MLRegressionStrategy(MODELS["residual"], min_confidence=0.5, position_size=0.02)
    assert batch_decider(base) is not None
    assert batch_decider(Doubled(MODELS["residual"], min_confidence=0.5, position_size=0.02)) is None
    assert batch_decider(object()) is None
    own = MLRegressionStrategy(OwnScore(residual_std=1.0), min_confidence=0.5, position_size=0.02)
    assert own.decide_many(np.array([1e-9, -2.0]))[1:] == ([1.0, 1.0], [0.02, -0.02])  # went value by value


def test_batch_is_row_and_prediction_bar_by_bar() -> None:
    rng = np.random.default_rng(5)
    rows = rng.normal(0, 0.03, (23, 3))
    rows[[0, 1, 9], 1] = np.nan  # not ready
    model = FirstFeature(raise_above=0.04, nan_below=-0.05)
    ticks = iter(float(k) for k in range(1000))
    one = BatchFeed([(0, rows[:11]), (11, rows[11:])], model, clock=lambda: next(ticks), chunk=4)
    many = BatchFeed([(0, rows[:11]), (11, rows[11:])], model, clock=lambda: 0.0, chunk=4)
    raised = 0
    for i in range(23):
        first, b_rows, ready, preds, _latency, errors = many.batch(i)
        k = i - first
        assert 0 <= k < len(ready) <= 4
        row, ok = one.row(i)
        assert ok == ready[k] and np.array_equal(row, b_rows[k], equal_nan=True)
        if ok:
            raw, _, error = one.prediction(i)
            assert bits(raw) == bits(preds[k]) and errors.get(k) == error
            raised += error is not None
    assert raised, "the scripted model must have raised somewhere"


NAMES = ["ret_1", "ret_5", "sma_ratio_10", "rsi_14"]


def _spec(model: Any, symbol: str, model_id: str = "m:v1", weight: float = 1.0) -> ModelSpec:
    pipeline = FeaturePipeline(NAMES)
    manifest = {"target": {"horizon": 2, "task": "regression"},
                "baseline": {"prediction": {"quantiles": list(np.linspace(-0.02, 0.02, 101))}},
                "features": pipeline.contract()}
    return ModelSpec(model_id=model_id, symbol=symbol, digest="d" * 8, predictor=model, stream=pipeline.stream(500),
                     manifest=manifest, min_confidence=0.4, position_size=0.05, weight=weight)


def _run(tmp: Path, name: str, *, generic: bool, monkeypatch: pytest.MonkeyPatch, **over: Any) -> dict[str, Any]:
    """A batch replay of two symbols (one traded by one model with errors and fallbacks, one by two
    models) plus a schedule, with the fast paths, or with the generic ones patched in."""
    with monkeypatch.context() as m:
        if generic:
            m.setattr(Engine, "_step_one", Engine._step)
            m.setattr(Engine, "_decide_one", lambda self, ts, sym, i, bar, eq, slot, ep:
                      self._decide(ts, sym, i, bar, eq, [slot], ep))
            m.setattr(model_runner, "batch_decider", lambda strategy: None)
        frames = {"AAA": bars(260, seed=31), "BBB": bars(200, seed=32, start="2021-02-01")}
        model = FirstFeature(raise_above=0.03, nan_below=-0.035)
        specs = [_spec(model, "AAA", weight=3.0), _spec(model, "BBB", "m:v1"),
                 _spec(FirstFeature(), "BBB", "n:v2", weight=2.5)]
        targets = [math.nan] * 30 + [3.0, 3.0, -2.0, math.nan, 0.0] * 40
        run_session(config(replay="batch", errors__fallback="previous", errors__max_consecutive_errors=50, **over),
                    specs, replay_steps(series(frames)), tmp / name, run_id=name,
                    opts=RunOptions(commit_every=37, handle_signals=False),
                    schedules=[TargetSchedule("AAA", targets)])
        # and one symbol alone: every step is a one-bar step
        run_session(config(replay="batch", **over), [_spec(model, "AAA")], replay_steps(series({"AAA": frames["AAA"]})),
                    tmp / f"{name}-one", run_id=f"{name}-one", opts=RunOptions(commit_every=37, handle_signals=False))
    return {"two": ledger_content(tmp / name / "ledger.db"), "one": ledger_content(tmp / f"{name}-one" / "ledger.db")}


@pytest.mark.parametrize("limits", [{}, {"risk_limits__max_ml_positions": 1, "execution__allow_short": False,
                                         "risk_limits__daily_ml_loss_limit": 0.001}])
def test_fast_paths_write_the_ledger_of_the_generic_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          limits: dict[str, Any]) -> None:
    fast = _run(tmp_path, "fast", generic=False, monkeypatch=monkeypatch, **limits)
    generic = _run(tmp_path, "generic", generic=True, monkeypatch=monkeypatch, **limits)
    for key in ("two", "one"):
        fast[key]["meta"] = [r for r in fast[key]["meta"] if r[0] != "config"]
        generic[key]["meta"] = [r for r in generic[key]["meta"] if r[0] != "config"]
        assert fast[key] == generic[key], key
    assert fast["two"]["fills"] and fast["one"]["fills"]
    events = {r[2] for r in fast["two"]["events"]}
    assert "ML_ERROR" in events, "the scripted model must have failed"
    if limits:
        assert "RISK_REJECTED" in events


def _handler(max_positions: int = 5) -> tuple[UnifiedSignalHandler, PaperBroker, list[Any]]:
    bus = EventBus()
    rejected: list[Any] = []
    bus.subscribe(EventType.RISK_REJECTED, rejected.append)
    broker = PaperBroker(bus, initial_cash=100_000, commission_bps=0, slippage_bps=0)
    handler = UnifiedSignalHandler(bus, broker, max_position_size=0.05, max_positions=max_positions,
                                   daily_loss_limit=0.5, allow_short=True)
    handler.check_day("2021-01-04", 100_000)
    return handler, broker, rejected


@pytest.mark.parametrize(("target", "queued", "cut"), [
    (1666.6666666, 1666.6666666, False),  # far enough below the cap: no rounding needed
    (1666.666666665, 1666.66666667, False),  # within 1e-8 below the exact cap: rounded to it, not cut
    (1666.66666667, 1666.66666667, False),  # the rounded cap itself
    (1666.666666675, 1666.66666667, True),  # above the rounded cap: cut to it
    (-1666.67, -1666.66666667, True),
])
def test_position_cap_at_its_rounding_edge(target: float, queued: float, cut: bool) -> None:
    # cap: 5% of 100,000 at price 3 = 1666.666..., rounded to 1e-8 units: 1666.66666667
    handler, broker, rejected = _handler()
    handler.process("t", [Request("A", target, 0.9, target, "m")], 100_000, {"A": 3.0})
    assert broker.pending["A"].quantity == queued
    assert [r.reason for r in rejected] == (["position_size"] if cut else [])


def test_closed_positions_do_not_count_toward_max_positions() -> None:
    handler, broker, rejected = _handler(max_positions=3)
    for sym, qty in (("A", 10.0), ("B", 10.0), ("B", -10.0)):  # A open; B opened then closed (kept at 0)
        broker.submit("t0", sym, qty, "m")
        broker.on_open("t1", sym, 100.0)
    assert broker.positions["B"].quantity == 0.0 and len(broker.positions) == 2
    # two openings, 2 + 0 + 2 > 3 rows could be open: counted, 1 open, so both fit
    handler.process("t", [Request("C", 5, 0.7, 5, "m"), Request("D", 5, 0.8, 5, "m")], 100_000,
                    {"C": 100.0, "D": 100.0})
    assert sorted(broker.pending) == ["C", "D"] and not rejected
    assert [broker.pending[s].id for s in ("D", "C")] == [4, 5]  # the more confident first
    handler2, broker2, rejected2 = _handler(max_positions=2)
    for sym, qty in (("A", 10.0), ("B", 10.0), ("B", -10.0)):
        broker2.submit("t0", sym, qty, "m")
        broker2.on_open("t1", sym, 100.0)
    handler2.process("t", [Request("C", 5, 0.7, 5, "m"), Request("D", 5, 0.8, 5, "m")], 100_000,
                     {"C": 100.0, "D": 100.0})
    assert sorted(broker2.pending) == ["D"]
    assert [(r.reason, r.symbol, r.payload["open_positions"]) for r in rejected2] == [("max_positions", "C", 2)]


class Rows:
    """A feature stream replaying given rows."""

    def __init__(self, rows: list[list[float]]) -> None:
        self.rows = iter(np.array(r, dtype=float) for r in rows)

    def update(self, ts: Any, o: float, h: float, l: float, c: float, v: float) -> np.ndarray:  # noqa: E741
        return next(self.rows)


def test_the_streaming_nan_check_skips_exactly_the_rows_with_a_nan() -> None:
    from collections import deque

    rows = [[math.inf, -math.inf], [math.nan, 1.0], [1e200, -1e200], [0.0, -0.0], [-math.inf, math.nan], [],
            [1.0, 2.0]]
    seen: list[np.ndarray] = []

    class Record:
        def predict_one(self, x: np.ndarray) -> float:
            seen.append(x.copy())
            return 0.01

    slot = model_runner.ModelSlot(
        model_id="m", symbol="A", digest="d", predictor=Record(), stream=Rows(rows),
        strategy=MLRegressionStrategy(MODELS["residual"], min_confidence=0.5, position_size=0.02), weight=1.0,
        horizon=1, bus=EventBus(), timeout_ms=1e6, fallback="skip", max_consecutive_errors=3, previous_max_bars=1)
    for k in range(len(rows)):
        slot.step(f"t{k}", k, 1.0, 1.0, 1.0, 1.0, 1.0, deque())
    want = [r for r in rows if not np.isnan(np.array(r, dtype=float)).any()]  # the oracle: isnan().any()
    assert [x.tolist() for x in seen] == want and len(want) == 5


def test_the_loop_raises_the_young_generation_threshold_and_gives_it_back() -> None:
    import gc

    from aitrader.trading.heap import LOOP_GEN0_THRESHOLD, frozen_heap

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        with frozen_heap():
            assert gc.get_threshold() == (LOOP_GEN0_THRESHOLD, 10, 10)
            with frozen_heap():  # a nested loop changes nothing
                assert gc.get_threshold() == (LOOP_GEN0_THRESHOLD, 10, 10)
            assert gc.get_threshold() == (LOOP_GEN0_THRESHOLD, 10, 10)
        assert gc.get_threshold() == (700, 10, 10)
        gc.set_threshold(0, 10, 10)  # threshold 0: automatic collection off, and it stays off
        with frozen_heap():
            assert gc.get_threshold() == (0, 10, 10)
        gc.set_threshold(50_000, 10, 10)  # a higher threshold is kept
        with frozen_heap():
            assert gc.get_threshold() == (50_000, 10, 10)
        assert gc.get_threshold() == (50_000, 10, 10)
    finally:
        gc.set_threshold(*before)
