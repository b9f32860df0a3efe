"""The service's parts: protocol, circuit breaker, remote predictor, feedback store, deadlines, bind rules, CURVE.

Servers here are real ``Server`` loops on 127.0.0.1 random ports (in a thread where a fake model
is needed, else ``aitrader serve`` subprocesses); expected values are hand-computed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from aitrader.errors import ConfigError
from aitrader.serve import protocol as P
from aitrader.serve.client import CircuitBreaker, RemotePredictor, ServiceClient, ServiceError
from aitrader.serve.feedback import FeedbackStore, check_records
from aitrader.serve.security import check_bind, is_loopback


# ---------------------------------------------------------------------------------------- protocol
def test_rows_round_trip_as_little_endian_floats() -> None:
    X = np.array([[1.5, -2.0, 3.25], [0.0, 1e-300, 7.0]])
    fields, body = P.encode_rows(X)
    assert fields == {"dtype": "f8", "shape": [2, 3]} and len(body) == 48
    assert body[:8] == bytes.fromhex("000000000000f83f")  # 1.5, little-endian IEEE 754
    np.testing.assert_array_equal(P.decode_rows(fields, body), X)
    f4, b4 = P.encode_rows(X[:1], "f4")
    assert P.decode_rows(f4, b4).tolist() == [[1.5, -2.0, 3.25]]


@pytest.mark.parametrize(("score", "conf", "expected"), [
    (0.01, 0.7, "BUY"), (-0.01, 0.7, "SELL"), (0.01, 0.9, "STRONG_BUY"), (-0.01, 0.85, "STRONG_SELL"),
    (0.01, 0.5, "NEUTRAL"), (0.0, 0.99, "NEUTRAL"), (float("nan"), 0.9, "NEUTRAL"),
])
def test_signal_thresholds(score: float, conf: float, expected: str) -> None:
    assert P.signal_of(score, conf, 0.6, 0.85) == expected


# ---------------------------------------------------------------------------------------- breaker
def test_breaker_opens_after_n_failures_and_probes_after_the_reset_bars() -> None:
    b = CircuitBreaker(failures=2, reset_bars=3)
    assert b.allow()
    b.failure()
    assert b.state == "closed" and b.allow()
    b.failure()
    assert b.state == "open" and b.opened == 1
    assert [b.allow() for _ in range(3)] == [False, False, False]
    assert b.allow() and b.state == "half_open"  # the 4th bar is the probe
    b.failure()  # a failed probe opens it again at once
    assert b.state == "open" and b.opened == 2
    assert [b.allow() for _ in range(4)] == [False, False, False, True]
    b.success()
    assert b.state == "closed" and b.consecutive == 0


class _Client:
    """A stand-in ServiceClient: replies from a list (a reply or an exception per call)."""

    endpoint = "tcp://127.0.0.1:1"

    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies
        self.sent = 0

    def predict_rows(self, X: np.ndarray, **kw: Any) -> tuple[dict[str, Any], np.ndarray]:
        self.sent += 1
        r = self.replies.pop(0)
        if isinstance(r, Exception):
            raise r
        return {"digest": r[2], "model": "m:v1"}, np.array([[r[0], r[1]]])


def test_remote_predictor_counts_failures_cools_down_and_refuses_other_versions() -> None:
    down = ServiceError("timeout", "no reply")
    c = _Client([down, down, (0.5, 0.9, "d1"), (0.25, 0.9, "other"), (0.1, 0.2, "d1")])
    p = RemotePredictor(c, "m", "d1", 3, breaker=CircuitBreaker(failures=2, reset_bars=1))  # type: ignore[arg-type]
    x = np.zeros(3)
    for _ in range(2):
        with pytest.raises(ServiceError, match="timeout"):
            p.predict_one(x)
    with pytest.raises(ServiceError, match="circuit_open"):
        p.predict_one(x)  # open: no request sent
    assert c.sent == 2
    assert p.predict_one(x) == 0.5  # the probe succeeds: closed
    with pytest.raises(ServiceError, match="digest"):
        p.predict_one(x)
    p.confidence_threshold = 0.5
    with pytest.raises(ServiceError, match="low_confidence"):
        p.predict_one(x)
    assert p.breaker.state == "closed"  # unsure is not a failure

    c2 = _Client([(1.0, 0.9, "d1"), (2.0, 0.9, "d1")])
    cool = RemotePredictor(c2, "m", "d1", 3, cooldown=2)  # type: ignore[arg-type]
    assert [cool.predict_one(x) for _ in range(4)] == [1.0, 1.0, 1.0, 2.0]
    assert c2.sent == 2


# ---------------------------------------------------------------------------------------- feedback
def test_feedback_records_are_checked() -> None:
    ok = check_records([{"symbol": "A", "ts": "2024-01-01", "bar_index": 3, "prediction": 0.1, "outcome": None}])
    assert ok[0]["executed"] is False and ok[0]["confidence"] == 0.0
    for bad, what in ([{"symbol": "A", "ts": "t", "bar_index": -1, "prediction": 0.1}], "bar_index"),\
                     ([{"symbol": "A", "ts": "t", "bar_index": 1, "prediction": float("nan")}], "finite"),\
                     ([{"symbol": "", "ts": "t", "bar_index": 1, "prediction": 0.1}], "symbol"),\
                     ([{"symbol": "A", "ts": "t", "bar_index": 1, "prediction": 0.1, "snapshot": "x"}], "snapshot"):
        with pytest.raises(P.ProtocolError, match=what):
            check_records(bad)


def test_feedback_is_a_run_ledger_that_monitoring_reads_and_stores_each_record_once(tmp_path: Path) -> None:
    from aitrader.monitoring.ledger import read_ledger

    store = FeedbackStore(tmp_path)
    recs = check_records([
        {"symbol": "A", "ts": "2024-01-02", "bar_index": 1, "prediction": 0.02, "confidence": 0.7, "outcome": 0.01,
         "snapshot": [1.0, 2.0], "executed": True},
        {"symbol": "A", "ts": "2024-01-03", "bar_index": 2, "prediction": -0.01, "outcome": None},
    ])
    first = store.store("m", "run1", "b1", recs, "m:v1", "d" * 64)
    again = store.store("m", "run1", "b1-resent", recs, "m:v1", "d" * 64)
    other_run = store.store("m", "run2", "b1", recs[:1], "m:v1", "d" * 64)
    store.close()
    assert (first["stored"], first["outcomes"], again["stored"], again["duplicates"]) == (2, 1, 0, 2)
    assert other_run["stored"] == 1
    ledger = read_ledger(tmp_path / "serve-m")
    p = ledger.predictions.sort_values(["id"])
    assert p["prediction"].tolist() == [0.02, -0.01, 0.02]
    assert p["outcome"].tolist()[0] == 0.01 and p["features"].tolist()[0] == [1.0, 2.0]
    assert [(m["model_id"], m["name"], m["symbol"]) for m in ledger.models] == [("m:v1", "m", "A")]


# ---------------------------------------------------------------------------------------- a server in a thread
class _SlowRunner:
    backend = "fake"

    def __init__(self) -> None:
        self.delay = 0.0

    def predict_one(self, x: np.ndarray) -> float:
        time.sleep(self.delay)
        return float(x.sum())

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X).sum(axis=1)


def _served(runner: Any) -> Any:
    from aitrader.features import FeaturePipeline
    from aitrader.serve.models import ServedModel
    from aitrader.trading.strategy import ConfidenceModel

    pipe = FeaturePipeline(["ret_1", "ret_5"])
    manifest = {"features": pipe.contract(), "target": {"task": "regression", "horizon": 1}}
    return ServedModel(ref="fake", name="fake", alias="production", model_id="fake:v1", digest="f" * 64,
                       runner=runner, manifest=manifest, pipeline=pipe,
                       confidence=ConfidenceModel(residual_std=1.0), names=list(pipe.names))


@pytest.fixture
def threaded(tmp_path: Path) -> Any:
    from aitrader.serve.server import Server, ServerOptions

    runner = _SlowRunner()
    server = Server([_served(runner)], ServerOptions(bind="tcp://127.0.0.1:*", runs_dir=tmp_path / "runs",
                                                     jobs_dir=tmp_path / "jobs", deadline_ms=10_000))
    ready = threading.Event()
    t = threading.Thread(target=server.run, kwargs={"ready": lambda _: ready.set(), "handle_signals": False})
    t.start()
    assert ready.wait(30)
    client = ServiceClient(str(server.endpoint), timeout_ms=20_000)
    yield server, runner, client
    client.close()
    server.stop()
    t.join(30)
    assert not t.is_alive()


def test_a_slow_model_call_gets_a_deadline_reply_and_the_server_goes_on(threaded: Any) -> None:
    _, runner, client = threaded
    runner.delay = 1.0
    with pytest.raises(ServiceError) as err:
        client.predict_rows(np.array([[0.25, 0.5]]), deadline_ms=50)  # 20x shorter than the call
    assert err.value.code == "deadline"
    runner.delay = 0.0
    reply, out = client.predict_rows(np.array([[0.25, 0.5]]))  # waits for the abandoned call, then answers
    assert out[0, 0] == 0.75 and reply["ok"]
    assert client.call("health")["errors"] == {"deadline": 1}


def test_a_hung_model_call_is_answered_by_the_watchdog_which_serves_on(threaded: Any) -> None:
    """The call runs inline on the loop thread; when it overruns, the watchdog thread answers it and takes the
    loop over. The model is gated by an Event the test holds, so what happens while it hangs is certain."""
    server, runner, client = threaded
    gate, entered = threading.Event(), threading.Event()

    def hung(x: np.ndarray) -> float:
        entered.set()
        gate.wait(60)
        return float(x.sum())

    runner.predict_one = hung  # type: ignore[method-assign]
    rec = {"symbol": "A", "ts": "2024-01-02", "bar_index": 1, "prediction": 0.02, "outcome": 0.01}
    first = client.call("feedback", model="fake", run="r1", batch="b1", records=[rec])
    with pytest.raises(ServiceError) as err:
        client.predict_rows(np.array([[0.25, 0.5]]), deadline_ms=50)
    assert err.value.code == "deadline" and entered.is_set()
    # the hung call still holds the model: the server answers other ops, and a model call gets deadline
    assert client.call("health")["errors"] == {"deadline": 1}
    # the loop runs on another thread now: the feedback ledger opened by the first one is still the same file
    again = client.call("feedback", model="fake", run="r1", batch="b2", records=[rec])
    assert (first["stored"], again["stored"], again["duplicates"]) == (1, 0, 1)
    with pytest.raises(ServiceError) as busy:
        client.predict_rows(np.array([[1.0, 2.0]]), deadline_ms=50)
    assert busy.value.code == "deadline" and "busy" in str(busy.value)
    runner.predict_one = lambda x: float(x.sum()) * 10  # type: ignore[method-assign]
    gate.set()  # the hung call returns on its abandoned thread; its result (0.75) is dropped
    reply, out = client.predict_rows(np.array([[0.25, 0.5]]))
    assert out[0, 0] == 7.5 and reply["ok"]
    assert server.takeovers == 1
    assert client.call("health")["errors"] == {"deadline": 2}


def test_sigterm_answers_the_call_in_flight_and_the_requests_already_received(threaded: Any) -> None:
    """SIGTERM while a model call runs and another request waits in the socket: both get their answer,
    then the server ends by itself. The call is gated by the test, and (running on the loop thread, which
    owns the socket) it holds until the second request is in the socket, so the order is certain."""
    import os
    import signal

    import zmq

    server, runner, client = threaded
    entered, gate = threading.Event(), threading.Event()
    calls: list[float] = []

    def gated(x: np.ndarray) -> float:
        if not calls:  # the first call: hold it until the second request waits behind it
            entered.set()
            while not server._sock.poll(20, zmq.POLLIN):
                pass
            gate.wait(60)
        calls.append(float(x.sum()))
        return calls[-1]

    runner.predict_one = gated  # type: ignore[method-assign]
    other = ServiceClient(str(server.endpoint), timeout_ms=20_000)
    replies: dict[str, Any] = {}

    def ask(name: str, c: ServiceClient, row: list[float]) -> None:
        replies[name] = c.predict_rows(np.array([row]))

    first = threading.Thread(target=ask, args=("first", client, [0.25, 0.5]))
    first.start()
    assert entered.wait(30)
    second = threading.Thread(target=ask, args=("second", other, [1.0, 2.0]))
    second.start()
    old = server._install_signals()  # the server's own handlers, on this (main) thread
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert server._stop.wait(10)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    gate.set()
    first.join(30)
    second.join(30)
    other.close()
    assert replies["first"][1][0, 0] == 0.75 and replies["first"][0]["ok"]
    assert replies["second"][1][0, 0] == 3.0 and replies["second"][0]["ok"]
    assert calls == [0.75, 3.0]
    assert server._done.wait(30)  # the loop ended after the drain, without server.stop()


def test_a_model_that_raises_gets_an_error_reply(threaded: Any) -> None:
    _, runner, client = threaded
    runner.predict_one = lambda x: 1 / 0  # type: ignore[method-assign]
    with pytest.raises(ServiceError) as err:
        client.predict_rows(np.array([[0.25, 0.5]]))
    assert err.value.code == "model_error" and "ZeroDivisionError" in str(err.value)
    assert client.predict_rows(np.array([[1.0, 2.0], [3.0, 4.0]]))[1][:, 0].tolist() == [3.0, 7.0]


def test_a_second_train_for_the_same_name_is_refused_while_one_runs(threaded: Any, tmp_path: Path) -> None:
    server, _, client = threaded
    data = tmp_path / "bars.csv"
    data.write_text("timestamp,open,high,low,close,volume\n")
    first = client.call("train", name="fake", data=str(data))
    with pytest.raises(ServiceError) as busy:
        client.call("train", name="fake", data=str(data))
    assert busy.value.code == "busy" and first["job"] in str(busy.value)
    server.jobs.get(first["job"]).proc.wait(60)  # retrain on an empty file fails: a failed job, not a crash
    state = client.call("job", job=first["job"])
    assert state["state"] == "failed" and state["error"].startswith("error:")


# ---------------------------------------------------------------------------------------- bind rules and CURVE
@pytest.mark.parametrize(("endpoint", "loopback"), [
    ("tcp://127.0.0.1:5555", True), ("tcp://localhost:1", True), ("tcp://[::1]:5", True), ("tcp://127.8.0.1:5", True),
    ("ipc:///tmp/x", True), ("tcp://0.0.0.0:5555", False), ("tcp://*:5555", False), ("tcp://10.0.0.2:1", False),
    ("tcp://eth0:5555", False),
])
def test_loopback_addresses(endpoint: str, loopback: bool) -> None:
    assert is_loopback(endpoint) is loopback


def test_non_loopback_bind_needs_allow_remote_and_curve(in_tmp: Path) -> None:
    from aitrader.cli.main import app

    with pytest.raises(ConfigError, match="--allow-remote"):
        check_bind("tcp://0.0.0.0:5555", allow_remote=False, curve=None)
    run = CliRunner().invoke(app, ["serve", "--model", "m", "--bind", "tcp://0.0.0.0:5555"])
    assert run.exit_code == 1 and "error: --bind tcp://0.0.0.0:5555 is not a loopback address" in run.output
    run = CliRunner().invoke(app, ["serve", "--model", "m", "--bind", "tcp://0.0.0.0:5555", "--allow-remote"])
    assert run.exit_code == 1 and "needs CURVE authentication" in run.output


def test_serve_call_names_the_closest_op_and_a_bad_endpoint_is_one_error_line(in_tmp: Path) -> None:
    from aitrader.cli.main import app

    run = CliRunner().invoke(app, ["serve", "call", "helth"])
    assert run.exit_code == 1 and "op 'helth' is not supported; did you mean 'health'?" in run.output
    run = CliRunner().invoke(app, ["serve", "call", "health", "--endpoint", "localhost:5555"])
    assert run.exit_code == 1 and "error: 'localhost:5555' is not a ZeroMQ endpoint" in run.output


def test_curve_server_accepts_only_allowed_client_keys(tmp_path: Path) -> None:
    from aitrader.cli.main import app
    from aitrader.serve.security import CurveClient, CurveSetup
    from aitrader.serve.server import Server, ServerOptions

    keys = tmp_path / "keys"
    for name in ("server", "good", "bad"):
        assert CliRunner().invoke(app, ["serve", "keygen", "--out", str(keys), "--name", name]).exit_code == 0
    again = CliRunner().invoke(app, ["serve", "keygen", "--out", str(keys), "--name", "good"])
    assert again.exit_code == 1 and "exists already" in again.output
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "good.key").write_bytes((keys / "good.key").read_bytes())
    curve = CurveSetup(keys / "server.key_secret", allowed)
    server = Server([_served(_SlowRunner())], ServerOptions(bind="tcp://127.0.0.1:*", runs_dir=tmp_path / "r",
                                                            jobs_dir=tmp_path / "j", curve=curve))
    ready = threading.Event()
    t = threading.Thread(target=server.run, kwargs={"ready": lambda _: ready.set(), "handle_signals": False})
    t.start()
    assert ready.wait(30)
    try:
        good = ServiceClient(str(server.endpoint), timeout_ms=20_000,
                             curve=CurveClient(keys / "server.key", keys / "good.key_secret"))
        assert good.call("health")["ok"]
        good.close()
        for curve_client in (CurveClient(keys / "server.key", keys / "bad.key_secret"), None):
            c = ServiceClient(str(server.endpoint), timeout_ms=500, curve=curve_client)
            with pytest.raises(ServiceError) as err:
                c.call("health")
            assert err.value.code in ("timeout", "unreachable")
            c.close()
        assert server.stats.requests["health"] == 1  # the refused clients never reached the loop
    finally:
        server.stop()
        t.join(30)


class _FeedbackClient:
    """Takes feedback calls; fails while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self.records: list[dict[str, Any]] = []

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        self.calls += 1
        if self.down:
            raise ServiceError("unreachable", "down")
        self.records += fields["records"]
        return {"ok": True}


