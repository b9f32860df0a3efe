"""Benchmark of the fitted features (a benchmark, not a test).

Prints, over one run of synthetic bars (default 200,000 one-minute bars, parameters fitted on the
first 20,000):
  * fit: seconds to fit each fitted feature on the training rows;
  * batch: microseconds per bar of ``FeaturePipeline.transform`` with only that feature;
  * streaming: microseconds per bar of its ``stream().update`` fed bar by bar;
  * the peers, on ``--sample`` bars: hmmlearn's causal route (``predict_proba`` of a trailing
    ``--window``-bar series at every bar, its last row) against the forward-filter step, and
    scikit-learn's ``IsolationForest.score_samples`` on one row against the exported forest's step;
  * the largest |batch - streaming| difference (must be <= 1e-7), and the machine load beside
    each figure (the machine is shared).

Usage: .venv/bin/python scripts/bench/fitted_features.py [--bars N] [--sample N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from aitrader.data.synthetic import generate_bars
from aitrader.features import FeaturePipeline

FEATURES = ("vol_regime", "hmm_regime_p", "anomaly_score")


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=200_000, help="synthetic bars (default 200,000)")
    parser.add_argument("--train", type=int, default=20_000, help="bars the parameters are fitted on")
    parser.add_argument("--sample", type=int, default=300, help="bars timed for the per-bar peers")
    parser.add_argument("--window", type=int, default=500, help="trailing window of hmmlearn's causal route")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()

    bars = generate_bars(args.bars, seed=42, freq="1min", start_price=40_000.0, volatility=0.002)
    cols = [bars[k].to_numpy().tolist() for k in ("open", "high", "low", "close", "volume")]
    rows = np.arange(60, args.train)
    out: dict[str, dict[str, float]] = {}
    for name in FEATURES:
        pipe = FeaturePipeline([name])
        t0 = time.perf_counter()
        fitted = pipe.fit(bars, rows)
        fit_s = time.perf_counter() - t0
        load_fit = _load()
        t0 = time.perf_counter()
        batch = fitted.transform(bars)[name].to_numpy()
        batch_us = (time.perf_counter() - t0) / args.bars * 1e6
        load_batch = _load()
        stream = fitted.stream()
        update = stream.update
        got = np.empty(args.bars)
        t0 = time.perf_counter()
        for k, (a, b, x, y, z) in enumerate(zip(*cols, strict=True)):
            got[k] = update(k, a, b, x, y, z)[0]
        stream_us = (time.perf_counter() - t0) / args.bars * 1e6
        ok = np.isfinite(batch)
        out[name] = {"fit_s": round(fit_s, 3), "load_fit": load_fit, "batch_us_per_bar": round(batch_us, 3),
                     "load_batch": load_batch, "stream_us_per_bar": round(stream_us, 2), "load_stream": _load(),
                     "max_abs_diff": float(np.max(np.abs(batch[ok] - got[ok])))}

    # Peers on a sample of bars (too slow for all of them).
    from hmmlearn.hmm import GaussianHMM
    from sklearn.ensemble import IsolationForest

    hmm = FeaturePipeline(["hmm_regime_p"]).fit(bars, rows)
    values = hmm.fitted_params["hmm_regime_p"]["values"]  # type: ignore[index]
    k = len(values["startprob"])
    model = GaussianHMM(n_components=k, covariance_type="diag", init_params="")
    model.startprob_, model.transmat_ = np.array(values["startprob"]), np.array(values["transmat"])
    model.means_, model.covars_ = np.array(values["means"]).reshape(k, 1), np.array(values["vars"]).reshape(k, 1)
    r = bars["close"].pct_change().to_numpy()
    z = ((r - values["mu"]) / values["sd"])[1:]
    start = args.train
    t0 = time.perf_counter()
    for t in range(start, start + args.sample):
        model.predict_proba(z[t - args.window: t + 1].reshape(-1, 1))
    peer_hmm_us = (time.perf_counter() - t0) / args.sample * 1e6
    out["hmm_regime_p"]["peer_hmmlearn_window_us_per_bar"] = round(peer_hmm_us, 1)
    out["hmm_regime_p"]["peer_ratio"] = round(peer_hmm_us / out["hmm_regime_p"]["stream_us_per_bar"], 1)
    out["hmm_regime_p"]["load_peer"] = _load()

    anomaly = FeaturePipeline(["anomaly_score"])
    base = anomaly.base_matrix(bars)
    fitted = anomaly.fit_matrix(base, rows)
    trees = int(fitted.specs[0].params["trees"])
    train_rows = rows[np.isfinite(base[rows]).all(axis=1)]
    forest = IsolationForest(n_estimators=trees, random_state=0, n_jobs=1).fit(base[train_rows])
    sample = base[start: start + args.sample]
    t0 = time.perf_counter()
    for row in sample:
        forest.score_samples(row.reshape(1, -1))
    peer_if_us = (time.perf_counter() - t0) / args.sample * 1e6
    out["anomaly_score"]["peer_sklearn_one_row_us"] = round(peer_if_us, 1)
    out["anomaly_score"]["peer_ratio"] = round(peer_if_us / out["anomaly_score"]["stream_us_per_bar"], 1)
    out["anomaly_score"]["load_peer"] = _load()

    doc = {"bars": args.bars, "train_bars": args.train, "sample": args.sample, "cpus": os.cpu_count(), "features": out}
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(f"{args.bars:,} bars, fitted on {args.train:,}; peers on {args.sample} bars")
    for name, f in out.items():
        print(f"{name:14s} fit {f['fit_s']:.2f} s (load {f['load_fit']}), batch {f['batch_us_per_bar']:.3f} us/bar "
              f"(load {f['load_batch']}), streaming {f['stream_us_per_bar']:.2f} us/bar (load {f['load_stream']}), "
              f"max |batch - streaming| {f['max_abs_diff']:.1e}")
    h = out["hmm_regime_p"]
    print(f"  hmmlearn predict_proba over a {args.window}-bar window per bar: "
          f"{h['peer_hmmlearn_window_us_per_bar']:.0f} us/bar = {h['peer_ratio']:.0f}x the forward-filter stream "
          f"(load {h['load_peer']})")
    a = out["anomaly_score"]
    print(f"  sklearn IsolationForest.score_samples on one row: {a['peer_sklearn_one_row_us']:.0f} us = "
          f"{a['peer_ratio']:.1f}x the exported forest's stream (load {a['load_peer']})")


if __name__ == "__main__":
    main()
