"""scikit-learn adapters: ridge (standardised linear model) and random forest.

scikit-learn has no native non-executable format, so these persist with joblib (pickle) and
are marked ``pickle_based``: the registry demands ``--trust-pickle`` before loading them. Their
ONNX export is pickle-free, and the runner prefers it.

``ridge`` is ``StandardScaler + Ridge`` for regression; for classification it is
``StandardScaler + LogisticRegression`` (L2-penalised, so "ridge" in spirit, and it gives
probabilities, which RidgeClassifier does not). ``model.params`` go to the final estimator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aitrader.errors import ModelError
from aitrader.models.base import Model, check_params

SKLEARN_FORMAT_VERSION = 1

RIDGE_DEFAULTS: dict[str, Any] = {"alpha": 1.0}
LOGISTIC_DEFAULTS: dict[str, Any] = {"C": 1.0, "max_iter": 1000}
FOREST_DEFAULTS: dict[str, Any] = {
    "n_estimators": 200,
    "max_depth": 6,
    "min_samples_leaf": 50,
    "max_features": 0.5,
    "n_jobs": 1,
}


class SklearnModel(Model):
    """Shared persistence and prediction for scikit-learn estimators (kept in ``estimator_``)."""

    library: ClassVar[str] = "scikit-learn"
    format: ClassVar[str] = "joblib"
    native_file: ClassVar[str] = "model.joblib"
    pickle_based: ClassVar[bool] = True

    @classmethod
    def library_version(cls) -> str:
        import sklearn

        return str(sklearn.__version__)

    def _final_estimator(self) -> Any:
        raise NotImplementedError

    def _build(self, params: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _resolve_params(self) -> dict[str, Any]:
        final = self._final_estimator()
        valid = set(final.get_params()) - {"random_state"}
        user = check_params(self.params, valid, self.kind)
        return {**self._defaults(), **user}

    def _defaults(self) -> dict[str, Any]:
        raise NotImplementedError

    def _fit_native(self, X: np.ndarray, y: np.ndarray, params: dict[str, Any], names: list[str]) -> None:
        est = self._build(params)
        target = y.astype(np.int64) if self.task == "classification" else y
        try:
            est.fit(X, target)
        except ValueError as exc:
            raise ModelError(f"{self.kind}: training failed: {exc}; check model.params") from exc
        self.estimator_ = est

    def _predict_native(self, X: np.ndarray) -> np.ndarray:
        if self.task == "classification":
            return np.asarray(self.estimator_.predict_proba(X)[:, 1], dtype=np.float64)
        return np.asarray(self.estimator_.predict(X), dtype=np.float64).reshape(-1)

    def _save_native(self, path: Path) -> None:
        import joblib

        payload = {
            "format_version": SKLEARN_FORMAT_VERSION,
            "kind": self.kind,
            "task": self.task,
            "feature_names": [str(n) for n in self.feature_names_in_],
            "estimator": self.estimator_,
        }
        with path.open("wb") as fh:
            joblib.dump(payload, fh)

    @classmethod
    def _load_native(cls, path: Path, meta: dict[str, Any]) -> Model:
        import joblib

        # Only reached after the caller established trust (see aitrader.models.load_model).
        try:
            payload = joblib.load(path)  # noqa: S301
        except Exception as exc:  # a damaged pickle can raise almost anything
            raise ModelError(f"cannot read scikit-learn model {path}: {exc}; the file is damaged") from exc
        if not isinstance(payload, dict) or payload.get("format_version") != SKLEARN_FORMAT_VERSION:
            raise ModelError(
                f"{path}: not an aitrader scikit-learn artifact (format_version "
                f"{SKLEARN_FORMAT_VERSION} expected); retrain the model"
            )
        model = cls(task=payload["task"], random_state=int(meta.get("random_state", 42)))
        model.estimator_ = payload["estimator"]
        model._set_fitted(list(payload["feature_names"]), dict(meta.get("hyperparameters") or {}), None)
        return model


class RidgeModel(SklearnModel):
    """Standardised ridge regression (logistic regression for classification)."""

    kind: ClassVar[str] = "ridge"
    accepts_nan: ClassVar[bool] = False

    def _final_estimator(self) -> Any:
        from sklearn.linear_model import LogisticRegression, Ridge

        return LogisticRegression() if self.task == "classification" else Ridge()

    def _defaults(self) -> dict[str, Any]:
        return dict(LOGISTIC_DEFAULTS if self.task == "classification" else RIDGE_DEFAULTS)

    def _build(self, params: dict[str, Any]) -> Any:
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        final = self._final_estimator().set_params(**params, random_state=int(self.random_state))
        return Pipeline([("scale", StandardScaler()), ("model", final)])

    def _importance(self) -> np.ndarray:
        # Coefficients on standardised inputs, so their magnitudes are comparable.
        return np.abs(np.asarray(self.estimator_[-1].coef_, dtype=np.float64).reshape(-1))


class RandomForestModel(SklearnModel):
    """Random forest of shallow trees with large leaves (noise-robust)."""

    kind: ClassVar[str] = "random_forest"
    # scikit-learn forests can split on NaN, but the ONNX converter cannot express it.
    accepts_nan: ClassVar[bool] = False

    def _final_estimator(self) -> Any:
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        return RandomForestClassifier() if self.task == "classification" else RandomForestRegressor()

    def _defaults(self) -> dict[str, Any]:
        return dict(FOREST_DEFAULTS)

    def _build(self, params: dict[str, Any]) -> Any:
        return self._final_estimator().set_params(**params, random_state=int(self.random_state))

    def _importance(self) -> np.ndarray:
        return np.asarray(self.estimator_.feature_importances_, dtype=np.float64)
