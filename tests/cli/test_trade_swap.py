"""Live model swaps end to end: a real registry, real LightGBM versions, ``paper-trade --follow`` on a growing file.

The oracle for "no position or cash lost" is a run that started on the new version at the swap bar
with the same positions: a copy of the live ledger taken at the swap point (the run idle at its
cursor), edited to name the new version, then resumed. Nothing is killed: the runs stop on SIGINT.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from aitrader.errors import TradingError
from aitrader.trading.ledger import ledger_content

CONFIG = """
ml_trading:
  models:
    - {model_id: syn_lgbm, symbol: SYN, min_confidence: 0.6, position_size: 0.02}
  errors: {prediction_timeout_ms: 5000}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """syn_lgbm v1 (20 trees, deployed) and v2 (40 trees, registered), trained on the same bars."""
    from aitrader.config import TrainConfig
    from aitrader.data.synthetic import generate_bars
    from aitrader.registry import Registry
    from aitrader.training.trainer import train

    base = tmp_path_factory.mktemp("trade_swap")
    bars = generate_bars(1400, seed=3, signal=0.3)
    reg = Registry(base / "models")
    for n, trees in ((1, 20), (2, 40)):
        cfg = TrainConfig.model_validate({
            "data": {"symbol": "SYN"},
            "model": {"kind": "lightgbm", "params": {"n_estimators": trees, "num_threads": 1}},
            "split": {"n_folds": 2, "min_train": 300, "holdout": 0.2},
        })
        train(cfg, bars=bars.iloc[:1000], out_dir=base / f"art{n}")
        reg.register(base / f"art{n}", "syn_lgbm")
    reg.deploy("syn_lgbm:v1", reason="test")
    reg.close()
    data = base / "SYN.csv"
    bars.iloc[900:].rename_axis("timestamp").to_csv(data)
    config = base / "trading.yaml"
    config.write_text(CONFIG)
    return {"registry": base / "models", "data": data, "config": config, "art1": base / "art1"}


def own_registry(world: dict[str, Path], where: Path) -> Path:
    """A copy of the module's registry that this test may deploy into."""
    dest = where / "models"
    shutil.copytree(world["registry"], dest)
    return dest


def cursor(ledger: Path) -> int | None:
    try:  # the writer may be creating the file (WAL) right now
        rows = ledger_content(ledger)["cursors"] if ledger.is_file() else []
    except TradingError:
        rows = []
    return rows[0][1] if rows else None


