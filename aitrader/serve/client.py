"""The trading side of the service: a DEALER client, a circuit breaker, a remote predictor, feedback.

:class:`ServiceClient` sends one request and waits at most ``timeout_ms`` for the reply with the
same id (late replies to earlier requests are read and dropped). A DEALER socket is used, not
REQ: a REQ socket is stuck after a timeout until it is rebuilt; the client still rebuilds its
DEALER after a timeout, so requests queued for a hung server are dropped rather than delivered
late. There is no retry: one attempt per call, never past its deadline.

:class:`RemotePredictor` has the in-process runner's interface (``predict_one(row) -> float``),
so a paper-trade slot uses it unchanged; every failure is an exception, which the slot turns into
an ``ML_ERROR`` event and the configured fallback (previous prediction, rule, skip). Counted in
calls (one per bar of the model, so replays stay deterministic):

* circuit breaker: ``breaker_failures`` failures in a row open it; while open, calls fail at once
  (no request) for ``breaker_reset_bars`` bars; then one call is a probe (half-open): a success
  closes it, a failure opens it again. It replaces the in-process slot's permanent disable.
* ``prediction_cooldown``: after a prediction from the service, the next N bars reuse it without
  a request.
* ``prediction_confidence_threshold``: a reply whose confidence is below it counts as unsure: an
  error (reason ``low_confidence``) with the fallback, not a breaker failure. 0 (the default) never.
* a reply from another model version than the run trades (its digest) is a failure: the run never
  records a prediction of a model it did not load.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from aitrader.serve import protocol as P


class ServiceError(Exception):
    """A failed call: ``code`` is the server's (``bad_shape``, ``deadline``, ...) or the client's
    (``timeout``, ``unreachable``, ``circuit_open``, ``digest``, ``low_confidence``, ``bad_reply``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        #: The reason of the slot's ML_ERROR event (``monitor`` counts errors by it).
        self.ml_error_reason = f"service_{code}"


class ServiceClient:
    """One DEALER connection to ``endpoint``; not thread-safe (one per thread)."""

    def __init__(self, endpoint: str, *, timeout_ms: float = 50.0, curve: Any = None, ctx: Any = None) -> None:
        import zmq

        self.endpoint = endpoint
        self.timeout_ms = float(timeout_ms)
        self.curve = curve
        self._own_ctx = ctx is None
        self.ctx = ctx or zmq.Context()
        self._ids = itertools.count(1)
        self.sock: Any = None
        self._connect()

    def _connect(self) -> None:
        import zmq

        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for a peer that is not connected
        sock.setsockopt(zmq.RECONNECT_IVL, 50)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        if self.curve is not None:
            self.curve.apply(sock)
        try:
            sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            from aitrader.errors import ConfigError

            raise ConfigError(f"{self.endpoint!r} is not a ZeroMQ endpoint to connect to ({exc}); use "
                              "tcp://HOST:PORT, e.g. tcp://127.0.0.1:5555") from exc
        self.sock = sock

    def reset(self) -> None:
        """A fresh socket: whatever was queued for, or is still coming from, the old peer is dropped."""
        if self.sock is not None:
            self.sock.close(0)
        self._connect()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None
        if self._own_ctx:
            self.ctx.term()

    def request(self, header: dict[str, Any], body: bytes | None = None, *,
                timeout_ms: float | None = None) -> tuple[dict[str, Any], bytes | None]:
        """Send ``header`` (+ ``body``), return the reply (header, body); ServiceError on any failure."""
        import zmq

        timeout = (self.timeout_ms if timeout_ms is None else float(timeout_ms)) / 1000.0
        deadline = time.perf_counter() + timeout
        rid = next(self._ids)
        frames = [P.pack({"v": P.VERSION, "id": rid, **header})]
        if body is not None:
            frames.append(body)
        sock = self.sock
        while True:
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
                break
            except zmq.Again:  # not connected (yet): wait for the connection, within the deadline
                left = deadline - time.perf_counter()
                if left <= 0 or not sock.poll(max(1, int(left * 1000)), zmq.POLLOUT):
                    raise ServiceError("unreachable", f"no connection to {self.endpoint} within "
                                       f"{timeout * 1000:g} ms") from None
        while True:
            left = deadline - time.perf_counter()
            # zmq_poll, not sock.poll: the latter builds a Poller per call (~2 us of a ~100 us round trip)
            if left <= 0 or not zmq.zmq_poll([(sock, zmq.POLLIN)], max(0, int(math.ceil(left * 1000)))):
                self.reset()
                raise ServiceError("timeout", f"no reply from {self.endpoint} within {timeout * 1000:g} ms")
            reply = sock.recv_multipart()
            if reply and reply[0] == b"":
                reply = reply[1:]
            try:
                head = P.unpack_header(reply[0])
            except (P.ProtocolError, IndexError) as exc:
                raise ServiceError("bad_reply", f"unreadable reply from {self.endpoint}: {exc}") from exc
            if head.get("id") != rid:
                continue  # a late reply to an earlier request that timed out
            if not head.get("ok"):
                raise ServiceError(str(head.get("code") or "error"), str(head.get("error") or "no message"))
            return head, reply[1] if len(reply) > 1 else None

    # ------------------------------------------------------------------ conveniences
    def predict_rows(self, X: np.ndarray, *, model: str | None = None, timeout_ms: float | None = None,
                     **extra: Any) -> tuple[dict[str, Any], np.ndarray]:
        """(reply header, [rows, 2] float64 of prediction, confidence) for the feature rows ``X``."""
        fields, body = P.encode_rows(X)
        head = {"op": "predict", **fields, **extra}
        if model is not None:
            head["model"] = model
        reply, out = self.request(head, body, timeout_ms=timeout_ms)
        return reply, _result(reply, out)

    def predict_bars(self, symbols: list[str], ts_ns: list[int], ohlcv: np.ndarray, *, model: str | None = None,
                     timeout_ms: float | None = None, **extra: Any) -> tuple[dict[str, Any], np.ndarray]:
        fields, body = P.encode_rows(ohlcv)
        head = {"op": "predict", "bars": True, "symbols": symbols, "ts": ts_ns, **fields, **extra}
        if model is not None:
            head["model"] = model
        reply, out = self.request(head, body, timeout_ms=timeout_ms)
        return reply, _result(reply, out)

    def call(self, op: str, timeout_ms: float | None = None, **fields: Any) -> dict[str, Any]:
        return self.request({"op": op, **fields}, timeout_ms=timeout_ms)[0]


def _result(reply: dict[str, Any], body: bytes | None) -> np.ndarray:
    try:
        return P.decode_rows(reply, body)
    except P.ProtocolError as exc:
        raise ServiceError("bad_reply", f"predict reply body: {exc}") from exc


@dataclass
class CircuitBreaker:
    """Counted in calls (bars): see the module docstring."""

    failures: int = 3
    reset_bars: int = 10
    state: str = "closed"  # closed | open | half_open
    consecutive: int = 0
    waited: int = 0
    opened: int = 0  # times it opened

    def allow(self) -> bool:
        if self.state == "open":
            self.waited += 1
            if self.waited <= self.reset_bars:
                return False
            self.state = "half_open"
        return True

    def success(self) -> None:
        self.state, self.consecutive, self.waited = "closed", 0, 0

    def failure(self) -> None:
        self.consecutive += 1
        if self.state == "half_open" or self.consecutive >= self.failures:
            if self.state != "open":
                self.opened += 1
            self.state, self.waited = "open", 0


@dataclass
class RemotePredictor:
    """``predict_one`` over the service (see the module docstring); the slot's ``predictor``."""

    client: ServiceClient
    model: str  # the served registry name
    digest: str  # the version the run trades
    n_features: int
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    cooldown: int = 0
    confidence_threshold: float = 0.0
    timeout_ms: float | None = None
    calls: int = 0
    requests: int = 0
    _last: float | None = None
    _age: int = 0

    def predict_one(self, x: np.ndarray) -> float:
        self.calls += 1
        if self.cooldown and self._last is not None and self._age < self.cooldown:
            self._age += 1
            return self._last
        if not self.breaker.allow():
            raise ServiceError("circuit_open", f"the circuit to {self.client.endpoint} is open after "
                               f"{self.breaker.consecutive} failures; probing again in "
                               f"{self.breaker.reset_bars - self.breaker.waited + 1} bars")
        self.requests += 1
        try:
            reply, out = self.client.predict_rows(np.asarray(x, dtype=np.float64).reshape(1, -1), model=self.model,
                                                  timeout_ms=self.timeout_ms)
            if reply.get("digest") != self.digest:
                raise ServiceError("digest", f"the service answered with {reply.get('model')} "
                                   f"({str(reply.get('digest'))[:12]}), the run trades {self.digest[:12]}; "
                                   "serve the run's version or restart the run on the new one")
        except ServiceError:
            self.breaker.failure()
            raise
        except Exception as exc:  # noqa: BLE001 - a broken reply is a failure like any other
            self.breaker.failure()
            raise ServiceError("bad_reply", f"{type(exc).__name__}: {exc}") from exc
        self.breaker.success()
        raw, conf = float(out[0, 0]), float(out[0, 1])
        self._last, self._age = raw, 0
        if conf < self.confidence_threshold:
            raise ServiceError("low_confidence", f"confidence {conf:.3f} < prediction_confidence_threshold "
                               f"{self.confidence_threshold:g}")
        return raw

    def close(self) -> None:
        self.client.close()


# ---------------------------------------------------------------------------- feedback
@dataclass
class FeedbackSender:
    """Collects (prediction, outcome) pairs of the remote models from the run's bus and sends them in batches.

    ``executed``: an order for the symbol was placed at the prediction's bar (an ORDER event).

    ``batch_size`` records make a batch; ``send_interval`` bars (outcomes) after the last attempt a
    smaller batch is sent too. A batch the service did not acknowledge stays buffered (at most
    ``max_buffer`` records; the oldest leave the buffer first) and is sent again ``send_interval``
    bars later;
    every record is in the run's ledger anyway, and :func:`resend_feedback` sends a whole run again
    (the server stores each record once)."""

    client: ServiceClient
    run_id: str
    models: dict[str, str]  # model_id -> served name
    batch_size: int = 100
    send_interval: int = 50
    max_buffer: int = 10_000
    timeout_ms: float = 1000.0
    pending: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)
    buffer: deque[tuple[str, dict[str, Any]]] = field(default_factory=deque)
    sent: int = 0
    dropped: int = 0
    failures: int = 0
    _since: int = 0
    _failing: bool = False

    def attach(self, bus: Any) -> None:
        from aitrader.trading.events import EventType

        bus.subscribe(EventType.MODEL_PREDICTION, self.on_prediction)
        bus.subscribe(EventType.OUTCOME, self.on_outcome)
        bus.subscribe(EventType.ORDER, self.on_order)

    def on_prediction(self, e: Any) -> None:
        if e.model_id in self.models and e.source == "model":
            feats = None if e.features is None else [float(v) for v in e.features]
            self.pending[(e.symbol, e.model_id, e.bar_index)] = {
                "symbol": e.symbol, "ts": e.ts, "bar_index": int(e.bar_index), "model_id": e.model_id,
                "digest": e.digest, "prediction": float(e.prediction), "confidence": float(e.confidence),
                "snapshot": feats, "executed": False}

    def on_outcome(self, e: Any) -> None:
        rec = self.pending.pop((e.symbol, e.model_id, e.bar_index), None)
        if rec is None:
            return
        rec["outcome"], rec["outcome_ts"] = float(e.outcome), e.ts
        self.buffer.append((self.models[e.model_id], rec))
        while len(self.buffer) > self.max_buffer:
            self.buffer.popleft()
            self.dropped += 1
        self._since += 1
        # After a failed send, wait send_interval bars before the next attempt: a dead service costs the
        # run one timeout per interval, not one per bar.
        if (len(self.buffer) >= self.batch_size and not self._failing) or self._since >= self.send_interval:
            self.flush()

    def on_order(self, e: Any) -> None:
        """An order placed at a bar: the predictions of that symbol and bar led to a trade (``executed``)."""
        if e.status != "pending":
            return
        for rec in self.pending.values():
            if rec["symbol"] == e.symbol and rec["ts"] == e.ts:
                rec["executed"] = True

    def flush(self) -> bool:
        """Send what is buffered (one batch per model); False when the service did not take it."""
        self._since = 0
        while self.buffer:
            name = self.buffer[0][0]
            batch = [rec for n, rec in itertools.islice(self.buffer, 0, self.batch_size) if n == name]
            first = batch[0]
            try:
                self.client.call("feedback", timeout_ms=self.timeout_ms, model=name, run=self.run_id,
                                 batch=f"{first['model_id']}:{first['symbol']}:{first['bar_index']}:{len(batch)}",
                                 records=batch)
            except ServiceError:
                self.failures += 1
                self._failing = True
                return False
            sent = {id(rec) for rec in batch}
            self.buffer = deque(item for item in self.buffer if id(item[1]) not in sent)
            self.sent += len(batch)
        self._failing = False
        return True


