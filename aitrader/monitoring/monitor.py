"""``aitrader monitor``: operational health, live accuracy, drift and alerts of one run's model.

Inputs: the run's ledger (predictions with their features and realised outcomes, events, equity)
and the model's manifest (its ``baseline`` section and holdout metrics). The result is a plain,
JSON-ready ``summary`` plus the ``series`` the HTML report draws.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from aitrader.config import Monitoring
from aitrader.errors import ModelError, TradingError
from aitrader.monitoring.accuracy import accuracy_metrics, rolling_metrics
from aitrader.monitoring.alerts import evaluate_alerts, evaluate_warnings
from aitrader.monitoring.drift import (
    autocorrelation_time,
    drift_stats,
    drift_table,
    effective_sample_size,
    feature_drift_score,
    importance_weights,
    lag1_autocorrelation,
)
from aitrader.monitoring.ledger import Ledger, feature_matrix, feature_rows
from aitrader.monitoring.regime import regime_alerts, regime_rows

if TYPE_CHECKING:  # the in-memory monitor's frames; the streamed one (aitrader.monitoring.stream) runs without pandas
    import pandas as pd

ERROR_EVENT = "ML_ERROR"
RISK_EVENT = "RISK_REJECTED"
ALERT_EVENT = "ALERT"


@dataclass
class MonitorResult:
    summary: dict[str, Any]  # everything `--json` prints
    series: dict[str, Any] = field(default_factory=dict)  # chart data for the report

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return list(self.summary.get("alerts") or [])

    @property
    def healthy(self) -> bool:
        return not self.alerts


def model_name(entry: Mapping[str, Any]) -> str:
    """The registry name of a ledger model entry (``name``, else ``model_id`` without ``:vN``/``@alias``)."""
    if entry.get("name"):
        return str(entry["name"])
    return re.split(r"[:@]", str(entry.get("model_id") or ""), maxsplit=1)[0]


class RunModels(Protocol):
    """What :func:`select_model` reads: a :class:`Ledger`, or the streamed monitor's meta."""

    @property
    def run_id(self) -> str: ...

    @property
    def models(self) -> list[dict[str, Any]]: ...


def select_model(ledger: RunModels, model_id: str | None = None) -> dict[str, Any]:
    """The ledger's model entry to monitor: the one named ``model_id`` or the only one."""
    models = ledger.models
    if not models:
        raise TradingError(
            f"run {ledger.run_id} records no models in its ledger meta; it was not started by "
            "`aitrader paper-trade` or is damaged"
        )
    if model_id is None:
        if len(models) > 1:
            names = ", ".join(str(m.get("model_id")) for m in models)
            raise TradingError(f"run {ledger.run_id} traded several models ({names}); choose one with --model-id")
        return models[0]
    for m in models:
        if model_id in (m.get("model_id"), m.get("digest"), model_name(m)):
            return m
    names = ", ".join(str(m.get("model_id")) for m in models)
    raise TradingError(f"model {model_id!r} did not trade in run {ledger.run_id}; it traded: {names}")


def model_ids(entry: Mapping[str, Any]) -> set[str]:
    """Every spelling of this model in the ledger's model_id columns: name, NAME:vN, the entry's id."""
    ids = {model_name(entry)}
    if entry.get("model_id") is not None:
        ids.add(str(entry["model_id"]))
    if isinstance(entry.get("version"), int):
        ids.add(f"{model_name(entry)}:v{entry['version']}")
    return ids


def _model_rows(df: pd.DataFrame, entry: Mapping[str, Any], *, keep_unassigned: bool) -> pd.DataFrame:
    """Rows of this model: by digest when the table has one, else by model id."""
    if df.empty:
        return df
    digest = entry.get("digest")
    if digest and "digest" in df.columns and df["digest"].notna().any():
        return df[df["digest"] == digest]
    if "model_id" not in df.columns:
        return df
    mask = df["model_id"].astype(str).isin(model_ids(entry))
    if keep_unassigned:  # portfolio-level events (no model) concern every model of the run
        mask |= df["model_id"].isna() | (df["model_id"].astype(str) == "")
    return df[mask]


def _missing(value: Any) -> bool:
    """A cell pandas counts as missing: SQL NULL (None) or a float NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def event_rows(events: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of the in-memory reader's events frame, as :func:`event_metrics` takes them."""
    return [{str(k): v for k, v in r.items()} for r in events.to_dict("records")]


