"""`aitrader monitor` through the CLI: exit codes 0/3/1, JSON output, the HTML report, the state file."""

from __future__ import annotations

import base64
import json
import os
import re
import struct
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from aitrader.cli.main import app
from tests.unit.test_monitoring_support import manifest_for, market, write_ledger

runner = CliRunner()


def setup_run(root: Path, **kw: object) -> Path:
    """runs/r1 with a ledger, and art/manifest.json with the training baseline."""
    art = root / "art"
    art.mkdir()
    (art / "manifest.json").write_text(json.dumps(manifest_for(market(3000, seed=0))))
    write_ledger(root / "runs" / "r1", kw.pop("live", market(1500, seed=7)), **kw)  # type: ignore[arg-type]
    return art


def test_healthy_run_exits_0_with_json(in_tmp: Path) -> None:
    setup_run(in_tmp)
    result = runner.invoke(app, ["monitor", "--latest", "--manifest", "art", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["health"] == "ok" and doc["alerts"] == []
    assert doc["run_id"] == "r1"
    assert doc["accuracy"]["window_size"] == 100
    assert {"features", "prediction", "top"} <= set(doc["drift"])
    state = json.loads((in_tmp / "runs" / "r1" / "monitor_state.json").read_text())
    assert state["health"] == "ok" and state["run_id"] == "r1"


def test_drifted_run_exits_3_and_state_records_alerts(in_tmp: Path) -> None:
    setup_run(in_tmp, live=market(1500, seed=7, vol=0.04))  # a volatility regime the model reacts to
    result = runner.invoke(app, ["monitor", "--run", "r1", "--manifest", "art", "--json", "--window", "50"])
    assert result.exit_code == 3, result.stderr
    doc = json.loads(result.stdout)
    assert doc["accuracy"]["window_size"] == 50
    assert [a["code"] for a in doc["alerts"]] == ["mae_ratio", "psi_prediction", "feature_drift"]
    state = json.loads((in_tmp / "runs" / "r1" / "monitor_state.json").read_text())
    assert state["health"] == "alert"
    assert {f["feature"] for f in state["alerts"][2]["features"]} == {"volatility_20", "ret_1"}


def test_feature_drift_alone_exits_0_with_a_warning(in_tmp: Path) -> None:
    setup_run(in_tmp, live=market(1500, seed=7, volume_scale=10.0))
    result = runner.invoke(app, ["monitor", "--run", "r1", "--manifest", "art", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["alerts"] == [] and [w["code"] for w in doc["warnings"]] == ["feature_drift"]


def test_human_output_names_the_alert(in_tmp: Path) -> None:
    live = market(1500, seed=7)
    setup_run(in_tmp, live=live, pred=np.random.default_rng(1).permutation(live["pred"]))
    result = runner.invoke(app, ["monitor", "--manifest", "art"])
    assert result.exit_code == 3
    assert "ALERT mae_ratio" in result.stdout
    assert "Accuracy" in result.stdout and "Drift" in result.stdout
    assert "1 alert(s): mae_ratio" in result.stdout


def test_alert_count_and_lines_agree() -> None:
    from aitrader.cli.monitor import _alert_count, _alert_lines

    def alert(code: str, feature: str | None = None, value: float = 0.5) -> dict:
        a = {"code": code, "message": f"{code} {feature}", "value": value, "threshold": 0.2}
        return a | {"feature": feature} if feature else a

    drifted = [alert("psi_feature", f"f{i}", 3.0 - i / 10) for i in range(18)]
    alerts = [alert("mae_ratio"), alert("hit_rate"), *drifted, alert("psi_prediction")]
    assert _alert_count(alerts) == "21 alert(s): mae_ratio, hit_rate, psi_feature x18, psi_prediction"
    lines = _alert_lines(alerts)
    assert [line.split(":")[0] for line in lines] == ["mae_ratio", "hit_rate", "psi_feature x18", "psi_prediction"]
    assert "18 features drifted past PSI 0.2: f0 3.00, f1 2.90, f2 2.80, f3 2.70, f4 2.60, and 13 more" in lines[2]
    few = [alert("psi_feature", "a"), alert("psi_feature", "b")]  # a few drifted features: one line each
    assert _alert_lines(few) == ["psi_feature: psi_feature a", "psi_feature: psi_feature b"]
    assert _alert_count(few) == "2 alert(s): psi_feature x2"


def test_errors_exit_1(in_tmp: Path) -> None:
    result = runner.invoke(app, ["monitor", "--latest", "--manifest", "art"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no runs found under runs/")
    setup_run(in_tmp)
    result = runner.invoke(app, ["monitor", "--run", "nope", "--manifest", "art"])
    assert result.exit_code == 1 and "run 'nope' not found" in result.stderr
    result = runner.invoke(app, ["monitor", "--run", "r1", "--latest", "--manifest", "art"])
    assert result.exit_code == 1 and "either --run RUN_ID or --latest" in result.stderr
    result = runner.invoke(app, ["monitor", "--manifest", "missing"])
    assert result.exit_code == 1 and "cannot read manifest missing: No such file" in result.stderr
    result = runner.invoke(app, ["monitor", "--registry", "emptyreg"])
    assert result.exit_code == 1 and result.stderr.startswith("error: ")
    assert result.stdout == ""


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_is_self_contained_with_valid_pngs(in_tmp: Path) -> None:
    setup_run(in_tmp, events=[{"type": "ML_ERROR", "reason": "timeout"}])
    result = runner.invoke(app, ["monitor", "--manifest", "art", "--report", "out/report.html", "--json"])
    assert result.exit_code == 0, result.stderr
    path = in_tmp / "out" / "report.html"
    assert json.loads(result.stdout)["report"] == "out/report.html"
    page = path.read_text()
    images = re.findall(r'<img alt="(\w+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # the tearsheet: no bars recorded for this hand-built run (no price chart), no importance in the manifest
    assert [name for name, _ in images] == ["equity", "drawdown", "monthly", "rolling", "scatter", "drift"]
    assert 'id="missing-trades"' in page and 'id="missing-importance"' in page
    for _, b64 in images:
        w, h = _png_size(base64.b64decode(b64))
        assert 200 < w < 2000 and 150 < h < 2000
    assert "log_volume" in page and "timeout" in page and "Monitor: " in page
    assert not list((in_tmp / "out").glob(".*tmp"))  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_monitor_writes_its_state_beside_the_run_not_into_the_cwd(in_tmp: Path) -> None:
    # issue 12: everything a command writes goes under the folders it was given
    setup_run(in_tmp)
    (in_tmp / "runs").rename(in_tmp / "elsewhere")
    result = runner.invoke(app, ["monitor", "--latest", "--runs-dir", "elsewhere", "--manifest", "art", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["state"] == str(Path("elsewhere") / "r1" / "monitor_state.json")
    assert (in_tmp / "elsewhere" / "r1" / "monitor_state.json").is_file()
    assert not (in_tmp / "logs").exists()


def test_latest_state_picks_the_newest_check_of_the_named_model(tmp_path: Path) -> None:
    from aitrader.monitoring.check import latest_state

    for run, model, when in (("a", "syn:v1", "2026-01-02T00:00:00+00:00"), ("b", "syn:v2", "2026-01-03T00:00:00+00:00"),
                             ("c", "other:v1", "2026-01-04T00:00:00+00:00")):
        (tmp_path / run).mkdir()
        (tmp_path / run / "monitor_state.json").write_text(json.dumps(
            {"checked_at": when, "run_id": run, "model": {"model_id": model}, "health": "ok", "alerts": []}))
    path, state = latest_state(tmp_path, "syn")
    assert path == tmp_path / "b" / "monitor_state.json" and state is not None and state["run_id"] == "b"
    assert latest_state(tmp_path, "nothing") == (None, None)
