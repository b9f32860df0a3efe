"""``aitrader serve`` as a real subprocess on a random 127.0.0.1 port, and paper-trade through it.

Oracles: the in-process run's ledger (the same bars, the same model, no service); the model
loaded in this process for predictions; retrain run in this process on an identical copy of the
registry for a train job's decision; protocol error codes named in docs/serving.md.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from aitrader.serve.client import ServiceClient, ServiceError
from aitrader.trading.ledger import ledger_content
from tests.model_world import deploy_small_model
from tests.serve_world import ServeProcess

CONFIG = """
ml_trading:
  models:
    - {model_id: syn_lgbm, symbol: SYN, min_confidence: 0.6, position_size: 0.02}
  replay: streaming
  errors: {prediction_timeout_ms: 5000, fallback: previous, previous_max_bars: 3}
  service: {timeout_ms: 3000, breaker_failures: 2, breaker_reset_bars: 4, feedback_batch_size: 20}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from aitrader.data.synthetic import generate_bars

    base = tmp_path_factory.mktemp("serve")
    bars = generate_bars(1400, seed=3, signal=0.3)
    registry = deploy_small_model(base, bars)
    data = base / "SYN.csv"
    bars.iloc[900:1150].rename_axis("timestamp").to_csv(data)
    (base / "trading.yaml").write_text(CONFIG)
    return {"base": base, "registry": registry, "bars": bars, "data": data, "config": base / "trading.yaml"}


@pytest.fixture(scope="module")
def server(world: dict[str, Any]) -> Any:
    srv = ServeProcess(["--model", "syn_lgbm", "--registry", str(world["registry"]), "--runs-dir",
                        str(world["base"] / "fb"), "--max-bytes", "65536"], world["base"]).start()
    yield srv
    assert srv.stop() == 0, srv.stderr()  # SIGTERM: a graceful exit


@pytest.fixture
def client(server: ServeProcess) -> Any:
    c = ServiceClient(server.endpoint, timeout_ms=10_000)
    yield c
    c.close()


def paper(world: dict[str, Any], run_id: str, runs: Path, endpoint: str | None = None, **kw: Any) -> dict[str, Any]:
    from aitrader.trading.service import paper_trade

    return paper_trade(config_path=str(world["config"]), data=[f"SYN={world['data']}"], run_id=run_id,
                       registry_root=str(world["registry"]), runs_dir=str(runs), model_endpoint=endpoint, **kw)


def trading_tables(path: Path) -> dict[str, Any]:
    """The ledger without meta.config (which names the endpoint) and meta.route."""
    out = ledger_content(path)
    out["meta"] = [r for r in out["meta"] if r[0] not in ("config", "route")]
    return out


# ---------------------------------------------------------------------------------------- paper-trade
@pytest.fixture(scope="module")
def inproc(world: dict[str, Any]) -> Path:
    """The in-process run's ledger: the oracle of every run through the service."""
    summary = paper(world, "inproc", world["base"] / "runs")
    assert summary["predictions"] > 100 and summary["fills"] > 5
    return world["base"] / "runs" / "inproc" / "ledger.db"


def test_ledger_through_the_service_equals_the_in_process_ledger(world: dict[str, Any], server: ServeProcess,
                                                                 inproc: Path, tmp_path: Path) -> None:
    paper(world, "remote", tmp_path, server.endpoint)
    assert trading_tables(inproc) == trading_tables(tmp_path / "remote" / "ledger.db")
    # and the default in-process replay route (batch features and predictions) agrees as well
    batch = tmp_path / "batch.yaml"
    batch.write_text(CONFIG.replace("replay: streaming", "replay: batch"))
    paper({**world, "config": batch}, "inproc-batch", tmp_path)
    assert trading_tables(tmp_path / "inproc-batch" / "ledger.db") == trading_tables(tmp_path / "remote" / "ledger.db")
    sources = {r[8] for r in ledger_content(tmp_path / "remote" / "ledger.db")["predictions"]}
    assert sources == {"model"}


