"""Baseline statistics stored in the manifest for drift and accuracy monitoring.

Each distribution is ``{"quantiles": 101 values (0%, 1%, ..., 100%), "bin_edges": 9 inner
edges (the 10%..90% deciles of the reference), "counts": 10 counts}``. The outer bins are
open-ended, so a live value ``x`` falls in bin ``np.searchsorted(bin_edges, x, side="right")``
(bin ``i`` holds ``bin_edges[i-1] <= x < bin_edges[i]``); monitoring must bin the same way.
Repeated deciles (discrete features) give empty bins, which is correct for PSI with smoothing.

Reference samples: features use the final model's training rows (the distribution the model
learned from); the prediction distribution (``prediction``, what monitoring compares live
predictions with for drift) uses the holdout predictions (the model's output on data it never
saw, which is what live predictions should resemble). The confidence calibration
(``calibration``, what the trading strategy's confidence reads) uses the out-of-fold predictions:
every walk-forward test fold's predictions, concatenated, so that the threshold is never set on
the holdout that train's backtest and the default replay then trade. NaN values are ignored.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

QUANTILE_LEVELS = np.linspace(0.0, 1.0, 101)
DECILES = np.linspace(0.1, 0.9, 9)


def distribution(values: Any) -> dict[str, list[float] | list[int]]:
    """Quantiles, decile bin edges and bin counts of the finite entries of ``values``."""
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        nan = [float("nan")]
        return {"quantiles": nan * QUANTILE_LEVELS.size, "bin_edges": nan * DECILES.size, "counts": [0] * 10}
    edges = np.quantile(x, DECILES)
    counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=DECILES.size + 1)
    return {
        "quantiles": np.quantile(x, QUANTILE_LEVELS).tolist(),
        "bin_edges": edges.tolist(),
        "counts": [int(c) for c in counts],
    }


def baseline_stats(
    train_features: pd.DataFrame,
    holdout_pred: np.ndarray,
    holdout_metrics: dict[str, float],
    holdout_target: np.ndarray,
    task: str,
    oof_pred: np.ndarray | None = None,
) -> dict[str, Any]:
    """The manifest's ``baseline`` section (see the module docstring); ``oof_pred``: the out-of-fold
    predictions (``calibration`` is left out without them)."""
    pred = np.asarray(holdout_pred, dtype=np.float64)
    target = np.asarray(holdout_target, dtype=np.float64)
    # Residuals in the model's output space: P(up) - label for classification.
    reference = (target > 0).astype(np.float64) if task == "classification" else target
    residual = pred - reference
    out: dict[str, Any] = {
        "features": {name: distribution(train_features[name].to_numpy()) for name in train_features.columns},
        "prediction": distribution(pred),
        "holdout_mae": holdout_metrics["mae"],
        "residual_std": float(np.std(residual, ddof=1)) if residual.size > 1 else 0.0,
        "holdout_hit_rate": holdout_metrics["hit_rate"],
        "holdout_ic": holdout_metrics["ic"],
    }
    if oof_pred is not None:
        out["calibration"] = {**distribution(oof_pred), "source": "out-of-fold (walk-forward test folds)"}
    return out
