"""Event envelopes on the bus: one msgpack map per stream entry (field ``e``), validated on receipt.

Envelope keys: ``v`` schema version (:data:`SCHEMA_VERSION`), ``id`` (deterministic, the consumers'
idempotency key), ``type`` (dotted, :data:`EVENT_TYPES`), ``src`` (``{role}-{host}-{pid}``), ``ts``
(emit time, epoch seconds) and ``data`` (the payload; its keys per type in :data:`PAYLOADS`).
:func:`decode` turns anything a consumer cannot use into :class:`BadEvent` with a reason, which the
consumer sends to the dead-letter stream instead of crashing (docs/bus.md, *Schemas*).
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import msgpack

SCHEMA_VERSION = 1
FIELD = b"e"

BAR = "market.data.update"
BAR_END = "market.data.end"
PREDICTION = "ml.prediction.ready"
ML_ERROR = "ml.error"
TRADE = "trade.executed"
POSITION_OPENED = "position.opened"
POSITION_CLOSED = "position.closed"
PERFORMANCE = "performance.update"
OUTCOME = "feedback.prediction.outcome"
ALERT = "alert"

_NUM = (int, float)
#: Required payload keys and their types, per event type (extra keys are allowed: newer producers).
PAYLOADS: dict[str, dict[str, tuple[type, ...]]] = {
    BAR: {"symbol": (str,), "i": (int,), "ts": (str,), "epoch": _NUM, "o": _NUM, "h": _NUM, "l": _NUM,
          "c": _NUM, "v": _NUM},
    BAR_END: {"symbol": (str,), "i": (int,)},
    PREDICTION: {"symbol": (str,), "i": (int,), "ts": (str,), "epoch": _NUM, "bar": (list,), "models": (list,)},
    ML_ERROR: {"symbol": (str,), "reason": (str,)},
    TRADE: {"run_id": (str,), "fill_id": (int,), "symbol": (str,), "side": (str,), "quantity": _NUM,
            "price": _NUM, "commission": _NUM, "ts": (str,)},
    POSITION_OPENED: {"run_id": (str,), "symbol": (str,), "quantity": _NUM, "price": _NUM, "ts": (str,)},
    POSITION_CLOSED: {"run_id": (str,), "symbol": (str,), "pnl": _NUM, "ts": (str,)},
    PERFORMANCE: {"run_id": (str,), "step": (int,), "ts": (str,), "cash": _NUM, "equity": _NUM},
    OUTCOME: {"run_id": (str,), "symbol": (str,), "model_id": (str,), "i": (int,), "outcome": _NUM, "ts": (str,)},
    ALERT: {"reason": (str,)},
}
EVENT_TYPES = tuple(PAYLOADS)
_ENVELOPE: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("id", (str,)), ("type", (str,)), ("src", (str,)), ("ts", _NUM), ("data", (dict,)))
_EXACT = {t: tuple(spec.items()) for t, spec in PAYLOADS.items()}


@dataclass(frozen=True)
class Event:
    type: str
    id: str
    src: str
    ts: float
    data: dict[str, Any]
    v: int = SCHEMA_VERSION


class BadEvent(Exception):
    """An entry a consumer cannot use; ``reason`` goes with it to the dead-letter stream."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def source_name(role: str) -> str:
    """``{role}-{host}-{pid}``: the consumer name of one process (and the ``src`` of its events)."""
    return f"{role}-{socket.gethostname()}-{os.getpid()}"


def encode(type_: str, event_id: str, src: str, data: dict[str, Any], *, ts: float | None = None) -> bytes:
    return msgpack.packb({"v": SCHEMA_VERSION, "id": event_id, "type": type_, "src": src,
                          "ts": time.time() if ts is None else ts, "data": data}, use_bin_type=True)


def fields(type_: str, event_id: str, src: str, data: dict[str, Any]) -> dict[bytes, bytes]:
    """The stream entry's fields for one event (what XADD takes)."""
    return {FIELD: encode(type_, event_id, src, data)}


def decode(entry: dict[Any, Any], *, max_bytes: int) -> Event:
    """The validated event of one stream entry, or :class:`BadEvent` naming what is wrong."""
    raw = entry.get(FIELD, entry.get(FIELD.decode()))
    if raw is None:
        raise BadEvent(f"no field 'e' in the entry (fields: {sorted(str(k) for k in entry)[:5]})")
    if isinstance(raw, str):
        raw = raw.encode()
    if len(raw) > max_bytes:
        raise BadEvent(f"oversized: {len(raw)} bytes > max_event_bytes {max_bytes}")
    obj = _unpack(raw)
    version = obj.get("v")
    if version != SCHEMA_VERSION:
        raise BadEvent(f"schema version {version!r}, this consumer reads {SCHEMA_VERSION}")
    # Exact type checks: msgpack yields only the builtin types, and ``type(x) in (int, float)`` refuses
    # a bool as ``isinstance`` would not (one test per key instead of two: this runs for every event).
    for key, kinds in _ENVELOPE:
        if type(obj.get(key)) not in kinds:
            raise BadEvent(f"envelope key {key!r} missing or of the wrong type ({type(obj.get(key)).__name__})")
    type_ = obj["type"]
    spec = _EXACT.get(type_)
    if spec is None:
        raise BadEvent(f"unknown event type {type_!r}")
    data = obj["data"]
    for key, kinds in spec:
        value = data.get(key)
        kind = type(value)
        if kind not in kinds:
            raise BadEvent(f"{type_}: payload key {key!r} missing or of the wrong type ({kind.__name__})")
        if kind is float and not math.isfinite(value):
            raise BadEvent(f"{type_}: payload key {key!r} is {value}")
    return Event(type_, obj["id"], obj["src"], float(obj["ts"]), data, version)


def _unpack(raw: bytes) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - any undecodable payload is a dead letter
        raise BadEvent(f"not msgpack: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise BadEvent(f"envelope is a {type(obj).__name__}, not a map")
    return obj


def check_bar(data: dict[str, Any]) -> str | None:
    """What is wrong with a bar's values (the live-bar rules of aitrader.data), None when it is usable.

    The common case (every rule met) is decided with float comparisons and ``fromisoformat``;
    anything else goes through :func:`aitrader.data.validate.validate_bar` for its verdict and message."""
    import datetime as dt

    from aitrader.data.validate import MAX_PRICE, MAX_VOLUME, MIN_PRICE, validate_bar

    if data["i"] < 0:
        return f"bar index {data['i']} < 0"
    o, h, lo, c, v = data["o"], data["h"], data["l"], data["c"], data["v"]
    try:
        dt.datetime.fromisoformat(data["ts"])
        stamp_ok = True
    except ValueError:
        stamp_ok = False
    # NaN fails every comparison and inf the bounds, so only clean bars pass here
    if (stamp_ok and MIN_PRICE <= lo <= min(o, c) and max(o, c) <= h <= MAX_PRICE and MIN_PRICE <= o <= MAX_PRICE
            and MIN_PRICE <= c <= MAX_PRICE and 0 <= v <= MAX_VOLUME):
        return None
    problem = validate_bar(data["ts"], o, h, lo, c, v)
    return None if problem is None else str(problem.message)
