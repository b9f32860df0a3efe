"""Typed events of the trading loop and the in-process bus that carries them.

Every step of the loop publishes what it did (a bar arrived, a prediction was made, an order was
placed...) so that persistence (the SQLite ledger), the live view and monitoring *subscribe*
instead of being called by the engine. The publish path is kept cheap: the engine asks
:meth:`EventBus.wants` before it builds an event, so a type nobody listens to costs one set lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    BAR = "BAR"
    FEATURE_UPDATE = "FEATURE_UPDATE"
    MODEL_PREDICTION = "MODEL_PREDICTION"
    SIGNAL = "SIGNAL"
    ORDER = "ORDER"
    FILL = "FILL"
    RISK_REJECTED = "RISK_REJECTED"
    ML_ERROR = "ML_ERROR"
    ALERT = "ALERT"
    # Additions to the list of the issue: the equity mark at each close and the realised outcome of
    # an earlier prediction; both are persisted by the ledger.
    EQUITY = "EQUITY"
    OUTCOME = "OUTCOME"
    # A --follow run switched a model to the version its alias now points at (aitrader.trading.swap).
    MODEL_SWAPPED = "MODEL_SWAPPED"


#: Event types stored in the ledger's ``events`` table (the others have tables of their own).
PERSISTED_EVENT_TYPES = (EventType.ML_ERROR, EventType.RISK_REJECTED, EventType.ALERT, EventType.MODEL_SWAPPED)


@dataclass(slots=True)
class Bar:
    type = EventType.BAR
    ts: str
    symbol: str
    bar_index: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(slots=True)
class FeatureUpdate:
    type = EventType.FEATURE_UPDATE
    ts: str
    symbol: str
    model_id: str
    values: list[float]


@dataclass(slots=True)
class ModelPrediction:
    type = EventType.MODEL_PREDICTION
    ts: str
    bar_index: int
    symbol: str
    model_id: str
    digest: str
    prediction: float
    confidence: float
    source: str  # model | fallback_previous | fallback_rule
    latency_us: float
    features: Sequence[float] | Any  # the model's input row (a float64 array from the runner), None: a fallback
    in_sample: int | None = None  # 1: the bar was one of the model's training rows; None: unknown


@dataclass(slots=True)
class Signal:
    type = EventType.SIGNAL
    ts: str
    symbol: str
    model_id: str
    direction: int  # -1, 0 (flat), +1
    strength: float
    confidence: float
    target_fraction: float  # signed fraction of equity


@dataclass(slots=True)
class Order:
    type = EventType.ORDER
    id: int
    ts: str
    symbol: str
    side: str  # buy | sell
    quantity: float  # positive
    status: str  # pending | filled | cancelled
    reason: str


@dataclass(slots=True)
class Fill:
    type = EventType.FILL
    id: int
    order_id: int
    ts: str
    symbol: str
    side: str
    quantity: float
    price: float
    commission: float
    slippage: float  # cost of slippage in cash, |qty| * |price - open|


@dataclass(slots=True)
class RiskRejected:
    type = EventType.RISK_REJECTED
    ts: str
    symbol: str
    model_id: str
    reason: str  # max_positions | position_size | daily_loss_limit | short_not_allowed
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class MLError:
    type = EventType.ML_ERROR
    ts: str
    symbol: str
    model_id: str
    reason: str  # exception | nan | timeout | service_<code> (a remote predictor, aitrader.serve.client)
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Alert:
    type = EventType.ALERT
    ts: str
    symbol: str
    model_id: str
    reason: str  # model_disabled, ...
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ModelSwapped:
    """A live swap: from ``bar_index`` on, ``model_id`` (the new version) trades in place of the old one."""

    type = EventType.MODEL_SWAPPED
    ts: str  # the stamp of the first bar the new version predicts
    symbol: str
    model_id: str  # the new version (NAME:vN)
    reason: str  # the alias that moved, e.g. "production"
    payload: dict[str, Any] = field(default_factory=dict)  # old/new model_id and digest, bar_index, alias


@dataclass(slots=True)
class EquityMark:
    type = EventType.EQUITY
    bar_index: int
    ts: str
    cash: float
    equity: float


@dataclass(slots=True)
class Outcome:
    type = EventType.OUTCOME
    ts: str  # when the outcome became known
    symbol: str
    model_id: str
    bar_index: int  # the bar of the prediction
    outcome: float


Handler = Callable[[Any], None]


class EventBus:
    """Synchronous publish/subscribe keyed by :class:`EventType`; handlers run in subscription order."""

    def __init__(self) -> None:
        self._handlers: dict[EventType, list[Handler]] = {}

    def subscribe(self, event_type: EventType, handler: Handler) -> None:
        self._handlers.setdefault(event_type, []).append(handler)

    def unsubscribe(self, event_type: EventType, handler: Handler) -> None:
        handlers = self._handlers.get(event_type, [])
        if handler in handlers:
            handlers.remove(handler)
        if not handlers:
            self._handlers.pop(event_type, None)

    def only(self, event_type: EventType, handler: Handler) -> bool:
        """True when ``handler`` is the one listener of ``event_type`` (the hot path then calls it directly)."""
        return self._handlers.get(event_type) == [handler]

    def wants(self, event_type: EventType) -> bool:
        """True when someone listens: callers skip building events nobody reads."""
        return event_type in self._handlers

    def publish(self, event: Any) -> None:
        handlers = self._handlers.get(event.type)
        if handlers:
            for handler in handlers:
                handler(event)
