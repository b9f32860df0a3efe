"""ONNX export, the inference-only OnnxModel adapter and parity measurement."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from aitrader.errors import ModelError
from aitrader.models import MODEL_KINDS, create_model, load_model
from aitrader.models.onnx import OnnxModel, export_checked, export_onnx, onnx_parity, parity_scale
from aitrader.models.runner import ModelRunner
from tests.unit.test_models import FAST, make_data, target

TASKS = ("regression", "classification")


@pytest.fixture(scope="module")
def data():
    return make_data(n=600)


@pytest.fixture(scope="module", params=[(k, t) for k in MODEL_KINDS for t in TASKS], ids=lambda p: f"{p[0]}-{p[1]}")
def exported(request, data, tmp_path_factory):
    kind, task = request.param
    X, y = data
    model = create_model(kind, task=task, params=FAST[kind]).fit(X.iloc[:450], target(y, task).iloc[:450])
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return model, path


def test_parity_within_tolerance_on_holdout(exported, data):
    model, path = exported
    holdout = data[0].iloc[450:]
    parity = onnx_parity(model, path, holdout)
    assert set(parity) == {"max_abs_diff", "max_rel_diff", "scale", "tolerance_rel", "tolerance_abs", "rows",
                           "rows_off"}
    assert 0 <= parity["max_rel_diff"] < 1e-4  # float32 graph vs float64 native
    assert 0 <= parity["max_abs_diff"] < 1e-5
    assert parity["rows"] == len(holdout) and parity["rows_off"] == 0
    q1, q3 = np.percentile(model.predict_score(holdout), [25, 75])
    assert parity["scale"] == pytest.approx(q3 - q1)  # the spread of the native predictions
    assert parity["tolerance_abs"] == pytest.approx(1e-3 * (q3 - q1))
    assert set(onnx_parity(model, path, holdout, tolerance=None)) == {"max_abs_diff", "max_rel_diff", "scale"}


def test_onnx_model_adapter(exported, data):
    model, path = exported
    X = data[0].iloc[450:]
    onnx_model = OnnxModel(path)
    assert onnx_model.task == model.task
    assert list(onnx_model.feature_names_in_) == list(model.feature_names_in_)
    np.testing.assert_allclose(onnx_model.predict_score(X), model.predict_score(X), rtol=1e-4, atol=1e-6)
    if model.task == "classification":
        assert onnx_model.predict_proba(X).shape == (len(X), 2)
        agree = (onnx_model.predict(X) == model.predict(X)).mean()
        assert agree > 0.99
    with pytest.raises(ModelError, match="inference-only"):
        onnx_model.fit(X, X.iloc[:, 0])
    with pytest.raises(ModelError, match="expected 6 features, got 3"):
        onnx_model.predict(X.to_numpy()[:, :3])
    info = onnx_model.info()
    assert info["kind"] == "onnx" and info["features"] == list(model.feature_names_in_)


def test_onnx_importance_counts_tree_splits(exported):
    model, path = exported
    onnx_model = OnnxModel(path)
    if model.kind == "ridge":
        with pytest.raises(ModelError, match="only available for tree-ensemble"):
            onnx_model.feature_importance()
        return
    imp = onnx_model.feature_importance()
    assert list(imp) == list(model.feature_names_in_)
    assert sum(imp.values()) > 0


def test_export_is_deterministic(exported, tmp_path):
    model, path = exported
    again = export_onnx(model, tmp_path / "model.onnx")
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(path.read_bytes()).digest()


def test_parity_fails_above_tolerance(exported, data):
    model, path = exported
    with pytest.raises(ModelError, match=r"max_rel_diff .* > tolerance 1e-12 \(max_abs_diff"):
        onnx_parity(model, path, data[0].iloc[450:], tolerance=1e-12)


def test_parity_with_a_given_reference(exported, data):
    model, path = exported
    holdout = data[0].iloc[450:]
    native = model.predict_score(holdout)
    assert onnx_parity(model, path, holdout, reference=native) == onnx_parity(model, path, holdout)
    with pytest.raises(ModelError, match="disagrees with the native model"):
        onnx_parity(model, path, holdout, reference=native + 1.0)  # a reference from another model
    with pytest.raises(ModelError, match="reference has 3 values for 150 rows"):
        onnx_parity(model, path, holdout, reference=native[:3])


def test_parity_detects_a_different_model(data, tmp_path):
    X, y = data
    a = create_model("lightgbm", params=FAST["lightgbm"]).fit(X, y)
    b = create_model("lightgbm", random_state=3, params={"n_estimators": 5}).fit(X, y)
    path = export_onnx(b, tmp_path / "model.onnx")
    with pytest.raises(ModelError, match="disagrees with the native model"):
        onnx_parity(a, path, X)


def test_boosters_with_missing_values_keep_parity(data, tmp_path):
    X, y = data
    Xn = X.copy()
    Xn.iloc[::5, 1] = np.nan
    for kind in ("lightgbm", "xgboost"):
        model = create_model(kind, params=FAST[kind]).fit(Xn, y)
        path = export_onnx(model, tmp_path / f"{kind}.onnx")
        assert onnx_parity(model, path, Xn)["max_rel_diff"] < 1e-4


def test_export_unfitted_and_bad_file(tmp_path):
    with pytest.raises(ModelError, match="call fit"):
        export_onnx(create_model("ridge"), tmp_path / "model.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="cannot load ONNX model"):
        OnnxModel(bad)


def test_parity_scale_is_the_spread_of_the_predictions_with_floors():
    # returns-sized predictions: their interquartile range (linear quantiles: 1e-3 and 3e-3), not |a|
    assert parity_scale(np.array([0.0, 1e-3, 2e-3, 3e-3, 4e-3])) == pytest.approx(2e-3)
    # more than half equal: IQR 0, the standard deviation of [5, 5, 5, 5, 6] is 0.4
    assert parity_scale(np.array([5.0, 5.0, 5.0, 5.0, 6.0])) == pytest.approx(0.4)
    # clustered far from zero: 1e-3 of the largest |prediction| (float32 keeps ~7 digits)
    assert parity_scale(np.array([0.52, 0.52 + 1e-9, 0.52 + 2e-9])) == pytest.approx(5.2e-4)
    # no spread and ~zero: the absolute floor in target units
    assert parity_scale(np.zeros(3)) == 1e-6
    assert parity_scale(np.array([1e-8, 2e-8, 3e-8])) == 1e-6
    assert parity_scale(np.array([np.nan])) == 1e-6


def clustered(step: float, n: int = 2000, seed: int = 0):
    """A price-like level moving by +-``step`` (near 1.1), two noise features, a 1e-5-scale target.

    Predictions are small and tightly clustered (IQR ~3e-6). With ``step=1e-9`` the level's distinct
    float64 values collapse in float32 (resolution ~1.2e-7 at 1.1), so the ONNX graph, fed float32,
    sends rows down the other side of LightGBM's split thresholds: the mechanism behind hourly EURUSD
    failing parity. With ``step=1e-4`` float32 keeps them apart and only harmless rounding is left.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    level = 1.1 + np.cumsum(rng.choice([-1.0, 1.0], n)) * step
    X = pd.DataFrame({"level": level, "a": rng.standard_normal(n), "b": rng.standard_normal(n)})
    z = (level - level.mean()) / level.std()
    y = 1e-5 * (np.tanh(z) + 0.3 * X["a"].to_numpy() + 0.1 * rng.standard_normal(n))
    model = create_model("lightgbm", params={"n_estimators": 50}).fit(X.iloc[:1500], y[:1500])
    return model, X.iloc[1500:]


