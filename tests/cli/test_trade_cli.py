"""paper-trade, status and export through the CLI, with a real 20-tree LightGBM deployed in a temp registry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.errors import TradingError
from aitrader.trading.ledger import decoded_copy, ledger_content
from tests.model_world import synthetic_world

runner = CliRunner()
CONFIG = """
ml_trading:
  models:
    - {model_id: syn_lgbm, symbol: SYN, min_confidence: 0.6, position_size: 0.02}
  errors: {prediction_timeout_ms: 5000}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("trade_cli")
    registry, data, bars = synthetic_world(base, n=1400, seed=3, traded_from=900)
    config = base / "trading.yaml"
    config.write_text(CONFIG)
    training = base / "train.csv"  # exactly the bars the model was trained on
    bars.iloc[:1000].rename_axis("timestamp").to_csv(training)
    return {"registry": registry, "data": data, "config": config, "train": training}


def trade(world: dict[str, Path], *extra: str):
    args = ["paper-trade", "--config", str(world["config"]), "--registry", str(world["registry"]), "--json", *extra]
    return runner.invoke(app, args)


def test_paper_trade_json_summary_then_status_and_export(in_tmp: Path, world) -> None:
    result = trade(world, "--data", str(world["data"]), "--run-id", "r1")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["run_id"] == "r1" and Path(doc["state_dir"]) == Path("runs/r1")
    assert doc["status"] == "finished" and doc["bars"] == 500
    assert doc["predictions"] > 300 and doc["fills"] > 0
    for key in ("signals", "orders", "rejections", "errors", "final_equity", "total_return", "sharpe",
                "max_drawdown", "turnover", "fees"):
        assert key in doc
    status = runner.invoke(app, ["status", "--json"])  # latest run
    assert status.exit_code == 0
    st = json.loads(status.stdout)
    assert st["run_id"] == "r1" and st["cursor"]["SYN"]["bar_index"] == 499
    assert st["models"][0]["enabled"] is True
    fills = runner.invoke(app, ["export", "r1", "fills"])
    assert fills.exit_code == 0
    header = fills.stdout.splitlines()[0].split(",")
    assert {"ts", "symbol", "side", "quantity", "price", "commission"} <= set(header)
    assert len(fills.stdout.splitlines()) == doc["fills"] + 1
    out = runner.invoke(app, ["export", "r1", "equity", "--out", "eq/equity.parquet"])
    assert out.exit_code == 0, out.stderr
    eq = pd.read_parquet(in_tmp / "eq" / "equity.parquet")
    assert list(eq.columns) == ["bar_index", "ts", "cash", "equity"] and len(eq) == 500
    assert eq["equity"].iloc[-1] == pytest.approx(doc["final_equity"])


def test_resume_continues_to_the_same_ledger(in_tmp: Path, world) -> None:
    full = trade(world, "--data", str(world["data"]), "--run-id", "full")
    assert full.exit_code == 0, full.stderr
    part = trade(world, "--data", str(world["data"]), "--run-id", "part", "--max-bars", "137")
    assert json.loads(part.stdout)["status"] == "stopped"
    again = trade(world, "--data", str(world["data"]), "--run-id", "part")
    assert again.exit_code == 1 and "--resume part" in again.stderr
    resumed = trade(world, "--resume", "part")
    assert resumed.exit_code == 0, resumed.stderr
    assert json.loads(resumed.stdout)["bars"] == 500
    a = ledger_content(in_tmp / "runs" / "full" / "ledger.db")
    b = ledger_content(in_tmp / "runs" / "part" / "ledger.db")
    assert a == b


def test_clear_errors(in_tmp: Path, world) -> None:
    empty = trade(world, "--registry", str(in_tmp / "none"), "--data", str(world["data"]))
    assert empty.exit_code == 1 and empty.stdout == ""
    assert empty.stderr.startswith("error: ") and "aitrader deploy --model-id syn_lgbm" in empty.stderr
    missing = trade(world, "--data", f"OTHER={world['data']}")
    assert missing.exit_code == 1 and "no bars for SYN" in missing.stderr
    assert runner.invoke(app, ["status", "nope"]).exit_code == 1
    bad = runner.invoke(app, ["export", "nope", "fills"])
    assert bad.exit_code == 1 and "not found" in bad.stderr
    trade(world, "--data", str(world["data"]), "--run-id", "x", "--max-bars", "5")
    table = runner.invoke(app, ["export", "x", "trade"])
    assert table.exit_code == 1 and "expected one of fills" in table.stderr and "trades" in table.stderr
    ext = runner.invoke(app, ["export", "x", "fills", "--out", "f.xlsx"])
    assert ext.exit_code == 1 and ".parquet" in ext.stderr and not (in_tmp / "f.xlsx").exists()
    workers = trade(world, "--data", str(world["data"]), "--run-id", "w", "--workers", "two")
    assert workers.exit_code == 1 and workers.stderr.count("\n") == 1
    assert "--workers must be auto or a whole number >= 1" in workers.stderr
    assert (in_tmp / "runs" / "x").is_dir() and not (in_tmp / "runs" / "w").exists()  # refused before the run


