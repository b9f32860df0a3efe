"""ModelRunner: backend choice, agreement with the model, trust, and input checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from aitrader.errors import ModelError, TrustError
from aitrader.models import MODEL_KINDS, create_model
from aitrader.models.onnx import export_onnx
from aitrader.models.runner import ModelRunner
from tests.unit.test_models import FAST, make_data, target

TASKS = ("regression", "classification")
NATIVE_BACKEND = {"lightgbm": "lightgbm", "xgboost": "xgboost", "ridge": "sklearn", "random_forest": "sklearn"}


def make_artifact(directory, kind, task, *, onnx=True):
    X, y = make_data(n=500)
    model = create_model(kind, task=task, params=FAST[kind]).fit(X, target(y, task))
    meta = model.save(directory)
    if onnx:
        export_onnx(model, directory / "model.onnx")
        meta["files"]["onnx"] = "model.onnx"
    manifest = {"format_version": 1, "model": meta, "features": {"names": list(X.columns)}}
    return model, manifest, X


@pytest.fixture(scope="module", params=[(k, t) for k in MODEL_KINDS for t in TASKS], ids=lambda p: f"{p[0]}-{p[1]}")
def artifact(request, tmp_path_factory):
    kind, task = request.param
    directory = tmp_path_factory.mktemp(f"{kind}-{task}")
    model, manifest, X = make_artifact(directory, kind, task)
    return directory, model, manifest, X


@pytest.mark.parametrize("prefer", ["onnx", "native"])
def test_runner_matches_model(artifact, prefer):
    directory, model, manifest, X = artifact
    runner = ModelRunner.from_artifact(directory, manifest, prefer=prefer, trust_pickle=True)
    expected_backend = "onnx" if prefer == "onnx" else NATIVE_BACKEND[model.kind]
    assert runner.backend == expected_backend
    assert runner.n_features == X.shape[1] and runner.task == model.task
    ref = model.predict_score(X)  # forward return, or P(up) for classifiers
    rows = X.to_numpy()
    one = np.array([runner.predict_one(rows[i]) for i in range(100)])
    batch = runner.predict_batch(X)
    tol = {"rtol": 1e-4, "atol": 1e-7} if prefer == "onnx" else {"rtol": 1e-12, "atol": 1e-15}
    np.testing.assert_allclose(one, ref[:100], **tol)
    np.testing.assert_allclose(batch, ref, **tol)
    if model.task == "classification":
        assert ((0 <= batch) & (batch <= 1)).all()
    # predict_one must not keep a reference to the caller's row (buffers are copied into)
    row = rows[0].copy()
    first = runner.predict_one(row)
    row[:] = 0.0
    assert runner.predict_one(rows[0]) == first


def test_runner_rejects_wrong_width(artifact):
    directory, _, manifest, X = artifact
    runner = ModelRunner.from_artifact(directory, manifest, trust_pickle=True)
    with pytest.raises(ModelError, match="expected 6 features, got shape \\(5,\\)"):
        runner.predict_one(np.zeros(5))
    with pytest.raises(ModelError, match="expected 6 features, got 7"):
        runner.predict_batch(np.zeros((3, 7)))
    assert runner.predict_batch(np.zeros((0, 6))).shape == (0,)


@pytest.mark.parametrize("kind", ["ridge", "random_forest"])
def test_untrusted_pickle_uses_onnx_or_refuses(kind, tmp_path):
    with_onnx, without_onnx = tmp_path / "a", tmp_path / "b"
    _, manifest, _ = make_artifact(with_onnx, kind, "regression")
    runner = ModelRunner.from_artifact(with_onnx, manifest, prefer="native")
    assert runner.backend == "onnx"  # ONNX is safe to load; the pickle is not
    _, manifest_b, _ = make_artifact(without_onnx, kind, "regression", onnx=False)
    with pytest.raises(TrustError, match="re-register it with --trust-pickle"):
        ModelRunner.from_artifact(without_onnx, manifest_b)


def test_no_onnx_falls_back_to_native(tmp_path):
    _, manifest, _ = make_artifact(tmp_path, "lightgbm", "regression", onnx=False)
    assert ModelRunner.from_artifact(tmp_path, manifest).backend == "lightgbm"


def test_inconsistent_manifest_and_bad_preference(tmp_path):
    _, manifest, _ = make_artifact(tmp_path, "xgboost", "regression")
    with pytest.raises(ModelError, match="unknown runner backend preference 'gpu'"):
        ModelRunner.from_artifact(tmp_path, manifest, prefer="gpu")
    manifest["features"]["names"] = ["a", "b"]
    with pytest.raises(ModelError, match="inconsistent"):
        ModelRunner.from_artifact(tmp_path, manifest)


@pytest.fixture(scope="module")
def lgbm_runners(tmp_path_factory):
    directory = tmp_path_factory.mktemp("prop")
    model, manifest, _ = make_artifact(directory, "lightgbm", "regression")
    return (
        model,
        ModelRunner.from_artifact(directory, manifest),
        ModelRunner.from_artifact(directory, manifest, prefer="native"),
    )


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, 6, elements=st.floats(-0.0625, 0.0625, allow_nan=False, width=32)))
def test_property_runner_agrees_with_model_on_any_row(lgbm_runners, row):
    model, onnx_runner, native_runner = lgbm_runners
    ref = float(model.predict_score(row.reshape(1, -1))[0])
    assert native_runner.predict_one(row) == ref
    # float32 inputs (width=32) leave only the graph's float32 arithmetic as a difference
    assert onnx_runner.predict_one(row) == pytest.approx(ref, rel=1e-4, abs=1e-7)
