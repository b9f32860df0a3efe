"""Start-up cost: loading a deployed LightGBM model must not import scikit-learn or scipy (issue 11).

The registry builds an ONNX runner for a LightGBM artifact; before, ``aitrader.models.base`` imported
``sklearn.base`` at module level (0.7 s of the ~1.9 s start-up). Checked in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aitrader.config import TrainConfig
    from aitrader.data.synthetic import generate_bars
    from aitrader.registry import Registry
    from aitrader.training.trainer import train

    base = tmp_path_factory.mktemp("startup")
    bars = generate_bars(600, seed=5, signal=0.3)
    cfg = TrainConfig.model_validate({
        "data": {"symbol": "SYN"},
        "model": {"kind": "lightgbm", "params": {"n_estimators": 10, "num_threads": 1}},
        "split": {"n_folds": 2, "min_train": 200, "holdout": 0.2},
    })
    train(cfg, bars=bars, out_dir=base / "art")
    reg = Registry(base / "models")
    reg.register(base / "art", "syn_lgbm")
    return base / "models"


def _fresh(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_registry_load_of_a_lightgbm_model_imports_neither_sklearn_nor_scipy(registry: Path) -> None:
    doc = _fresh(
        f"""
        import json, sys
        import numpy as np
        from aitrader.registry import Registry
        loaded = Registry({str(registry)!r}).load("syn_lgbm")
        x = np.zeros(loaded.runner.n_features)
        value = loaded.runner.predict_one(x)
        heavy = [m for m in ("sklearn", "scipy", "lightgbm", "xgboost") if m in sys.modules]
        print(json.dumps({{"backend": loaded.runner.backend, "finite": bool(np.isfinite(value)), "heavy": heavy}}))
        """
    )
    assert doc == {"backend": "onnx", "finite": True, "heavy": []}


def test_models_base_imports_no_sklearn_and_keeps_the_estimator_contract() -> None:
    doc = _fresh(
        """
        import json, sys
        from aitrader.models.boosters import LightGBMModel
        m = LightGBMModel(task="classification", random_state=3, params={"n_estimators": 5})
        before = "sklearn" in sys.modules
        params = m.get_params()
        m.set_params(random_state=4)
        print(json.dumps({"before": before, "params": sorted(params), "rs": m.random_state, "repr": repr(m)}))
        """
    )
    assert doc["before"] is False
    assert doc["params"] == ["params", "random_state", "task"]
    assert doc["rs"] == 4
    assert doc["repr"] == "LightGBMModel(params={'n_estimators': 5}, random_state=4, task='classification')"


def test_sklearn_clone_still_works_on_a_model() -> None:
    from sklearn.base import clone

    from aitrader.models.sklearn_models import RidgeModel

    model = RidgeModel(task="regression", random_state=1, params={"alpha": 2.0})
    copy = clone(model)
    assert copy is not model
    assert copy.get_params() == {"task": "regression", "random_state": 1, "params": {"alpha": 2.0}}
    with pytest.raises(ValueError, match="invalid parameter 'alpah'"):
        model.set_params(alpah=1.0)
