"""``aitrader serve``: a ZeroMQ ROUTER that answers prediction requests (protocol: :mod:`.protocol`).

One thread at a time owns the socket and handles one request at a time, so a reload swaps a model
between two requests by replacing one reference, and no request ever sees half of a swap. Model
calls (predict, and the streaming features of a ``bars`` request) run inline on that thread, with a
watchdog: before the call the loop arms the watchdog with the call's deadline (a timestamp under a
lock; no thread hop, no queue), and disarms it after. A call still running at its deadline
(``deadline_ms`` in the request, capped by the server's ``--deadline-ms``) makes the watchdog
thread take the socket over: it replies ``code: deadline``, starts a new watchdog and goes on
serving, while the overrunning call finishes on the old thread, which then drops its result and
ends. Until it has finished the model is busy: a later model call waits for it at most its own
deadline and then gets ``deadline`` too, so every request gets a reply within its deadline whatever
the model does (a Python call cannot be interrupted). Anything a request can get wrong is an error
reply (:class:`.protocol.ProtocolError`); an unexpected exception while handling a request is an
error reply too (``code: internal``), never the end of the server. ``--deadline-ms 0``: no
watchdog, no deadline (a hung model hangs the server).

SIGTERM or SIGINT: the loop stops reading new work, answers every request already received (the
socket is drained without blocking, for at most ``DRAIN_S``), keeps its connections open
``CLOSE_GRACE_S`` after its last reply (a client socket with ZMQ_IMMEDIATE drops what it has not read
yet when the connection closes), closes with a linger for the replies to leave, and the process
exits 0. Train jobs are separate processes and finish on their own.
"""

from __future__ import annotations

import collections
import logging
import math
import signal
import struct
import sys
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aitrader.errors import AitraderError
from aitrader.serve import protocol as P
from aitrader.serve.feedback import FeedbackStore, check_records
from aitrader.serve.jobs import Jobs
from aitrader.serve.models import STREAM_BUFFER, ServedModel, reload

log = logging.getLogger("aitrader.serve")

LATENCY_WINDOW = 10_000
#: One reply row (prediction, confidence): two little-endian float64.
_PAIR = struct.Struct("<2d")
MAX_STATES = 10_000
#: Longest a stopping server keeps answering the requests it had already received.
DRAIN_S = 5.0
#: How long a stopping server keeps its connections open after its last reply, so that the client reads it:
#: a client socket with ZMQ_IMMEDIATE (ours) drops the input it has not read yet when the connection closes.
CLOSE_GRACE_S = 0.5
#: Longest the watchdog sleeps without looking at the armed call (arming a shorter deadline wakes it).
WATCH_TICK_S = 0.05


class _Abandoned(BaseException):
    """Raised on the thread whose model call overran once the call returns: the watchdog answered the
    request and owns the socket now; this thread drops the result and ends (BaseException, so no
    handler's ``except Exception`` turns it into a reply)."""


@dataclass(slots=True)
class _Armed:
    """The model call in progress: what the watchdog needs to answer it at ``deadline``."""

    deadline: float  # time.monotonic()
    limit_ms: float
    envelope: list[bytes]
    rid: Any
    op: str
    t0: float
    model: Any


@dataclass
class ServerOptions:
    bind: str = "tcp://127.0.0.1:5555"
    registry_root: str | Path | None = None
    runs_dir: str | Path = "runs"
    jobs_dir: str | Path = "logs/serve-jobs"
    max_bytes: int = P.MAX_BYTES
    deadline_ms: float = 1000.0
    min_confidence: float = 0.6
    strong_confidence: float = 0.85
    max_states: int = MAX_STATES
    curve: Any = None  # aitrader.serve.security.CurveSetup, required for a non-loopback bind
    linger_ms: int = 1000


@dataclass
class _Stream:
    digest: str
    stream: Any
    last_ts: int | None = None


@dataclass
class Stats:
    started: float = field(default_factory=time.time)
    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    rows: int = 0
    latency_us: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=LATENCY_WINDOW))
    reloads: int = 0

    def percentiles(self) -> dict[str, float | None]:
        if not self.latency_us:
            return {"p50": None, "p90": None, "p99": None, "max": None, "n": 0}
        a = np.fromiter(self.latency_us, dtype=float)
        p50, p90, p99 = np.percentile(a, [50, 90, 99])
        return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(a.max()), "n": int(a.size)}


