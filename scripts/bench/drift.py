"""Benchmark of the monitor's drift alerts: false alarms on honest replays, detections on shifted data.

For every bar file under ``../shared/data`` (or ``--data``), one small model is trained with the
library (``aitrader.training.trainer.train``: LightGBM, 100 shallow trees, 2 folds, the default
features and 5-bar target, ``split.window`` most recent bars, no ONNX export), and its holdout is
replayed through ``aitrader.monitoring.monitor.monitor_ledger``: the library directly, not the
CLI, for speed. The replay is an in-memory ledger holding what ``paper-trade`` records for each
holdout bar (the feature vector, the model's prediction and the realised forward return), so every
monitor rule runs exactly as ``aitrader monitor`` runs it; only the bars differ:

* honest: the holdout bars as they are (no alert should fire: the model sees the kind of data it
  was validated on). The prediction baseline IS the holdout's predictions, so this replay cannot
  test the prediction rule; hence also
* fresh: a second model trained on the first 80% of the bars only, replaying the last 20%: bars
  that neither its training, its holdout nor its baselines ever saw (the honest "next period");
* shifted: the same holdout bars with every return x4 (and, to show the power on a smaller
  change, x2) (open, high, low and close relative to the
  previous close, so the bars stay valid) and/or every volume x10, features recomputed over the
  whole file so the warm-up runs across the seam (an alert should fire).

Two rules are compared on the same replays:

* old: a drift alert when any feature's or the prediction's PSI exceeds ``psi_max`` (0.2);
* new: the current rule (prediction PSI, or the importance-weighted PSI of the features that
  drifted beyond the noise of their effective sample size; see docs/operations.md).

The "any alert" columns (what makes ``monitor`` exit 3) add the accuracy alerts (``mae_ratio``,
``hit_rate``) of each rule: the old fixed limits (MAE ratio 1.2, hit rate 0.45) or the new
noise-widened ones.

Usage: .venv/bin/python scripts/bench/drift.py [--data DIR] [--window N] [--limit N] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aitrader.config import Monitoring, TrainConfig, build_model
from aitrader.data import load_bars
from aitrader.monitoring.ledger import Ledger
from aitrader.monitoring.monitor import monitor_ledger
from aitrader.training.trainer import build_dataset, train

REPO = Path(__file__).resolve().parents[2]
DRIFT_CODES = {"psi_feature", "psi_prediction", "feature_drift"}
ACCURACY_CODES = {"mae_ratio", "hit_rate"}


def shift(bars: pd.DataFrame, start: int, *, returns: float = 1.0, volume: float = 1.0) -> pd.DataFrame:
    """``bars`` with every return from bar ``start`` on scaled by ``returns`` and volume by ``volume``.

    Each price of bar t is rebuilt from the previous (already shifted) close:
    ``p'_t = c'_{t-1} * (1 + returns * (p_t / c_{t-1} - 1))``, floored at 1% of the previous close;
    the map is increasing, so high >= open, close >= low still holds.
    """
    out = bars.copy()
    cols = ["open", "high", "low", "close"]
    px = bars[cols].to_numpy(dtype=np.float64)
    new = px.copy()
    for t in range(max(start, 1), len(bars)):
        rel = px[t] / px[t - 1, 3] - 1.0
        new[t] = new[t - 1, 3] * np.maximum(1.0 + returns * rel, 0.01)
    out[cols] = new
    vol = out["volume"].to_numpy(dtype=np.float64).copy()
    vol[start:] *= volume
    out["volume"] = vol
    out.attrs.update(bars.attrs)
    return out


def replay_ledger(X: pd.DataFrame, pred: np.ndarray, outcome: np.ndarray) -> Ledger:
    """An in-memory ledger with one model prediction per holdout bar, as paper-trade records it."""
    preds = pd.DataFrame({
        "ts": X.index, "bar_index": np.arange(len(X)), "symbol": "X", "model_id": "bench", "digest": "d",
        "prediction": pred, "confidence": 1.0, "source": "model", "latency_us": 100.0,
        "features": [json.dumps([None if not np.isfinite(v) else float(v) for v in row])
                     for row in X.to_numpy(dtype=np.float64)],
        "outcome": outcome, "outcome_ts": X.index,
    })
    events = pd.DataFrame(columns=["ts", "type", "symbol", "model_id", "reason", "payload"])
    equity = pd.DataFrame({"bar_index": np.arange(len(X)), "ts": X.index, "cash": 1e5, "equity": 1e5})
    meta = {"run_id": "bench", "models": [{"model_id": "bench", "version": 1, "digest": "d"}], "status": "finished"}
    return Ledger(run_dir=Path("bench"), meta=meta, predictions=preds, events=events, equity=equity,
                  tables={"meta", "predictions", "events", "equity"})


def old_drift_alert(summary: dict[str, Any], cfg: Monitoring) -> bool:
    """The rule before this change: any feature's or the prediction's PSI above psi_max."""
    drift = summary["drift"]
    if not drift["enough_samples"]:
        return False
    worst = [r["psi"] for r in drift["features"] if r["psi"] is not None]
    pred = drift["prediction"]["psi"]
    return any(p > cfg.psi_max for p in worst) or (pred is not None and pred > cfg.psi_max)


def old_accuracy_alert(summary: dict[str, Any], cfg: Monitoring) -> bool:
    """The accuracy rules before this change: fixed limits, whatever the window's effective size."""
    acc = summary["accuracy"]
    live, base = acc["window"], acc["holdout"]
    if (live.get("n") or 0) < cfg.min_outcomes:
        return False
    mae_bad = live.get("mae") is not None and bool(base.get("mae")) and live["mae"] / base["mae"] > cfg.mae_ratio_max
    return mae_bad or (live.get("hit_rate") is not None and live["hit_rate"] < cfg.hit_rate_min)


