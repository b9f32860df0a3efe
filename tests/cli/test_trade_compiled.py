"""paper-trade on compiled trees through the CLI: the same ledger as the native model, and as ONNX up to
float32 rounding (docs/trading.md, "Runner backends"). A real 20-tree LightGBM, deployed with --backend auto."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.trading.ledger import decoded_copy, ledger_content
from tests.model_world import deploy_small_model

runner = CliRunner()
CONFIG = """
ml_trading:
  models:
    - {{model_id: syn_lgbm, symbol: SYN, min_confidence: 0.6, position_size: 0.02}}
  errors: {{prediction_timeout_ms: 5000}}
  replay: {route}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from aitrader.data.synthetic import generate_bars
    from aitrader.registry import clear_cache

    base = tmp_path_factory.mktemp("trade_compiled")
    bars = generate_bars(1400, seed=3, signal=0.3)
    registry = deploy_small_model(base, bars, name="syn_lgbm", n_estimators=20)  # the suite's ONNX deploy
    clear_cache()
    deployed = runner.invoke(app, ["deploy", "--model-id", "syn_lgbm", "--backend", "auto", "--registry",
                                   str(registry), "--json"])
    assert deployed.exit_code == 0, deployed.stderr
    backend = json.loads(deployed.stdout)["checks"][-1]
    assert backend["name"] == "backend" and backend["detail"].startswith("lleaves: parity"), backend
    data = base / "SYN.csv"
    bars.iloc[900:].rename_axis("timestamp").to_csv(data)
    for route in ("batch", "streaming"):
        (base / f"{route}.yaml").write_text(CONFIG.format(route=route))
    return {"registry": registry, "data": data, "base": base}


def trade(world: dict[str, Path], run_id: str, backend: str, route: str = "batch") -> dict:
    args = ["paper-trade", "--config", str(world["base"] / f"{route}.yaml"), "--registry", str(world["registry"]),
            "--data", str(world["data"]), "--runs-dir", str(world["base"] / "runs"), "--run-id", run_id,
            "--backend", backend, "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def ledger(world: dict[str, Path], run_id: str) -> Path:
    return world["base"] / "runs" / run_id / "ledger.db"


def predictions(world: dict[str, Path], run_id: str) -> np.ndarray:
    conn = decoded_copy(ledger(world, run_id))
    try:
        return np.array([r[0] for r in conn.execute("SELECT prediction FROM predictions ORDER BY id")])
    finally:
        conn.close()


def test_compiled_ledger_equals_the_native_ledger_on_both_routes(world: dict[str, Path]) -> None:
    compiled = trade(world, "compiled", "auto")
    native = trade(world, "native", "native")
    streamed = trade(world, "compiled-streaming", "compiled", "streaming")
    assert compiled["runners"] == {"syn_lgbm:v1": "lleaves"} and native["runners"] == {"syn_lgbm:v1": "lightgbm"}
    assert streamed["runners"] == {"syn_lgbm:v1": "lleaves"}
    assert compiled["predictions"] > 300 and compiled["fills"] > 0
    # Native LightGBM is the oracle: the compiled trees give the same doubles, so the same ledger.
    assert ledger_content(ledger(world, "compiled")) == ledger_content(ledger(world, "native"))
    # predict_one (streaming) and predict_batch (the replay's batch route) share one entry point; the
    # two runs differ only in the recorded config (ml_trading.replay).
    streaming, batch = ledger_content(ledger(world, "compiled-streaming")), ledger_content(ledger(world, "compiled"))
    assert streaming.keys() == batch.keys() and "predictions" in batch
    assert {k: v for k, v in streaming.items() if k != "meta"} == {k: v for k, v in batch.items() if k != "meta"}


def test_compiled_and_onnx_ledgers_differ_only_by_float32_rounding(world: dict[str, Path]) -> None:
    compiled = trade(world, "c2", "compiled")
    onnx = trade(world, "o2", "onnx")
    assert onnx["runners"] == {"syn_lgbm:v1": "onnx"}
    a, b = predictions(world, "c2"), predictions(world, "o2")
    assert a.shape == b.shape and a.size > 300
    manifest = json.loads(next((world["registry"] / "syn_lgbm").glob("v1/manifest.json")).read_text())
    tol_abs = manifest["onnx"]["tolerance_abs"]  # the trainer's ONNX parity bound on the holdout
    assert np.max(np.abs(a - b)) <= tol_abs
    assert np.any(a != b)  # ONNX runs in float32: not the same doubles
    # No prediction of this replay lies within that rounding of a decision threshold, so the trades agree.
    fills_a, fills_b = ledger_content(ledger(world, "c2"))["fills"], ledger_content(ledger(world, "o2"))["fills"]
    assert fills_a == fills_b and compiled["final_equity"] == onnx["final_equity"]


def test_unknown_backend_is_a_usage_error_line(world: dict[str, Path]) -> None:
    result = runner.invoke(app, ["paper-trade", "--config", str(world["base"] / "batch.yaml"), "--registry",
                                 str(world["registry"]), "--data", str(world["data"]), "--backend", "gpu",
                                 "--runs-dir", str(world["base"] / "runs")])
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: unknown --backend 'gpu' (or $AITRADER_BACKEND); expected one of auto, "
                                     "compiled, onnx, native")
