"""Accuracy of live predictions whose outcome (the realised forward return) is known.

Every figure comes from the one metrics module (``aitrader.training.metrics``), so ``monitor``
and ``retrain`` score exactly as ``train`` does. Regression models predict the forward return:
MAE, RMSE, hit rate (sign agreement; outcomes of exactly 0 are excluded, a prediction of 0 is a
miss), IC (Pearson) and rank IC (Spearman) compare prediction and outcome directly.
Classification models predict P(up): MAE/RMSE are not comparable with a return and are left out;
the hit rate compares the side of ``p - 0.5`` with the side of the outcome (same zero rule) and
the ICs correlate the probability with the outcome. Undefined figures are None.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aitrader.training import metrics as M


def accuracy_metrics(pred: np.ndarray, outcome: np.ndarray, *, task: str = "regression") -> dict[str, Any]:
    """MAE, RMSE, hit rate, IC and rank IC on the pairs where both values are finite."""
    p = np.asarray(pred, dtype=float)
    y = np.asarray(outcome, dtype=float)
    ok = np.isfinite(p) & np.isfinite(y)
    p, y = p[ok], y[ok]
    out: dict[str, Any] = {"n": int(p.size), "mae": None, "rmse": None, "hit_rate": None, "ic": None,
                           "rank_ic": None}
    if p.size == 0:
        return out
    if task == "classification":
        out["hit_rate"] = M.hit_rate(y, p - 0.5)
    else:
        err = p - y
        out["mae"] = float(np.mean(np.abs(err)))
        out["rmse"] = float(np.sqrt(np.mean(err**2)))
        out["hit_rate"] = M.hit_rate(y, p)
    out["ic"] = M.ic(p, y)
    out["rank_ic"] = M.rank_ic(p, y)
    return out


def rolling_metrics(pred: np.ndarray, outcome: np.ndarray, window: int, *,
                    task: str = "regression") -> dict[str, list[float | None]]:
    """Trailing-window MAE and IC at every pair from the ``window``-th on (for the report's chart).

    Vectorised with cumulative sums (a run can hold many thousand outcomes); with fewer pairs
    than ``window`` there is one point over all of them.
    """
    p = np.asarray(pred, dtype=float)
    y = np.asarray(outcome, dtype=float)
    ok = np.isfinite(p) & np.isfinite(y)
    p, y = p[ok], y[ok]
    if p.size == 0:
        return {"mae": [], "ic": []}
    w = min(window, p.size)

    def trailing(v: np.ndarray) -> np.ndarray:
        c = np.concatenate(([0.0], np.cumsum(v)))
        return (c[w:] - c[:-w]) / w

    mp, my = trailing(p), trailing(y)
    cov = trailing(p * y) - mp * my
    vp, vy = trailing(p * p) - mp**2, trailing(y * y) - my**2
    # Cancellation in the sums leaves a tiny non-zero variance for a constant series: a variance
    # below 1e-12 of the squared mean is zero, and the IC is then undefined (None).
    tiny = (vp <= 1e-12 * mp**2 + 1e-300) | (vy <= 1e-12 * my**2 + 1e-300)
    scale = np.sqrt(np.where(tiny, 1.0, vp * vy))
    ic = np.where(tiny, np.nan, cov / scale)
    mae = trailing(np.abs(p - y)) if task != "classification" else np.full(ic.size, np.nan)
    return {
        "mae": [None if not np.isfinite(v) else float(v) for v in mae],
        "ic": [None if not np.isfinite(v) else float(np.clip(v, -1.0, 1.0)) for v in ic],
    }