def test_tiny_clustered_predictions_keep_onnx_when_only_rounding_differs(tmp_path):
    model, holdout = clustered(step=1e-4)
    meta = export_checked(model, tmp_path, holdout)
    assert meta["file"] == "model.onnx" and (tmp_path / "model.onnx").is_file() and "warning" not in meta
    assert meta["rows_off"] == 0 and meta["rows"] == 500
    assert meta["scale"] < 1e-5  # the predictions' own spread, not a fixed unit
    assert meta["max_rel_diff"] < 1e-4 and meta["max_abs_diff"] <= meta["tolerance_abs"]


def test_an_export_that_cannot_match_is_dropped_instead_of_failing(tmp_path):
    model, holdout = clustered(step=1e-9)
    with pytest.raises(ModelError, match=r"disagrees with the native model: max_rel_diff .* rows"):
        onnx_parity(model, export_onnx(model, tmp_path / "probe.onnx"), holdout)
    meta = export_checked(model, tmp_path, holdout)
    assert meta["file"] is None and meta["fallback"] == "native"
    assert not (tmp_path / "model.onnx").exists()
    assert meta["max_rel_diff"] > 1e-3 and meta["rows_off"] > 0  # measured and recorded
    assert meta["warning"].startswith(
        f"ONNX export of the lightgbm model differs from the native model on {meta['rows_off']} of 500 holdout rows")
    assert "model.onnx dropped, the artifact runs on the native model" in meta["warning"]