def resend_feedback(run_dir: str | Path, client: ServiceClient, *, names: dict[str, str] | None = None,
                    batch_size: int = 500, timeout_ms: float = 5000.0) -> dict[str, int]:
    """Send every model prediction with a known outcome of the run at ``run_dir`` (its ledger).

    ``names``: model_id -> served name (default: the ledger's ``meta.models`` names). The server
    stores each (run, model, symbol, bar) once, so this is safe to repeat."""
    from aitrader.monitoring.ledger import read_ledger

    ledger = read_ledger(run_dir)
    names = names or {m["model_id"]: str(m.get("name") or m["model_id"]).partition("@")[0].partition(":")[0]
                      for m in ledger.models}
    p = ledger.predictions
    rows = p[p["outcome"].notna() & (p["source"].fillna("model") == "model") & p["model_id"].isin(list(names))]
    sent = stored = 0
    records = []
    for r in rows.itertuples(index=False):
        r = cast(Any, r)
        f = getattr(r, "features", None)
        records.append((names[r.model_id], {
            "symbol": r.symbol, "ts": str(r.ts), "bar_index": int(r.bar_index), "model_id": r.model_id,
            "digest": r.digest, "prediction": float(r.prediction), "confidence": float(r.confidence),
            "outcome": float(r.outcome), "outcome_ts": str(r.outcome_ts),
            "snapshot": None if f is None or (isinstance(f, float) and math.isnan(f)) else [float(v) for v in f]}))
    for k in range(0, len(records), batch_size):
        chunk = records[k:k + batch_size]
        for name in dict.fromkeys(n for n, _ in chunk):
            recs = [rec for n, rec in chunk if n == name]
            reply = client.call("feedback", timeout_ms=timeout_ms, model=name, run=ledger.run_id,
                                batch=f"resend:{k}", records=recs)
            sent += len(recs)
            stored += int(reply.get("stored", 0))
    return {"sent": sent, "stored": stored}