def evaluate(path: Path, window: int, cfg: Monitoring, tmp: Path) -> dict[str, Any]:
    """Train on one file, replay its holdout honest and shifted; the alerts of both rules."""
    raw = {"data": {"path": str(path)},
           "model": {"kind": "lightgbm", "params": {"n_estimators": 100, "num_leaves": 15, "n_jobs": 1}},
           "split": {"n_folds": 2, "holdout": 0.2, "min_train": 250, "window": window},
           "onnx": {"export": False}}
    tcfg = build_model(TrainConfig, raw)
    bars = load_bars(path)
    if len(bars) > window:
        attrs = dict(bars.attrs)
        bars = bars.iloc[-window:].copy()
        bars.attrs.update(attrs)
    result = train(tcfg, bars=bars, out_dir=tmp / path.name.split(".")[0])
    manifest = result.manifest
    from aitrader.models import load_model

    model = load_model(result.out_dir, manifest["model"])
    hold_first = pd.Timestamp(manifest["split"]["holdout_first"])
    start = int(bars.index.searchsorted(hold_first))
    cases = {"honest": (1.0, 1.0), "returns_x2": (2.0, 1.0), "returns_x4": (4.0, 1.0), "volume_x10": (1.0, 10.0),
             "both": (4.0, 10.0)}
    out: dict[str, Any] = {"file": str(path.relative_to(path.parents[1])), "bars": len(bars)}
    # The fresh period: a model that never saw the last 20% of the bars, not even as its holdout.
    cut = int(len(bars) * 0.8)
    early = bars.iloc[:cut].copy()
    early.attrs.update(bars.attrs)
    fresh = train(tcfg, bars=early, out_dir=tmp / (path.name.split(".")[0] + "-fresh"))
    fresh_model = load_model(fresh.out_dir, fresh.manifest["model"])
    runs = {name: (model, manifest, hold_first, bars if name == "honest" else shift(bars, start, returns=r, volume=v))
            for name, (r, v) in cases.items()}
    runs["fresh"] = (fresh_model, fresh.manifest, bars.index[cut], bars)
    for name, (mdl, mf, first, b) in runs.items():
        data = build_dataset(tcfg, b)
        rows = data.X.index >= first
        X = data.X.loc[rows]
        pred = mdl.predict_score(X)
        summary = monitor_ledger(replay_ledger(X, pred, data.fwd[rows]), mf, cfg).summary
        codes = [a["code"] for a in summary["alerts"]]
        old = old_drift_alert(summary, cfg)
        new = any(c in DRIFT_CODES for c in codes)
        acc = any(c in ACCURACY_CODES for c in codes)
        old_acc = old_accuracy_alert(summary, cfg)
        drift = summary["drift"]
        out[name] = {
            "rows": len(X), "old_drift": old, "new_drift": new, "accuracy": acc,
            "old_accuracy": old_acc, "old_any": old or old_acc, "new_any": new or acc, "codes": codes,
            "features_past_psi_max": sum(1 for f in drift["features"] if (f["psi"] or 0) > cfg.psi_max),
            "features_significant": sum(1 for f in drift["features"] if f.get("significant")),
            "prediction_psi": drift["prediction"]["psi"], "feature_score": drift["feature_score"],
        }
    return out