def test_feedback_reaches_the_store_that_monitor_and_retrain_read(world: dict[str, Any], server: ServeProcess,
                                                                 client: ServiceClient, tmp_path: Path) -> None:
    from aitrader.monitoring.ledger import read_ledger

    config = tmp_path / "endpoint.yaml"  # the service named per model in the config, not --model-endpoint
    config.write_text(CONFIG.replace("position_size: 0.02}", f"position_size: 0.02, endpoint: '{server.endpoint}'}}"))
    summary = paper({**world, "config": config}, "fb-run", tmp_path)
    assert summary["fills"] > 5
    ours = read_ledger(tmp_path / "fb-run")
    mine = ours.predictions[ours.predictions["outcome"].notna()]
    store = read_ledger(world["base"] / "fb" / "serve-syn_lgbm")
    got = store.predictions[store.predictions["outcome"].notna()]
    key = ["bar_index", "prediction", "outcome"]
    theirs = got[got["bar_index"].isin(mine["bar_index"])].sort_values("bar_index")[key].drop_duplicates()
    assert len(theirs) == len(mine)
    np.testing.assert_array_equal(theirs.to_numpy(float), mine.sort_values("bar_index")[key].to_numpy(float))
    # resending the whole run stores nothing twice
    from aitrader.serve.client import resend_feedback

    again = resend_feedback(tmp_path / "fb-run", client)
    assert again == {"sent": len(mine), "stored": 0}
    assert {m["name"] for m in store.models} == {"syn_lgbm"}
    # executed: an order was placed at the prediction's bar (the ledger's orders are the oracle)
    import sqlite3

    conn = sqlite3.connect(world["base"] / "fb" / "serve-syn_lgbm" / "ledger.db")
    raw = [json.loads(r) for (r,) in conn.execute("SELECT record FROM serve_feedback WHERE run = 'fb-run'")]
    conn.close()
    order_ts = {r[1] for r in ledger_content(tmp_path / "fb-run" / "ledger.db")["orders"]}
    assert raw and all(r["executed"] == (r["ts"] in order_ts) for r in raw)
    assert any(r["executed"] for r in raw) and not all(r["executed"] for r in raw)
    # monitor reads the store as a run of the model
    from aitrader.monitoring.check import run_monitor

    checked = run_monitor(run_id="serve-syn_lgbm", runs_dir=world["base"] / "fb", registry_root=world["registry"],
                          state_path="")
    summary = checked.summary
    assert summary["model"]["traded_as"] == "syn_lgbm:v1" and summary["operational"]["errors_total"] == 0
    assert summary["accuracy"]["run"]["n"] == int(store.predictions["outcome"].notna().sum())


# ---------------------------------------------------------------------------------------- operations
def test_rows_and_bars_predict_like_the_model_in_this_process(world: dict[str, Any], client: ServiceClient) -> None:
    from aitrader.registry import Registry

    reg = Registry(world["registry"])
    loaded = reg.load("syn_lgbm@production")
    reg.close()
    from aitrader.features import FeaturePipeline

    pipe = FeaturePipeline.from_contract(loaded.manifest["features"])
    bars = world["bars"].iloc[1000:1200]
    X = pipe.transform(bars).to_numpy()  # the batch evaluator: independent of the server's streaming one
    ok = np.isfinite(X).all(axis=1)
    expected = loaded.runner.predict_batch(X[ok])
    reply, out = client.predict_rows(X[ok], features=list(pipe.names))
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-6)
    assert reply["digest"] == loaded.info.digest and len(reply["signals"]) == ok.sum()
    # bars: the server keeps this stream's state across requests (three windows of the same symbol)
    ts = [int(t) for t in bars.index.as_unit("ns").asi8]
    ohlcv = bars[["open", "high", "low", "close", "volume"]].to_numpy()
    got = []
    for lo, hi in ((0, 120), (120, 121), (121, 200)):
        r, o = client.predict_bars(["SYN"] * (hi - lo), ts[lo:hi], ohlcv[lo:hi], stream="t-bars")
        got.append(o[0, 0])
        assert r["ready"] == [bool(ok[hi - 1])]
    want = loaded.runner.predict_batch(X[[119, 120, 199]])
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_info_and_health_report_models_contracts_counts_and_latency(client: ServiceClient) -> None:
    client.predict_rows(np.zeros((1, 25)) + 0.01)
    info = client.call("info")
    served = info["served"]["syn_lgbm"]
    assert served["features"]["names"][:2] == ["ret_1", "ret_5"] and len(served["digest"]) == 64
    assert info["requests"]["predict"] >= 1 and info["latency_us"]["n"] >= 1 and info["uptime_s"] > 0
    assert client.call("health")["status"] == "serving"


