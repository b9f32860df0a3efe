"""Gradient-boosting adapters: LightGBM (``model.txt``) and XGBoost (``model.ubj``).

Both are trained through the libraries' scikit-learn wrappers (so hyper-parameters use the
familiar wrapper names) but only the native Booster is kept: it is what is saved, loaded,
exported to ONNX and used by the runner. Feature names are stored inside the native files,
so a loaded model knows its inputs without the manifest.

Defaults suit trading data (small signal, lots of noise): few leaves, slow learning rate,
row and column subsampling with fixed seeds, and single-threaded deterministic training so the
same data and seed produce byte-identical model files.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aitrader.errors import ModelError
from aitrader.models.base import Model, check_params

LGBM_DEFAULTS: dict[str, Any] = {
    "n_estimators": 200,
    "learning_rate": 0.03,
    "num_leaves": 15,
    "max_depth": -1,
    "min_child_samples": 50,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
    "n_jobs": 1,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}

XGB_DEFAULTS: dict[str, Any] = {
    "n_estimators": 200,
    "learning_rate": 0.03,
    "max_depth": 4,
    "min_child_weight": 5.0,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
    "tree_method": "hist",
    "n_jobs": 1,
    "verbosity": 0,
}


@cache
def _lightgbm_param_names() -> frozenset[str]:
    import lightgbm as lgb

    # LightGBM's own table of every core parameter and alias; plus the wrapper's names.
    names: set[str] = set(lgb.LGBMRegressor().get_params())
    for key, aliases in lgb.basic._ConfigAliases._get_all_param_aliases().items():
        names.add(key)
        names.update(aliases)
    return frozenset(names)


class LightGBMModel(Model):
    """LightGBM gradient-boosted trees; persisted as LightGBM model text (``model.txt``)."""

    kind: ClassVar[str] = "lightgbm"
    library: ClassVar[str] = "lightgbm"
    format: ClassVar[str] = "lightgbm-text"
    native_file: ClassVar[str] = "model.txt"

    @classmethod
    def library_version(cls) -> str:
        import lightgbm

        return str(lightgbm.__version__)

    def _resolve_params(self) -> dict[str, Any]:
        user = check_params(self.params, _lightgbm_param_names(), self.kind)
        return {**LGBM_DEFAULTS, **user}

    def _fit_native(self, X: np.ndarray, y: np.ndarray, params: dict[str, Any], names: list[str]) -> None:
        import lightgbm as lgb

        cls = lgb.LGBMClassifier if self.task == "classification" else lgb.LGBMRegressor
        est = cls(**params, random_state=int(self.random_state))
        target = y.astype(np.int64) if self.task == "classification" else y
        try:
            est.fit(X, target, feature_name=names)
        except lgb.basic.LightGBMError as exc:
            raise ModelError(f"lightgbm: training failed: {exc}; check model.params") from exc
        self.booster_ = est.booster_
        self.n_threads_ = int(params.get("n_jobs", 1) or 1)

    def _predict_native(self, X: np.ndarray) -> np.ndarray:
        # For binary objectives the booster returns P(class 1) directly.
        return np.asarray(self.booster_.predict(X, num_threads=self.n_threads_), dtype=np.float64)

    def _importance(self) -> np.ndarray:
        return np.asarray(self.booster_.feature_importance(importance_type="gain"), dtype=np.float64)

    def _save_native(self, path: Path) -> None:
        self.booster_.save_model(str(path))

    @classmethod
    def _load_native(cls, path: Path, meta: dict[str, Any]) -> Model:
        import lightgbm as lgb

        try:
            booster = lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            raise ModelError(f"cannot read LightGBM model {path}: {exc}; the file is damaged") from exc
        params = dict(meta.get("hyperparameters") or {})
        model = cls(task=meta.get("task", "regression"), random_state=int(meta.get("random_state", 42)))
        model.booster_ = booster
        model.n_threads_ = int(params.get("n_jobs", 1) or 1)
        model._set_fitted(list(booster.feature_name()), params, None)
        return model


class XGBoostModel(Model):
    """XGBoost gradient-boosted trees; persisted as XGBoost UBJSON (``model.ubj``).

    UBJ rather than JSON: it is XGBoost's default, smaller and faster to load, and loses no
    precision; ``xgboost.Booster().load_model`` reads both.
    """

    kind: ClassVar[str] = "xgboost"
    library: ClassVar[str] = "xgboost"
    format: ClassVar[str] = "xgboost-ubj"
    native_file: ClassVar[str] = "model.ubj"

    @classmethod
    def library_version(cls) -> str:
        import xgboost

        return str(xgboost.__version__)

    def _resolve_params(self) -> dict[str, Any]:
        import xgboost as xgb

        valid = set(xgb.XGBRegressor().get_params()) - {"callbacks", "early_stopping_rounds", "device"}
        user = check_params(self.params, valid, self.kind)
        return {**XGB_DEFAULTS, **user}

    def _fit_native(self, X: np.ndarray, y: np.ndarray, params: dict[str, Any], names: list[str]) -> None:
        import xgboost as xgb

        cls = xgb.XGBClassifier if self.task == "classification" else xgb.XGBRegressor
        est = cls(**params, random_state=int(self.random_state))
        target = y.astype(np.int64) if self.task == "classification" else y
        try:
            est.fit(X, target)
        except xgb.core.XGBoostError as exc:
            raise ModelError(f"xgboost: training failed: {exc}; check model.params") from exc
        booster = est.get_booster()
        booster.feature_names = list(names)
        self.booster_ = booster
        self._pin_threads(int(params.get("n_jobs", 1) or 1))

    def _pin_threads(self, n: int) -> None:
        self.booster_.set_param({"nthread": n})
        self.n_threads_ = n

    def _predict_native(self, X: np.ndarray) -> np.ndarray:
        # inplace_predict skips the DMatrix copy; binary:logistic returns P(class 1).
        return np.asarray(self.booster_.inplace_predict(X, validate_features=False), dtype=np.float64)

    def _importance(self) -> np.ndarray:
        scores = self.booster_.get_score(importance_type="total_gain")
        return np.array([float(np.sum(scores.get(n, 0.0))) for n in self.feature_names_in_])

    def _save_native(self, path: Path) -> None:
        # XGBoost picks the format from the suffix, and the temp file has none.
        raw = self.booster_.save_raw(raw_format="ubj")
        path.write_bytes(bytes(raw))

    @classmethod
    def _load_native(cls, path: Path, meta: dict[str, Any]) -> Model:
        import xgboost as xgb

        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(path.read_bytes()))
        except xgb.core.XGBoostError as exc:
            raise ModelError(f"cannot read XGBoost model {path}: {exc}; the file is damaged") from exc
        params = dict(meta.get("hyperparameters") or {})
        model = cls(task=meta.get("task", "regression"), random_state=int(meta.get("random_state", 42)))
        model.booster_ = booster
        model._pin_threads(int(params.get("n_jobs", 1) or 1))
        names = booster.feature_names or [f"f{i}" for i in range(booster.num_features())]
        model._set_fitted(list(names), params, None)
        return model
