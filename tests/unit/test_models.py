"""The adapter contract: every model kind and task through one parametrised suite."""

from __future__ import annotations

import hashlib
import inspect

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from aitrader.errors import ModelError, ModelNotFittedError, TrustError
from aitrader.models import MODEL_KINDS, create_model, load_model, model_class

TASKS = ("regression", "classification")
FAST = {
    "lightgbm": {"n_estimators": 20, "min_child_samples": 20},
    "xgboost": {"n_estimators": 20},
    "ridge": None,
    "random_forest": {"n_estimators": 10, "min_samples_leaf": 10},
}


def make_data(n: int = 500, k: int = 6, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, k)) * 0.01, columns=[f"feat_{i}" for i in range(k)])
    y = pd.Series(X["feat_0"] * 0.5 - X["feat_1"] * 0.2 + rng.normal(size=n) * 0.005, name="fwd_return_5")
    return X, y


def target(y: pd.Series, task: str) -> pd.Series:
    return (y > 0).astype(int).rename("direction_5") if task == "classification" else y


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.Series]:
    return make_data()


@pytest.fixture(scope="module", params=[(k, t) for k in MODEL_KINDS for t in TASKS], ids=lambda p: f"{p[0]}-{p[1]}")
def fitted(request, data):
    kind, task = request.param
    X, y = data
    model = create_model(kind, task=task, params=FAST[kind])
    returned = model.fit(X, target(y, task))
    return kind, task, model, returned


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("task", TASKS)
def test_unfitted_model_says_call_fit(kind, task, data):
    model = create_model(kind, task=task)
    for call in (lambda: model.predict(data[0]), model.feature_importance, lambda: model.save(".")):
        with pytest.raises(ModelNotFittedError, match="call fit"):
            call()
    assert not hasattr(model, "n_features_in_")


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_init_only_stores_params(kind):
    cls = model_class(kind)
    sig = inspect.signature(cls.__init__)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for name, p in sig.parameters.items() if name != "self")
    model = create_model(kind, task="classification", random_state=7, params=FAST[kind])
    assert model.get_params() == {"task": "classification", "random_state": 7, "params": FAST[kind]}
    assert not [a for a in vars(model) if a.endswith("_")]
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy is not model
    assert copy.set_params(task="regression").task == "regression"


def test_fit_returns_self_and_sets_learned_state(fitted, data):
    kind, task, model, returned = fitted
    X, _ = data
    assert returned is model
    assert list(model.feature_names_in_) == list(X.columns)
    assert model.n_features_in_ == X.shape[1]
    assert model.hyperparameters_  # resolved defaults + overrides


def test_predict_shapes_and_values(fitted, data):
    kind, task, model, _ = fitted
    X, y = data
    pred = model.predict(X)
    assert pred.shape == (len(X),)
    if task == "classification":
        assert set(np.unique(pred)) <= {0, 1}
        proba = model.predict_proba(X)
        assert proba.shape == (len(X), 2)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        np.testing.assert_array_equal(pred, (proba[:, 1] >= 0.5).astype(int))
        # the signal is learnable: better than a coin on the training rows
        assert (pred == target(y, task)).mean() > 0.55
    else:
        assert np.isfinite(pred).all()
        with pytest.raises(ModelError, match="predict_proba needs task='classification'"):
            model.predict_proba(X)
        assert np.corrcoef(pred, y)[0, 1] > 0.3


def test_feature_importance_keys_are_feature_names(fitted, data):
    _, _, model, _ = fitted
    imp = model.feature_importance()
    assert list(imp) == list(data[0].columns)
    assert all(isinstance(v, float) and v >= 0 for v in imp.values())
    # feat_0 carries the strongest signal in make_data
    assert max(imp, key=imp.__getitem__) == "feat_0"


def test_info_content(fitted):
    kind, task, model, _ = fitted
    info = model.info()
    assert info["kind"] == kind
    assert info["task"] == task
    assert info["library"] in ("lightgbm", "xgboost", "scikit-learn")
    assert info["library_version"]
    assert info["target"] == ("direction_5" if task == "classification" else "fwd_return_5")
    assert info["features"] == [f"feat_{i}" for i in range(6)]
    assert info["random_state"] == 42
    if FAST[kind]:
        for key, value in FAST[kind].items():
            assert info["hyperparameters"][key] == value


def test_save_load_round_trip_identical_predictions(fitted, data, tmp_path):
    kind, task, model, _ = fitted
    X, _ = data
    meta = model.save(tmp_path)
    assert set(meta) == {
        "kind",
        "library",
        "library_version",
        "task",
        "format",
        "files",
        "pickle_based",
        "hyperparameters",
        "random_state",
    }
    assert meta["files"] == {"native": model_class(kind).native_file}
    assert meta["pickle_based"] is (kind in ("ridge", "random_forest"))
    assert [p.name for p in tmp_path.iterdir()] == [meta["files"]["native"]]  # no temp files left
    loaded = load_model(tmp_path, meta, trust_pickle=True)
    assert list(loaded.feature_names_in_) == list(model.feature_names_in_)
    assert loaded.task == task
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded.predict_score(X), model.predict_score(X))


