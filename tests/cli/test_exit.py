"""The exit of ``paper-trade``, ``backtest``, ``status`` and ``export`` skips the interpreter's final garbage
collections (aitrader/cli/_exit.py), which is safe only because those commands close what they open explicitly.

* With the collector switched off (so nothing is closed by it), no file of the run, the registry or the
  data is still open after each command: the open file descriptors, read from ``/proc/self/fd``.
* ``python -m aitrader paper-trade`` (the process that freezes its heap at exit) writes the same ledger as
  ``paper_trade`` called in this process with the full exit, and leaves no frames in its ``-wal``: the
  writer's close checkpoints them into the file, so the ledger was closed, not abandoned.
* Only the process's own command freezes: an in-process ``CliRunner`` invocation does not, a command
  that does not opt in (``list``) does not, nor a resumed ``paper-trade`` (it may be a ``--follow``
  run), and a failed command keeps the full exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CONFIG = """
ml_trading:
  models:
    - {model_id: syn_lgbm, symbol: SYN, min_confidence: 0.6, position_size: 0.02}
  errors: {prediction_timeout_ms: 5000}
"""

#: ``python -c FREEZE_PROBE ARGS``: ``python -m aitrader ARGS`` (so ``__main__`` marks the process entry),
#: with an exit handler registered before the command that reports how many objects were frozen when it
#: runs (handlers run last-registered first, so it runs after any the command registered).
FREEZE_PROBE = """
import atexit, gc, json, os, runpy, sys

def report():
    with open(os.environ["AITRADER_TEST_FREEZE"], "w") as fh:
        json.dump({"frozen": gc.get_freeze_count()}, fh)

atexit.register(report)
sys.argv = ["aitrader", *sys.argv[1:]]
runpy.run_module("aitrader", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-tree LightGBM deployed as syn_lgbm, 300 unseen bars (SYN.parquet) and run r1 traded on them."""
    from tests.model_world import traded_world

    return traded_world(tmp_path_factory.mktemp("exit"), CONFIG, seed=9, suffix=".parquet")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads the open descriptors from /proc")
def test_commands_that_skip_the_exit_collections_close_every_file_without_the_collector(world: Path) -> None:
    code = textwrap.dedent(
        f"""
        import gc, json, os
        from typer.testing import CliRunner
        from aitrader.cli.main import app

        def open_files():
            out = []
            for fd in os.listdir("/proc/self/fd"):
                try:
                    out.append(os.readlink(f"/proc/self/fd/{{fd}}"))
                except OSError:
                    pass
            return sorted(p for p in out if p.startswith({str(world)!r}))

        gc.disable()  # nothing may rely on the collector to be closed
        runs = ["--runs-dir", "runs"]
        commands = [
            ["paper-trade", "--config", "trading.yaml", "--data", "SYN.parquet", "--registry", "models",
             "--run-id", "p1", "--json", *runs],
            ["paper-trade", "--config", "trading.yaml", "--data", "SYN.parquet", "--registry", "models",
             "--run-id", "p2", "--ledger-thread", "--workers", "2", "--json", *runs],
            ["status", "p1", "--json", *runs], ["status", "p1", *runs],
            ["export", "p1", "fills", *runs], ["export", "p1", "predictions", "--out", "pred.parquet", *runs],
            ["export", "p1", "equity", "--out", "eq.csv.gz", *runs], ["export", "p1", "trades", *runs],
            ["backtest", "--config", "trading.yaml", "--data", "SYN.parquet", "--registry", "models", "--json",
             *runs],
            ["backtest", "--config", "trading.yaml", "--data", "SYN.parquet", "--registry", "models",
             "--out-run", "b1", "--report", "bt.html", *runs],
        ]
        out = []
        for args in commands:
            result = CliRunner().invoke(app, args)
            out.append({{"args": args[:2], "code": result.exit_code, "err": result.stderr, "open": open_files()}})
        print(json.dumps(out))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=world, timeout=180)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) == 10
    for res in results:
        assert res["code"] == 0, res
        assert res["open"] == [], f"{' '.join(res['args'])} left open: {res['open']}"
    assert (world / "pred.parquet").stat().st_size > 0 and (world / "eq.csv.gz").stat().st_size > 0
    assert (world / "bt.html").stat().st_size > 0 and (world / "runs" / "b1" / "ledger.db").is_file()


