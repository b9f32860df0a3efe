"""One model inside the loop: streaming features -> guarded prediction -> strategy vote.

The guard turns a prediction that raises, returns NaN or takes longer than
``prediction_timeout_ms`` into an ML_ERROR event and applies the configured fallback:

* ``previous``: reuse the last valid prediction, for at most ``previous_max_bars`` bars in a row;
* ``rule``: a momentum rule, the past ``horizon``-bar return used as the forecast of the next one;
* ``skip``: no prediction, the model's vote is left as it was.

A bar whose feature row still has NaN (warm-up, a gap in a feature) is skipped for that model
without counting as an error. After ``max_consecutive_errors`` errors in a row the model is
disabled for the rest of the run: its vote is withdrawn (so a symbol traded only by it goes flat)
and an ALERT is raised. A Python call cannot be interrupted safely, so the timeout is checked
after the call returns (the late result is discarded).

Which clock the timeout reads depends on the run: live runs (``--follow``, ``--speed K``) time the
call on the wall clock, because a late prediction is late for the market. A replay at ``--speed 0``
(a backtest) times it on the calling thread's CPU time (``time.thread_time``): sleeping, waiting
for a core on a loaded machine or other processes do not advance it, so the same inputs give the
same ledger under any load, while a model that really computes too long still times out. (The
runner predicts on the calling thread, one ONNX thread, so its work is this thread's CPU time.)
``latency_us`` always records wall time. Tests inject ``clock``/``timeout_clock``. (The CPU clock is
read only for a call that took longer than the timeout on the wall clock: that call is repeated on
the CPU clock, since CPU time never exceeds wall time; the first call's result is used.)

Each prediction records ``in_sample``: 1 when its bar lies in the model's training rows (manifest
``data.first`` .. ``split.final_train_last``), 0 when not, None when the manifest does not say.
Bars before ``trade_from`` (epoch seconds) only warm the features: no prediction, no vote.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from aitrader.trading.events import (
    Alert,
    EventBus,
    EventType,
    FeatureUpdate,
    MLError,
    ModelPrediction,
    Signal,
)
from aitrader.trading.strategy import MLRegressionStrategy, batch_decider

if TYPE_CHECKING:
    from aitrader.trading.batch import BatchFeed

# module constants: an enum member lookup per bar costs more than a global
_FEATURE_UPDATE, _MODEL_PREDICTION, _SIGNAL = EventType.FEATURE_UPDATE, EventType.MODEL_PREDICTION, EventType.SIGNAL


class Predictor(Protocol):
    """Anything with ``predict_one(row) -> float`` (aitrader.models.runner.ModelRunner qualifies)."""

    def predict_one(self, x: np.ndarray) -> float: ...


class FeatureStream(Protocol):
    def update(self, ts: Any, o: float, h: float, l: float, c: float, v: float) -> np.ndarray: ...  # noqa: E741


def warm_up(predictor: Predictor, n_features: int) -> None:
    """One throw-away prediction, so the first call's allocation and lazy init stay out of the timed loop.

    A model that fails here fails again in the loop, where it is an ML_ERROR with its fallback."""
    try:
        predictor.predict_one(np.zeros(n_features))
    except Exception:  # noqa: BLE001, S110 - reported by the loop, not here
        pass


class ModelSlot:
    """State and step of one configured model on one symbol."""

    def __init__(
        self,
        *,
        model_id: str,
        symbol: str,
        digest: str,
        predictor: Predictor,
        stream: FeatureStream,
        strategy: MLRegressionStrategy,
        weight: float,
        horizon: int,
        bus: EventBus,
        timeout_ms: float,
        fallback: str,
        max_consecutive_errors: int,
        previous_max_bars: int,
        clock: Callable[[], float] = time.perf_counter,
        timeout_clock: Callable[[], float] | None = None,
        train_span: tuple[float, float] | None = None,
        trade_from: float | None = None,
    ) -> None:
        self.model_id = model_id
        self.symbol = symbol
        self.digest = digest
        self.predictor = predictor
        self.stream = stream
        self.strategy = strategy
        self.weight = weight
        self.horizon = horizon
        self.bus = bus
        self.timeout_s = timeout_ms / 1000.0
        self.fallback = fallback
        self.max_errors = max_consecutive_errors
        self.previous_max_bars = previous_max_bars
        self.clock = clock
        # None: the timeout reads the latency clock itself (one pair of reads per prediction).
        self.timeout_clock = timeout_clock
        #: Set by the engine when the ledger is the only MODEL_PREDICTION listener: its buffer's append.
        self.prediction_rows: Callable[[tuple[Any, ...]], None] | None = None
        #: False when the engine found no FEATURE_UPDATE / SIGNAL listener as its loop started (the batch
        #: route then skips asking the bus on every bar); True: ask the bus.
        self.may_publish_features = True
        self.may_publish_signals = True
        #: Set for a replay on the batch route (aitrader.trading.batch): rows and predictions by bar index.
        self.feed: BatchFeed | None = None
        # The batch route's current prediction batch as Python lists (see _load_batch): bar index of its
        # first row, its length, rows, ready flags, raw predictions, latency_us, errors, and the
        # strategy's decisions (directions, confidences, target fractions; None: decided bar by bar).
        self._b_feed: BatchFeed | None = None
        self._b_first = 0
        self._b_n = 0
        self._b_rows: Any = None
        self._b_ready: list[bool] = []
        self._b_preds: list[float] = []
        self._b_latency: list[float] = []
        self._b_errors: dict[int, str] = {}
        self._b_decisions: tuple[list[int], list[float], list[float]] | None = None
        self.train_span = train_span
        self.trade_from = trade_from
        # State carried across bars; saved in every checkpoint (see state()).
        self.vote: float | None = None  # signed target fraction; None: no opinion (not yet / disabled)
        self.confidence = 0.0
        self.last_valid: float | None = None
        self.previous_age = 0
        self.consecutive_errors = 0
        self.disabled = False
        self.n_predictions = 0
        self.n_signals = 0

    def warm(self, ts: Any, o: float, h: float, l: float, c: float, v: float) -> None:  # noqa: E741
        """Feed a bar before the run's cursor: features only (resume rebuilds streams from bars; the
        batch route reads its precomputed rows from the cursor on, so it needs nothing)."""
        if self.feed is None:
            self.stream.update(ts, o, h, l, c, v)

    def in_sample(self, epoch: float) -> int | None:
        """1 when the bar at ``epoch`` was one of the model's training rows, 0 when not, None: unknown."""
        span = self.train_span
        if span is None:
            return None
        return 1 if span[0] <= epoch <= span[1] else 0

    def step(
        self, ts: str, bar_index: int, o: float, h: float, l: float, c: float, v: float,  # noqa: E741
        closes: deque[float], epoch: float = 0.0,
    ) -> bool:
        """Process one bar of this model's symbol; True when the model's vote changed."""
        feed = self.feed
        if feed is not None:
            return self.step_batch(feed, ts, bar_index, c, closes, epoch)
        row = self.stream.update(ts, o, h, l, c, v)
        if self.disabled or (self.trade_from is not None and epoch < self.trade_from):
            return False
        bus = self.bus
        if self.may_publish_features and bus.wants(_FEATURE_UPDATE):
            bus.publish(FeatureUpdate(ts, self.symbol, self.model_id, row.tolist()))
        # max() is NaN iff a feature is NaN (numpy's maximum propagates NaN; no arithmetic, so no
        # overflow): one numpy call instead of isnan().any()'s two
        top = row.max() if row.size else 0.0
        if top != top:
            return False  # missing features: skip this bar for this model
        reason, detail, raw, latency_us, timed_us, what = self._timed_predict(row)
        if reason is None and timed_us > self.timeout_s * 1e6:
            reason, detail = "timeout", f"{what} {timed_us / 1000:.3f} ms > {self.timeout_s * 1000:g} ms"
        return self._act(ts, bar_index, c, closes, epoch, row, reason, detail, raw, latency_us)

    def _load_batch(self, feed: BatchFeed, bar_index: int) -> None:
        """Read the prediction batch holding ``bar_index`` from the feed, and decide all its valid
        predictions at once when the strategy can (``decide_many``: the same floats as ``decide``)."""
        first, rows, ready, preds, latency, errors = feed.batch(bar_index)
        self._b_feed, self._b_first, self._b_n = feed, first, len(ready)
        self._b_rows, self._b_ready, self._b_preds = rows, ready, preds
        self._b_latency, self._b_errors = latency, errors
        many = batch_decider(self.strategy)
        self._b_decisions = many(np.asarray(preds, dtype=np.float64)) if many is not None else None

    def step_batch(self, feed: BatchFeed, ts: str, bar_index: int, c: float, closes: deque[float],
                    epoch: float) -> bool:
        """:meth:`step` on the batch route: the bar's row and prediction were computed in batches.
        No per-bar timeout here (a batch call is not a bar's call; docs/trading.md, "Replay routes").

        A valid prediction (no error, finite) takes the short path below, which does what
        :meth:`_act` does for one (same ledger row, counters, vote, events) with the batch's
        precomputed decision; an error, NaN or inf goes through :meth:`_act` and its fallbacks."""
        if self.disabled or (self.trade_from is not None and epoch < self.trade_from):
            return False
        k = bar_index - self._b_first
        if k < 0 or k >= self._b_n or feed is not self._b_feed:
            self._load_batch(feed, bar_index)
            k = bar_index - self._b_first
        row = self._b_rows[k]  # a view: the chunk is never written after it is loaded
        bus = self.bus
        if self.may_publish_features and bus.wants(_FEATURE_UPDATE):
            bus.publish(FeatureUpdate(ts, self.symbol, self.model_id, row.tolist()))
        if not self._b_ready[k]:
            return False  # missing features: skip this bar for this model
        raw = self._b_preds[k]
        latency_us = self._b_latency[k]
        decisions = self._b_decisions
        if (self._b_errors and k in self._b_errors) or raw - raw != 0.0 or decisions is None:
            # raw - raw is NaN for NaN and +-inf: the error path (or a strategy deciding bar by bar)
            reason, detail = None, ""
            if (error := self._b_errors.get(k)) is not None:
                reason, detail, raw = "exception", error, math.nan
            elif math.isnan(raw) or math.isinf(raw):
                reason, detail = "nan", f"prediction is {raw}"
            return self._act(ts, bar_index, c, closes, epoch, row, reason, detail, raw, latency_us)
        # _act for a valid model prediction, with the batch's decision
        self.consecutive_errors = 0
        self.last_valid = raw
        self.previous_age = 0
        self.n_predictions += 1
        conf = decisions[1][k]
        if (sink := self.prediction_rows) is not None:  # the ledger's buffer (Ledger._on_prediction's row)
            span = self.train_span
            in_sample = None if span is None else (1 if span[0] <= epoch <= span[1] else 0)
            sink((ts, bar_index, self.symbol, self.model_id, self.digest, raw, conf, "model", latency_us, in_sample,
                  row))
        elif bus.wants(_MODEL_PREDICTION):
            bus.publish(ModelPrediction(ts, bar_index, self.symbol, self.model_id, self.digest, raw, conf, "model",
                                        latency_us, row, self.in_sample(epoch)))
        self.confidence = conf
        target = decisions[2][k]
        if target == self.vote:
            return False  # not disabled: only an error disables, and this bar had none
        self.vote = target
        self.n_signals += 1
        if self.may_publish_signals and bus.wants(_SIGNAL):
            bus.publish(Signal(ts, self.symbol, self.model_id, decisions[0][k], conf, conf, target))
        return True

    def _act(self, ts: str, bar_index: int, c: float, closes: deque[float], epoch: float, row: np.ndarray,
             reason: str | None, detail: str, raw: float, latency_us: float) -> bool:
        """The prediction (or its error and fallback) -> ledger row, strategy decision, vote."""
        bus = self.bus
        if reason is None:
            self.consecutive_errors = 0
            self.last_valid = raw
            self.previous_age = 0
            source = "model"
        else:
            fallback = self._on_error(ts, reason, detail, c, closes)
            if fallback is None or self.disabled:
                return self._withdraw_if_disabled()
            raw, source = fallback
        self.n_predictions += 1
        decision = self.strategy.decide(raw)
        if (sink := self.prediction_rows) is not None:  # the ledger's buffer (Ledger._on_prediction's row)
            sink((ts, bar_index, self.symbol, self.model_id, self.digest, raw, decision.confidence, source,
                  latency_us, self.in_sample(epoch), row.copy() if source == "model" else None))
        elif bus.wants(_MODEL_PREDICTION):
            # A copy of the row (the stream reuses its buffer): the ledger packs them into one blob.
            feats = row.copy() if source == "model" else None
            bus.publish(
                ModelPrediction(
                    ts, bar_index, self.symbol, self.model_id, self.digest, raw, decision.confidence, source,
                    latency_us, feats, self.in_sample(epoch),
                )
            )
        self.confidence = decision.confidence
        if decision.target_fraction == self.vote:
            return self._withdraw_if_disabled()
        self.vote = decision.target_fraction
        self.n_signals += 1
        if self.may_publish_signals and bus.wants(_SIGNAL):
            bus.publish(
                Signal(ts, self.symbol, self.model_id, decision.direction, decision.confidence, decision.confidence,
                       decision.target_fraction)
            )
        self._withdraw_if_disabled()
        return True

    def _timed_predict(self, row: np.ndarray) -> tuple[str | None, str, float, float, float, str]:
        """The prediction, its wall latency, and the time the timeout reads (with what it measured)."""
        t0 = self.clock()
        reason, detail, raw = self._predict(row)
        latency_us = (self.clock() - t0) * 1e6
        timed_us, what = latency_us, "prediction took"
        if (tclock := self.timeout_clock) is not None:
            what = "prediction used CPU time"
            if reason is None and latency_us > self.timeout_s * 1e6:
                # A thread's CPU time never exceeds the wall time it took, so only a call late on the
                # wall clock can have used too much CPU: that one call is repeated on the thread's CPU
                # clock (the model is a pure function of the row). Reading the CPU clock costs a system
                # call (~2.6 us here), too much to pay on every bar.
                c0 = tclock()
                self._predict(row)
                timed_us = (tclock() - c0) * 1e6
        return reason, detail, raw, latency_us, timed_us, what

    def _predict(self, row: np.ndarray) -> tuple[str | None, str, float]:
        try:
            raw = float(self.predictor.predict_one(row))
        except Exception as exc:  # noqa: BLE001 - any model failure is an ML_ERROR, never a crash
            # a remote predictor's errors name their kind (service_timeout, service_circuit_open, ...)
            return getattr(exc, "ml_error_reason", "exception"), f"{type(exc).__name__}: {exc}", math.nan
        if math.isnan(raw) or math.isinf(raw):
            return "nan", f"prediction is {raw}", raw
        return None, "", raw

    def _on_error(
        self, ts: str, reason: str, detail: str, close: float, closes: deque[float]
    ) -> tuple[float, str] | None:
        self.consecutive_errors += 1
        self.bus.publish(
            MLError(ts, self.symbol, self.model_id, reason,
                    {"detail": detail, "consecutive": self.consecutive_errors, "fallback": self.fallback})
        )
        if self.consecutive_errors >= self.max_errors:
            self.disabled = True
            self.bus.publish(
                Alert(ts, self.symbol, self.model_id, "model_disabled",
                      {"consecutive_errors": self.consecutive_errors, "last_error": reason})
            )
        if self.fallback == "previous" and self.last_valid is not None and self.previous_age < self.previous_max_bars:
            self.previous_age += 1
            return self.last_valid, "fallback_previous"
        # ``closes`` holds the closes before this bar: closes[-h] is the close h bars ago.
        if self.fallback == "rule" and len(closes) >= self.horizon:
            past = closes[-self.horizon]
            if past > 0:
                return close / past - 1.0, "fallback_rule"
        return None

    def _withdraw_if_disabled(self) -> bool:
        if self.disabled and self.vote is not None:
            self.vote = None
            self.confidence = 0.0
            return True
        return False

    def replace_model(
        self, *, model_id: str, digest: str, predictor: Predictor, stream: FeatureStream,
        strategy: MLRegressionStrategy, horizon: int, train_span: tuple[float, float] | None,
    ) -> None:
        """Swap in another version of this slot's model at a bar boundary (a live model swap).

        The vote, its confidence and the counters carry over: the positions reflect the old vote
        until the new version's first prediction replaces it. The error state is the new version's
        own (no errors yet, enabled, no previous prediction to fall back on). ``stream`` must already
        be warm (see :mod:`aitrader.trading.swap`).
        """
        self.model_id = model_id
        self.digest = digest
        self.predictor = predictor
        self.stream = stream
        self.strategy = strategy
        self.horizon = horizon
        self.train_span = train_span
        self.feed = None  # a swap happens in live runs, which stream
        self.last_valid = None
        self.previous_age = 0
        self.consecutive_errors = 0
        self.disabled = False

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        return {
            "vote": self.vote,
            "confidence": self.confidence,
            "last_valid": self.last_valid,
            "previous_age": self.previous_age,
            "consecutive_errors": self.consecutive_errors,
            "disabled": self.disabled,
            "n_predictions": self.n_predictions,
            "n_signals": self.n_signals,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.vote = state["vote"]
        self.confidence = float(state["confidence"])
        self.last_valid = state["last_valid"]
        self.previous_age = int(state["previous_age"])
        self.consecutive_errors = int(state["consecutive_errors"])
        self.disabled = bool(state["disabled"])
        self.n_predictions = int(state["n_predictions"])
        self.n_signals = int(state["n_signals"])