MALFORMED: list[tuple[str, list[bytes], str]] = []


def _h(**kw: Any) -> bytes:
    return msgpack.packb(kw)


def _rows(n: int, k: int = 25, value: float = 0.01) -> bytes:
    return np.full((n, k), value, "<f8").tobytes()


MALFORMED = [
    ("garbage header", [b"\xc1\xff not msgpack"], "bad_header"),
    ("header is a list", [msgpack.packb([1, 2])], "bad_header"),
    ("empty header frame (read as a REQ envelope)", [b""], "bad_frames"),
    ("no version", [_h(id=1, op="info")], "bad_version"),
    ("future version", [_h(v=2, id=1, op="info")], "bad_version"),
    ("unknown op", [_h(v=1, id=1, op="explode")], "unknown_op"),
    ("three frames", [_h(v=1, id=1, op="info"), b"", b""], "bad_frames"),
    ("id is a map", [_h(v=1, id={"a": 1}, op="info")], "bad_id"),
    ("id of 300 characters", [_h(v=1, id="x" * 300, op="info")], "bad_id"),
    ("shape of 5000 numbers", [_h(v=1, id=1, op="predict", shape=list(range(5000))), _rows(1)], "bad_shape"),
    ("predict without body", [_h(v=1, id=1, op="predict", dtype="f8", shape=[1, 25])], "no_body"),
    ("bad dtype", [_h(v=1, id=1, op="predict", dtype="i4", shape=[1, 25]), _rows(1)], "bad_dtype"),
    ("shape not a pair", [_h(v=1, id=1, op="predict", shape="1x25"), _rows(1)], "bad_shape"),
    ("body shorter than shape", [_h(v=1, id=1, op="predict", shape=[2, 25]), _rows(1)], "bad_shape"),
    ("wrong feature count", [_h(v=1, id=1, op="predict", shape=[1, 24]), _rows(1, 24)], "bad_shape"),
    ("NaN row", [_h(v=1, id=1, op="predict", shape=[1, 25]), _rows(1, value=float("nan"))], "nan"),
    ("inf row", [_h(v=1, id=1, op="predict", shape=[1, 25]), _rows(1, value=float("inf"))], "nan"),
    ("unknown model", [_h(v=1, id=1, op="predict", model="nope", shape=[1, 25]), _rows(1)], "no_model"),
    ("wrong spec hash", [_h(v=1, id=1, op="predict", shape=[1, 25], spec_hash="x"), _rows(1)], "feature_contract"),
    ("negative deadline", [_h(v=1, id=1, op="predict", shape=[1, 25], deadline_ms=-1), _rows(1)], "bad_deadline"),
    ("threshold above 1", [_h(v=1, id=1, op="predict", shape=[1, 25], threshold=2), _rows(1)], "bad_threshold"),
    ("oversized", [_h(v=1, id=1, op="predict", shape=[400, 25]), _rows(400)], "too_large"),
    ("bars of 4 columns", [_h(v=1, id=1, op="predict", bars=True, symbols=["A"], ts=[1], shape=[1, 4]),
                           _rows(1, 4, 10.0)], "bad_shape"),
    ("bars without stamps", [_h(v=1, id=1, op="predict", bars=True, symbols=["A"], shape=[1, 5]),
                             _rows(1, 5, 10.0)], "bad_bars"),
    ("bars out of order", [_h(v=1, id=1, op="predict", bars=True, symbols=["A", "A"], ts=[2, 1], shape=[2, 5]),
                           _rows(2, 5, 10.0)], "bad_bars"),
    ("bar with high < low", [_h(v=1, id=1, op="predict", bars=True, symbols=["A"], ts=[1], shape=[1, 5]),
                             np.array([[10.0, 9.0, 11.0, 10.0, 5.0]], "<f8").tobytes()], "bad_bars"),
    ("feedback without records", [_h(v=1, id=1, op="feedback", run="r", records=[])], "bad_feedback"),
    ("feedback record without bar", [_h(v=1, id=1, op="feedback", records=[{"symbol": "A", "ts": "t",
                                                                             "prediction": 0.1}])], "bad_feedback"),
    ("unknown job", [_h(v=1, id=1, op="job", job="nope")], "unknown_job"),
    ("train without data", [_h(v=1, id=1, op="train", name="syn_lgbm")], "bad_train"),
]