def wait_cursor(ledger: Path, index: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if cursor(ledger) == index:
            return
        time.sleep(0.05)
    raise AssertionError(f"cursor never reached {index} (now {cursor(ledger)}); exit code {proc.poll()}")


def start(cwd: Path, world: dict[str, Path], registry: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "AITRADER_REGISTRY": str(registry), "PYTHONPATH": str(Path(__file__).parents[2])}
    cmd = [sys.executable, "-m", "aitrader.cli.main", "paper-trade", "--config", str(world["config"]),
           "--follow", "--json", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def append(path: Path, lines: list[str]) -> None:
    with path.open("a") as fh:
        for line in lines:
            fh.write(line)
            fh.flush()
            time.sleep(0.005)


def stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def read(ledger: Path, sql: str) -> list[tuple[Any, ...]]:
    """``sql`` on the ledger with its predictions and equity decoded into one-row-per-item tables."""
    from aitrader.trading.ledger import decoded_copy

    conn = decoded_copy(ledger)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_promotion_reaches_a_follow_run_at_the_next_bar_with_no_position_or_cash_lost(in_tmp: Path, world) -> None:
    from aitrader.registry import Registry

    registry = own_registry(world, in_tmp)
    reg = Registry(registry)
    v1, v2 = reg.resolve("syn_lgbm:v1"), reg.resolve("syn_lgbm:v2")
    live = in_tmp / "live.csv"
    lines = world["data"].read_text().splitlines(keepends=True)
    live.write_text("".join(lines[:101]))
    ledger = in_tmp / "runs" / "live" / "ledger.db"
    proc = start(in_tmp, world, registry, "--data", f"SYN={live}", "--run-id", "live")
    try:
        append(live, lines[101:131])
        wait_cursor(ledger, 129, proc)  # bar 129 committed; the run waits for bar 130
        (in_tmp / "runs" / "ref").mkdir()
        src, dst = sqlite3.connect(ledger), sqlite3.connect(in_tmp / "runs" / "ref" / "ledger.db")
        src.backup(dst)  # the ledger at the swap point
        src.close()
        dst.close()
        reg.deploy("syn_lgbm:v2", reason="promotion during a live run")
        time.sleep(0.2)  # longer than the watcher's stat interval
        append(live, lines[131:161])
        wait_cursor(ledger, 159, proc)
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    assert json.loads(out)["status"] == "stopped"

    swaps = read(ledger, "SELECT ts, model_id, reason, payload FROM events WHERE type = 'MODEL_SWAPPED'")
    assert len(swaps) == 1
    payload = json.loads(swaps[0][3])
    assert payload == {"old_model_id": "syn_lgbm:v1", "old_digest": v1.digest, "new_model_id": "syn_lgbm:v2",
                       "new_digest": v2.digest, "bar_index": 130, "alias": "production"}
    assert swaps[0][0].startswith(lines[131].split(",")[0][:10])  # stamped with bar 130 (line 131 of the file)
    digests = read(ledger, "SELECT bar_index, digest FROM predictions ORDER BY bar_index")
    assert {d for i, d in digests if i < 130} == {v1.digest} and {d for i, d in digests if i >= 130} == {v2.digest}
    assert min(i for i, d in digests if d == v2.digest) == 130  # within one bar, features warm at once
    meta = {k: json.loads(v) for k, v in read(ledger, "SELECT key, value FROM meta")}
    assert [(m["model_id"], m["digest"]) for m in meta["models"]] == [("syn_lgbm:v2", v2.digest)]

    # The oracle: the copy at the swap point, told it runs v2 from bar 130 on, resumed (--pin: no swaps).
    ref = in_tmp / "runs" / "ref" / "ledger.db"
    conn = sqlite3.connect(ref)
    saved = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
    assert saved["models"][0]["model_id"] == "syn_lgbm:v1"
    slots = saved["state"]["slots"]
    old = slots.pop("syn_lgbm:v1@SYN")
    slots["syn_lgbm:v2@SYN"] = {**old, "last_valid": None, "previous_age": 0, "consecutive_errors": 0,
                                "disabled": False}
    saved["models"][0].update(model_id="syn_lgbm:v2", digest=v2.digest, version=2)
    with conn:
        conn.executemany("UPDATE meta SET value = ? WHERE key = ?", [
            (json.dumps(saved["state"], sort_keys=True), "state"), (json.dumps(saved["models"]), "models"),
            (json.dumps("stopped"), "status")])
    conn.close()
    proc = start(in_tmp, world, registry, "--resume", "ref", "--pin")
    try:
        wait_cursor(ref, 159, proc)
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    got, want = ledger_content(ledger), ledger_content(ref)
    assert got["fills"] and any(f[2] >= swaps[0][0] for f in got["fills"])  # v2 traded after the swap
    for table in ("orders", "fills", "positions", "equity", "predictions", "cursors"):
        assert got[table] == want[table], table
    assert [e[1:] for e in got["events"] if e[2] != "MODEL_SWAPPED"] == [e[1:] for e in want["events"]]

    # A resumed run after the swap loads the swapped-in version (and --pin stays off: it keeps watching).
    append(live, lines[161:171])
    proc = start(in_tmp, world, registry, "--resume", "live")
    try:
        wait_cursor(ledger, 169, proc)
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    late = read(ledger, "SELECT DISTINCT digest FROM predictions WHERE bar_index >= 160")
    assert late == [(v2.digest,)]


def test_a_version_that_fails_the_deploy_checks_is_refused_with_an_alert(in_tmp: Path, world) -> None:
    """Tampered after its deploy: the run keeps v1 and records why (in-process, replayed steps, real registry)."""
    from aitrader.config import load_trading_config
    from aitrader.data import load_bars
    from aitrader.registry import Registry
    from aitrader.trading.service import load_models
    from aitrader.trading.session import RunOptions, run_session
    from aitrader.trading.sources import BarSeries, replay_steps
    from aitrader.trading.swap import RegistrySource, SwapSettings

    registry = own_registry(world, in_tmp)
    art3 = in_tmp / "art3"
    shutil.copytree(world["art1"], art3)
    manifest = json.loads((art3 / "manifest.json").read_text())
    manifest["created_at"] = "2026-12-01T00:00:00+00:00"  # same model, another digest
    (art3 / "manifest.json").write_text(json.dumps(manifest))
    reg = Registry(registry)
    v3 = reg.register(art3, "syn_lgbm")
    cfg = load_trading_config(str(world["config"]))
    specs = load_models(cfg, str(registry))
    df = load_bars(world["data"], symbol="SYN")

    def deploying(steps: Any) -> Any:
        for step in steps:
            if step[2][0][1] == 250:
                reg.deploy(v3.model_id, reason="test")
                model = v3.path / "model.txt"
                model.chmod(0o644)
                text = model.read_text()
                model.write_text(text.replace("tree_sizes", "tree_sizeZ", 1))  # one changed byte
            yield step

    run_dir = in_tmp / "runs" / "r"
    opts = RunOptions(commit_every=1, live=True, handle_signals=False,
                      swap=SwapSettings(RegistrySource(registry), stat_every_s=0.0))
    run_session(cfg, specs, deploying(replay_steps([BarSeries.from_frame("SYN", df.iloc[:300])])), run_dir,
                run_id="r", opts=opts)
    ledger = run_dir / "ledger.db"
    alerts = read(ledger, "SELECT model_id, reason, payload FROM events WHERE type = 'ALERT'")
    assert [(m, r) for m, r, _ in alerts] == [("syn_lgbm:v3", "swap_refused")]
    why = json.loads(alerts[0][2])
    assert why["check"] == "hashes" and "model.txt" in why["detail"] and why["running"] == "syn_lgbm:v1"
    assert read(ledger, "SELECT DISTINCT model_id FROM predictions") == [("syn_lgbm:v1",)]
    assert read(ledger, "SELECT count(*) FROM events WHERE type = 'MODEL_SWAPPED'") == [(0,)]


def test_only_an_unpinned_follow_run_watches_the_registry(in_tmp: Path, world, monkeypatch) -> None:
    """--pin and replays (any speed) never swap: the session gets no swap settings."""
    from aitrader.trading import service
    from aitrader.trading.swap import RegistrySource

    seen: list[Any] = []

    def fake_run_session(cfg: Any, specs: Any, steps: Any, run_dir: Any, **kw: Any) -> dict[str, Any]:
        seen.append(kw["opts"].swap)
        return {}

    monkeypatch.setattr(service, "run_session", fake_run_session)
    common = {"config_path": str(world["config"]), "registry_root": str(world["registry"]),
              "data": [f"SYN={world['data']}"]}
    service.paper_trade(**common, follow=True)
    service.paper_trade(**common, follow=True, pin=True)
    service.paper_trade(**common)
    service.paper_trade(**common, speed=1000.0)
    assert isinstance(seen[0].source, RegistrySource) and seen[1:] == [None, None, None]
