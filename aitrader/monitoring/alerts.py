"""Alert rules: each compares one monitored value with its threshold from the ``monitoring:`` config.

An alert is a plain dict ``{"code", "message", "value", "threshold"}`` so that it goes straight into
the JSON output and the persisted monitor state (which ``retrain --if-alert`` reads).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aitrader.config import Monitoring

ALERT_CODES = (
    "mae_ratio",  # live MAE more than mae_ratio_max x the training holdout MAE
    "psi_feature",  # PSI of a feature above psi_max
    "psi_prediction",  # PSI of the prediction distribution above psi_max
    "hit_rate",  # live hit rate below hit_rate_min
    "error_rate",  # share of prediction attempts that errored above error_rate_max
    "model_disabled",  # the trader disabled the model (too many consecutive errors)
    "daily_loss_limit",  # a day lost more than the daily loss limit
)


def _alert(code: str, message: str, value: Any, threshold: Any) -> dict[str, Any]:
    return {"code": code, "message": message, "value": value, "threshold": threshold}


def _accuracy_alerts(accuracy: Mapping[str, Any], cfg: Monitoring) -> list[dict[str, Any]]:
    """Accuracy rules judge the rolling window (recent behaviour) once it has enough outcomes."""
    alerts: list[dict[str, Any]] = []
    live = accuracy.get("window") or {}
    holdout = accuracy.get("holdout") or {}
    if (live.get("n") or 0) < cfg.min_outcomes:
        return alerts
    mae, base_mae = live.get("mae"), holdout.get("mae")
    if mae is not None and base_mae:
        ratio = mae / base_mae
        if ratio > cfg.mae_ratio_max:
            alerts.append(_alert(
                "mae_ratio",
                f"live MAE {mae:.5f} is {ratio:.2f}x the training holdout MAE {base_mae:.5f} "
                f"(limit {cfg.mae_ratio_max:.2f}x)",
                ratio, cfg.mae_ratio_max,
            ))
    hit = live.get("hit_rate")
    if hit is not None and hit < cfg.hit_rate_min:
        alerts.append(_alert(
            "hit_rate", f"live hit rate {hit:.3f} is below the floor {cfg.hit_rate_min:.3f}",
            hit, cfg.hit_rate_min,
        ))
    return alerts


def _drift_alerts(drift: Mapping[str, Any], cfg: Monitoring) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = []
    if not drift.get("enough_samples"):
        return alerts
    for row in drift.get("features") or []:
        if row.get("psi") is not None and row["psi"] > cfg.psi_max:
            alerts.append(_alert(
                "psi_feature",
                f"feature {row['name']} drifted: PSI {row['psi']:.3f} > {cfg.psi_max:.3f} (KS {row['ks']:.3f})",
                row["psi"], cfg.psi_max,
            ) | {"feature": row["name"]})
    pred = drift.get("prediction") or {}
    if pred.get("psi") is not None and pred["psi"] > cfg.psi_max:
        alerts.append(_alert(
            "psi_prediction",
            f"prediction distribution drifted: PSI {pred['psi']:.3f} > {cfg.psi_max:.3f}",
            pred["psi"], cfg.psi_max,
        ))
    return alerts


def _operational_alerts(ops: Mapping[str, Any], cfg: Monitoring, daily_loss_limit: float) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = []
    rate = ops.get("error_rate")
    if rate is not None and rate > cfg.error_rate_max:
        alerts.append(_alert(
            "error_rate",
            f"{ops.get('errors_total', 0)} prediction errors: error rate {rate:.3f} > {cfg.error_rate_max:.3f}",
            rate, cfg.error_rate_max,
        ))
    if ops.get("disabled"):
        alerts.append(_alert(
            "model_disabled",
            f"the trader disabled the model: {ops.get('disabled_reason') or 'too many consecutive errors'}",
            True, False,
        ))
    worst = ops.get("worst_daily_loss")
    if ops.get("daily_loss_limit_hits") or (worst is not None and worst >= daily_loss_limit):
        day = ops.get("worst_day") or "a day"
        alerts.append(_alert(
            "daily_loss_limit",
            f"daily loss limit {daily_loss_limit:.2%} hit: worst day {day} lost "
            f"{(worst or 0.0):.2%}, {ops.get('daily_loss_limit_hits', 0)} limit events",
            worst, daily_loss_limit,
        ))
    return alerts


def evaluate_alerts(
    accuracy: Mapping[str, Any],
    drift: Mapping[str, Any],
    operational: Mapping[str, Any],
    cfg: Monitoring,
    *,
    daily_loss_limit: float,
) -> list[dict[str, Any]]:
    """Every alert that fires, in a stable order (operational, accuracy, drift)."""
    return (
        _operational_alerts(operational, cfg, daily_loss_limit)
        + _accuracy_alerts(accuracy, cfg)
        + _drift_alerts(drift, cfg)
    )