def test_every_malformed_request_gets_an_error_reply_and_the_server_keeps_serving(
        server: ServeProcess, client: ServiceClient) -> None:
    assert len(MALFORMED) >= 20
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    try:
        for what, frames, code in MALFORMED:
            sock.send_multipart(frames)
            assert sock.poll(10_000), f"{what}: no reply"
            reply = sock.recv_multipart()
            head = msgpack.unpackb(reply[-1] if reply[0] == b"" else reply[0])
            assert head["ok"] is False and head["code"] == code, (what, head)
            assert head["error"] and len(head["error"]) <= 2010  # a message quoting a huge value is cut
            # the server still answers a good request after each bad one
            assert client.predict_rows(np.full((1, 25), 0.01))[0]["ok"]
        # a plain REQ client works too
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(server.endpoint)
        req.send(msgpack.packb({"v": 1, "id": "req", "op": "health"}))
        assert req.poll(10_000)
        assert msgpack.unpackb(req.recv())["id"] == "req"
        req.close()
    finally:
        sock.close()
        ctx.term()
    assert server.alive()


def new_version(world: dict[str, Any], registry: Path, where: Path, stamp: str) -> Any:
    """Register the module's artifact again with another created_at: a new version (digest) of the same model."""
    from aitrader.registry import Registry

    art = where / f"art-{stamp[:10]}"
    shutil.copytree(world["base"] / "art", art)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["created_at"] = stamp
    (art / "manifest.json").write_text(json.dumps(manifest, indent=2))
    reg = Registry(registry)
    try:
        return reg.register(art, "syn_lgbm")
    finally:
        reg.close()


def deploy(registry: Path, model_id: str) -> None:
    from aitrader.registry import Registry

    reg = Registry(registry)
    reg.deploy(model_id, reason="test")
    reg.close()


def test_reload_after_deploy_swaps_between_requests_and_a_failed_check_keeps_the_model(
        world: dict[str, Any], tmp_path: Path) -> None:
    registry = tmp_path / "models"
    shutil.copytree(world["registry"], registry)
    v2 = new_version(world, registry, tmp_path, "2026-12-01T00:00:00+00:00")
    own = ServeProcess(["--model", "syn_lgbm", "--registry", str(registry), "--runs-dir", str(tmp_path / "fb")],
                       tmp_path).start()
    digests: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        c = ServiceClient(own.endpoint, timeout_ms=30_000)
        try:
            while not stop.is_set() or len(digests) < 5:
                try:
                    digests.append(c.predict_rows(np.full((1, 25), 0.01))[0]["digest"])
                except ServiceError as exc:
                    failures.append(str(exc))
        finally:
            c.close()

    t = threading.Thread(target=hammer)
    t.start()
    ctl = ServiceClient(own.endpoint, timeout_ms=60_000)
    try:
        same = ctl.call("reload")  # nothing deployed yet: nothing swaps
        assert same["results"]["syn_lgbm"]["swapped"] is False
        deploy(registry, v2.model_id)
        done = ctl.call("reload")["results"]["syn_lgbm"]
        assert (done["swapped"], done["model_id"], done["digest"]) == (True, "syn_lgbm:v2", v2.digest)
        assert ctl.call("health")["models"]["syn_lgbm"]["digest"] == v2.digest
        stop.set()
        t.join(60)
        # v3 is deployed, then its model file changes: the reload's hashes check refuses it, v2 keeps serving
        v3 = new_version(world, registry, tmp_path, "2026-12-02T00:00:00+00:00")
        deploy(registry, v3.model_id)
        model_file = v3.path / "model.txt"
        model_file.write_text(model_file.read_text() + "\n")
        with pytest.raises(ServiceError) as err:
            ctl.call("reload")
        assert err.value.code == "reload_refused" and "hashes" in str(err.value)
        assert ctl.predict_rows(np.full((1, 25), 0.01))[0]["digest"] == v2.digest
    finally:
        stop.set()
        t.join(60)
        ctl.close()
        assert own.stop() == 0
    assert not failures
    first_new = digests.index(v2.digest)
    assert set(digests[:first_new]) <= {digests[0]} and set(digests[first_new:]) == {v2.digest}


