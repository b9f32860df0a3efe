"""The ledger writer thread (issue 11, the second core): a replay's checkpoints committed off the loop's
thread give the ledger of the synchronous writes, keep the kill/resume contract while checkpoints wait
in its queue, and turn a failed write into one clean error that leaves a resumable ledger."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_trading_workers import BatchSized  # noqa: E402
from trading_helpers import MANIFEST, bars, config, series, spec  # noqa: E402

from aitrader.errors import TradingError  # noqa: E402
from aitrader.features import FeaturePipeline  # noqa: E402
from aitrader.trading import ledger_writer  # noqa: E402
from aitrader.trading.ledger import ledger_content, write_checkpoint  # noqa: E402
from aitrader.trading.session import ModelSpec, RunOptions, run_session  # noqa: E402
from aitrader.trading.sources import replay_steps  # noqa: E402

HERE = Path(__file__).parent
NAMES = ["ret_1", "ret_5", "rsi_14", "vol_20"]


def _content(run_dir: Path) -> dict[str, Any]:
    content = ledger_content(run_dir / "ledger.db")
    content["meta"] = [r for r in content["meta"] if r[0] != "run_id"]
    return content


def _blocks(run_dir: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The stored blocks byte for byte (the predictions' wall-clock latency column aside)."""
    with closing(sqlite3.connect(run_dir / "ledger.db")) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(prediction_blocks)") if r[1] != "latency_us"]
        return {
            "prediction_blocks": conn.execute(f"SELECT {', '.join(cols)} FROM prediction_blocks ORDER BY 1").fetchall(),
            "equity_blocks": conn.execute("SELECT * FROM equity_blocks ORDER BY 1").fetchall(),
            "outcome_blocks": conn.execute("SELECT * FROM outcome_blocks ORDER BY 1").fetchall(),
        }


def _batch_specs(frames: dict[str, pd.DataFrame]) -> list[ModelSpec]:
    pipeline = FeaturePipeline(NAMES)
    return [ModelSpec(model_id=f"m{k}:v1", symbol=sym, digest="d" * 8,
                      predictor=BatchSized(raise_above=0.035, nan_below=-0.03), stream=pipeline.stream(500),
                      manifest={**MANIFEST, "features": pipeline.contract()}, min_confidence=0.6, position_size=0.05)
            for k, sym in enumerate(frames)]


def _run(tmp: Path, name: str, frames: dict[str, pd.DataFrame], thread: bool, *, batch: bool = True,
         max_bars: int | None = None, resume: bool = False, commit_every: int = 40) -> Path:
    specs = _batch_specs(frames) if batch else [spec(sym, model_id=f"m{k}:v1") for k, sym in enumerate(frames)]
    cfg = config(models=[{"model_id": f"m{k}", "symbol": sym, "min_confidence": 0.6, "position_size": 0.05}
                         for k, sym in enumerate(frames)])
    opts = RunOptions(commit_every=commit_every, handle_signals=False, max_bars=max_bars, ledger_thread=thread)
    run_session(cfg, specs, replay_steps(series(frames)), tmp / name, run_id=name, opts=opts, resume=resume)
    return tmp / name


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread that committed each checkpoint."""
    import aitrader.trading.ledger as ledger_mod

    names: list[str] = []

    def recorded(conn: sqlite3.Connection, cp: Any) -> None:
        names.append(threading.current_thread().name)
        write_checkpoint(conn, cp)

    monkeypatch.setattr(ledger_mod, "write_checkpoint", recorded)
    monkeypatch.setattr(ledger_writer, "write_checkpoint", recorded)
    return names


def _frames(n: int) -> dict[str, pd.DataFrame]:
    # Different lengths and start times: the symbols' bars interleave unevenly.
    return {sym: bars(400 + 50 * k, seed=30 + k, start=f"2021-01-0{4 + k}", freq="1h")
            for k, sym in enumerate(("AAA", "BBB", "CCC")[:n])}


@pytest.mark.parametrize(("n_symbols", "batch"), [(1, True), (3, True), (1, False), (3, False)])
def test_the_writer_thread_gives_the_synchronous_ledger(tmp_path: Path, writes: list[str], n_symbols: int,
                                                        batch: bool) -> None:
    frames = _frames(n_symbols)
    sync = _run(tmp_path, "sync", frames, False, batch=batch)
    assert writes and set(writes) == {threading.current_thread().name}
    writes.clear()
    threaded = _run(tmp_path, "thread", frames, True, batch=batch)
    assert len(writes) > 5 and set(writes) == {"aitrader-ledger"}  # every checkpoint went through the thread
    one = _content(sync)
    assert len(one["fills"]) > 3 and len(one["predictions"]) > 300
    assert _content(threaded) == one
    assert _blocks(threaded) == _blocks(sync)  # the same blocks, cut at the same checkpoints


def test_a_stopped_and_resumed_run_with_the_writer_equals_the_uninterrupted_one(tmp_path: Path) -> None:
    frames = _frames(3)
    whole = _content(_run(tmp_path, "whole", frames, False))
    _run(tmp_path, "cut", frames, True, max_bars=555)
    assert _content(_run(tmp_path, "cut", frames, True, resume=True)) == whole


DRIVER = """
import json, sys, threading, time
sys.path.insert(0, {here!r})
from pathlib import Path
from trading_helpers import bars, config, series, spec
from aitrader.trading import ledger_writer
from aitrader.trading.session import RunOptions, run_session
from aitrader.trading.sources import replay_steps

