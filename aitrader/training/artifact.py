"""Assembling the manifest (format_version 1, schema in docs/architecture.md) from a training run.

This module sits below the trainer: it takes the training data through the small
:class:`TrainingData` protocol (what :class:`aitrader.training.trainer.Dataset` provides) instead
of importing the trainer back, so the two modules do not import each other.
"""

from __future__ import annotations

import datetime as dt
import platform
from importlib import metadata
from typing import Any, Protocol

import numpy as np
import pandas as pd

from aitrader import __version__
from aitrader.config import TrainConfig
from aitrader.training.manifest import FORMAT_VERSION


class TrainingData(Protocol):
    """What the manifest needs from a training run's dataset (the trainer's ``Dataset``)."""

    @property
    def bars(self) -> pd.DataFrame: ...

    @property
    def X(self) -> pd.DataFrame: ...  # noqa: N802 - the feature matrix, as in the trainer

    @property
    def pipeline(self) -> Any: ...

    @property
    def symbol(self) -> str: ...


SAMPLE_ROWS = 20
# Libraries whose versions decide whether the artifact loads and predicts the same way.
_VERSIONED = ("numpy", "pandas", "scikit-learn", "lightgbm", "xgboost", "onnx", "onnxruntime",
              "onnxmltools", "skl2onnx")


# Distributions that install the same import package under another name (Linux installs xgboost-cpu).
_SAME_PACKAGE = {"xgboost": ("xgboost-cpu",)}


def library_versions(model_library: str) -> dict[str, str]:
    """aitrader, Python and the installed versions of the libraries the artifact depends on."""
    out = {"aitrader": __version__, "python": platform.python_version()}
    for dist in dict.fromkeys((*_VERSIONED, model_library) if model_library else _VERSIONED):
        for name in (dist, *_SAME_PACKAGE.get(dist, ())):
            try:
                out[dist] = metadata.version(name)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def _iso(ts: Any) -> str:
    return pd.Timestamp(ts).isoformat()


def holdout_sample(X_hold: pd.DataFrame, pred: np.ndarray, n: int = SAMPLE_ROWS) -> dict[str, Any]:
    """``n`` holdout rows spread evenly over the holdout with the native model's predictions.

    Deploy-time smoke tests feed ``rows`` to the loaded model (native or ONNX) and compare with
    ``predictions``; spreading the rows covers the holdout's range rather than its first days.
    """
    pick = np.unique(np.linspace(0, len(X_hold) - 1, num=min(n, len(X_hold))).round().astype(int))
    rows = X_hold.iloc[pick]
    return {
        "timestamps": [_iso(t) for t in rows.index],
        "columns": [str(c) for c in X_hold.columns],
        "rows": rows.to_numpy(dtype=np.float64).tolist(),
        "predictions": np.asarray(pred, dtype=np.float64)[pick].tolist(),
    }


def data_section(bars: pd.DataFrame, symbol: str) -> dict[str, Any]:
    """The training-data fingerprint: SHA256 of the bars used, symbol, span, rows, interval."""
    from aitrader.data import bars_fingerprint, infer_interval

    step = infer_interval(pd.DatetimeIndex(bars.index))
    return {
        "sha256": bars_fingerprint(bars),
        "symbol": symbol,
        "first": _iso(bars.index[0]),
        "last": _iso(bars.index[-1]),
        "rows": len(bars),
        "interval": str(step) if step is not None else None,
        "source": str(bars.attrs.get("source", "")) or None,
    }


# How each model kind measures a feature's importance (``Model.feature_importance``).
IMPORTANCE_METHODS = {"lightgbm": "gain", "xgboost": "total_gain", "random_forest": "impurity",
                      "ridge": "abs_coef_standardised"}


def importance_section(importance: dict[str, float], names: list[str], kind: str) -> dict[str, Any]:
    """The manifest's ``importance`` section: each feature's share of the model's total importance.

    ``{"method": "gain", "features": {name: share}}`` in ``names`` order; the shares are
    non-negative and sum to 1, or are all 0 when the model uses no feature at all (a constant
    model). Monitoring weights each feature's drift by its share.
    """
    raw = np.array([max(float(importance.get(n, 0.0)), 0.0) for n in names], dtype=np.float64)
    raw[~np.isfinite(raw)] = 0.0
    total = float(raw.sum())
    shares = raw / total if total > 0 else np.zeros_like(raw)
    return {"method": IMPORTANCE_METHODS.get(kind, "native"),
            "features": {n: float(v) for n, v in zip(names, shares, strict=True)}}


def build_manifest(
    cfg: TrainConfig,
    data: TrainingData,
    *,
    model_meta: dict[str, Any],
    onnx_meta: dict[str, Any] | None,
    split: dict[str, Any],
    metrics: dict[str, Any],
    baseline: dict[str, Any],
    sample: dict[str, Any],
    importance: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The manifest dict; ``created_at`` is its only field that differs between identical runs.

    ``importance``: ``Model.feature_importance()`` of the final model, stored normalised as the
    ``importance`` section (see :func:`importance_section`).
    """
    h = cfg.target.horizon
    model = {k: v for k, v in model_meta.items() if k != "library_version"}
    extra: dict[str, Any] = {}
    if importance is not None:
        extra["importance"] = importance_section(importance, [str(c) for c in data.X.columns],
                                                 str(model_meta.get("kind", "")))
    from aitrader import plugins

    used = plugins.section(features=[spec.kind for spec in data.pipeline.specs],
                           models=[str(model_meta.get("kind", ""))])
    if used:  # only a model trained with plug-ins has the section (docs/plugins.md, the versions rule)
        extra["plugins"] = used
    return {
        "format_version": FORMAT_VERSION,
        "created_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "model": model,
        "versions": library_versions(str(model_meta.get("library", ""))),
        "target": {"name": f"fwd_return_{h}", "horizon": h, "task": cfg.target.task},
        "features": data.pipeline.contract(),
        "data": {**data_section(data.bars, data.symbol),
                 **({"book": data.pipeline.book.info()} if getattr(data.pipeline, "book", None) is not None else {})},
        "split": {**split, "holdout_setting": cfg.split.holdout, "window": cfg.split.window,
                  "final_train_last": _iso(data.X.index[split["final_train_rows"] - 1]),
                  "holdout_first": _iso(data.X.index[split["holdout_start"]]),
                  "holdout_last": _iso(data.X.index[-1])},
        "metrics": metrics,
        "onnx": onnx_meta,
        "baseline": baseline,
        "sample": sample,
        **extra,
    }
