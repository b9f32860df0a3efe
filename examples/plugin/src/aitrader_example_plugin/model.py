"""The ``hist_gbr`` model kind: scikit-learn's histogram gradient boosting behind aitrader's Model API.

It implements the hooks of :class:`aitrader.models.base.Model` (which supplies the input checks,
classification labels, ``get_params``/``set_params`` and ``save``). It has no ``to_onnx``: skl2onnx
1.20 cannot convert these trees (its TreeEnsemble node ids come out as uint32), so the trainer
records that the artifact runs on the native model. The native file is a joblib pickle, so the
artifact is ``pickle_based``: register it with ``--trust-pickle``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aitrader.errors import ModelError
from aitrader.models.base import Model, check_params

FORMAT_VERSION = 1
DEFAULTS: dict[str, Any] = {"max_iter": 100, "learning_rate": 0.05, "max_leaf_nodes": 15,
                            "min_samples_leaf": 40, "l2_regularization": 1.0, "early_stopping": False}


class HistGBRModel(Model):
    """HistGradientBoostingRegressor (regression) or HistGradientBoostingClassifier (classification)."""

    kind: ClassVar[str] = "hist_gbr"
    library: ClassVar[str] = "scikit-learn"
    format: ClassVar[str] = "joblib"
    native_file: ClassVar[str] = "model.joblib"
    pickle_based: ClassVar[bool] = True
    accepts_nan: ClassVar[bool] = True  # histogram trees route missing values

    @classmethod
    def library_version(cls) -> str:
        import sklearn

        return str(sklearn.__version__)

    def _estimator(self) -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        return HistGradientBoostingClassifier() if self.task == "classification" else HistGradientBoostingRegressor()

    def _resolve_params(self) -> dict[str, Any]:
        valid = set(self._estimator().get_params()) - {"random_state"}
        return {**DEFAULTS, **check_params(self.params, valid, self.kind)}

    def _fit_native(self, X: np.ndarray, y: np.ndarray, params: dict[str, Any], names: list[str]) -> None:
        from threadpoolctl import threadpool_limits

        est = self._estimator().set_params(**params, random_state=int(self.random_state))
        try:
            # One OpenMP thread: the trainer already fits the folds side by side in a thread pool.
            with threadpool_limits(1, user_api="openmp"):
                est.fit(X, y.astype(np.int64) if self.task == "classification" else y)
        except ValueError as exc:
            raise ModelError(f"{self.kind}: training failed: {exc}; check model.params") from exc
        self.estimator_ = est

    def _predict_native(self, X: np.ndarray) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        # One row at a time in the live loop: a thread team per call costs more than it saves.
        with threadpool_limits(1, user_api="openmp"):
            if self.task == "classification":
                return np.asarray(self.estimator_.predict_proba(X)[:, 1], dtype=np.float64)
            return np.asarray(self.estimator_.predict(X), dtype=np.float64).reshape(-1)

    def _importance(self) -> np.ndarray:
        """Total split gain per feature, summed over the trees."""
        gain = np.zeros(self.n_features_in_)
        for iteration in getattr(self.estimator_, "_predictors", []):
            for tree in iteration:
                nodes = tree.nodes[~tree.nodes["is_leaf"].astype(bool)]
                np.add.at(gain, nodes["feature_idx"].astype(np.int64), nodes["gain"].astype(np.float64))
        return gain

    def _save_native(self, path: Path) -> None:
        import joblib

        payload = {"format_version": FORMAT_VERSION, "kind": self.kind, "task": self.task,
                   "feature_names": [str(n) for n in self.feature_names_in_], "estimator": self.estimator_}
        with path.open("wb") as fh:
            joblib.dump(payload, fh)

    @classmethod
    def _load_native(cls, path: Path, meta: dict[str, Any]) -> Model:
        import joblib

        try:
            payload = joblib.load(path)  # noqa: S301 - reached only after aitrader established trust
        except Exception as exc:  # a damaged pickle can raise almost anything
            raise ModelError(f"cannot read {cls.kind} model {path}: {exc}; the file is damaged") from exc
        if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION \
                or payload.get("kind") != cls.kind:
            raise ModelError(f"{path}: not a {cls.kind} artifact of format {FORMAT_VERSION}; retrain the model")
        model = cls(task=payload["task"], random_state=int(meta.get("random_state", 42)))
        model.estimator_ = payload["estimator"]
        model._set_fitted(list(payload["feature_names"]), dict(meta.get("hyperparameters") or {}), None)
        return model