run_dir, hold_after = Path(sys.argv[1]), int(sys.argv[2])
frames = {{"AAA": bars(900, seed=11), "BBB": bars(900, seed=12)}}
specs = [spec("AAA"), spec("BBB", model_id="n:v1"), spec("BBB", model_id="o:v1", weight=2.0)]
count = {{"committed": 0, "submitted": 0}}
real_write, real_submit = ledger_writer.write_checkpoint, ledger_writer.LedgerWriter.submit
writers = []

class HeldCommit:
    # the connection of the writer thread, whose COMMIT never returns: the checkpoint stays uncommitted
    def __init__(self, conn):
        self.conn = conn
    def executemany(self, *a):
        return self.conn.executemany(*a)
    def execute(self, sql, *a):
        if sql != "COMMIT":
            return self.conn.execute(sql, *a)
        w = writers[0]
        want = count["committed"] + 1 + w._queue.maxsize + 1  # held + queued + the loop waiting to queue
        deadline = time.time() + 30
        while count["submitted"] < want and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(0.3)  # had the queue no bound, the loop would queue more meanwhile
        cursor = self.conn.execute("SELECT MAX(bar_index) FROM cursors").fetchone()[0]
        Path(sys.argv[3]).write_text(json.dumps({{**count, "depth": w._queue.maxsize, "cursor_in_txn": cursor}}))
        threading.Event().wait()

def write(conn, cp):
    if count["committed"] >= hold_after:
        conn = HeldCommit(conn)
    real_write(conn, cp)
    count["committed"] += 1

def submit(self, cp):
    if not writers:
        writers.append(self)
    count["submitted"] += 1
    real_submit(self, cp)

if hold_after >= 0:
    ledger_writer.write_checkpoint = write
    ledger_writer.LedgerWriter.submit = submit
opts = RunOptions(commit_every=17, handle_signals=False, ledger_thread=True)
run_session(config(), specs, replay_steps(series(frames)), run_dir, run_id="r",
            resume=(run_dir / "ledger.db").is_file(), opts=opts)
