"""Real bars (../shared/data): ONNX parity and runner agreement on returns-sized features.

Return-sized inputs (~1e-3) and predictions are where float32 ONNX graphs and naive relative
differences go wrong, so the parity tolerance is checked on them, not only on synthetic data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aitrader.models import MODEL_KINDS, create_model
from aitrader.models.onnx import export_onnx, onnx_parity
from aitrader.models.runner import ModelRunner

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def spy(shared_data) -> tuple[pd.DataFrame, pd.Series]:
    bars = pd.read_csv(shared_data / "equity_1h" / "SPY.csv.gz").tail(8000)
    close, volume = bars["close"].astype(float), bars["volume"].astype(float)
    logc = np.log(close)
    feats = pd.DataFrame(
        {
            "ret_1": logc.diff(1),
            "ret_7": logc.diff(7),
            "ret_35": logc.diff(35),
            "vol_35": logc.diff().rolling(35).std(),
            "range_1": (bars["high"] - bars["low"]) / close,
            "volume_z": (volume - volume.rolling(35).mean()) / volume.rolling(35).std(),
        }
    )
    fwd = (logc.shift(-7) - logc).rename("fwd_return_7")
    ok = feats.notna().all(axis=1) & fwd.notna()
    return feats[ok].reset_index(drop=True), fwd[ok].reset_index(drop=True)


@pytest.mark.parametrize("task", ["regression", "classification"])
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_parity_and_runner_on_real_returns(spy, kind, task, tmp_path):
    X, y = spy
    if task == "classification":
        y = (y > 0).astype(int)
    split = int(len(X) * 0.8)
    params = {"n_estimators": 60} if kind != "ridge" else None
    model = create_model(kind, task=task, params=params).fit(X.iloc[:split], y.iloc[:split])
    meta = model.save(tmp_path)
    export_onnx(model, tmp_path / "model.onnx")
    meta["files"]["onnx"] = "model.onnx"
    holdout = X.iloc[split:]
    parity = onnx_parity(model, tmp_path / "model.onnx", holdout)  # raises above 1e-3
    assert parity["max_rel_diff"] < 1e-3
    runner = ModelRunner.from_artifact(tmp_path, {"model": meta, "features": {"names": list(X.columns)}})
    assert runner.backend == "onnx"
    ref = model.predict_score(holdout)
    np.testing.assert_allclose(runner.predict_batch(holdout), ref, rtol=1e-3, atol=1e-3 * float(np.std(ref)))