def model_events(rows: Sequence[Mapping[str, Any]], entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The events of this model and the portfolio-level ones (no model: they concern every model of the run),
    as :func:`_model_rows` with ``keep_unassigned`` picks them from a frame: by digest when the rows have
    one, else by model id."""
    rows = list(rows)
    if not rows:
        return rows
    digest = entry.get("digest")
    if digest and any(not _missing(r.get("digest")) for r in rows if "digest" in r):
        return [r for r in rows if r.get("digest") == digest]
    if "model_id" not in rows[0]:
        return rows
    ids = model_ids(entry)
    return [r for r in rows if _missing(r["model_id"]) or str(r["model_id"]) in ids or str(r["model_id"]) == ""]


def _counts(values: list[Any]) -> dict[str, int]:
    """``Series(values).fillna("unknown").value_counts()`` as a dict: the most frequent first, ties in the order
    first seen (a stable sort, as pandas' value_counts orders them)."""
    counts = Counter("unknown" if _missing(v) else v for v in values)
    return {str(k): int(n) for k, n in sorted(counts.items(), key=lambda kv: -kv[1])}


def _text(row: Mapping[str, Any]) -> str:
    return f"{row.get('reason') or ''} {row.get('payload') or ''}".lower()


def _daily_losses(equity: pd.DataFrame) -> tuple[float | None, str | None]:
    """Worst intraday drop of equity below the previous day's close, as a fraction."""
    if equity.empty or equity["equity"].isna().all():
        return None, None
    eq = equity.dropna(subset=["equity"])
    day = eq["ts"].dt.date
    last = eq.groupby(day)["equity"].last()
    low = eq.groupby(day)["equity"].min()
    first = eq.groupby(day)["equity"].first()
    start = last.shift(1).fillna(first)  # the first day starts from its first mark
    loss = (1.0 - low / start).clip(lower=0.0)
    worst_day = loss.idxmax()
    return float(loss.max()), str(worst_day)


def operational_metrics(ledger: Ledger, entry: Mapping[str, Any], feats: np.ndarray | None) -> dict[str, Any]:
    """Counts, latency, errors, fallbacks, feature availability, risk rejections, disable/loss events."""
    import pandas as pd

    preds = _model_rows(ledger.predictions, entry, keep_unassigned=False)
    events = model_events(event_rows(ledger.events), entry)
    source = preds["source"].fillna("model") if "source" in preds.columns else pd.Series("model", index=preds.index)
    by_source = {str(k): int(v) for k, v in source.value_counts().items()}
    model_rows = preds[source == "model"]
    latency_ms = (model_rows["latency_us"].dropna().to_numpy() / 1000.0) if "latency_us" in preds else np.array([])
    available = float(np.mean(np.all(np.isfinite(feats), axis=1))) if feats is not None and len(feats) else None

    return {
        "predictions": len(preds),
        "by_source": by_source,
        "fallbacks": int(len(preds) - len(model_rows)),
        "latency_ms_p50": float(np.percentile(latency_ms, 50)) if latency_ms.size else None,
        "latency_ms_p99": float(np.percentile(latency_ms, 99)) if latency_ms.size else None,
        "feature_availability": available,
        **event_metrics(events, len(model_rows), _daily_losses(ledger.equity)),
    }


def event_metrics(events: Sequence[Mapping[str, Any]], model_predictions: int,
                  daily_loss: tuple[float | None, str | None]) -> dict[str, Any]:
    """The operational figures that come from the events table (shared with the streamed monitor):
    ``events`` are the model's rows (:func:`model_events`), each a mapping of the table's columns."""
    errors = [r for r in events if str(r.get("type")) == ERROR_EVENT]
    rejections = [r for r in events if str(r.get("type")) == RISK_EVENT]
    attempts = model_predictions + len(errors)
    disabled = [r for r in events if r.get("type") == ALERT_EVENT and "disabl" in _text(r)]
    loss_events = [r for r in events if "daily" in _text(r) and "loss" in _text(r)]
    worst_loss, worst_day = daily_loss
    return {
        "errors_total": len(errors),
        "errors_by_type": _counts([r.get("reason") for r in errors]),
        "error_rate": (len(errors) / attempts) if attempts else None,
        "risk_rejections": _counts([r.get("reason") for r in rejections]),
        "disabled": bool(disabled),
        "disabled_reason": disabled[-1].get("reason") if disabled else None,
        "daily_loss_limit_hits": len(loss_events),
        "worst_daily_loss": worst_loss,
        "worst_day": worst_day,
    }


def window_noise(pred: np.ndarray, outcome: np.ndarray, *, task: str = "regression") -> dict[str, Any]:
    """How much the window's MAE and hit rate move by chance: effective sizes and standard errors.

    Outcomes of an h-bar target overlap (and errors cluster with volatility), so ``n`` outcomes
    hold fewer independent ones: ``n_eff`` of the absolute errors and of the hit indicators as in
    :func:`aitrader.monitoring.drift.effective_sample_size`. ``mae_se = std(|error|) / sqrt(n_eff)``;
    ``hit_se = 0.5 / sqrt(n_eff)`` (the largest binomial standard error, at a hit rate of 0.5).
    """
    ok = np.isfinite(pred) & np.isfinite(outcome)
    p, y = np.asarray(pred, float)[ok], np.asarray(outcome, float)[ok]
    out: dict[str, Any] = {"mae_n_eff": None, "mae_se": None, "hit_n_eff": None, "hit_se": None}
    if p.size < 3:
        return out
    hits = ((p > 0.5) == (y > 0)) if task == "classification" else (np.sign(p) == np.sign(y))
    h = hits.astype(float)
    out["hit_n_eff"] = effective_sample_size(h.size, lag1_autocorrelation(h), autocorrelation_time(h))
    out["hit_se"] = 0.5 / float(np.sqrt(out["hit_n_eff"]))
    if task != "classification":
        err = np.abs(p - y)
        out["mae_n_eff"] = effective_sample_size(err.size, lag1_autocorrelation(err), autocorrelation_time(err))
        out["mae_se"] = float(np.std(err, ddof=1) / np.sqrt(out["mae_n_eff"]))
    return out


def _holdout_reference(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The training holdout's accuracy, preferring the baseline section's own numbers."""
    metrics = ((manifest.get("metrics") or {}).get("holdout")) or {}
    base = manifest.get("baseline") or {}
    ref = {k: metrics.get(k) for k in ("mae", "rmse", "hit_rate", "ic", "rank_ic")}
    for key in ("mae", "hit_rate", "ic"):
        if base.get(f"holdout_{key}") is not None:
            ref[key] = base[f"holdout_{key}"]
    return ref


def _check_manifest(manifest: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    names = list(((manifest.get("features") or {}).get("names")) or [])
    baseline = manifest.get("baseline")
    if not names or not isinstance(baseline, Mapping) or not baseline.get("features"):
        raise ModelError(
            "the model's manifest has no training baseline (features.names and baseline.features); "
            "it was trained before monitoring baselines existed: retrain it with `aitrader train`"
        )
    return names, dict(baseline)


def monitor_ledger(
    ledger: Ledger,
    manifest: Mapping[str, Any],
    cfg: Monitoring,
    *,
    model_id: str | None = None,
    window: int | None = None,
    daily_loss_limit: float = 0.02,
    series: bool = True,
) -> MonitorResult:
    """Evaluate one model of one run against its manifest baseline and the alert thresholds.

    ``series=False`` leaves out the per-bar chart data (only the HTML report draws it; on a long
    run it is the largest part of the result)."""
    import pandas as pd

    entry = select_model(ledger, model_id)
    names, baseline = _check_manifest(manifest)
    target = manifest.get("target") or {}
    task = str(target.get("task") or "regression")
    win = int(window or cfg.window)

    preds = _model_rows(ledger.predictions, entry, keep_unassigned=False)
    # Predictions on bars the model was trained on say nothing about it: counted and alerted apart,
    # never scored (a ledger without the column: unknown, scored as before).
    in_sample = pd.to_numeric(preds["in_sample"], errors="coerce").eq(1) if "in_sample" in preds else preds.index < 0
    n_in_sample = int(in_sample.sum())
    preds = preds[~in_sample]
    source = preds["source"].fillna("model") if "source" in preds.columns else pd.Series("model", index=preds.index)
    model_rows = preds[source == "model"]
    known = model_rows.dropna(subset=["prediction", "outcome"])
    p, y = known["prediction"].to_numpy(float), known["outcome"].to_numpy(float)
    accuracy = {
        "run": accuracy_metrics(p, y, task=task),
        "window": accuracy_metrics(p[-win:], y[-win:], task=task),
        "window_size": win,
        "holdout": _holdout_reference(manifest),
        "window_noise": window_noise(p[-win:], y[-win:], task=task),
    }

    # Positions in the predictions table (its RangeIndex): streamed from the file when not loaded.
    if "features" in preds.columns:
        live = feature_matrix(preds["features"], len(names))
    elif ledger.features_in_file:
        live = feature_rows(ledger, preds.index.to_numpy(), len(names))
    else:
        live = np.empty((0, len(names)))
    pred_values = model_rows["prediction"].to_numpy(float)
    pred_base = baseline.get("prediction") or {}
    if pred_base:
        pred_drift = drift_stats(pred_base, pred_values, psi_max=cfg.psi_max, name="prediction")
    else:
        pred_drift = {"psi": None, "ks": None, "n": int(np.isfinite(pred_values).sum()), "significant": False}
    importance = (manifest.get("importance") or {}).get("features")
    weights, weights_from = importance_weights(names, importance if isinstance(importance, Mapping) else None)
    features = drift_table(baseline["features"], names, live, psi_max=cfg.psi_max, weights=weights)
    ops = operational_metrics(ledger, entry, live if ledger.has_features else None)
    summary = assemble_summary(ledger.run_id, ledger.run_dir, ledger.meta, entry, manifest, cfg, accuracy=accuracy,
                               features=features, pred_drift=pred_drift, n_live=len(live), weights_from=weights_from,
                               ops=ops, n_in_sample=n_in_sample, daily_loss_limit=daily_loss_limit,
                               regimes=regime_rows(baseline, names, live, cfg))  # regime features (issue 16)
    if not series:
        return MonitorResult(summary=summary)
    charts = {
        "equity_ts": ledger.equity["ts"].tolist() if not ledger.equity.empty else [],
        "equity": ledger.equity["equity"].tolist() if not ledger.equity.empty else [],
        "rolling": rolling_metrics(p, y, win, task=task),
        "prediction": p.tolist(),
        "outcome": y.tolist(),
    }
    return MonitorResult(summary=summary, series=charts)


def assemble_summary(run_id: str, run_dir: Any, meta: Mapping[str, Any], entry: Mapping[str, Any],
                     manifest: Mapping[str, Any], cfg: Monitoring, *, accuracy: dict[str, Any],
                     features: list[dict[str, Any]], pred_drift: dict[str, Any], n_live: int, weights_from: str,
                     ops: dict[str, Any], n_in_sample: int, daily_loss_limit: float,
                     regimes: list[dict[str, Any]]) -> dict[str, Any]:
    """The monitor's summary (drift section, alerts, warnings) from its computed parts; shared by
    :func:`monitor_ledger` and the streamed :func:`aitrader.monitoring.stream.monitor_run`."""
    target = manifest.get("target") or {}
    drift = {
        "n": n_live,
        "min_samples": cfg.drift_min_samples,
        "enough_samples": n_live >= cfg.drift_min_samples,
        "features": features,
        "prediction": pred_drift,
        # sum of importance x PSI over the features whose PSI is past max(psi_max, noise at n_eff)
        "feature_score": feature_drift_score(features),
        "importance": weights_from,
        "top": [r["name"] for r in features[:5] if r["psi"] is not None],
    }
    alerts = evaluate_alerts(accuracy, drift, ops, cfg, daily_loss_limit=daily_loss_limit)
    drift["regimes"] = regimes
    alerts += regime_alerts(regimes, cfg)
    if n_in_sample:
        alerts.append({"code": "in_sample", "value": n_in_sample, "threshold": 0, "message": (
            f"{n_in_sample} prediction(s) were on bars the model was trained on (paper-trade --allow-in-sample); "
            "they are left out of accuracy and drift: judge the model on a run of unseen bars")})
    ops["in_sample_predictions"] = n_in_sample
    return {
        "run_id": run_id,
        "run_dir": str(run_dir),
        "run_status": meta.get("status"),
        "updated_at": meta.get("updated_at"),
        "model": {"model_id": model_name(entry), **{k: entry.get(k) for k in ("version", "digest")},
                  "traded_as": entry.get("model_id"), "task": str(target.get("task") or "regression"),
                  "horizon": target.get("horizon")},
        "health": "alert" if alerts else "ok",
        "operational": ops,
        "accuracy": accuracy,
        "drift": drift,
        "alerts": alerts,
        "warnings": evaluate_warnings(alerts, drift, cfg),
        "thresholds": cfg.model_dump() | {"daily_loss_limit": daily_loss_limit},
    }