def test_a_converter_or_runtime_failure_is_dropped_too(tmp_path, monkeypatch):
    import aitrader.models.onnx as onnx_module

    model, holdout = clustered(step=1e-4)

    def broken(model):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(onnx_module, "_convert", broken)
    meta = export_checked(model, tmp_path, holdout)
    assert meta["file"] is None and meta["fallback"] == "native" and not (tmp_path / "model.onnx").exists()
    assert "failed: RuntimeError: unsupported operator" in meta["warning"]

    def crashing_runtime(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION")

    monkeypatch.undo()
    monkeypatch.setattr(onnx_module.OnnxModel, "_predict_native", crashing_runtime)
    meta = export_checked(model, tmp_path, holdout)
    assert meta["file"] is None and not (tmp_path / "model.onnx").exists()
    assert "failed: RuntimeError: [ONNXRuntimeError]" in meta["warning"]


def test_onnx_only_artifact_round_trip(exported, data, tmp_path):
    model, path = exported
    X = data[0].iloc[450:]
    meta = OnnxModel(path).save(tmp_path)
    assert meta["kind"] == "onnx" and meta["files"] == {"native": "model.onnx"} and not meta["pickle_based"]
    loaded = load_model(tmp_path, meta)
    np.testing.assert_array_equal(loaded.predict_score(X), OnnxModel(path).predict_score(X))
    runner = ModelRunner.from_artifact(tmp_path, {"model": meta}, prefer="native")
    assert runner.backend == "onnx"
    np.testing.assert_allclose(runner.predict_batch(X), model.predict_score(X), rtol=1e-4, atol=1e-7)
    with pytest.raises(ModelError, match="'onnx' models are inference-only"):
        create_model("onnx")


# Exports every kind and task in a child process and prints one sha256 per export. The converters
# collect opset imports in a set, whose order follows PYTHONHASHSEED: under seeds 0 and 20
# LightGBM's ('', 8) / ('ai.onnx.ml', 1) pair came out in both orders before export_onnx sorted it.
_EXPORT_ALL = """
import hashlib, sys, tempfile
from pathlib import Path
from aitrader.models import MODEL_KINDS, create_model
from aitrader.models.onnx import export_onnx
from tests.unit.test_models import FAST, make_data, target
X, y = make_data(n=300)
with tempfile.TemporaryDirectory() as tmp:
    for kind in MODEL_KINDS:
        for task in ("regression", "classification"):
            model = create_model(kind, task=task, params=FAST[kind]).fit(X, target(y, task))
            path = export_onnx(model, Path(tmp) / f"{kind}-{task}.onnx")
            print(kind, task, hashlib.sha256(path.read_bytes()).hexdigest())
"""


def test_export_is_byte_identical_across_processes_with_different_hash_seeds():
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    outputs = []
    for seed in ("0", "20"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", _EXPORT_ALL], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.splitlines())
    assert len(outputs[0]) == 2 * len(MODEL_KINDS)
    assert outputs[0] == outputs[1]


def test_opset_imports_are_sorted_and_unique(exported):
    import onnx

    _, path = exported
    pairs = [(op.domain, op.version) for op in onnx.load(str(path)).opset_import]
    assert pairs == sorted(set(pairs))
    assert "" in {d for d, _ in pairs} or all(d == "ai.onnx.ml" for d, _ in pairs)
