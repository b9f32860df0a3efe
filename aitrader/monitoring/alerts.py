"""Alert rules: each compares one monitored value with its threshold from the ``monitoring:`` config.

An alert is a plain dict ``{"code", "message", "value", "threshold"}`` (drift alerts add
``features``: the drifted features that explain it) so that it goes straight into the JSON output
and the persisted monitor state (which ``retrain --if-alert`` reads).

Drift is judged by what matters to the model. The primary signals are the model's own output and
accuracy: ``psi_prediction`` (the prediction distribution moved past ``max(psi_max, noise)``, see
:mod:`aitrader.monitoring.drift`), ``mae_ratio`` and ``hit_rate``. Feature PSI is the explanation:
each drift alert lists the features that drifted beyond chance with their importance, PSI and
effective sample size. ``feature_drift`` reports the importance-weighted score
``sum(importance_i x PSI_i)`` over the significantly drifted features when it exceeds ``psi_max``:
as an alert when a primary signal fired too, else as a warning (``evaluate_warnings``; exit code
unchanged). A level-like feature the model barely uses, or whose PSI is within the noise of its few
effective samples, never alerts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aitrader.config import Monitoring

ALERT_CODES = (
    "mae_ratio",  # live MAE more than mae_ratio_max x the training holdout MAE
    "feature_drift",  # importance-weighted PSI of the significantly drifted features above psi_max
    "psi_prediction",  # PSI of the prediction distribution above psi_max
    "hit_rate",  # live hit rate below hit_rate_min
    "error_rate",  # share of prediction attempts that errored above error_rate_max
    "model_disabled",  # the trader disabled the model (too many consecutive errors)
    "daily_loss_limit",  # a day lost more than the daily loss limit
)


def _alert(code: str, message: str, value: Any, threshold: Any) -> dict[str, Any]:
    return {"code": code, "message": message, "value": value, "threshold": threshold}


# One-sided 99% normal quantile: an accuracy alert needs the window to be worse than chance
# explains 99 times in 100 (the same confidence as the PSI noise level in drift.py).
Z_99 = 2.326


def _accuracy_alerts(accuracy: Mapping[str, Any], cfg: Monitoring) -> list[dict[str, Any]]:
    """Accuracy rules judge the rolling window (recent behaviour) once it has enough outcomes.

    Each limit is widened to what chance explains at the window's effective size
    (``window_noise``): MAE ratio above ``max(mae_ratio_max, 1 + 2.326 mae_se / holdout MAE)``,
    hit rate below ``min(hit_rate_min, 0.5 - 2.326 hit_se)``.
    """
    alerts: list[dict[str, Any]] = []
    live = accuracy.get("window") or {}
    holdout = accuracy.get("holdout") or {}
    noise = accuracy.get("window_noise") or {}
    if (live.get("n") or 0) < cfg.min_outcomes:
        return alerts
    mae, base_mae = live.get("mae"), holdout.get("mae")
    if mae is not None and base_mae:
        ratio = mae / base_mae
        se = noise.get("mae_se")
        limit = max(cfg.mae_ratio_max, 1.0 + Z_99 * se / base_mae) if se is not None else cfg.mae_ratio_max
        if ratio > limit:
            why = (f"; noise-widened from {cfg.mae_ratio_max:.2f}x at n_eff {noise.get('mae_n_eff') or 0:.0f}"
                   if limit > cfg.mae_ratio_max else "")
            alerts.append(_alert(
                "mae_ratio",
                f"live MAE {mae:.5f} is {ratio:.2f}x the training holdout MAE {base_mae:.5f} "
                f"(limit {limit:.2f}x{why})",
                ratio, limit,
            ))
    hit = live.get("hit_rate")
    se = noise.get("hit_se")
    floor = min(cfg.hit_rate_min, 0.5 - Z_99 * se) if se is not None else cfg.hit_rate_min
    if hit is not None and hit < floor:
        why = (f"; noise-widened from {cfg.hit_rate_min:.3f} at n_eff {noise.get('hit_n_eff') or 0:.0f}"
               if floor < cfg.hit_rate_min else "")
        alerts.append(_alert(
            "hit_rate", f"live hit rate {hit:.3f} is below the floor {floor:.3f}{why}",
            hit, floor,
        ))
    return alerts


def _explain(features: list[dict[str, Any]], limit: int = 5) -> tuple[str, list[dict[str, Any]]]:
    """The significantly drifted features, most important drift first: text and JSON detail."""
    drifted = [r for r in features if r.get("significant")]
    detail = [{"feature": r["name"], "importance": r.get("weight"), "psi": r["psi"], "n_eff": r.get("n_eff"),
               "threshold": r.get("threshold"), "contribution": r.get("contribution")} for r in drifted]
    if not drifted:
        return "no feature drifted beyond its noise level", detail
    text = ", ".join(f"{r['name']} (importance {r.get('weight', 0.0):.2f}, PSI {r['psi']:.2f}, "
                     f"n_eff {r.get('n_eff') or 0:.0f})" for r in drifted[:limit])
    more = f" and {len(drifted) - limit} more" if len(drifted) > limit else ""
    return f"{text}{more}", detail


def _noise_ignored(features: list[dict[str, Any]], psi_max: float) -> str:
    """Features past psi_max whose PSI chance explains at their effective sample size."""
    quiet = [r for r in features if r.get("psi") is not None and r["psi"] > psi_max and not r.get("significant")]
    if not quiet:
        return ""
    names = ", ".join(f"{r['name']} {r['psi']:.2f} (n_eff {r.get('n_eff') or 0:.0f})" for r in quiet[:5])
    more = f" and {len(quiet) - 5} more" if len(quiet) > 5 else ""
    return f"; within noise, not counted: {names}{more}"


def _drift_alerts(drift: Mapping[str, Any], cfg: Monitoring, *, primary: bool = False) -> list[dict[str, Any]]:
    """``psi_prediction``, and ``feature_drift`` as its explanation: feature drift alerts only together
    with a primary signal (prediction drift, or an accuracy alert: ``primary``)."""
    alerts: list[dict[str, Any]] = []
    if not drift.get("enough_samples"):
        return alerts
    features = list(drift.get("features") or [])
    why, detail = _explain(features)
    pred = drift.get("prediction") or {}
    if pred.get("significant") and pred.get("psi") is not None:
        noise = pred.get("noise")
        level = f", 99% noise level {noise:.3f}" if noise is not None else ""
        alerts.append(_alert(
            "psi_prediction",
            f"prediction distribution drifted: PSI {pred['psi']:.3f} > {pred['threshold']:.3f} (psi_max "
            f"{cfg.psi_max:.2f}{level} at n_eff {pred.get('n_eff') or 0:.0f} of {pred.get('n')}); "
            f"drifted features: {why}",
            pred["psi"], pred["threshold"],
        ) | {"n_eff": pred.get("n_eff"), "features": detail})
    feature = _feature_drift(drift, cfg)
    if feature is not None and (alerts or primary):
        alerts.append(feature)
    return alerts


def _feature_drift(drift: Mapping[str, Any], cfg: Monitoring) -> dict[str, Any] | None:
    """The ``feature_drift`` entry when the importance-weighted score exceeds ``psi_max``."""
    if not drift.get("enough_samples"):
        return None
    score = float(drift.get("feature_score") or 0.0)
    if score <= cfg.psi_max:
        return None
    features = list(drift.get("features") or [])
    why, detail = _explain(features)
    weights = "" if drift.get("importance") != "uniform" else " (uniform weights: the manifest has no importance)"
    return _alert(
        "feature_drift",
        f"importance-weighted feature drift {score:.3f} > {cfg.psi_max:.3f}{weights}: {why}"
        f"{_noise_ignored(features, cfg.psi_max)}",
        score, cfg.psi_max,
    ) | {"features": detail}


def evaluate_warnings(alerts: list[dict[str, Any]], drift: Mapping[str, Any], cfg: Monitoring) -> list[dict[str, Any]]:
    """Findings that do not alert on their own: feature drift that the model's output and accuracy
    do not (yet) show. Reported (JSON ``warnings``, the HTML report), exit code unchanged."""
    feature = _feature_drift(drift, cfg)
    if feature is None or any(a["code"] == "feature_drift" for a in alerts):
        return []
    feature["message"] += ("; a warning only: neither the prediction distribution nor the accuracy moved "
                           "beyond chance")
    return [feature]


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
    accuracy_alerts = _accuracy_alerts(accuracy, cfg)
    return (
        _operational_alerts(operational, cfg, daily_loss_limit)
        + accuracy_alerts
        + _drift_alerts(drift, cfg, primary=bool(accuracy_alerts))
    )
