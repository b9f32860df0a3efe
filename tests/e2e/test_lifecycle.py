"""The whole lifecycle through the installed `aitrader` command, as a user runs it.

train -> register -> deploy -> paper-trade -> monitor -> retrain, on the built-in sample, in a
fresh working directory, each step a real subprocess with its exit code and JSON checked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

AITRADER = shutil.which("aitrader", path=str(Path(sys.executable).parent)) or "aitrader"

FAST_TRAIN = """\
data: {path: null, symbol: AAPL}
target: {horizon: 5, task: regression}
model:
  kind: lightgbm
  params: {n_estimators: 60}
  random_state: 7
split: {n_folds: 3, embargo: 5, holdout: 0.2, min_train: 250}
"""


def run(*args: str, cwd: Path, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AITRADER_REGISTRY": str(cwd / "models"), "NO_COLOR": "1"}
    proc = subprocess.run([AITRADER, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode in ok, f"aitrader {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def as_json(proc: subprocess.CompletedProcess[str]) -> dict:
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_lifecycle_on_the_sample(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "train.yaml").write_text(FAST_TRAIN)

    trained = as_json(run("train", "--out", "art/aapl", "--json", cwd=tmp_path))
    assert (tmp_path / "art" / "aapl" / "manifest.json").is_file()
    assert (tmp_path / "art" / "aapl" / "model.onnx").is_file()
    assert "holdout" in json.dumps(trained)

    reg = as_json(run("register", "art/aapl", "--name", "aapl_lgbm", "--json", cwd=tmp_path))
    assert "aapl_lgbm:v1" in json.dumps(reg)
    again = as_json(run("register", "art/aapl", "--name", "aapl_lgbm", "--json", cwd=tmp_path))
    assert "aapl_lgbm:v1" in json.dumps(again), "same digest must return the existing version"

    run("deploy", "--model-id", "aapl_lgbm", "--json", cwd=tmp_path)
    listed = run("list", "--json", cwd=tmp_path).stdout
    assert "production" in listed
    run("verify", "--json", cwd=tmp_path)

    summary = as_json(run("paper-trade", "--run-id", "e2e", "--speed", "0", "--json", cwd=tmp_path))
    assert summary["run_id"] == "e2e"
    assert summary["bars"] > 100
    assert (tmp_path / "runs" / "e2e" / "ledger.db").is_file()

    status = as_json(run("status", "e2e", "--json", cwd=tmp_path))
    assert status["run_id"] == "e2e"
    fills_csv = run("export", "e2e", "fills", cwd=tmp_path).stdout
    assert fills_csv.splitlines()[0].startswith(("timestamp", "ts", "id"))

    mon = run("monitor", "--run", "e2e", "--report", "report.html", "--json", cwd=tmp_path, ok=(0, 3))
    doc = json.loads(mon.stdout)
    assert "alerts" in doc
    assert (tmp_path / "report.html").is_file()

    history = run("history", "aapl_lgbm", "--json", cwd=tmp_path).stdout
    assert "production" in history

    # Tamper with a registered file: verify and deploy refuse, with exit 1 and one line.
    model_file = next((tmp_path / "models" / "aapl_lgbm" / "v1").glob("model.*"))
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    bad = run("verify", cwd=tmp_path, ok=(1,))
    assert "model." in bad.stdout + bad.stderr
    refused = run("deploy", "--model-id", "aapl_lgbm:v1", cwd=tmp_path, ok=(1,))
    assert refused.stderr.startswith("error: ") and "sha256" in refused.stderr.lower()
