"""The fast runner for live use: one row at a time with the lowest latency the artifact allows.

Backends, in the order ``prefer="onnx"`` tries them:

- ``onnx``: ONNX Runtime, one intra/inter-op thread, sequential execution, all graph
  optimisations; the input is a preallocated float32 (1, n) buffer bound once through IOBinding
  (measured ~15% faster than ``session.run`` with a feed dict; ``run_with_ort_values`` was slower).
- ``lightgbm``: native ``Booster.predict`` with ``num_threads=1`` on a preallocated (1, n) array.
- ``xgboost``: native ``Booster.inplace_predict`` (no per-row DMatrix) with ``nthread=1``.
- ``lleaves`` / ``treelite``: a compiled library of the trees (:meth:`from_compiled`), chosen by
  the registry (``aitrader.registry.backends``), never by ``from_artifact``.
- ``sklearn``: only with ``trust_pickle``; a standardised linear model is folded into one dot
  product, other estimators predict on a preallocated array.

Output: the predicted forward return (regression) or P(up) (classification). The runner does
not verify file hashes: the registry does that before it builds one.

``predict_one`` reuses one input buffer, so a runner is not thread-safe: give each thread its own
(they are cheap to build). ``predict_batch`` allocates and may be shared.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from aitrader.errors import ModelError
from aitrader.models.base import Model, as_matrix, default_feature_names

PREFER = ("onnx", "native")


class ModelRunner:
    """Single-row and batch prediction over one loaded artifact; see the module docstring."""

    def __init__(
        self,
        *,
        backend: str,
        task: str,
        feature_names: list[str],
        one: Callable[[np.ndarray], float],
        batch: Callable[[np.ndarray], np.ndarray],
    ):
        self.backend = backend
        self.task = task
        self.feature_names = list(feature_names)
        self.n_features = len(self.feature_names)
        self._one = one
        self._batch = batch

    def __repr__(self) -> str:
        return f"ModelRunner(backend={self.backend!r}, task={self.task!r}, n_features={self.n_features})"

    def predict_one(self, x: np.ndarray) -> float:
        """One prediction from one feature row (length n_features, manifest order)."""
        if x.shape[-1] != self.n_features or x.size != self.n_features:
            raise ModelError(
                f"predict_one: expected {self.n_features} features, got shape {x.shape}; pass one row "
                f"in the manifest's feature order"
            )
        return self._one(x)

    def predict_batch(self, X: Any) -> np.ndarray:
        """Predictions for a matrix (or DataFrame with the trained columns) of rows, float64."""
        Xa = as_matrix(X, self.n_features, self.feature_names, "predict_batch")
        if Xa.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        return np.asarray(self._batch(Xa), dtype=np.float64).reshape(-1)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_artifact(
        cls,
        directory: str | Path,
        manifest: dict[str, Any],
        *,
        prefer: str = "onnx",
        trust_pickle: bool = False,
        batch_threads: int = 1,
    ) -> ModelRunner:
        """Build the fastest runner the artifact allows (ONNX when present unless prefer="native")."""
        if prefer not in PREFER:
            raise ModelError(f"unknown runner backend preference {prefer!r}; expected one of {PREFER}")
        directory = Path(directory)
        meta = manifest.get("model") or {}
        files = meta.get("files") or {}
        onnx_file = files.get("onnx")
        onnx_path = directory / onnx_file if onnx_file else None
        has_onnx = onnx_path is not None and onnx_path.is_file()
        native_blocked = bool(meta.get("pickle_based")) and not trust_pickle
        use_onnx = has_onnx and (prefer == "onnx" or native_blocked)
        if use_onnx:
            assert onnx_path is not None
            runner = cls.from_onnx(onnx_path, task=meta.get("task"), batch_threads=batch_threads)
        else:
            from aitrader.models import load_model

            # load_model raises TrustError for an untrusted pickle without an ONNX fallback.
            runner = cls.from_model(load_model(directory, meta, trust_pickle=trust_pickle), batch_threads=batch_threads)
        names = (manifest.get("features") or {}).get("names")
        if names is not None and list(names) != runner.feature_names:
            if len(names) != runner.n_features or runner.feature_names != default_feature_names(len(names)):
                raise ModelError(
                    f"{directory}: the manifest's features ({len(names)}: {list(names)[:5]}...) differ from "
                    f"the model file's ({runner.n_features}: {runner.feature_names[:5]}...); the artifact "
                    f"is inconsistent, retrain it"
                )
            runner.feature_names = list(names)  # a file exported without names uses f0..fN
        return runner

    @classmethod
    def from_onnx(cls, path: str | Path, *, task: str | None = None, batch_threads: int = 1) -> ModelRunner:
        from aitrader.models.onnx import OnnxModel, make_session

        model = OnnxModel(path, task=task)
        session = model.session_
        n = model.n_features_in_
        out_name = session.get_outputs()[model.out_index_].name
        col = 1 if model.task_ == "classification" else 0
        buf = np.zeros((1, n), dtype=np.float32)
        binding = session.io_binding()
        binding.bind_cpu_input(model.input_name_, buf)  # bound by pointer: writes to buf are seen
        binding.bind_output(out_name, "cpu")
        run, copy_out = session.run_with_iobinding, binding.copy_outputs_to_cpu
        batch_session = session if batch_threads == 1 else make_session(path, threads=batch_threads)

        def one(x: np.ndarray) -> float:
            buf[0] = x.reshape(-1)
            run(binding)
            return float(copy_out()[0].reshape(-1)[col])

        def batch(X: np.ndarray) -> np.ndarray:
            out = batch_session.run([out_name], {model.input_name_: X.astype(np.float32)})[0]
            return out[:, 1] if col else out.reshape(-1)

        return cls(backend="onnx", task=model.task_, feature_names=list(model.feature_names_in_), one=one, batch=batch)

    @classmethod
    def from_compiled(cls, predictor: Any, *, task: str, feature_names: list[str]) -> ModelRunner:
        """A runner over a verified compiled library (``aitrader.models.compiled.CompiledPredictor``):
        one ctypes call per row or per batch; backend ``lleaves`` or ``treelite``."""
        if len(feature_names) != predictor.n_features:
            raise ModelError(f"compiled library takes {predictor.n_features} features, the manifest lists "
                             f"{len(feature_names)}; the artifact is inconsistent, retrain it")
        return cls(backend=predictor.backend, task=task, feature_names=feature_names, one=predictor.predict_one,
                   batch=predictor.predict_batch)

    @classmethod
    def from_model(cls, model: Model, *, batch_threads: int = 1) -> ModelRunner:
        """A runner over an in-memory fitted model, using its native library."""
        model._check_fitted("ModelRunner.from_model")
        names = [str(n) for n in model.feature_names_in_]
        n = len(names)
        if model.kind == "onnx":
            return cls.from_onnx(model.path, task=model.task, batch_threads=batch_threads)  # type: ignore[attr-defined]
        if model.kind == "lightgbm":
            one, batch = _lightgbm_fns(model.booster_, n, model.task, batch_threads)  # type: ignore[attr-defined]
            return cls(backend="lightgbm", task=model.task, feature_names=names, one=one, batch=batch)
        if model.kind == "xgboost":
            one, batch = _xgboost_fns(model.booster_, n, batch_threads)  # type: ignore[attr-defined]
            return cls(backend="xgboost", task=model.task, feature_names=names, one=one, batch=batch)
        if model.kind in ("ridge", "random_forest"):
            one, batch = _sklearn_fns(model.estimator_, n, model.task)  # type: ignore[attr-defined]
            return cls(backend="sklearn", task=model.task, feature_names=names, one=one, batch=batch)
        # A plug-in adapter: its own predict_score, one row at a time or in batches.
        score = model.predict_score
        return cls(backend="plugin", task=model.task, feature_names=names,
                   one=lambda x: float(score(x.reshape(1, -1))[0]), batch=score)


Fns = tuple[Callable[[np.ndarray], float], Callable[[np.ndarray], np.ndarray]]


def _lightgbm_fns(booster: Any, n: int, task: str, batch_threads: int) -> Fns:
    buf = np.zeros((1, n), dtype=np.float64)
    predict = booster.predict

    def one(x: np.ndarray) -> float:
        buf[0] = x.reshape(-1)
        return float(predict(buf, num_threads=1)[0])

    def batch(X: np.ndarray) -> np.ndarray:
        return np.asarray(predict(X, num_threads=batch_threads))

    return one, batch


def _xgboost_fns(booster: Any, n: int, batch_threads: int) -> Fns:
    buf = np.zeros((1, n), dtype=np.float32)  # XGBoost works in float32 internally
    single = booster.copy()
    single.set_param({"nthread": 1})
    multi = single if batch_threads == 1 else booster.copy()
    if multi is not single:
        multi.set_param({"nthread": batch_threads})

    def one(x: np.ndarray) -> float:
        buf[0] = x.reshape(-1)
        return float(single.inplace_predict(buf, validate_features=False)[0])

    def batch(X: np.ndarray) -> np.ndarray:
        return np.asarray(multi.inplace_predict(X, validate_features=False))

    return one, batch


def _linear_fold(est: Any) -> tuple[np.ndarray, float] | None:
    """(w, b) with est's output == w @ x + b, for StandardScaler + linear model pipelines."""
    steps = getattr(est, "steps", None)
    if steps is None or len(steps) != 2:
        return None
    scaler, linear = steps[0][1], steps[1][1]
    if type(scaler).__name__ != "StandardScaler" or not hasattr(linear, "coef_"):
        return None
    coef = np.asarray(linear.coef_, dtype=np.float64).reshape(-1)
    scale = np.asarray(scaler.scale_ if scaler.scale_ is not None else np.ones_like(coef), dtype=np.float64)
    mean = np.asarray(scaler.mean_ if scaler.mean_ is not None else np.zeros_like(coef), dtype=np.float64)
    w = coef / scale
    b = float(np.asarray(linear.intercept_).reshape(-1)[0]) - float(mean @ w)
    return np.ascontiguousarray(w), b


def _sklearn_fns(est: Any, n: int, task: str) -> Fns:
    buf = np.zeros((1, n), dtype=np.float64)
    classifier = task == "classification"
    folded = _linear_fold(est)
    if folded is not None:
        w, b = folded

        def one(x: np.ndarray) -> float:
            z = float(np.dot(w, x.reshape(-1))) + b
            if not classifier:
                return z
            # Numerically stable logistic, identical to LogisticRegression.predict_proba for 2 classes.
            return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    elif classifier:

        def one(x: np.ndarray) -> float:
            buf[0] = x.reshape(-1)
            return float(est.predict_proba(buf)[0, 1])

    else:

        def one(x: np.ndarray) -> float:
            buf[0] = x.reshape(-1)
            return float(est.predict(buf).reshape(-1)[0])

    def batch(X: np.ndarray) -> np.ndarray:
        return np.asarray(est.predict_proba(X)[:, 1] if classifier else est.predict(X))

    return one, batch


__all__ = ["ModelRunner"]
