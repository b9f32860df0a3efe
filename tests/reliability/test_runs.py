"""Issue 10, "Runs": hostile or careless use of paper-trade, status, export, monitor and retrain.

Every case must end in one ``error: ...`` line and exit 1 (or a clean exit 0), with nothing written
outside the run folder and nothing earlier lost. The data each case needs is made here.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.trading.ledger import equity_rows, ledger_content
from tests.model_world import synthetic_world

runner = CliRunner()
CONFIG = """
ml_trading:
  models:
    - {model_id: syn_lgbm, symbol: SYN, min_confidence: 0.6, position_size: 0.02}
  errors: {prediction_timeout_ms: 5000}
"""
HEADER = "timestamp,open,high,low,close,volume\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 20-tree LightGBM trained on 1000 synthetic bars, deployed; the 500 later bars to trade."""
    base = tmp_path_factory.mktemp("runs_rel")
    registry, data, bars = synthetic_world(base, n=1400, seed=3, traded_from=900)
    config = base / "trading.yaml"
    config.write_text(CONFIG)
    return {"registry": registry, "data": data, "config": config, "art": base / "art"}


def trade(world: dict[str, Path], *extra: str, config: Path | None = None):
    args = ["paper-trade", "--config", str(config or world["config"]), "--registry", str(world["registry"]),
            "--json", *extra]
    return runner.invoke(app, args)