def _probe(world: Path, args: list[str], tag: str) -> tuple[subprocess.CompletedProcess[str], int | None]:
    marker = world / f"freeze-{tag}.json"
    marker.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-c", FREEZE_PROBE, *args], capture_output=True, text=True, cwd=world,
                          timeout=180, env={**os.environ, "AITRADER_TEST_FREEZE": str(marker)})
    frozen = json.loads(marker.read_text())["frozen"] if marker.exists() else None
    return done, frozen


def test_paper_trade_process_freezes_at_exit_and_writes_the_same_closed_ledger(world: Path) -> None:
    from aitrader.trading.ledger import ledger_content
    from aitrader.trading.service import paper_trade

    done, frozen = _probe(world, ["paper-trade", "--config", "trading.yaml", "--data", "SYN.parquet", "--registry",
                                  "models", "--runs-dir", "runs", "--run-id", "cli", "--json"], "pt")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "finished"
    assert frozen is not None and frozen > 10_000  # the heap of a process that loaded pandas and the model
    ledger = world / "runs" / "cli" / "ledger.db"
    wal = Path(f"{ledger}-wal")  # the writer's close folds the WAL into the file: an abandoned one leaves frames
    assert not wal.exists() or wal.stat().st_size == 0, "the ledger's WAL holds frames: it was not closed"
    # the oracle: the same run in this process, whose exit nothing changes
    paper_trade(config_path=str(world / "trading.yaml"), data=[str(world / "SYN.parquet")], run_id="inproc",
                runs_dir=str(world / "runs"), registry_root=str(world / "models"))
    ours, oracle = ledger_content(ledger), ledger_content(world / "runs" / "inproc" / "ledger.db")
    for content in (ours, oracle):
        content["meta"] = [r for r in content["meta"] if r[0] != "run_id"]
    assert ours == oracle and len(ours["predictions"]) > 0


@pytest.mark.parametrize(("args", "code", "freezes"), [
    (["status", "r1", "--runs-dir", "runs", "--json"], 0, True),
    (["export", "r1", "fills", "--runs-dir", "runs"], 0, True),
    (["list", "--registry", "models"], 0, False),  # not opted in: the full exit
    # a resumed run may be a --follow one (its ledger says so, not the options): the full exit
    (["paper-trade", "--resume", "r1", "--runs-dir", "runs", "--registry", "models", "--json"], 0, False),
    (["status", "nope", "--runs-dir", "runs"], 1, False),  # a failed command: the full exit
    (["backtest", "--config", "trading.yaml", "--data", "SYN.parquet", "--registry", "models", "--runs-dir", "runs",
      "--json"], 0, True),
])
def test_only_commands_that_opt_in_freeze_at_exit(world: Path, args: list[str], code: int, freezes: bool) -> None:
    done, frozen = _probe(world, args, "-".join(args[:2]))
    assert done.returncode == code, done.stderr
    assert frozen is not None and (frozen > 0) is freezes, frozen
    # what they print still reaches stdout whole (the interpreter flushes it whatever the collector does)
    if args[0] == "status" and code == 0:
        assert json.loads(done.stdout)["bars"] == 300  # the 300 unseen bars of SYN.parquet
    if args[0] == "backtest":  # the same document as the library call in this process (full exit)
        from aitrader.trading.backtest import run_backtest

        oracle = run_backtest(models=None, data=[str(world / "SYN.parquet")], config_path=str(world / "trading.yaml"),
                              registry_root=str(world / "models"), runs_dir=str(world / "runs"))
        got = json.loads(done.stdout)
        assert got["trades"] == oracle["trades"] and got["run"]["fills"] == oracle["run"]["fills"] > 0
    if args[0] == "export":
        import sqlite3

        lines = done.stdout.splitlines()
        with sqlite3.connect(world / "runs" / "r1" / "ledger.db") as conn:  # oracle: the table itself
            assert len(lines) - 1 == conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0] > 0
        assert lines[0] == "id,order_id,ts,symbol,side,quantity,price,commission,slippage"


def test_an_in_process_invocation_leaves_its_host_exit_alone(world: Path) -> None:
    code = textwrap.dedent(
        """
        import json
        from typer.testing import CliRunner
        from aitrader.cli import _exit
        from aitrader.cli.main import app

        result = CliRunner().invoke(app, ["status", "r1", "--runs-dir", "runs", "--json"])
        print(json.dumps({"code": result.exit_code, "registered": _exit._state["registered"]}))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=world, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"code": 0, "registered": False}