def test_feedback_sender_batches_backs_off_while_down_and_loses_nothing() -> None:
    from aitrader.serve.client import FeedbackSender
    from aitrader.trading.events import ModelPrediction, Order, Outcome

    c = _FeedbackClient()
    s = FeedbackSender(c, "run", {"m:v1": "m"}, batch_size=4, send_interval=10, max_buffer=100)  # type: ignore[arg-type]

    def bar(i: int) -> None:
        s.on_prediction(ModelPrediction(f"t{i}", i, "A", "m:v1", "d", 0.1 * i, 0.7, "model", 5.0, np.array([1.0]), 0))
        if i % 3 == 0:
            s.on_order(Order(i, f"t{i}", "A", "buy", 1.0, "pending", "signal"))
        if i >= 2:  # horizon 2: the outcome of bar i - 2
            s.on_outcome(Outcome(f"t{i}", "A", "m:v1", i - 2, 0.01))

    for i in range(10):
        bar(i)
    assert c.calls == 2 and len(c.records) == 8  # two batches of 4
    c.down = True
    for i in range(10, 30):
        bar(i)
    assert c.calls == 2 + 2  # a failed send, then one retry 10 bars later (not one per bar)
    c.down = False
    for i in range(30, 42):
        bar(i)
    s.flush()
    assert [r["bar_index"] for r in c.records] == list(range(40))  # every outcome once, in order
    assert [r["executed"] for r in c.records[:7]] == [True, False, False, True, False, False, True]
    assert c.records[5]["outcome"] == 0.01 and c.records[5]["snapshot"] == [1.0]


