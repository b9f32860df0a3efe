"""scripts/retrain.sh for real: nightly and hourly modes in a temp project, every exit-code branch.

The wrapper runs the real `aitrader` command (this checkout's .venv) in a project folder of its own
(AITRADER_HOME): a tiny synthetic bars file, a fast train config, a registry under ./models and a
paper-trade-like run under ./runs. Exit codes checked: retrain 0 (done), 4 (lock held: the
script logs it and exits 0), 1 (error: the script exits 1 and says so on stderr); monitor 0
(healthy), 3 (alert: notify -> exit 3, retrain -> `retrain --if-alert`), 1 (error).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aitrader.monitoring.lock import FileLock

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "retrain.sh"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")

TRAIN_YAML = """
data: {path: bars.csv, symbol: SYN}
model: {kind: lightgbm, params: {n_estimators: 20, num_leaves: 7, n_jobs: 1}}
split: {n_folds: 2, embargo: 5, holdout: 0.25, min_train: 150}
onnx: {export: false}
"""
# The project's own thresholds: drift alerts need more live rows than this short run has, so
# "healthy" depends on accuracy and operations only (the PSI rules have their own tests).
TRADING_YAML = "monitoring: {drift_min_samples: 100000}\n"


def _aitrader_bin() -> str:
    exe = Path(sys.executable).parent / "aitrader"
    return str(exe) if exe.exists() else str(REPO / ".venv" / "bin" / "aitrader")


def _run(home: Path, mode: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "AITRADER_HOME": str(home), "AITRADER_BIN": _aitrader_bin(), "AITRADER_MODEL": "syn",
            "AITRADER_TRAIN_CONFIG": "train.yaml", "AITRADER_MIN_IMPROVEMENT": "0", **env}
    full.pop("AITRADER_REGISTRY", None)
    return subprocess.run([str(BASH), str(SCRIPT), mode], cwd=home, env=full, capture_output=True, text=True,
                          timeout=240)


def _cron_log(home: Path) -> list[str]:
    return (home / "logs" / "cron.log").read_text().splitlines()


def _write_run(home: Path, *, disabled: bool) -> None:
    """runs/r1: the production model's predictions on fresh bars with their realised outcomes."""
    from aitrader.data.synthetic import generate_bars
    from aitrader.features import FeaturePipeline
    from aitrader.features.targets import forward_return
    from aitrader.registry import Registry
    from tests.unit.test_monitoring_support import write_ledger

    shutil.rmtree(home / "runs", ignore_errors=True)
    loaded = Registry(home / "models").load("syn@production")
    bars = generate_bars(300, seed=9, signal=0.5)
    pipe = FeaturePipeline.from_contract(loaded.manifest["features"])
    x = pipe.transform(bars).to_numpy()[pipe.warmup:]
    fwd = forward_return(bars["close"], loaded.manifest["target"]["horizon"]).to_numpy()[pipe.warmup:]
    ok = np.isfinite(fwd)
    entry = {"model_id": loaded.info.name, "version": loaded.info.version, "digest": loaded.info.digest}
    events = [{"type": "ALERT", "reason": "model disabled after 5 consecutive errors"}] if disabled else []
    write_ledger(home / "runs" / "r1", {"x": x[ok], "pred": loaded.runner.predict_batch(x[ok]), "outcome": fwd[ok]},
                 model=entry, missing_outcomes=0, events=events)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aitrader.data.synthetic import generate_bars

    home = tmp_path_factory.mktemp("project")
    generate_bars(900, seed=1, signal=0.5).to_csv(home / "bars.csv")
    (home / "train.yaml").write_text(TRAIN_YAML)
    (home / "config").mkdir()
    (home / "config" / "ml_trading_config.yaml").write_text(TRADING_YAML)
    return home


def test_nightly_exit_codes(project: Path) -> None:
    # 0: the first model is trained, registered and promoted; the JSON goes to logs/retrain.jsonl.
    done = _run(project, "nightly")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""  # silent on success: cron mails nothing
    doc = json.loads((project / "logs" / "retrain.jsonl").read_text().splitlines()[-1])
    assert doc["status"] == "promoted" and doc["challenger"]["model_id"] == "syn:v1"
    assert _cron_log(project)[-1].endswith("retrain syn: done (see logs/retrain.log)")
    assert "retrain syn started" in (project / "logs" / "retrain.log").read_text()

    # 4: another retrain holds the lock -> logged, exit 0 (not worth a mail), nothing trained.
    with FileLock(project / "logs" / "retrain.lock"):
        held = _run(project, "nightly")
    assert held.returncode == 0, held.stderr
    assert _cron_log(project)[-1].endswith("retrain syn: another retrain holds the lock; skipped this time")
    assert "error: another retrain holds the lock" in held.stderr  # aitrader's own line, for the mail log

    # 1: a broken config -> the script fails loudly so cron mails it.
    failed = _run(project, "nightly", AITRADER_TRAIN_CONFIG="missing.yaml")
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: ") and "missing.yaml" in failed.stderr
    assert "aitrader retrain failed (1); see logs/retrain.log" in failed.stderr
    assert failed.stderr.count("missing.yaml") == 1  # the error once on stderr, the detail in retrain.log
    assert "retrain syn failed: config file not found: missing.yaml" in (project / "logs" / "retrain.log").read_text()
    assert _cron_log(project)[-1].endswith("retrain syn: FAILED with exit code 1")


def test_hourly_exit_codes(project: Path) -> None:
    if not (project / "models").is_dir():  # run alone: the nightly job creates the champion
        assert _run(project, "nightly").returncode == 0

    # 1: no paper-trade run to monitor yet.
    missing = _run(project, "hourly")
    assert missing.returncode == 1 and "aitrader monitor failed (1)" in missing.stderr
    assert "error: no runs found" in missing.stderr

    # 0: a healthy run; the JSON and the HTML report are kept for whoever looks next.
    _write_run(project, disabled=False)
    healthy = _run(project, "hourly")
    assert healthy.returncode == 0, healthy.stderr + (project / "logs" / "monitor_last.json").read_text()
    assert json.loads((project / "logs" / "monitor_last.json").read_text())["health"] == "ok"
    assert (project / "reports" / "monitor.html").is_file()
    assert _cron_log(project)[-1].endswith("monitor: healthy")

    # 3 with AITRADER_ON_ALERT=notify: the script exits 3 and prints where the report is.
    _write_run(project, disabled=True)
    notify = _run(project, "hourly", AITRADER_ON_ALERT="notify")
    assert notify.returncode == 3
    assert "aitrader monitor raised an alert; see" in notify.stderr and "reports/monitor.html" in notify.stderr
    last = json.loads((project / "logs" / "monitor_last.json").read_text())
    assert [a["code"] for a in last["alerts"]] == ["model_disabled"]

    # 3 with the default (retrain): `retrain --if-alert` runs; same data -> unchanged, exit 0.
    retrained = _run(project, "hourly")
    assert retrained.returncode == 0, retrained.stderr
    log = _cron_log(project)
    assert log[-2].endswith("monitor: ALERT (see logs/monitor_last.json, reports/monitor.html)")
    assert log[-1].endswith("retrain syn: done (see logs/retrain.log)")
    doc = json.loads((project / "logs" / "retrain.jsonl").read_text().splitlines()[-1])
    assert doc["status"] == "unchanged" and doc["version"] == "syn:v1"


def test_usage_error_exits_2(tmp_path: Path) -> None:
    result = _run(tmp_path, "weekly")
    assert result.returncode == 2 and "usage:" in result.stderr
