"""A model with fitted features (vol_regime, hmm_regime_p, anomaly_score): train -> register -> deploy ->
paper-trade, where the paper-trade's streaming features give the predictions that the batch features of
the same bars give; and a tampered fitted-parameters file is refused by its hash before anything loads."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.config import TrainConfig, build_model, load_trading_config
from aitrader.data import load_bars, write_bars
from aitrader.features import FeaturePipeline
from aitrader.features.fitted import FITTED_FILE
from aitrader.training.backtest import replay_frame
from aitrader.training.trainer import train
from tests.unit.test_features_fitted import regime_bars

FEATURES = ["ret_1", "ret_5", "rsi_14", "volume_zscore_20", "liquidity_shock_20", "vol_regime", "hmm_regime_p",
            "anomaly_score"]
TRADING = """\
ml_trading:
  models:
    - {model_id: syn, symbol: SYN, min_confidence: 0.3, position_size: 0.05}
  errors: {prediction_timeout_ms: 1000000}
"""


def cli(*args: str, env: dict[str, str], code: int = 0) -> tuple[str, str]:
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == code, f"aitrader {' '.join(args)} -> {result.exit_code}\n{result.output}"
    return result.stdout, result.stderr


def test_fitted_features_train_deploy_paper_trade_and_refuse_tampering(tmp_path: Path) -> None:
    write_bars(regime_bars(1100, seed=8), tmp_path / "SYN.csv")
    bars = load_bars(tmp_path / "SYN.csv")
    (tmp_path / "trading.yaml").write_text(TRADING)
    cfg = build_model(TrainConfig, {"features": {"names": FEATURES}, "target": {"horizon": 3},
                                    "model": {"kind": "lightgbm", "params": {"n_estimators": 30, "num_threads": 1}},
                                    "split": {"n_folds": 2, "min_train": 300}})
    result = train(cfg, bars=bars, out_dir=tmp_path / "art", trading=load_trading_config(tmp_path / "trading.yaml"))
    contract = result.manifest["features"]
    assert contract["fitted"]["features"] == ["vol_regime", "hmm_regime_p", "anomaly_score"]
    assert (tmp_path / "art" / FITTED_FILE).is_file()
    # The float32 ONNX model reproduces the native one: hmm_regime_p's 6 decimals keep its splits apart.
    assert result.manifest["onnx"]["file"] == "model.onnx", result.manifest["onnx"]
    # The training distribution of the regimes is in the baseline (the monitor's regime-shift alert).
    assert set(result.manifest["baseline"]["regimes"]) == {"vol_regime", "hmm_regime_p"}

    env = {"AITRADER_REGISTRY": str(tmp_path / "reg"), "NO_COLOR": "1"}
    cli("register", str(tmp_path / "art"), "--name", "syn", env=env)
    cli("deploy", "--model-id", "syn", env=env)
    frame = replay_frame(bars, pd.Timestamp(result.manifest["split"]["holdout_first"]), contract["warmup"])
    write_bars(frame, tmp_path / "holdout.csv")
    runs = str(tmp_path / "runs")
    out, _ = cli("paper-trade", "--config", str(tmp_path / "trading.yaml"), "--data", f"SYN={tmp_path / 'holdout.csv'}",
                 "--runs-dir", runs, "--run-id", "r", "--speed", "0", "--json", env=env)
    summary = json.loads(out)
    assert summary["status"] == "finished" and summary["predictions"] > 100
    out, _ = cli("export", "r", "predictions", "--runs-dir", runs, env=env)
    paper = pd.read_csv(io.StringIO(out))

    # Oracle: the registered model, its pipeline from the contract and its artifact, in batch over the same bars.
    from aitrader.registry import Registry

    reg = Registry(tmp_path / "reg")
    try:
        loaded = reg.load("syn")
    finally:
        reg.close()
    pipeline = FeaturePipeline.from_contract(loaded.manifest["features"], folder=loaded.path)
    replayed = load_bars(tmp_path / "holdout.csv")
    batch = pipeline.transform(replayed)
    stream = pipeline.transform_streaming(replayed)
    assert np.nanmax(np.abs(batch.to_numpy() - stream.to_numpy())) <= 1e-7
    assert np.array_equal(batch.isna().to_numpy(), stream.isna().to_numpy())
    ready = batch.notna().all(axis=1).to_numpy()
    want = pd.Series(loaded.runner.predict_batch(batch.to_numpy()[ready]), index=batch.index[ready])
    pred_col = next(c for c in ("prediction", "value", "pred") if c in paper.columns)
    got = pd.Series(paper[pred_col].to_numpy(), index=pd.DatetimeIndex(pd.to_datetime(paper["ts"])))
    if got.index.tz is not None and want.index.tz is None:
        got.index = got.index.tz_localize(None)
    common = want.index.intersection(got.index)
    assert len(common) == len(got) > 100
    np.testing.assert_allclose(got.loc[common].to_numpy(), want.loc[common].to_numpy(), rtol=1e-6, atol=1e-9)
    # The feature rows paper-trade streamed (the ledger records them as float32 with each prediction)
    # equal the batch rows to float32 precision (one unit in the last place).
    streamed = np.array([json.loads(f) for f in paper["features"]], dtype=np.float64)
    assert streamed.shape == (len(got), len(FEATURES))
    np.testing.assert_allclose(streamed, batch.loc[got.index].to_numpy(), rtol=1.2e-7, atol=1e-30)

    # `aitrader serve` loads the same model with its fitted parameters (it rebuilt the pipeline from the
    # bare contract before, which refuses fitted features): its pipeline gives the batch oracle's rows.
    from aitrader.serve.models import load_served

    served = load_served(tmp_path / "reg", "syn")
    assert served.names == FEATURES and served.model_id == loaded.info.model_id
    np.testing.assert_array_equal(served.pipeline.transform(replayed).to_numpy(), batch.to_numpy())

    # Tamper with the registered fitted parameters: refused by hash before the model or pipeline loads.
    params = loaded.path / FITTED_FILE
    os.chmod(params, 0o644)
    params.write_bytes(params.read_bytes().replace(b'"edges":[', b'"edges":[0.0,', 1))
    _, err = cli("paper-trade", "--config", str(tmp_path / "trading.yaml"), "--data",
                 f"SYN={tmp_path / 'holdout.csv'}", "--runs-dir", runs, "--run-id", "r2", "--speed", "0", env=env,
                 code=1)
    assert err.startswith("error: ") and FITTED_FILE in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "r2" / "ledger.db").exists()