def test_wrong_feature_count_names_expected_and_got(fitted, data):
    _, _, model, _ = fitted
    X, _ = data
    with pytest.raises(ModelError, match="expected 6 features, got 5"):
        model.predict(X.to_numpy()[:, :5])
    with pytest.raises(ModelError, match=r"missing \['feat_5'\]"):
        model.predict(X.drop(columns="feat_5"))


def test_columns_reordered_by_name(fitted, data):
    _, _, model, _ = fitted
    X, _ = data
    np.testing.assert_array_equal(model.predict(X[X.columns[::-1]]), model.predict(X))
    np.testing.assert_array_equal(model.predict(X.to_numpy()), model.predict(X))


@pytest.mark.parametrize("kind", ["ridge", "random_forest"])
def test_pickle_based_needs_trust(kind, data, tmp_path):
    X, y = data
    model = create_model(kind, params=FAST[kind]).fit(X, y)
    meta = model.save(tmp_path)
    with pytest.raises(TrustError, match="--trust-pickle"):
        load_model(tmp_path, meta)


def test_unknown_kind_and_task():
    with pytest.raises(ModelError, match="unknown model kind 'catboost'.*lightgbm"):
        create_model("catboost")
    with pytest.raises(ModelError, match="unknown task 'ranking'"):
        create_model("ridge", task="ranking")


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_unknown_param_names_it_and_valid_ones(kind):
    with pytest.raises(ModelError, match=r"unknown parameter\(s\) 'n_estimatorz' \(.*\); fix model.params \("):
        create_model(kind, params={"n_estimatorz": 10})
    with pytest.raises(ModelError, match="model.random_state"):
        create_model(kind, params={"random_state": 1})


def test_lightgbm_native_param_accepted():
    model = create_model("lightgbm", params={"path_smooth": 1.0, "bagging_fraction": 0.7})
    assert model.validate()["path_smooth"] == 1.0


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_bad_targets_rejected(kind, data):
    X, y = data
    with pytest.raises(ModelError, match="NaN/inf"):
        create_model(kind, params=FAST[kind]).fit(X, y.where(y.index != 3))
    with pytest.raises(ModelError, match="0/1 direction target"):
        create_model(kind, task="classification", params=FAST[kind]).fit(X, y)
    with pytest.raises(ModelError, match="X has 500 rows but y has 499"):
        create_model(kind, params=FAST[kind]).fit(X, y.iloc[:-1])


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost"])
def test_boosters_handle_missing_values(kind, data):
    X, y = data
    Xn = X.copy()
    Xn.iloc[::7, 2] = np.nan
    model = create_model(kind, params=FAST[kind]).fit(Xn, y)
    assert np.isfinite(model.predict(Xn)).all()


@pytest.mark.parametrize("kind", ["ridge", "random_forest"])
def test_sklearn_rejects_missing_values_with_advice(kind, data):
    X, y = data
    Xn = X.copy()
    Xn.iloc[0, 0] = np.nan
    with pytest.raises(ModelError, match="drop the warm-up rows"):
        create_model(kind, params=FAST[kind]).fit(Xn, y)


def test_unsafe_feature_names_rejected(data):
    X, y = data
    with pytest.raises(ModelError, match="feature names"):
        create_model("lightgbm", params=FAST["lightgbm"]).fit(X.rename(columns={"feat_0": "a[0]"}), y)


def test_numpy_input_gets_default_names(data):
    X, y = data
    model = create_model("xgboost", params=FAST["xgboost"]).fit(X.to_numpy(), y.to_numpy())
    assert list(model.feature_names_in_) == [f"f{i}" for i in range(6)]
    assert model.info()["target"] is None


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost"])
def test_byte_reproducible_native_files(kind, data, tmp_path):
    X, y = data
    digests = []
    for run in ("a", "b"):
        model = create_model(kind, params=FAST[kind]).fit(X, y)
        meta = model.save(tmp_path / run)
        digests.append(_digest(tmp_path / run / meta["files"]["native"]))
    assert digests[0] == digests[1]
    other = create_model(kind, random_state=1, params=FAST[kind]).fit(X, y)
    other.save(tmp_path / "c")
    assert _digest(tmp_path / "c" / model_class(kind).native_file) != digests[0]


def test_load_model_errors(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        load_model(tmp_path, {"kind": "lightgbm", "files": {"native": "model.txt"}, "task": "regression"})
    (tmp_path / "model.txt").write_text("not a model")
    with pytest.raises(ModelError, match="cannot read LightGBM model"):
        load_model(tmp_path, {"kind": "lightgbm", "files": {"native": "model.txt"}, "task": "regression"})
    with pytest.raises(ModelError, match="no 'kind'"):
        load_model(tmp_path, {})


def test_nullable_and_non_string_columns(data):
    X, y = data
    Xn = X.astype("Float64")
    Xn.iloc[0, 2] = pd.NA
    model = create_model("lightgbm", params=FAST["lightgbm"]).fit(Xn, y)
    assert np.isnan(model.predict(Xn)).sum() == 0
    Xi = X.set_axis(range(6), axis=1)
    model = create_model("ridge").fit(Xi, y)
    assert list(model.feature_names_in_) == [str(i) for i in range(6)]
    np.testing.assert_array_equal(model.predict(Xi[[5, 4, 3, 2, 1, 0]]), model.predict(Xi))