def _follow(in_tmp: Path, world, live: Path, new_lines: list[str], last_index: int, signum: int,
            *extra: str) -> tuple[int, str, str]:
    """Start ``paper-trade --follow`` on ``live``, append ``new_lines``, signal once the cursor is at ``last_index``."""
    env = {**os.environ, "AITRADER_REGISTRY": str(world["registry"])}
    cmd = [sys.executable, "-m", "aitrader.cli.main", "paper-trade", "--config", str(world["config"]),
           "--data", f"SYN={live}", "--follow", "--json", *extra]
    proc = subprocess.Popen(cmd, cwd=in_tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ledger = in_tmp / "runs" / "live" / "ledger.db"
    try:
        deadline = time.time() + 60
        with live.open("a") as fh:
            for line in new_lines:
                fh.write(line)
                fh.flush()
                time.sleep(0.005)
        while time.time() < deadline:
            try:  # the writer may be creating the file (WAL) right now
                cursors = ledger_content(ledger)["cursors"] if ledger.is_file() else []
            except TradingError:
                cursors = []
            if cursors and cursors[0][1] == last_index:
                break
            time.sleep(0.05)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def test_follow_stops_cleanly_on_sigterm(in_tmp: Path, world) -> None:
    live = in_tmp / "live.csv"
    lines = world["data"].read_text().splitlines(keepends=True)
    live.write_text("".join(lines[:101]))
    code, out, err = _follow(in_tmp, world, live, lines[101:161], 159, signal.SIGTERM, "--run-id", "live")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["status"] == "stopped" and doc["bars"] == 160


def test_follow_stops_cleanly_on_sigint_and_resumes_to_the_replayed_ledger(in_tmp: Path, world) -> None:
    """Ctrl-C: stop after the current bar, exit 0, status stopped; --resume follows on from the cursor."""
    live = in_tmp / "live.csv"
    lines = world["data"].read_text().splitlines(keepends=True)
    live.write_text("".join(lines[:101]))
    code, out, err = _follow(in_tmp, world, live, lines[101:131], 129, signal.SIGINT, "--run-id", "live")
    assert code == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    doc = json.loads(out)
    assert doc["status"] == "stopped" and doc["bars"] == 130
    status = runner.invoke(app, ["status", "live", "--json"])
    assert status.exit_code == 0 and json.loads(status.stdout)["status"] == "stopped"
    code, out, err = _follow(in_tmp, world, live, lines[131:151], 149, signal.SIGINT, "--resume", "live")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["status"] == "stopped" and doc["bars"] == 150
    (in_tmp / "first150.csv").write_text("".join(lines[:151]))
    trade(world, "--data", f"SYN={in_tmp / 'first150.csv'}", "--run-id", "replay")
    got = ledger_content(in_tmp / "runs" / "live" / "ledger.db")
    want = ledger_content(in_tmp / "runs" / "replay" / "ledger.db")
    assert got["fills"] and got["equity"] == want["equity"] and got["fills"] == want["fills"]
    assert got["predictions"] == want["predictions"]


def test_default_run_replays_the_sample_holdout_of_a_trained_aapl_model(in_tmp: Path) -> None:
    """train (small) on the built-in sample -> register -> deploy -> paper-trade without --data."""

    from aitrader.config import TrainConfig
    from aitrader.data.sample import load_sample
    from aitrader.registry import Registry
    from aitrader.training.trainer import train

    cfg = TrainConfig.model_validate({
        "data": {"path": None, "symbol": "AAPL"},
        "model": {"kind": "lightgbm", "params": {"n_estimators": 10, "num_threads": 1}},
        "split": {"n_folds": 2, "min_train": 250, "holdout": 0.2},
    })
    manifest = train(cfg, out_dir=in_tmp / "art").manifest
    reg = Registry(in_tmp / "models")
    reg.register(in_tmp / "art", "aapl_lgbm")
    reg.deploy("aapl_lgbm", reason="test")
    (in_tmp / "trading.yaml").write_text(
        "ml_trading:\n  models:\n    - {model_id: aapl_lgbm, symbol: AAPL}\n  errors: {prediction_timeout_ms: 5000}\n"
    )
    result = runner.invoke(app, ["paper-trade", "--config", "trading.yaml", "--registry", "models", "--run-id", "d",
                                 "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    sample = load_sample("AAPL")
    first_unseen = int(sample.index.searchsorted(pd.Timestamp(manifest["split"]["holdout_first"])))
    warmup = manifest["features"]["warmup"]
    assert doc["status"] == "finished" and doc["bars"] == len(sample) - first_unseen + warmup
    assert pd.Timestamp(doc["first_ts"]) == sample.index[first_unseen - warmup]
    assert pd.Timestamp(doc["last_ts"]) == sample.index[-1]
    with closing(decoded_copy(in_tmp / "runs" / "d" / "ledger.db")) as conn:
        first_pred, n_pred = conn.execute("SELECT MIN(ts), COUNT(*) FROM predictions").fetchone()
    # Predictions only on bars the model never saw in training, and on every one of them.
    assert pd.Timestamp(first_pred) >= sample.index[first_unseen]
    assert n_pred == len(sample) - first_unseen == doc["predictions"]


def _manifest(world) -> dict:
    from aitrader.registry import Registry

    return json.loads((Registry(world["registry"]).resolve("syn_lgbm").path / "manifest.json").read_text())


def _predictions(run_dir: Path) -> pd.DataFrame:
    with closing(decoded_copy(run_dir / "ledger.db")) as conn:
        return pd.read_sql("SELECT ts, in_sample FROM predictions ORDER BY id", conn)


def test_replaying_the_training_file_trades_no_training_bar(in_tmp: Path, world) -> None:
    man = _manifest(world)
    result = trade(world, "--data", str(world["train"]), "--run-id", "own")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    preds = _predictions(in_tmp / "runs" / "own")
    train_bars = pd.read_csv(world["train"], index_col=0, parse_dates=True).index
    first_unseen = train_bars.get_loc(pd.Timestamp(man["split"]["holdout_first"]))
    # Every bar from holdout_first on, and no earlier one; the features' warm-up bars lead it.
    assert pd.Timestamp(preds["ts"].iloc[0]) == pd.Timestamp(man["split"]["holdout_first"])
    assert len(preds) == len(train_bars) - first_unseen == doc["predictions"]
    assert doc["bars"] == len(train_bars) - first_unseen + man["features"]["warmup"]
    assert set(preds["in_sample"]) == {0} and doc["in_sample_predictions"] == 0
    assert doc["fills"] > 0


def test_a_window_reaching_into_training_needs_allow_in_sample(in_tmp: Path, world) -> None:
    man = _manifest(world)
    early = trade(world, "--data", str(world["train"]), "--from", "2020-03-01", "--run-id", "early")
    assert early.exit_code == 1 and early.stdout == ""
    line = early.stderr.strip()
    assert line.count("\n") == 0 and line.startswith("error: ") and "--allow-in-sample" in line
    assert str(pd.Timestamp(man["split"]["holdout_first"])) in line
    assert not (in_tmp / "runs" / "early").exists()


def test_allow_in_sample_trades_training_bars_and_monitor_flags_the_run(in_tmp: Path, world) -> None:
    man = _manifest(world)
    result = trade(world, "--data", str(world["train"]), "--allow-in-sample", "--run-id", "ins")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    preds = _predictions(in_tmp / "runs" / "ins")
    # Independent oracle: a bar is a training row when it lies in data.first .. split.final_train_last.
    stamps = pd.to_datetime(preds["ts"])
    want = ((stamps >= pd.Timestamp(man["data"]["first"]))
            & (stamps <= pd.Timestamp(man["split"]["final_train_last"]))).astype(int)
    assert preds["in_sample"].tolist() == want.tolist()
    n_in = int(want.sum())
    assert n_in > 500 and doc["in_sample_predictions"] == n_in
    status = runner.invoke(app, ["status", "ins"])
    assert status.exit_code == 0 and "in-sample" in status.stdout and f"{n_in:,}" in status.stdout
    mon = runner.invoke(app, ["monitor", "--run", "ins", "--registry", str(world["registry"]), "--json"])
    assert mon.exit_code == 3, mon.stderr
    report = json.loads(mon.stdout)
    flagged = [a for a in report["alerts"] if a["code"] == "in_sample"]
    assert len(flagged) == 1 and flagged[0]["value"] == n_in and str(n_in) in flagged[0]["message"]
    assert report["health"] == "alert" and report["operational"]["in_sample_predictions"] == n_in
    # Accuracy is scored on the out-of-sample rows only.
    assert report["accuracy"]["run"]["n"] <= len(preds) - n_in


def test_from_and_to_pick_the_traded_window(in_tmp: Path, world) -> None:
    data = pd.read_csv(world["data"], index_col=0, parse_dates=True).index
    start, end = data[200], data[260]
    result = trade(world, "--data", str(world["data"]), "--from", str(start.date()), "--to", str(end.date()),
                   "--run-id", "win")
    assert result.exit_code == 0, result.stderr
    stamps = pd.to_datetime(_predictions(in_tmp / "runs" / "win")["ts"])
    assert stamps.iloc[0] == start and stamps.iloc[-1] == end and len(stamps) == 61
    resumed = trade(world, "--resume", "win", "--from", "2020-01-01")
    assert resumed.exit_code == 1 and "cannot change a resumed run" in resumed.stderr


def test_window_options_are_checked(in_tmp: Path, world) -> None:
    bad = trade(world, "--data", str(world["data"]), "--from", "yesterday-ish", "--run-id", "w1")
    assert bad.exit_code == 1 and "--from 'yesterday-ish' is not a date or time" in bad.stderr
    empty = trade(world, "--data", str(world["data"]), "--from", "2023-06-01", "--to", "2023-05-01", "--run-id", "w2")
    assert empty.exit_code == 1 and "no bar to trade in the window" in empty.stderr
    follow = trade(world, "--data", str(world["data"]), "--follow", "--to", "2023-05-01", "--run-id", "w3")
    assert follow.exit_code == 1 and "--to does not apply to --follow" in follow.stderr
    assert not (in_tmp / "runs").exists()
