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


# ------------------------------------------------------------- champion/challenger, for real


def _project(root: Path) -> None:
    from aitrader.data.synthetic import generate_bars

    generate_bars(1000, seed=1, signal=0.5).to_csv(root / "bars.csv")
    (root / "good.yaml").write_text(TRAIN_YAML)
    (root / "const.yaml").write_text(CONSTANT_YAML)
    text = CONSTANT_YAML.replace("model: {kind: lightgbm,", "model: {kind: lightgbm, random_state: 7,")
    (root / "const7.yaml").write_text(text)


def _retrain(*args: str) -> dict:
    result = runner.invoke(app, ["retrain", "--name", "syn", "--metric", "ic", "--json", *args])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _live_run(root: Path, model_id: str) -> None:
    """A paper-trade-like run of ``model_id`` on fresh bars: its predictions and realised outcomes."""
    from aitrader.data.synthetic import generate_bars
    from aitrader.features import FeaturePipeline
    from aitrader.features.targets import forward_return
    from aitrader.registry import Registry
    from tests.unit.test_monitoring_support import write_ledger

    loaded = Registry().load(model_id)
    bars = generate_bars(400, seed=9, signal=0.5)
    pipe = FeaturePipeline.from_contract(loaded.manifest["features"])
    x = pipe.transform(bars).to_numpy()[pipe.warmup:]
    fwd = forward_return(bars["close"], loaded.manifest["target"]["horizon"]).to_numpy()[pipe.warmup:]
    entry = {"model_id": loaded.info.name, "version": loaded.info.version, "digest": loaded.info.digest}
    write_ledger(root / "runs" / "r1", {"x": x, "pred": loaded.runner.predict_batch(x), "outcome": fwd},
                 model=entry, missing_outcomes=0)


def test_champion_challenger_both_ways(in_tmp: Path) -> None:
    from aitrader.registry import Registry

    _project(in_tmp)
    first = _retrain("--config", "const.yaml", "--data", "bars.csv", "--promote-if-better")
    assert first["status"] == "promoted" and first["decision"] == "promote: no champion yet"

    better = _retrain("--config", "good.yaml", "--promote-if-better")
    assert better["status"] == "promoted" and better["challenger"]["model_id"] == "syn:v2"
    assert better["champion"]["model_id"] == "syn:v1"
    assert better["champion"]["scores"]["ic"] == 0.0  # a constant model has no correlation
    assert better["challenger"]["scores"]["ic"] > 0.3 and better["improvement"] > 0.3

    _live_run(in_tmp, "syn@production")  # paper-trade outcomes of the new champion (feedback)
    worse = _retrain("--config", "const7.yaml", "--promote-if-better")
    assert worse["status"] == "registered" and not worse["promoted"]
    assert worse["challenger"]["model_id"] == "syn:v3" and worse["champion"]["model_id"] == "syn:v2"
    assert worse["decision"].startswith("keep champion: ic 0.0000 vs champion")
    assert worse["holdout_rows"] == better["holdout_rows"]
    fb = worse["feedback"]
    assert fb["runs"] == 1 and fb["outcomes"] > 200
    assert fb["champion"]["ic"] > 0.3  # the champion's logged predictions track the outcomes
    assert fb["challenger"]["ic"] is None  # the constant challenger re-predicted on the logged features

    reg = Registry()
    assert reg.alias_target("syn", "production").version == 2
    tags = reg.resolve("syn:v3").tags
    assert tags["role"] == "challenger" and tags["champion"] == "syn:v2"
    assert tags["decision"].startswith("keep champion") and float(tags["champion_score"]) > 0.3

    again = _retrain("--config", "good.yaml", "--promote-if-better")  # same data + config: nothing new
    assert again["status"] == "unchanged" and again["version"] == "syn:v2"
    assert again["logged"]["status"] == "unchanged"
    assert [v.version for v in reg.list_versions("syn")] == [1, 2, 3]

    # The deploy log, as a user reads it: every decision with both scores, promotions and rejections.
    result = runner.invoke(app, ["history", "syn", "--json"])
    assert result.exit_code == 0, result.stderr
    events = json.loads(result.stdout)["events"]
    moves = [(e["action"], e["to_version"], e["status"]) for e in events if e["action"] != "evaluate"]
    assert moves == [("promote", 1, "success"), ("promote", 2, "success")]
    verdicts = [(e["to_version"], e["from_version"], e["status"]) for e in events if e["action"] == "evaluate"]
    assert verdicts == [(1, 1, "promoted"), (2, 2, "promoted"), (3, 2, "rejected"), (2, 2, "unchanged")]
    evaluated = [e for e in events if e["action"] == "evaluate"]
    first, promoted, rejected = evaluated[0]["details"], evaluated[1]["details"], evaluated[2]["details"]
    assert first["champion"] is None and first["champion_score"] is None
    assert promoted["champion"] == "syn:v1" and promoted["champion_score"] == 0.0
    assert promoted["challenger_score"] == pytest.approx(better["challenger"]["scores"]["ic"])
    assert rejected["champion"] == "syn:v2" and rejected["challenger_score"] == 0.0
    assert rejected["champion_score"] == pytest.approx(worse["champion"]["scores"]["ic"])
    assert rejected["champion_score"] > 0.3
    assert rejected["holdout_rows"] == worse["holdout_rows"] and rejected["feedback_outcomes"] > 200
    assert "challenger syn:v3 ic=0 vs champion syn:v2 ic=" in evaluated[2]["reason"]
    assert "keep champion" in evaluated[2]["reason"]
    promote_row = next(e for e in events if e["action"] == "promote" and e["to_version"] == 2)
    assert "challenger syn:v2 ic=" in promote_row["reason"] and "vs champion syn:v1 ic=0" in promote_row["reason"]
    log = (in_tmp / "logs" / "retrain.log").read_text()
    assert log.count("retrain syn started") == 4 and "unchanged" in log