def one_error_line(result, *needles: str) -> str:
    """Exit 1, nothing on stdout, exactly one ``error:`` line on stderr naming ``needles``."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def lines_of(world: dict[str, Path]) -> list[str]:
    return world["data"].read_text().splitlines(keepends=True)


# ------------------------------------------------------------------------------------------ run ids
@pytest.mark.parametrize("bad", ["../../x", "../x", "a/b", "/tmp/aitrader-abs-run", ".", "..", "", "a\nb", ".hidden"])
def test_a_run_id_is_one_safe_folder_name(in_tmp: Path, world, bad: str) -> None:
    (in_tmp / "work").mkdir()
    os.chdir(in_tmp / "work")
    result = trade(world, "--data", str(world["data"]), "--run-id", bad, "--max-bars", "3")
    one_error_line(result, "is not a valid run id", "--run-id")
    assert sorted(p.name for p in in_tmp.iterdir()) == ["work"] and not any((in_tmp / "work").iterdir())
    assert not Path("/tmp/aitrader-abs-run").exists()
    for args in (["status", bad], ["export", bad, "fills"], ["monitor", "--run", bad],
                 ["paper-trade", "--resume", bad]):
        if bad == "" and args[0] != "monitor":
            continue  # an empty RUN_ID argument means "the latest run": covered by the others
        got = runner.invoke(app, args)
        one_error_line(got, "is not a valid run id")


# ------------------------------------------------------------------------------------------ speed
@pytest.mark.parametrize("speed", ["nan", "inf", "-inf", "-1"])
def test_speed_must_be_finite_and_not_negative(in_tmp: Path, world, speed: str) -> None:
    result = trade(world, "--data", str(world["data"]), "--speed", speed, "--run-id", "s")
    one_error_line(result, "--speed must be a finite number >= 0")
    assert not (in_tmp / "runs").exists()


def test_retrain_min_improvement_nan_is_refused(in_tmp: Path) -> None:
    for value in ("nan", "inf"):
        result = runner.invoke(app, ["retrain", "--name", "syn_lgbm", "--min-improvement", value])
        one_error_line(result, "--min-improvement must be a finite number")


# ------------------------------------------------------------------------------------------ live bars
def _bad_live_file(world, path: Path) -> tuple[list[str], list[str]]:
    """80 good bars with six bad lines among them; returns (good lines, bad lines)."""
    good = lines_of(world)[1:81]
    stamp = good[40].split(",")[0]
    bad = [
        good[34],  # a duplicate of the bar just before it (same stamp again)
        good[10],  # out of order: goes back in time
        f"{good[50].split(',', 1)[0]},10,9,11,10,1000\n",  # high < low (stamp reused but the bar fails first)
        f"{stamp}T12:00:00,inf,1e300,1,10,1000\n",  # inf price
        f"{pd.Timestamp(good[60].split(',')[0]).tz_localize('Asia/Kolkata').isoformat()},10,11,9,10,1000\n",
        "not,a,bar\n",
    ]
    text, pending = [HEADER], list(bad)
    for i, line in enumerate(good):
        text.append(line)
        if i in (34, 44, 54, 58, 64, 70):
            text.append(pending.pop(0))
    path.write_text("".join(text))
    return good, bad


def test_follow_skips_bad_live_bars_with_an_alert(in_tmp: Path, world) -> None:
    live = in_tmp / "live.csv"
    good, bad = _bad_live_file(world, live)
    assert len(bad) == 6
    # --max-bars 79: the run stops when the 80th good bar arrives (a follow run never ends by itself).
    result = trade(world, "--data", f"SYN={live}", "--follow", "--max-bars", "79", "--run-id", "live")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["bars"] == 79 and doc["alerts"] == {"bad_bar": 6} and doc["status"] == "stopped"
    with sqlite3.connect(in_tmp / "runs" / "live" / "ledger.db") as conn:
        payloads = [json.loads(p) for (p,) in conn.execute(
            "SELECT payload FROM events WHERE type = 'ALERT' AND reason = 'bad_bar' ORDER BY id")]
        stamps = [t for (_, t, _, _) in equity_rows(conn)]
    problems = " | ".join(p["problem"] for p in payloads)
    for words in (("duplicate",), ("out of order",), ("below low", "below max("), ("not finite",), ("time zone",),
                  ("not a bar",)):
        assert any(w in problems for w in words), (words, problems)
    assert stamps == sorted(stamps) and len(set(stamps)) == 79  # the ledger never goes back in time
    # The same 79 good bars replayed from a file give the same trades.
    clean = in_tmp / "clean.csv"
    clean.write_text(HEADER + "".join(good[:79]))
    assert trade(world, "--data", f"SYN={clean}", "--run-id", "clean").exit_code == 0
    a = ledger_content(in_tmp / "runs" / "live" / "ledger.db")
    b = ledger_content(in_tmp / "runs" / "clean" / "ledger.db")
    assert a["fills"] == b["fills"] and a["equity"] == b["equity"] and a["predictions"] == b["predictions"]
    # Resuming does not report the same bad lines twice (one more bar arrives to end the follow run).
    with live.open("a") as fh:
        fh.write(lines_of(world)[81])
    again = trade(world, "--resume", "live", "--max-bars", "1")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["alerts"] == {"bad_bar": 6}


def test_follow_can_stop_at_the_first_bad_live_bar(in_tmp: Path, world) -> None:
    live = in_tmp / "live.csv"
    _bad_live_file(world, live)
    strict = in_tmp / "strict.yaml"
    strict.write_text(CONFIG + "  live: {bad_bar: stop}\n")
    result = trade(world, "--data", f"SYN={live}", "--follow", "--run-id", "strict", config=strict)
    one_error_line(result, "line 37", "duplicate", "ml_trading.live.bad_bar: skip")
    status = runner.invoke(app, ["status", "strict", "--json"])
    doc = json.loads(status.stdout)
    assert doc["status"] == "stopped" and doc["bars"] == 35  # the good bars before the bad line


def test_bad_bar_policy_is_validated(in_tmp: Path, world) -> None:
    wrong = in_tmp / "wrong.yaml"
    wrong.write_text(CONFIG + "  live: {bad_bar: ignore}\n")
    result = trade(world, "--data", str(world["data"]), "--run-id", "w", config=wrong)
    one_error_line(result, "bad_bar")


# ------------------------------------------------------------------------------------------ resume
def test_resume_refuses_a_file_that_shrank_below_the_cursor(in_tmp: Path, world) -> None:
    data = in_tmp / "SYN.csv"
    data.write_text("".join(lines_of(world)))
    part = trade(world, "--data", str(data), "--run-id", "r", "--max-bars", "300")
    assert part.exit_code == 0 and json.loads(part.stdout)["status"] == "stopped"
    data.write_text("".join(lines_of(world)[:201]))  # 200 bars left
    before = ledger_content(in_tmp / "runs" / "r" / "ledger.db")
    line = one_error_line(trade(world, "--resume", "r"), "SYN", "300", "changed since the run started")
    assert "200" in line
    after = ledger_content(in_tmp / "runs" / "r" / "ledger.db")
    assert {k: v for k, v in after.items() if k != "meta"} == {k: v for k, v in before.items() if k != "meta"}


def test_resume_refuses_changed_prices_with_the_same_stamps(in_tmp: Path, world) -> None:
    data = in_tmp / "SYN.csv"
    lines = lines_of(world)
    data.write_text("".join(lines))
    assert trade(world, "--data", str(data), "--run-id", "r", "--max-bars", "300").exit_code == 0
    df = pd.read_csv(data, index_col=0)
    df.iloc[120, df.columns.get_loc("close")] *= 1.0001  # one close, well inside the consumed bars
    df.to_csv(data)
    one_error_line(trade(world, "--resume", "r"), "SYN", "changed since it started", "SHA-256")
    # A change after the cursor is the future: resume accepts it.
    df = pd.read_csv(world["data"], index_col=0)
    df.iloc[450, df.columns.get_loc("close")] *= 1.0001
    df.to_csv(data)
    resumed = trade(world, "--resume", "r")
    assert resumed.exit_code == 0, resumed.stderr
    assert json.loads(resumed.stdout)["bars"] == 500


def test_resume_after_an_identical_rewrite_gives_the_uninterrupted_ledger(in_tmp: Path, world) -> None:
    data = in_tmp / "SYN.csv"
    data.write_text("".join(lines_of(world)))
    assert trade(world, "--data", str(data), "--run-id", "full").exit_code == 0
    assert trade(world, "--data", str(data), "--run-id", "part", "--max-bars", "2500").exit_code == 0
    pd.read_csv(data, index_col=0).to_csv(data)  # rewritten, same values
    assert trade(world, "--resume", "part").exit_code == 0
    assert ledger_content(in_tmp / "runs" / "full" / "ledger.db") == ledger_content(
        in_tmp / "runs" / "part" / "ledger.db")


def test_follow_resume_refuses_a_file_that_shrank(in_tmp: Path, world) -> None:
    live = in_tmp / "live.csv"
    lines = lines_of(world)
    live.write_text("".join(lines[:101]))
    first = trade(world, "--data", f"SYN={live}", "--follow", "--max-bars", "99", "--run-id", "f")
    assert first.exit_code == 0 and json.loads(first.stdout)["bars"] == 99
    live.write_text("".join(lines[:51]))
    one_error_line(trade(world, "--resume", "f"), "shrank", "99")


# ------------------------------------------------------------------------------------------ disk
def _limited(args: list[str], cwd: Path, limit: int, env: dict[str, str] | None = None):
    """Run the CLI with ``ulimit -f`` = ``limit`` bytes and SIGXFSZ ignored (writes fail with EFBIG)."""
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full_env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "aitrader.cli.main", *args], cwd=cwd, env=full_env,
                          preexec_fn=preexec, capture_output=True, text=True, timeout=300)


def _clean_failure(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "╭" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def test_paper_trade_on_a_full_disk_stops_cleanly_and_resumes(in_tmp: Path, world) -> None:
    from aitrader.data.synthetic import generate_bars

    # The ledger is ~100-200 bytes a bar: 12k bars (six checkpoints) so that the limit falls mid-run.
    data = in_tmp / "SYN.csv"
    generate_bars(12_000, seed=4, signal=0.3).rename_axis("timestamp").to_csv(data)
    args = ["paper-trade", "--config", str(world["config"]), "--registry", str(world["registry"]),
            "--data", str(data), "--run-id", "disk", "--json"]
    assert trade(world, "--data", str(data), "--run-id", "ref").exit_code == 0
    whole = (in_tmp / "runs" / "ref" / "ledger.db").stat().st_size
    proc = _limited(args, in_tmp, whole // 2)
    _clean_failure(proc, "cannot write the ledger", "--resume disk")
    status = runner.invoke(app, ["status", "disk", "--json"])
    assert status.exit_code == 0 and json.loads(status.stdout)["status"] == "stopped"
    assert 0 < json.loads(status.stdout)["bars"] < 12_000
    resumed = trade(world, "--resume", "disk")
    assert resumed.exit_code == 0, resumed.stderr
    assert ledger_content(in_tmp / "runs" / "disk" / "ledger.db") == ledger_content(
        in_tmp / "runs" / "ref" / "ledger.db")


def test_export_on_a_full_disk_writes_nothing(in_tmp: Path, world) -> None:
    assert trade(world, "--data", str(world["data"]), "--run-id", "x").exit_code == 0
    for out in ("out/predictions.csv", "out/predictions.parquet"):
        proc = _limited(["export", "x", "predictions", "--out", out], in_tmp, 60_000)
        _clean_failure(proc, "cannot write --out", "nothing was written")
        assert not (in_tmp / "out").exists() or not any((in_tmp / "out").iterdir())


def test_train_on_a_full_disk_and_with_a_too_long_default_out(in_tmp: Path, world) -> None:
    from aitrader.data.synthetic import generate_bars

    generate_bars(700, seed=2, signal=0.3).rename_axis("timestamp").to_csv(in_tmp / "syn.csv")
    proc = _limited(["train", "--data", "syn.csv", "--out", "art"], in_tmp, 50_000)
    _clean_failure(proc, "ulimit -f")
    assert sorted(p.name for p in in_tmp.iterdir()) == ["syn.csv"]  # no artifact, no temp folder
    long_name = "é" * 124 + ".csv"  # 252 bytes: the default out folder's name would be longer than 255
    (in_tmp / "syn.csv").rename(in_tmp / long_name)
    result = runner.invoke(app, ["train", "--data", long_name])
    one_error_line(result, "too long")
    assert not any((in_tmp / "artifacts").iterdir()) if (in_tmp / "artifacts").exists() else True


def test_export_out_that_is_a_directory(in_tmp: Path, world) -> None:
    assert trade(world, "--data", str(world["data"]), "--run-id", "x", "--max-bars", "50").exit_code == 0
    (in_tmp / "dir.csv").mkdir()
    one_error_line(runner.invoke(app, ["export", "x", "fills", "--out", "dir.csv"]), "is a directory")
    one_error_line(runner.invoke(app, ["export", "x", "fills", "--out", "newdir/"]), "is a directory")
    assert list((in_tmp / "dir.csv").iterdir()) == [] and not (in_tmp / "newdir").exists()


# ------------------------------------------------------------------------------------------ a run killed at birth
def _unstarted(run_dir: Path, kind: str) -> None:
    """What a paper-trade killed right after creating ledger.db used to leave behind."""
    run_dir.mkdir(parents=True)
    path = run_dir / "ledger.db"
    if kind == "zero":
        path.write_bytes(b"")
    else:  # the schema committed, no meta yet
        from aitrader.trading.ledger import SCHEMA

        with sqlite3.connect(path) as conn:
            conn.executescript(SCHEMA if kind == "schema" else "")
        if kind == "wal-only":
            path.write_bytes(b"")
            (run_dir / "ledger.db-wal").write_bytes(b"\0" * 32)


@pytest.mark.parametrize("kind", ["zero", "schema", "wal-only"])
def test_a_run_killed_before_its_first_commit(in_tmp: Path, world, kind: str) -> None:
    assert trade(world, "--data", str(world["data"]), "--run-id", "good", "--max-bars", "120").exit_code == 0
    _unstarted(in_tmp / "runs" / "dead", kind)
    os.utime(in_tmp / "runs" / "dead" / "ledger.db")  # the newest ledger on disk
    one_error_line(runner.invoke(app, ["status", "dead"]), "stopped before it started", "--run-id dead")
    latest = runner.invoke(app, ["status", "--json"])
    assert latest.exit_code == 0 and json.loads(latest.stdout)["run_id"] == "good"
    one_error_line(trade(world, "--resume", "dead"), "stopped before it started", "--run-id dead")
    one_error_line(runner.invoke(app, ["export", "dead", "fills"]), "stopped before it started")
    mon = runner.invoke(app, ["monitor", "--latest", "--registry", str(world["registry"]), "--json"])
    assert mon.exit_code in (0, 3), mon.stderr
    assert json.loads(mon.stdout)["run_id"] == "good"
    one_error_line(runner.invoke(app, ["monitor", "--run", "dead", "--registry", str(world["registry"])]),
                   "stopped before it started")
    again = trade(world, "--data", str(world["data"]), "--run-id", "dead", "--max-bars", "120")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["bars"] == 120
    good = ledger_content(in_tmp / "runs" / "good" / "ledger.db")
    dead = ledger_content(in_tmp / "runs" / "dead" / "ledger.db")
    assert {k: v for k, v in good.items() if k != "meta"} == {k: v for k, v in dead.items() if k != "meta"}


def test_the_ledger_appears_only_once_its_meta_is_committed(in_tmp: Path, world, monkeypatch) -> None:
    """A failure (or kill) while the ledger is being created leaves no ledger.db and no temp file."""
    from aitrader.trading import ledger as ledger_mod

    def fail(self, values):
        raise KeyboardInterrupt  # stands in for a kill between the schema and the meta commit

    from aitrader.trading.service import paper_trade

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(ledger_mod.Ledger, "write_meta", fail)
        paper_trade(config_path=str(world["config"]), data=[str(world["data"])], run_id="k",
                    registry_root=str(world["registry"]))
    assert not (in_tmp / "runs" / "k").exists() or list((in_tmp / "runs" / "k").iterdir()) == []
    after = trade(world, "--data", str(world["data"]), "--run-id", "k", "--max-bars", "5")
    assert after.exit_code == 0, after.stderr


# ------------------------------------------------------------------------------------------ damaged ledgers
def _edit_meta(path: Path, key: str, value) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (json.dumps(value), key))


@pytest.mark.parametrize(("key", "value", "needle"), [
    ("state", "not a state", "saved state"),
    ("state", {"steps": "many"}, "saved state"),
    ("state", {"steps": 1, "bars": 1, "last_equity": 1.0, "broker": [], "handler": {}, "slots": {},
               "outcomes": {}}, "saved state"),
    ("config", {"ml_trading": {"execution": {"initial_cash": -5}}}, "config stored"),
    ("config", "yaml?", "config stored"),
    ("models", [{"model_id": 3}], "models"),
    ("request", {"data": 5, "follow": False}, "--data"),
])
def test_resume_of_a_damaged_ledger_is_a_clean_error(in_tmp: Path, world, key: str, value, needle: str) -> None:
    assert trade(world, "--data", str(world["data"]), "--run-id", "d", "--max-bars", "50").exit_code == 0
    _edit_meta(in_tmp / "runs" / "d" / "ledger.db", key, value)
    one_error_line(trade(world, "--resume", "d"), needle, "start a new run")


@pytest.mark.parametrize("table", ["equity", "predictions", "meta", "positions", "cursors"])
def test_status_of_a_ledger_missing_a_table_is_a_clean_error(in_tmp: Path, world, table: str) -> None:
    assert trade(world, "--data", str(world["data"]), "--run-id", "d", "--max-bars", "50").exit_code == 0
    with sqlite3.connect(in_tmp / "runs" / "d" / "ledger.db") as conn:
        conn.execute(f"DROP TABLE {table}")
    one_error_line(runner.invoke(app, ["status", "d"]), "damaged or incomplete")
    one_error_line(trade(world, "--resume", "d"), f"lacks the table(s) {table}", "start a new run")


# ------------------------------------------------------------------------------------------ monitor and retrain files
def test_monitor_on_an_unknown_run_lists_run_ids(in_tmp: Path, world) -> None:
    for rid in ("alpha", "beta"):
        assert trade(world, "--data", str(world["data"]), "--run-id", rid, "--max-bars", "5").exit_code == 0
    line = one_error_line(runner.invoke(app, ["monitor", "--run", "nope"]), "recent runs: ")
    assert "recent runs: beta, alpha;" in line  # run ids, newest first (not "ledger.db, ledger.db")


def test_a_bad_monitor_state_file_is_a_clean_error(in_tmp: Path) -> None:
    state = in_tmp / "runs" / "r1" / "monitor_state.json"
    state.parent.mkdir(parents=True)
    for text in ("[1, 2]", '{"model": "m", "alerts": []}', '{"alerts": 3}', "{", "[" * 200_000 + "]" * 200_000):
        state.write_text(text)
        one_error_line(runner.invoke(app, ["retrain", "--name", "syn_lgbm", "--if-alert"]), "monitor state")


def test_a_monitor_state_path_that_is_a_directory(in_tmp: Path, world) -> None:
    assert trade(world, "--data", str(world["data"]), "--run-id", "m", "--max-bars", "150").exit_code == 0
    (in_tmp / "runs" / "m" / "monitor_state.json").mkdir(parents=True)
    one_error_line(runner.invoke(app, ["monitor", "--run", "m", "--registry", str(world["registry"])]),
                   "cannot write monitor state")


def test_a_retrain_log_that_is_a_directory(in_tmp: Path) -> None:
    (in_tmp / "logs" / "retrain.log").mkdir(parents=True)
    one_error_line(runner.invoke(app, ["retrain", "--name", "syn_lgbm"]), "retrain log", "logs/retrain.log")


def test_a_manifest_nested_200000_deep_is_a_clean_error(in_tmp: Path, world) -> None:
    import shutil

    art = in_tmp / "deep"
    shutil.copytree(world["art"], art)
    (art / "manifest.json").write_text('{"a": ' + "[" * 200_000 + "]" * 200_000 + "}")
    one_error_line(runner.invoke(app, ["register", str(art), "--name", "deep", "--registry", "reg"]), "manifest")
    assert trade(world, "--data", str(world["data"]), "--run-id", "m", "--max-bars", "5").exit_code == 0
    one_error_line(runner.invoke(app, ["monitor", "--run", "m", "--manifest", str(art)]), "manifest.json")


def test_stale_retrain_temp_folders_are_removed(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    from aitrader.monitoring import retrain as retrain_mod

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"aitrader-retrain-{int(dead.stdout)}-abc"
    live = tmp_path / f"aitrader-retrain-{os.getpid()}-def"
    other = tmp_path / "aitrader-other-1"
    for folder in (stale, live, other):
        (folder / "challenger").mkdir(parents=True)
    retrain_mod._remove_stale_temp()
    assert not stale.exists() and live.exists() and other.exists()


def test_sigkill_while_the_ledger_is_being_created(in_tmp: Path, world) -> None:
    """Kill paper-trade the moment its run folder appears (where ledger.db used to be half-made)."""
    import time

    from aitrader.trading.ledger import ledger_state

    env = {**os.environ, "AITRADER_REGISTRY": str(world["registry"]), "PYTHONDONTWRITEBYTECODE": "1"}
    for k in range(3):
        run_dir = in_tmp / "runs" / f"k{k}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "aitrader.cli.main", "paper-trade", "--config", str(world["config"]), "--data",
             str(world["data"]), "--run-id", f"k{k}", "--json"],
            cwd=in_tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 120
            while not run_dir.exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.0005)
            time.sleep(0.002 * k)  # a little later each time
            proc.kill()
        finally:
            proc.wait(timeout=30)
        state = ledger_state(run_dir / "ledger.db")
        assert state in ("missing", "started"), state  # never a half-made ledger
        if state == "started":
            resumed = trade(world, "--resume", f"k{k}")
            assert resumed.exit_code == 0, resumed.stderr
        else:
            one_error_line(runner.invoke(app, ["status", f"k{k}"]), "not found")
            again = trade(world, "--data", str(world["data"]), "--run-id", f"k{k}")
            assert again.exit_code == 0, again.stderr
        assert json.loads(runner.invoke(app, ["status", f"k{k}", "--json"]).stdout)["bars"] == 500


@pytest.mark.parametrize(("path", "value"), [(("steps",), 1e300), (("broker", "cash"), float("nan")),
                                             (("slots",), {"other@SYN": {}}), (("broker", "cash"), "rich")])
def test_resume_with_a_damaged_value_in_the_state(in_tmp: Path, world, path, value) -> None:
    assert trade(world, "--data", str(world["data"]), "--run-id", "d", "--max-bars", "250").exit_code == 0
    db = in_tmp / "runs" / "d" / "ledger.db"
    with sqlite3.connect(db) as conn:
        state = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'state'").fetchone()[0])
    node = state
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with sqlite3.connect(db) as conn:  # NaN is not JSON: stored as Python writes it
        conn.execute("UPDATE meta SET value = ? WHERE key = 'state'", (json.dumps(state),))
    before = ledger_content(db)
    one_error_line(trade(world, "--resume", "d"), "cannot resume", "start a new run")
    assert {k: v for k, v in ledger_content(db).items() if k != "meta"} == {
        k: v for k, v in before.items() if k != "meta"}


def test_two_runs_started_with_one_id_at_once_cannot_both_write_it(in_tmp: Path, world, monkeypatch) -> None:
    """The second one's check ran before the first created its ledger: the link into place refuses it."""
    from aitrader.trading import session

    assert trade(world, "--data", str(world["data"]), "--run-id", "same", "--max-bars", "40").exit_code == 0
    before = ledger_content(in_tmp / "runs" / "same" / "ledger.db")
    monkeypatch.setattr(session, "ledger_state", lambda path: "missing")  # the check saw no ledger yet
    one_error_line(trade(world, "--data", str(world["data"]), "--run-id", "same"), "already holds a run")
    assert ledger_content(in_tmp / "runs" / "same" / "ledger.db") == before
    assert [p.name for p in (in_tmp / "runs" / "same").iterdir() if p.name.endswith(".tmp")] == []