def test_a_live_swap_of_a_remote_model_predicts_through_the_service() -> None:
    from aitrader.config import ServiceClientSection
    from aitrader.serve.hook import RemoteSwapSource
    from aitrader.trading.swap import Offer, Prepared

    local = object()

    class Inner:
        def changed(self) -> bool:
            return True

        def target(self, name: str, alias: str) -> Offer:
            return Offer(f"{name}:v2", "d2")

        def prepare(self, offer: Offer, buffer_size: int) -> Prepared:
            return Prepared(offer.model_id, offer.digest, local, None, {"features": {"names": ["a", "b"]}})  # type: ignore[arg-type]

    client = _Client([(0.5, 0.9, "d2")])
    src = RemoteSwapSource(Inner(), {"tcp://x": client}, {"tcp://x": {"m:v1": "m"}}, ServiceClientSection())
    assert src.changed() and src.target("m", "production").model_id == "m:v2"
    p = src.prepare(Offer("m:v2", "d2"), 500)
    assert isinstance(p.predictor, RemotePredictor) and p.predictor.digest == "d2" and p.predictor.client is client
    assert p.predictor.predict_one(np.zeros(2)) == 0.5
    assert src.prepare(Offer("other:v1", "dz"), 500).predictor is local  # an in-process model of the run