class Server:
    """See the module docstring. ``run()`` blocks until ``stop()`` (or SIGTERM) and returns 0."""

    def __init__(self, models: list[ServedModel], opts: ServerOptions) -> None:
        if not models:
            raise AitraderError("serve needs at least one --model")
        self.models: dict[str, ServedModel] = {}
        for m in models:
            if m.name in self.models:
                raise AitraderError(f"--model {m.ref}: {m.name} is given twice; serve each registry name once")
            self.models[m.name] = m
        self.opts = opts
        self.stats = Stats()
        self.states: collections.OrderedDict[tuple[bytes, str, str], _Stream] = collections.OrderedDict()
        self.feedback = FeedbackStore(opts.runs_dir)
        self.jobs = Jobs(Path(opts.jobs_dir), opts.registry_root, opts.runs_dir)
        self._stop = threading.Event()
        self._last_reply = -math.inf  # time.monotonic() of the last reply sent (the close waits CLOSE_GRACE_S)
        # The watchdog (see the module docstring): _armed is the model call in progress, _free is clear
        # while an abandoned call still holds the model, _watch_until is when the watchdog next looks.
        self._guard = threading.Lock()
        self._armed: _Armed | None = None
        self._free = threading.Event()
        self._free.set()
        self._wake = threading.Event()
        self._watch_until = 0.0
        self._done = threading.Event()
        self._current: tuple[list[bytes], Any, str, float] = ([], None, "?", 0.0)
        self.takeovers = 0
        self._sock: Any = None
        self.endpoint: str | None = None
        self._handlers: dict[str, Callable[[P.Request, bytes], tuple[dict[str, Any], bytes | None]]] = {
            "predict": self._predict, "info": self._info, "health": self._health, "reload": self._reload,
            "train": self._train, "job": self._job, "feedback": self._feedback,
        }

    # ------------------------------------------------------------------ the loop
    def stop(self) -> None:
        self._stop.set()

    def run(self, *, ready: Callable[[str], None] | None = None, handle_signals: bool = True) -> int:
        import zmq

        ctx = zmq.Context()
        auth = None
        sock = ctx.socket(zmq.ROUTER)
        try:
            sock.setsockopt(zmq.LINGER, self.opts.linger_ms)
            # A hard guard only: a frame over twice the limit drops the connection; anything between the
            # limit and that gets an error reply (see _serve_one).
            sock.setsockopt(zmq.MAXMSGSIZE, 2 * self.opts.max_bytes + (1 << 20))
            if self.opts.curve is not None:
                auth = self.opts.curve.apply(ctx, sock)
            try:
                sock.bind(self.opts.bind)
            except zmq.ZMQError as exc:
                raise AitraderError(f"cannot bind {self.opts.bind}: {exc}; pick a free port or another address") \
                    from exc
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self._sock = sock
            old = self._install_signals() if handle_signals else {}
            try:
                if ready is not None:
                    ready(self.endpoint)
                self._done.clear()
                if self.opts.deadline_ms:
                    self._spawn(self._watch, "aitrader-watchdog")
                # The loop runs on a thread of its own: the thread that runs a model call may be left behind
                # in it (see the module docstring), while this one only waits for the end (and takes signals).
                self._spawn(self._loop, "aitrader-serve", sock)
                while not self._done.wait(0.5):
                    pass
            finally:
                for s, h in old.items():
                    signal.signal(s, h)
        finally:
            self._done.set()  # a watchdog ends with the server
            sock.close()
            if auth is not None:
                auth.stop()
            ctx.term()
            self.feedback.close()
        return 0

    @staticmethod
    def _spawn(target: Callable[..., None], name: str, *args: Any) -> None:
        threading.Thread(target=target, args=args, name=name, daemon=True).start()

    def _loop(self, sock: Any) -> None:
        """Serve until stop(), then answer what was already received; sets _done. Returns early, leaving
        the loop to the watchdog's thread, when a model call on this thread overran its deadline."""
        import zmq

        try:
            try:
                items, poll = [(sock, zmq.POLLIN)], zmq.zmq_poll  # zmq_poll: no Poller object per wait
                while not self._stop.is_set():
                    if poll(items, 100):
                        self._serve_one(sock, zmq.NOBLOCK)
                # Finish what was received before the stop: answer the queued requests (bounded, so a
                # client that keeps sending cannot hold the shutdown open).
                drain_until = time.monotonic() + DRAIN_S
                while time.monotonic() < drain_until and self._serve_one(sock, zmq.NOBLOCK):
                    pass
                wait = self._last_reply + CLOSE_GRACE_S - time.monotonic()
                if wait > 0:
                    time.sleep(wait)  # a reply just sent is read before its connection closes (CLOSE_GRACE_S)
            except _Abandoned:
                self._free.set()  # the overrunning call is over: the model is free for the next one
                return
        except BaseException:
            log.exception("the serve loop failed")
            self._stop.set()
        self.feedback.close()
        self._done.set()

    def _watch(self) -> None:
        """The watchdog thread: sleeps until the armed call's deadline (or WATCH_TICK_S); a call still armed
        at its deadline is answered ``deadline`` from here, and this thread becomes the loop."""
        import zmq

        while not self._done.is_set():
            with self._guard:
                armed, now = self._armed, time.monotonic()
                if armed is not None and now >= armed.deadline:
                    self._armed = None
                    self._free.clear()  # set again by the abandoned thread when its call returns
                else:
                    armed = None
                    until = now + WATCH_TICK_S
                    if self._armed is not None:
                        until = min(until, self._armed.deadline)
                    self._watch_until = until
                    self._wake.clear()
            if armed is None:
                self._wake.wait(max(0.0, until - now))
                continue
            # Take over: the loop thread is stuck in the model call and will not touch the socket again.
            self.takeovers += 1
            log.warning("a model call overran its %g ms deadline; answering it and serving on", armed.limit_ms)
            self._spawn(self._watch, "aitrader-watchdog")
            sock = self._sock
            try:
                header = P.error_reply(armed.rid, "deadline", f"the model call took longer than {armed.limit_ms:g} "
                                       "ms (deadline_ms); the request was abandoned")
                if armed.model is not None:
                    header["model"], header["digest"] = armed.model.model_id, armed.model.digest
                self._send(sock, armed.envelope, armed.rid, header, None, armed.op, armed.t0, zmq.NOBLOCK)
            except BaseException:
                log.exception("the deadline reply failed")
            self._loop(sock)
            return

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def _on(signum: int, frame: Any) -> None:
            self._stop.set()

        return {s: signal.signal(s, _on) for s in (signal.SIGTERM, signal.SIGINT)}

    def _serve_one(self, sock: Any, flags: int) -> bool:
        """Receive one message (False when none is waiting) and send its reply."""
        import zmq

        try:
            frames = sock.recv_multipart(flags)
        except zmq.Again:
            return False
        t0 = time.perf_counter()
        # ROUTER envelope: [identity, (b"" from a REQ client), header, (body)]
        ident = frames[0]
        cut = 2 if len(frames) > 1 and frames[1] == b"" else 1
        envelope, rest = frames[:cut], frames[cut:]
        rid: Any = None
        op = "?"
        self._current = (envelope, rid, op, t0)
        try:
            size = sum(len(f) for f in rest)
            if size > self.opts.max_bytes:
                raise P.ProtocolError("too_large", f"the request is {size} bytes, over the server's limit of "
                                      f"{self.opts.max_bytes} (--max-bytes); send fewer rows per request")
            req = P.parse_request(rest)
            rid, op = req.id, req.op
            self._current = (envelope, rid, op, t0)
            header, body = self._handlers[op](req, ident)
            header.setdefault("ok", True)
        except P.ProtocolError as exc:
            header, body = P.error_reply(rid if isinstance(rid, int | str) else None, exc.code, str(exc)), None
        except AitraderError as exc:
            header, body = P.error_reply(rid, "error", str(exc)), None
        except Exception as exc:  # noqa: BLE001 - the server never dies on a request
            log.exception("request %r (%s) failed", rid, op)
            header, body = P.error_reply(rid, "internal", f"{type(exc).__name__}: {exc}"), None
        if "digest" not in header:
            self._name_model(header, rest)
        self._send(sock, envelope, rid, header, body, op, t0, zmq.NOBLOCK)
        return True

    def _send(self, sock: Any, envelope: list[bytes], rid: Any, header: dict[str, Any], body: bytes | None,
              op: str, t0: float, flags: int) -> None:
        """Stamp, count and send one reply (dropped when the peer is gone or its queue is full)."""
        import zmq

        header["v"], header["id"] = P.VERSION, rid
        t_us = (time.perf_counter() - t0) * 1e6
        header["t_us"] = t_us
        self.stats.requests[op] += 1
        if not header.get("ok"):
            self.stats.errors[str(header.get("code"))] += 1
        elif op == "predict":
            self.stats.latency_us.append(t_us)
        out = [*envelope, P.pack(header)]
        if body is not None:
            out.append(body)
        try:
            sock.send_multipart(out, flags)
            self._last_reply = time.monotonic()
        except zmq.ZMQError as exc:
            log.warning("reply to %r dropped: %s", rid, exc)

    # ------------------------------------------------------------------ helpers
    def _name_model(self, reply: dict[str, Any], frames: list[bytes]) -> None:
        """``model``/``digest`` on a reply that has none (errors, info): the model the request named, or
        the only one served."""
        m = next(iter(self.models.values())) if len(self.models) == 1 else None
        try:  # a small header only: never decode a huge frame twice
            name = P.unpack_header(frames[0]).get("model") if frames and len(frames[0]) <= 65536 else None
        except P.ProtocolError:
            name = None
        if isinstance(name, str):
            m = self.models.get(name.partition("@")[0].partition(":")[0], m)
        if m is not None:
            reply["model"], reply["digest"] = m.model_id, m.digest

    def _model(self, header: dict[str, Any]) -> ServedModel:
        name = header.get("model")
        if name is None:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise P.ProtocolError("no_model", f"this server serves {', '.join(self.models)}; name one in model")
        if not isinstance(name, str):
            raise P.ProtocolError("no_model", f"model must be a string, got {type(name).__name__}")
        m = self.models.get(name.partition("@")[0].partition(":")[0])
        if m is None:
            raise P.ProtocolError("no_model", f"model {name!r} is not served here; served: {', '.join(self.models)}")
        return m

    def _deadline_s(self, header: dict[str, Any]) -> float:
        d = header.get("deadline_ms", self.opts.deadline_ms)
        if isinstance(d, bool) or not isinstance(d, int | float) or not d > 0:
            raise P.ProtocolError("bad_deadline", f"deadline_ms must be a positive number, got {d!r}")
        return min(float(d), self.opts.deadline_ms) / 1000.0 if self.opts.deadline_ms else math.inf

    def _call(self, header: dict[str, Any], m: ServedModel, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` inline, under the watchdog (module docstring); model errors become error replies."""
        try:
            if self.opts.deadline_ms == 0:  # --deadline-ms 0: no watchdog, no deadline
                return fn(*args)
            limit = self._deadline_s(header)
            deadline = time.monotonic() + limit
            if not self._free.is_set() and not self._free.wait(limit):
                raise P.ProtocolError("deadline", f"the model is still busy with an earlier call that overran "
                                      f"its deadline; this call waited {limit * 1000:g} ms (deadline_ms)")
            envelope, rid, op, t0 = self._current
            armed = _Armed(deadline, limit * 1000, envelope, rid, op, t0, m)
            with self._guard:
                self._armed = armed
                wake = deadline < self._watch_until
            if wake:
                self._wake.set()
            try:
                return fn(*args)
            finally:
                with self._guard:
                    lost = self._armed is not armed
                    if not lost:
                        self._armed = None
                if lost:
                    raise _Abandoned
        except P.ProtocolError:
            raise
        except Exception as exc:  # noqa: BLE001 - a model that raises is an error reply, never a crash
            raise P.ProtocolError("model_error", f"the model raised {type(exc).__name__}: {exc}") from exc

    def _answer(self, m: ServedModel, raw: np.ndarray | list[float],
                header: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        threshold, strong = self.opts.min_confidence, self.opts.strong_confidence
        if "threshold" in header or "strong" in header:  # the server's own were checked at start
            threshold, strong = header.get("threshold", threshold), header.get("strong", strong)
            for key, val in (("threshold", threshold), ("strong", strong)):
                if isinstance(val, bool) or not isinstance(val, int | float) or not 0 <= val <= 1:
                    raise P.ProtocolError("bad_threshold", f"{key} must be a number in [0, 1], got {val!r}")
        score = m.confidence.score
        values = raw.tolist() if isinstance(raw, np.ndarray) else raw
        if len(values) == 1:  # one row: no loop, no array (the latency path)
            p = values[0]
            s, c = (math.nan, 0.0) if math.isnan(p) else score(p)
            return {"ok": True, "model": m.model_id, "digest": m.digest,
                    "signals": [P.signal_of(s, c, threshold, strong)], "dtype": "f8", "shape": [1, 2]}, \
                _PAIR.pack(p, c)
        flat: list[float] = []
        signals = []
        for p in values:
            s, c = (math.nan, 0.0) if math.isnan(p) else score(p)
            flat += (p, c)
            signals.append(P.signal_of(s, c, threshold, strong))
        body = array("d", flat)
        if sys.byteorder != "little":  # the wire is little-endian
            body.byteswap()
        return {"ok": True, "model": m.model_id, "digest": m.digest, "signals": signals, "dtype": "f8",
                "shape": [len(signals), 2]}, body.tobytes()

    # ------------------------------------------------------------------ ops
    def _predict(self, req: P.Request, ident: bytes) -> tuple[dict[str, Any], bytes | None]:
        h = req.header
        m = self._model(h)
        if h.get("bars"):
            return self._predict_bars(req, ident, m)
        X = P.decode_rows(h, req.body)
        n = len(m.names)
        if X.shape[1] != n:
            raise P.ProtocolError("bad_shape", f"{m.model_id} takes {n} features per row ({', '.join(m.names[:5])}"
                                  f"{', ...' if n > 5 else ''}), got {X.shape[1]}")
        names = h.get("features")
        if names is not None and (not isinstance(names, list) or not all(isinstance(x, str) for x in names)):
            raise P.ProtocolError("feature_order", "features must be the list of the rows' feature names")
        if names is not None and names != m.names:
            diff = next((i for i, (a, b) in enumerate(zip(names, m.names, strict=False)) if a != b),
                        min(len(names), n))
            raise P.ProtocolError("feature_order", f"the rows' features differ from {m.model_id}'s contract at "
                                  f"position {diff}: sent {list(names)[diff:diff + 1]}, expected "
                                  f"{m.names[diff:diff + 1]}; send the columns in the manifest's order")
        spec_hash = h.get("spec_hash")
        if spec_hash is not None and spec_hash != m.contract().get("spec_hash"):
            raise P.ProtocolError("feature_contract", f"spec_hash {spec_hash!r} is not {m.model_id}'s "
                                  f"{m.contract().get('spec_hash')!r}; the client computes other features")
        if not np.isfinite(X).all():
            bad = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
            raise P.ProtocolError("nan", f"row {bad} has NaN or inf features; send complete rows only (after the "
                                  "features' warm-up)")
        raw = self._call(h, m, _run, m.runner, X)
        self.stats.rows += X.shape[0]
        return self._answer(m, raw, h)

    def _predict_bars(self, req: P.Request, ident: bytes, m: ServedModel) -> tuple[dict[str, Any], bytes | None]:
        h = req.header
        B = P.decode_rows(h, req.body)
        if B.shape[1] != 5:
            raise P.ProtocolError("bad_shape", f"bars are rows of open, high, low, close, volume (5 columns), "
                                  f"got {B.shape[1]}")
        symbols, stamps = h.get("symbols"), h.get("ts")
        if not isinstance(symbols, list) or len(symbols) != B.shape[0] or not all(
                isinstance(s, str) and s for s in symbols):
            raise P.ProtocolError("bad_bars", "bars need symbols: one non-empty string per row")
        if not isinstance(stamps, list) or len(stamps) != B.shape[0] or not all(
                isinstance(t, int) and not isinstance(t, bool) for t in stamps):
            raise P.ProtocolError("bad_bars", "bars need ts: one epoch-nanosecond int per row")
        client = h.get("stream")
        key0 = client.encode() if isinstance(client, str) and client else ident
        order = list(dict.fromkeys(symbols))
        groups = {s: [i for i, x in enumerate(symbols) if x == s] for s in order}
        states = [self._checked_stream((key0, m.name, sym), m, sym, [stamps[i] for i in groups[sym]],
                                       B[groups[sym]]) for sym in order]

        def work() -> tuple[np.ndarray, list[bool]]:
            rows, ready = [], []
            for (_, st), sym in zip(states, order, strict=True):
                row = None
                for i in groups[sym]:
                    row = st.stream.update(stamps[i], *B[i].tolist())
                    st.last_ts = stamps[i]
                rows.append(np.array(row, dtype=float))
                ready.append(bool(np.isfinite(rows[-1]).all()))
            X = np.vstack(rows)
            raw = np.full(len(rows), np.nan)
            if any(ready):
                raw[np.array(ready)] = _run(m.runner, X[np.array(ready)])
            return raw, ready

        raw, ready = self._call(h, m, work)
        for key, st in states:
            self.states[key] = st
            self.states.move_to_end(key)
        while len(self.states) > self.opts.max_states:
            self.states.popitem(last=False)
        self.stats.rows += len(order)
        head, body = self._answer(m, raw, h)
        return {**head, "symbols": order, "ready": ready}, body

    def _checked_stream(self, key: tuple[bytes, str, str], m: ServedModel, sym: str, stamps: list[int],
                        bars: np.ndarray) -> tuple[tuple[bytes, str, str], _Stream]:
        """The stream of ``key`` (new when absent or of another version) after checking every bar against
        it, before any state changes: a refused request leaves the streams as they were."""
        from aitrader.data.validate import validate_bar

        st = self.states.get(key)
        if st is None or st.digest != m.digest:
            st = _Stream(m.digest, m.pipeline.stream(STREAM_BUFFER))
        prev = st.last_ts
        for t, (o, hi, lo, c, v) in zip(stamps, bars.tolist(), strict=True):
            if prev is not None and t <= prev:
                raise P.ProtocolError("bad_bars", f"{sym}: bar ts {t} is not after the previous bar {prev} of "
                                      "this stream; send each symbol's bars once, in time order")
            problem = validate_bar(t, o, hi, lo, c, v)
            if problem is not None:
                raise P.ProtocolError("bad_bars", f"{sym}: {problem.message}")
            prev = t
        return key, st

    def _health(self, req: P.Request, ident: bytes) -> tuple[dict[str, Any], bytes | None]:
        return {"ok": True, "status": "serving", "uptime_s": time.time() - self.stats.started,
                "models": {n: {"model_id": m.model_id, "digest": m.digest} for n, m in self.models.items()},
                "requests": dict(self.stats.requests), "errors": dict(self.stats.errors), "rows": self.stats.rows,
                "latency_us": self.stats.percentiles(), "reloads": self.stats.reloads}, None

    def _info(self, req: P.Request, ident: bytes) -> tuple[dict[str, Any], bytes | None]:
        head, _ = self._health(req, ident)
        return {**head, "protocol": P.VERSION, "ops": list(P.OPS), "bind": self.endpoint,
                "max_bytes": self.opts.max_bytes, "deadline_ms": self.opts.deadline_ms,
                "thresholds": {"min_confidence": self.opts.min_confidence,
                               "strong_confidence": self.opts.strong_confidence},
                "served": {n: m.describe() for n, m in self.models.items()}, "streams": len(self.states),
                "jobs": self.jobs.counts()}, None

    def _reload(self, req: P.Request, ident: bytes) -> tuple[dict[str, Any], bytes | None]:
        names = [self._model(req.header).name] if req.header.get("model") is not None else list(self.models)
        results, refused = {}, []
        for name in names:
            old = self.models[name]
            r = reload(self.opts.registry_root, old)
            if r.swapped:
                self.models[name] = r.model  # between two requests: the loop is single-threaded
                self.stats.reloads += 1
                log.info("reloaded %s: %s -> %s", name, old.model_id, r.model.model_id)
            elif r.check is not None:
                refused.append(r.reason)
            results[name] = {"swapped": r.swapped, "model_id": r.model.model_id, "digest": r.model.digest,
                             "previous": old.model_id, "reason": r.reason, "check": r.check}
        if refused:
            return P.error_reply(None, "reload_refused", "; ".join(refused), results=results), None
        return {"ok": True, "results": results}, None

    def _train(self, req: P.Request, ident: bytes) -> tuple[dict[str, Any], bytes | None]:
        return {"ok": True, **self.jobs.start(req.header).to_dict()}, None

    def _job(self, req: P.Request, ident: bytes) -> tuple[dict[str, Any], bytes | None]:
        return {"ok": True, **self.jobs.get(req.header.get("job")).to_dict()}, None

    def _feedback(self, req: P.Request, ident: bytes) -> tuple[dict[str, Any], bytes | None]:
        h = req.header
        m = self._model(h)
        run, batch = h.get("run", ""), h.get("batch", "")
        for key, val in (("run", run), ("batch", batch)):
            if not isinstance(val, str) or len(val) > 200:
                raise P.ProtocolError("bad_feedback", f"{key} must be a string of at most 200 chars (the client's "
                                      f"run id and batch id), got {val!r}")
        records = check_records(h.get("records"))
        out = self.feedback.store(m.name, run, batch, records, m.model_id, m.digest)
        return {"ok": True, "model": m.model_id, "digest": m.digest, **out}, None


def _run(runner: Any, X: np.ndarray) -> np.ndarray | list[float]:
    """The model on ``X``: ``predict_one`` for one row (what the in-process loop calls), else a batch."""
    if X.shape[0] == 1:
        return [float(runner.predict_one(X[0]))]
    return np.asarray(runner.predict_batch(X), dtype=np.float64).reshape(-1)