def test_monitor_resolves_the_traded_version_in_the_registry(in_tmp: Path) -> None:
    _project(in_tmp)
    _retrain("--config", "good.yaml", "--data", "bars.csv", "--promote-if-better")
    _live_run(in_tmp, "syn:v1")
    result = runner.invoke(app, ["monitor", "--run", "r1", "--json"])
    assert result.exit_code in (0, 3), result.stderr
    doc = json.loads(result.stdout)
    assert doc["model"]["model_id"] == "syn" and doc["model"]["version"] == 1
    assert doc["accuracy"]["run"]["n"] > 200 and doc["accuracy"]["holdout"]["mae"] is not None
    assert len(doc["drift"]["features"]) == 25
    # A registry whose files were tampered with is refused before anything is read.
    model_txt = next((in_tmp / "models" / "syn" / "v1").glob("model.txt"))
    model_txt.chmod(0o644)
    model_txt.write_text(model_txt.read_text() + "\n")
    result = runner.invoke(app, ["monitor", "--run", "r1", "--json"])
    assert result.exit_code == 1 and "sha256 mismatch" in result.stderr.lower()


def test_two_retrains_started_together(in_tmp: Path) -> None:
    _project(in_tmp)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "aitrader.cli.main", "retrain", "--name", "syn", "--config", "good.yaml", "--json"]
    procs = [subprocess.Popen(cmd, cwd=in_tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    codes = sorted(rc for rc, _, _ in outs)
    assert codes == [0, 4], outs
    loser = next(o for o in outs if o[0] == 4)
    assert loser[2].startswith("error: another retrain holds the lock logs/retrain.lock (pid ")
    assert "not started" in (in_tmp / "logs" / "retrain.log").read_text()


def test_if_alert_runs_when_the_last_monitor_check_alerted(in_tmp: Path) -> None:
    _project(in_tmp)
    alert = {"code": "mae_ratio", "message": "live MAE 1.5x", "value": 1.5, "threshold": 1.2}
    save_state({"run_id": "r1", "model": {"model_id": "syn"}, "health": "alert", "alerts": [alert]},
               in_tmp / "runs" / "r1" / "monitor_state.json")
    doc = _retrain("--config", "good.yaml", "--data", "bars.csv", "--if-alert")
    assert doc["status"] == "registered" and doc["challenger"]["model_id"] == "syn:v1"
    assert doc["logged"]["status"] == "registered"  # first model, but promotion was not asked for


# ------------------------------------------- fair scoring: rows neither model was trained on

# The in-sample champion case of issue 9: a champion trained with split.holdout 0.05 on data that
# reaches far into the challenger's holdout. An overfitting booster memorises its training rows.
CHAMPION_YAML = """
data: {path: champ.csv, symbol: SYN}
model: {kind: lightgbm, params: {n_estimators: 400, num_leaves: 63, min_child_samples: 2, n_jobs: 1}}
split: {n_folds: 2, embargo: 5, holdout: 0.05, min_train: 150}
"""
CHALLENGER_YAML = """
data: {path: bars.csv, symbol: SYN}
model: {kind: ridge}
split: {n_folds: 2, embargo: 5, holdout: 0.5, min_train: 150}
"""


def _in_sample_champion_project(root: Path) -> object:
    from aitrader.data.synthetic import generate_bars

    bars = generate_bars(1400, seed=2, signal=0.5)  # daily bars from 2020-01-01
    bars.iloc[:1100].to_csv(root / "champ.csv")
    bars.to_csv(root / "bars.csv")
    (root / "champ.yaml").write_text(CHAMPION_YAML)
    (root / "chall.yaml").write_text(CHALLENGER_YAML)
    return bars


def test_champion_is_never_scored_on_rows_it_was_trained_on(in_tmp: Path) -> None:
    import numpy as np
    import pandas as pd

    from aitrader.features import FeaturePipeline
    from aitrader.features.targets import forward_return
    from aitrader.registry import Registry

    bars = _in_sample_champion_project(in_tmp)
    first = _retrain("--config", "champ.yaml", "--promote-if-better")
    assert first["status"] == "promoted"
    doc = _retrain("--config", "chall.yaml", "--promote-if-better")

    # By hand: the default features warm up over 105 bars and the target is 5 bars ahead.
    # Champion: 1100 bars -> 1100 - 105 - 5 = 990 rows; holdout floor(0.05 * 990) = 49 rows, 5 purged,
    # so it trained on rows 0..935 = bars 105..1040 and its labels reach bar 1045.
    # Challenger: 1400 bars -> 1290 rows; holdout 645 rows = rows 645..1289 = bars 750..1394; it
    # trained on bars ..744 (labels to 749). Fair window: bars 1046..1394 = 349 rows.
    start = pd.Timestamp("2020-01-01")
    assert pd.Timestamp(doc["holdout"]["first"]) == start + pd.Timedelta(days=750)
    assert doc["scoring"]["first"] == (start + pd.Timedelta(days=1046)).isoformat() == "2022-11-12T00:00:00"
    assert doc["scoring"]["last"] == (start + pd.Timedelta(days=1394)).isoformat()
    assert doc["scoring"]["rows"] == doc["holdout_rows"] == 349
    champion = Registry().load("syn:v1").manifest
    assert champion["split"]["final_train_last"].startswith(str((start + pd.Timedelta(days=1040)).date()))

    # The old rule scored both on the whole challenger holdout, 290 rows of which the champion fit:
    # its IC there is inflated far above the challenger's and the challenger would have lost.
    loaded = Registry().load("syn:v1")
    feats = FeaturePipeline.from_contract(loaded.manifest["features"]).transform(bars)
    fwd = forward_return(bars["close"], 5)
    old = feats.index[750:1395]
    old_ic = np.corrcoef(loaded.runner.predict_batch(feats.loc[old].to_numpy()), fwd.loc[old])[0, 1]
    assert old_ic > doc["challenger"]["scores"]["ic"] + 0.2
    # On the fair window the challenger is better and is promoted.
    assert doc["champion"]["scores"]["ic"] < doc["challenger"]["scores"]["ic"]
    assert doc["status"] == "promoted" and doc["promoted"]
    assert "349 rows neither model was trained on" in doc["message"]

    # The deploy log's decision records the scoring window.
    events = json.loads(runner.invoke(app, ["history", "syn", "--json"]).stdout)["events"]
    details = [e for e in events if e["action"] == "evaluate"][-1]["details"]
    assert details["scoring_first"] == "2022-11-12T00:00:00" and details["scoring_rows"] == 349
    assert details["scoring_last"] == doc["scoring"]["last"] and details["min_scoring_rows"] == 100


def test_too_few_fair_rows_is_said_plainly_and_never_promotes(in_tmp: Path) -> None:
    from aitrader.registry import Registry

    _in_sample_champion_project(in_tmp)
    _retrain("--config", "champ.yaml", "--promote-if-better")
    doc = _retrain("--config", "chall.yaml", "--promote-if-better", "--min-scoring-rows", "350")
    assert doc["status"] == "insufficient" and not doc["promoted"]
    assert doc["decision"].startswith("not compared: only 349 of the challenger's 645 holdout rows lie after "
                                      "2022-11-11T00:00:00")
    assert "need at least 350 (--min-scoring-rows)" in doc["decision"]
    assert Registry().alias_target("syn", "production").version == 1
    events = json.loads(runner.invoke(app, ["history", "syn", "--json"]).stdout)["events"]
    last = [e for e in events if e["action"] == "evaluate"][-1]
    assert last["status"] == "rejected" and "not compared: only 349" in last["reason"]
    assert last["details"]["scoring_rows"] == 349 and last["details"]["min_scoring_rows"] == 350
    with pytest.raises(ConfigError, match="--min-scoring-rows must be a whole number >= 1, got 0"):
        retrain("syn", min_scoring_rows=0, lock_path=in_tmp / "l")


def test_last_seen_position_in_bar_positions_across_time_zones() -> None:
    import pandas as pd

    from aitrader.monitoring.retrain import last_seen_position, scoring_rows

    idx = pd.date_range("2020-01-01 09:30", periods=10, freq="1h", tz="America/New_York")
    # 12:30 New York is bar 3; a 2-bar label reaches bar 5.
    assert last_seen_position({"split": {"final_train_last": "2020-01-01T12:30:00-05:00"},
                               "target": {"horizon": 2}}, idx)[0] == 5
    # The same instant written in UTC; a stamp between bars counts from the bar at or before it.
    assert last_seen_position({"split": {"final_train_last": "2020-01-01T17:30:00+00:00"},
                               "target": {"horizon": 0}}, idx)[0] == 3
    assert last_seen_position({"split": {"final_train_last": "2020-01-01T17:59:00+00:00"},
                               "target": {"horizon": 0}}, idx)[0] == 3
    # An old manifest without final_train_last: everything up to data.last counts as seen.
    assert last_seen_position({"data": {"last": "2020-01-01T15:30:00-05:00"}, "target": {"horizon": 1}}, idx)[0] == 7
    mask, first = scoring_rows(idx, idx[4:], [
        {"split": {"final_train_last": idx[2].isoformat()}, "target": {"horizon": 1}},  # seen to bar 3
        {"split": {"final_train_last": idx[4].isoformat()}, "target": {"horizon": 2}},  # seen to bar 6
    ])
    assert first == 7 and mask.tolist() == [False, False, False, True, True, True]
