"""retrain: the lock, the alert gate, the decision rule, unchanged detection, champion/challenger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.errors import ConfigError, LockHeldError
from aitrader.monitoring.check import save_state
from aitrader.monitoring.lock import FileLock
from aitrader.monitoring.retrain import _alert_gate, artifact_fingerprint, decide, retrain

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]

# Small and fast: 800 synthetic bars with a planted signal, 30 shallow trees, 2 folds.
TRAIN_YAML = """
data: {path: bars.csv, symbol: SYN}
model: {kind: lightgbm, params: {n_estimators: 30, num_leaves: 7, n_jobs: 1}}
split: {n_folds: 2, embargo: 5, holdout: 0.25, min_train: 150}
"""
# A model that cannot split (every leaf needs more rows than exist) predicts a constant: IC 0.
CONSTANT_YAML = TRAIN_YAML.replace("n_jobs: 1}", "n_jobs: 1, min_child_samples: 100000}")


# ----------------------------------------------------------------------------- the lock


def test_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "retrain.lock"
    with FileLock(path):
        info = json.loads(path.read_text())
        assert info["pid"] == os.getpid()
        with pytest.raises(LockHeldError, match=rf"holds the lock .*retrain.lock \(pid {os.getpid()}, since ") as exc:
            FileLock(path).acquire()
        assert exc.value.exit_code == 4
        assert "wait for it or remove the stale lock" in str(exc.value)
    with FileLock(path):  # released on exit: the next run gets it
        pass


def test_lock_of_a_dead_process_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "retrain.lock"
    code = f"from aitrader.monitoring.lock import FileLock; import os; FileLock({str(path)!r}).acquire(); os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    assert json.loads(path.read_text())["pid"] != os.getpid()  # the dead holder's record is still there
    with FileLock(path):
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_cli_exits_4_when_the_lock_is_held(in_tmp: Path) -> None:
    with FileLock("logs/retrain.lock"):
        result = runner.invoke(app, ["retrain", "--name", "syn", "--json"])
    assert result.exit_code == 4
    assert result.stderr.startswith("error: another retrain holds the lock logs/retrain.lock (pid ")
    assert result.stdout == ""


# ------------------------------------------------------------------------ decision and gate


def test_decide_rule() -> None:
    assert decide("ic", 0.05, None, 0.0, True)[:2] == (None, True)
    gain, better, text = decide("ic", 0.05, 0.03, 0.01, True)
    assert gain == pytest.approx(0.02) and better and text.startswith("promote")
    assert not decide("ic", 0.05, 0.045, 0.01, True)[1]  # better, but not by the margin
    assert not decide("ic", 0.03, 0.03, 0.0, True)[1]  # a tie never replaces the champion
    assert decide("mae", 0.010, 0.012, 0.0, True)[:2] == (pytest.approx(0.002), True)  # lower MAE wins
    assert not decide("mae", 0.013, 0.012, 0.0, True)[1]
    assert decide("sharpe", 1.0, 0.5, 0.2, False)[2].startswith("keep: better")


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--metric 'r2' is not supported; expected one of ic, sharpe, mae"):
        retrain("syn", metric="r2", lock_path=tmp_path / "l")
    with pytest.raises(ConfigError, match="--min-improvement must be >= 0"):
        retrain("syn", min_improvement=-1, lock_path=tmp_path / "l")


def test_alert_gate(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    assert "no monitor state" in (_alert_gate("syn", state) or "")
    save_state({"run_id": "r", "model": {"model_id": "syn"}, "health": "ok", "alerts": []}, state)
    assert "found no alert" in (_alert_gate("syn", state) or "")
    alert = {"code": "mae_ratio", "message": "m", "value": 1.5, "threshold": 1.2}
    save_state({"run_id": "r", "model": {"model_id": "other"}, "health": "alert", "alerts": [alert]}, state)
    assert "of model other, not syn" in (_alert_gate("syn", state) or "")
    save_state({"run_id": "r", "model": {"model_id": "syn"}, "health": "alert", "alerts": [alert]}, state)
    assert _alert_gate("syn", state) is None


def test_if_alert_skips_without_training(in_tmp: Path) -> None:
    result = runner.invoke(app, ["retrain", "--name", "syn", "--if-alert", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["status"] == "skipped" and "run `aitrader monitor` first" in doc["message"]
    assert "skipped" in (in_tmp / "logs" / "retrain.log").read_text()


def test_fingerprint_ignores_created_at_only(tmp_path: Path) -> None:
    for d, created in (("a", "2026-01-01"), ("b", "2026-02-02")):
        (tmp_path / d).mkdir()
        (tmp_path / d / "model.txt").write_text("trees")
        (tmp_path / d / "manifest.json").write_text(json.dumps({"created_at": created, "data": {"sha256": "x"}}))
    assert artifact_fingerprint(tmp_path / "a") == artifact_fingerprint(tmp_path / "b")
    (tmp_path / "b" / "model.txt").write_text("other trees")
    assert artifact_fingerprint(tmp_path / "a") != artifact_fingerprint(tmp_path / "b")