def test_killed_service_means_fallbacks_and_ml_errors_then_predictions_resume(
        world: dict[str, Any], server: ServeProcess, inproc: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import aitrader.trading.service as service

    own = server  # killed and restarted on its port (the module's later tests use the restarted one)
    real = service.run_session
    kill_at, restart_at = 120, 150  # step numbers of the replay (warm-up bars included)

    def run_session(cfg: Any, specs: Any, steps: Any, *args: Any, **kw: Any) -> Any:
        def interrupted() -> Any:
            for n, step in enumerate(steps):
                if n == kill_at:
                    own.kill()
                elif n == restart_at:
                    own.start()  # the same port
                yield step
        return real(cfg, specs, interrupted(), *args, **kw)

    monkeypatch.setattr(service, "run_session", run_session)
    fast = tmp_path / "fast.yaml"  # a dead service costs each probe its timeout: keep it short here
    fast.write_text(CONFIG.replace("timeout_ms: 3000", "timeout_ms: 300"))
    paper({**world, "config": fast}, "killed", tmp_path, own.endpoint)
    assert own.alive()
    rows = ledger_content(tmp_path / "killed" / "ledger.db")["predictions"]
    events = ledger_content(tmp_path / "killed" / "ledger.db")["events"]
    errors = [e for e in events if e[2] == "ML_ERROR"]  # (id, ts, type, symbol, model_id, reason, payload)
    assert errors and {e[5] for e in errors} <= {"service_unreachable", "service_timeout", "service_circuit_open"}
    assert "service_circuit_open" in {e[5] for e in errors}
    sources = [r[8] for r in rows]
    assert "fallback_previous" in sources
    # after the restart the breaker closed: the last predictions are the model's, equal to in-process ones
    ref = {r[2]: r[6] for r in ledger_content(inproc)["predictions"]}
    last_error = max(e[1] for e in errors)  # ISO stamps of one format sort in time order
    tail = [r for r in rows if r[1] > last_error]
    assert len(tail) > 50 and {r[8] for r in tail} == {"model"}
    assert all(r[6] == ref[r[2]] for r in tail)


def test_train_job_decides_by_retrains_rules(world: dict[str, Any], server: ServeProcess, tmp_path: Path) -> None:
    """Last in the module: the job may move the module registry's production alias."""
    from aitrader.monitoring.retrain import retrain

    registry, oracle_root = world["registry"], tmp_path / "oracle"
    shutil.copytree(registry, oracle_root)
    data = tmp_path / "SYN.parquet"
    world["bars"].rename_axis("timestamp").to_parquet(data)
    config = tmp_path / "train.yaml"  # the champion's small settings, so the challenger trains in seconds
    config.write_text("data: {symbol: SYN}\nmodel: {kind: lightgbm, params: {n_estimators: 20, num_threads: 1}}\n"
                      "split: {n_folds: 2, min_train: 300, holdout: 0.2}\n")
    expected: dict[str, Any] = {}

    def oracle() -> None:  # retrain itself on an identical registry, while the job runs
        expected.update(retrain("syn_lgbm", config=config, data=str(data), promote_if_better=True, metric="ic",
                                min_improvement=0.0, if_alert=False, registry_root=oracle_root,
                                runs_dir=world["base"] / "fb", state_path="", lock_path=tmp_path / "oracle.lock",
                                log_path=tmp_path / "oracle.log"))

    own = server
    c = ServiceClient(own.endpoint, timeout_ms=30_000)
    t = threading.Thread(target=oracle)
    try:
        job = c.call("train", name="syn_lgbm", data=str(data), config=str(config))
        t.start()
        assert job["state"] == "running"
        with pytest.raises(ServiceError) as busy:
            c.call("train", name="syn_lgbm", data=str(data), config=str(config))
        assert busy.value.code == "busy"
        assert own.alive()
        deadline = time.monotonic() + 120
        while (state := c.call("job", job=job["job"]))["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        if t.ident is not None:
            t.join(120)
        c.close()
    assert state["state"] == "finished", state
    assert state["status"] == expected["status"] and state["promoted"] == expected["promoted"]
    assert state["challenger"] == expected["challenger"]["model_id"]
    # retrain scored the challenger on the outcomes clients fed back to the service too
    assert state["feedback"]["outcomes"] == expected["feedback"]["outcomes"] > 0
    # the serving registry holds the decision: production moved exactly when the job says promoted
    from aitrader.registry import Registry

    reg = Registry(registry)
    prod = reg.alias_target("syn_lgbm", "production")
    reg.close()
    assert (prod.model_id == state["challenger"]) is state["promoted"]