"""


def test_a_kill_while_the_writer_holds_uncommitted_checkpoints_resumes_to_the_uninterrupted_ledger(
        tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(here=str(HERE)))
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    full, killed, marker = tmp_path / "full", tmp_path / "killed", tmp_path / "held.json"
    subprocess.run([sys.executable, str(script), str(full), "-1", str(marker)], check=True, env=env, timeout=60)
    proc = subprocess.Popen([sys.executable, str(script), str(killed), "5", str(marker)], env=env)
    deadline = time.time() + 60
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert marker.exists(), "the driver never held its commit"
    time.sleep(0.05)  # the marker is written in full before the wait
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    held = json.loads(marker.read_text())
    # 5 committed; the 6th inside its transaction, `depth` more queued and the loop waiting to queue one
    # more (back-pressure): no further bar was processed past that.
    assert held["committed"] == 5
    assert held["submitted"] == 5 + 1 + held["depth"] + 1
    with closing(sqlite3.connect(killed / "ledger.db")) as conn:
        cursor = conn.execute("SELECT MAX(bar_index) FROM cursors").fetchone()[0]
        status = conn.execute("SELECT value FROM meta WHERE key = 'status'").fetchone()[0]
    assert json.loads(status) == "running"  # killed: nothing said it stopped
    # the ledger holds the 5th checkpoint (17 steps of 2 symbols each, both at bar 5 * 17 - 1), not the 6th
    # whose rows the killed transaction had written
    assert cursor == 5 * 17 - 1 and held["cursor_in_txn"] == 6 * 17 - 1
    subprocess.run([sys.executable, str(script), str(killed), "-1", str(marker)], check=True, env=env, timeout=60)
    a, b = ledger_content(full / "ledger.db"), ledger_content(killed / "ledger.db")
    assert a["fills"] and a["predictions"]
    for table in a:
        assert a[table] == b[table], table


def _failing(monkeypatch: pytest.MonkeyPatch, fail_at: int, exc: BaseException, behind: int = 0) -> dict[str, int]:
    """The writer thread's ``fail_at``-th write raises ``exc`` (after an insert, rolled back), once ``behind``
    more checkpoints wait in its queue and the loop waits to queue one more (all to be dropped, not written).
    Submissions are counted before they queue, so ``fail_at + behind + 1`` counted means the queue is full."""
    calls = {"n": 0, "submitted": 0}
    submit = ledger_writer.LedgerWriter.submit

    def counted(self: ledger_writer.LedgerWriter, cp: Any) -> None:
        calls["submitted"] += 1
        submit(self, cp)

    def write(conn: sqlite3.Connection, cp: Any) -> None:
        calls["n"] += 1
        if calls["n"] != fail_at:
            write_checkpoint(conn, cp)
            return
        deadline = time.monotonic() + 20
        while calls["submitted"] < fail_at + (behind + 1 if behind else 0) and time.monotonic() < deadline:
            time.sleep(0.002)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR REPLACE INTO cursors VALUES ('AAA', 999999, 'x')")
        conn.execute("ROLLBACK")
        raise exc

    monkeypatch.setattr(ledger_writer.LedgerWriter, "submit", counted)
    monkeypatch.setattr(ledger_writer, "write_checkpoint", write)
    return calls


@pytest.mark.parametrize("fail_at", [3, "last"])
def test_a_writer_error_is_one_trading_error_and_the_ledger_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    fail_at: int | str) -> None:
    frames = _frames(2)
    whole = _content(_run(tmp_path, "whole", frames, False))
    with closing(sqlite3.connect(tmp_path / "whole" / "ledger.db")) as conn:
        (checkpoints,) = conn.execute("SELECT COUNT(*) FROM equity_blocks").fetchone()  # one per checkpoint here
    assert checkpoints > 4
    # "last": the final checkpoint fails, which only the wait for the writer at the end of the run reports
    n = checkpoints if fail_at == "last" else int(fail_at)
    behind = 0 if fail_at == "last" else ledger_writer.DEPTH
    calls = _failing(monkeypatch, n, sqlite3.OperationalError("database or disk is full"), behind)
    with pytest.raises(TradingError, match=r"cannot write the ledger .*database or disk is full.*--resume cut"):
        _run(tmp_path, "cut", frames, True)
    assert calls["n"] == n  # the failed write happened, and none after it
    # while `behind` waited in the queue and the loop at its full door (all dropped: see the steps)
    assert calls["submitted"] == n + (behind + 1 if behind else 0)
    with closing(sqlite3.connect(tmp_path / "cut" / "ledger.db")) as conn:
        status = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'status'").fetchone()[0])
        bars_done = conn.execute("SELECT MAX(bar_index) FROM cursors WHERE symbol = 'AAA'").fetchone()[0]
        steps = conn.execute("SELECT COALESCE(SUM(n), 0) FROM equity_blocks").fetchone()[0]
    assert status == "stopped"
    assert steps == 40 * (n - 1)  # exactly the checkpoints before the failed one
    assert bars_done != 999999
    monkeypatch.setattr(ledger_writer, "write_checkpoint", write_checkpoint)
    assert _content(_run(tmp_path, "cut", frames, True, resume=True)) == whole


def _limited(args: list[str], cwd: Path, limit: int) -> subprocess.CompletedProcess[str]:
    """The CLI with ``ulimit -f`` = ``limit`` bytes and SIGXFSZ ignored (writes fail with EFBIG)."""
    import resource

    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "aitrader.cli.main", *args], cwd=cwd, preexec_fn=preexec,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, capture_output=True, text=True,
                          timeout=120)


def test_paper_trade_with_the_writer_on_a_full_disk_is_one_error_line_and_resumes(in_tmp: Path) -> None:
    from typer.testing import CliRunner

    from aitrader.cli.main import app
    from aitrader.data.synthetic import generate_bars
    from tests.model_world import deploy_small_model

    all_bars = generate_bars(1000 + 9000, seed=3, signal=0.3)
    registry = deploy_small_model(in_tmp, all_bars.iloc[:1000], name="syn_lgbm", n_estimators=10)
    all_bars.iloc[1000:].rename_axis("timestamp").to_csv(in_tmp / "SYN.csv")
    (in_tmp / "trading.yaml").write_text("ml_trading:\n  models:\n    - {model_id: syn_lgbm, symbol: SYN}\n")
    args = ["paper-trade", "--config", "trading.yaml", "--registry", str(registry), "--data", "SYN.csv", "--json"]
    runner = CliRunner()
    assert runner.invoke(app, [*args, "--run-id", "ref"]).exit_code == 0  # the synchronous reference
    whole = (in_tmp / "runs" / "ref" / "ledger.db").stat().st_size
    proc = _limited([*args, "--run-id", "disk", "--ledger-thread"], in_tmp, whole // 2)
    assert proc.returncode == 1 and proc.stdout == "", proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write the ledger"), proc.stderr[-2000:]
    assert "--resume disk" in lines[0]
    status = runner.invoke(app, ["status", "disk", "--json"])
    assert status.exit_code == 0 and json.loads(status.stdout)["status"] == "stopped"
    assert 0 < json.loads(status.stdout)["bars"] < 9000
    resumed = runner.invoke(app, ["paper-trade", "--config", "trading.yaml", "--registry", str(registry),
                                  "--resume", "disk", "--json", "--ledger-thread"])
    assert resumed.exit_code == 0, resumed.stderr
    assert ledger_content(in_tmp / "runs" / "disk" / "ledger.db") == ledger_content(
        in_tmp / "runs" / "ref" / "ledger.db")


class _Steps:
    series = ()  # what a replay's steps carry (sources.ReplaySteps)


def test_the_writer_is_used_for_replays_at_speed_0_only_and_when_asked() -> None:
    replay = _Steps()
    assert ledger_writer.wanted(True, steps=replay, speed=0, live=False, swap=None)
    assert not ledger_writer.wanted(False, steps=replay, speed=0, live=False, swap=None)  # opt-in
    # --follow (commits every bar before the next), --speed K, a version swap, the bus's steps: never
    for kw in ({"speed": 0, "live": True, "swap": None}, {"speed": 2.0, "live": False, "swap": None},
               {"speed": 0, "live": False, "swap": object()}):
        assert not ledger_writer.wanted(True, steps=replay, **kw)
    assert not ledger_writer.wanted(True, steps=iter(()), speed=0, live=False, swap=None)