def rate(results: list[dict[str, Any]], case: str, key: str) -> float:
    return float(np.mean([r[case][key] for r in results])) if results else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder of bar files")
    parser.add_argument("--window", type=int, default=6000, help="most recent bars per file (split.window)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N files (0: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    root = Path(args.data)
    files = sorted(p for p in root.rglob("*") if p.is_file() and ".csv" in p.name)
    if args.limit:
        files = files[: args.limit]
    if not files:
        sys.exit(f"no bar files under {root}")
    cfg = Monitoring()
    results = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aitrader-bench-drift-") as tmp:
        for path in files:
            res = evaluate(path, args.window, cfg, Path(tmp))
            results.append(res)
            if not args.json:
                h, s, f = res["honest"], res["both"], res["fresh"]
                print(f"{res['file']:<40} fresh: old {'ALERT' if f['old_drift'] else 'ok':5} new "
                      f"{'ALERT' if f['new_any'] else 'ok':5} {','.join(f['codes']) or '-'}; "
                      f"honest: old {'ALERT' if h['old_drift'] else 'ok':5} new "
                      f"{'ALERT' if h['new_drift'] else 'ok':5} ({h['features_past_psi_max']:2d} features > psi_max, "
                      f"{h['features_significant']:2d} beyond noise, pred PSI {h['prediction_psi']:.4f}, "
                      f"accuracy alert {'yes' if h['accuracy'] else 'no'}) | shifted: old "
                      f"{'ALERT' if s['old_drift'] else 'ok':5} new {'ALERT' if s['new_drift'] else 'ok'}",
                      flush=True)
    cases = ("honest", "fresh", "returns_x2", "returns_x4", "volume_x10", "both")
    keys = ("old_drift", "new_drift", "old_accuracy", "accuracy", "old_any", "new_any")
    summary = {case: {k: rate(results, case, k) for k in keys}
               for case in cases}
    doc = {"files": len(results), "window": args.window, "psi_max": cfg.psi_max, "seconds": time.perf_counter() - t0,
           "rates": summary, "results": results}
    if args.json:
        print(json.dumps(doc, indent=1, default=str))
        return
    print(f"\n{len(results)} files, last {args.window} bars each, holdout 20%, psi_max {cfg.psi_max}, "
          f"{doc['seconds']:.0f} s")
    print(f"{'replay':<12} {'drift alert: old rule':>22} {'new rule':>9}   {'accuracy: old':>14} {'new':>5}   "
          f"{'any alert (exit 3): old':>24} {'new':>5}")
    for case in cases:
        r = summary[case]
        label = "false alarms" if case in ("honest", "fresh") else "detections"
        print(f"{case:<12} {r['old_drift']:>22.0%} {r['new_drift']:>9.0%}   {r['old_accuracy']:>14.0%} "
              f"{r['accuracy']:>5.0%}   {r['old_any']:>24.0%} {r['new_any']:>5.0%}   ({label})")


if __name__ == "__main__":
    main()
