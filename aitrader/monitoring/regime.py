"""The regime-shift alert: the live regime distribution against the training rows' (``baseline.regimes``).

A model trained with regime features (``vol_regime``, ``hmm_regime_p``; docs/features-fitted.md)
records in its manifest the share of its final training rows in each regime. The monitor maps the
live values of the same features to regimes with the same rule and compares the shares by their
total variation distance ``TVD = 1/2 sum_k |live_k - train_k|`` (0: the same mix, 1: no regime in
common). ``regime_shift`` fires when the TVD exceeds ``monitoring.regime_shift_max`` once the run has
``monitoring.drift_min_samples`` live values: the market now sits in regimes the model saw little of.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aitrader.config import Monitoring
from aitrader.features.fitted import regime_shares


def regime_rows(baseline: Mapping[str, Any], names: Sequence[str], live: np.ndarray,
                cfg: Monitoring) -> list[dict[str, Any]]:
    """One row per regime feature of the baseline: training and live shares, TVD, and whether it shifted."""
    rows = []
    for name, base in regime_features(baseline, names):
        values = live[:, list(names).index(name)] if len(live) else np.empty(0)
        shares, n = regime_shares(str(base["rule"]), int(base["regimes"]), values)
        rows.append(regime_row(name, base, shares, n, cfg))
    return rows


def regime_features(baseline: Mapping[str, Any], names: Sequence[str]) -> list[tuple[str, Mapping[str, Any]]]:
    """(name, baseline entry) of each regime feature :func:`regime_rows` reports on, in its order."""
    regimes = baseline.get("regimes")
    if not isinstance(regimes, Mapping):
        return []
    return [(name, base) for name, base in regimes.items() if name in names and isinstance(base, Mapping)]


def regime_row(name: str, base: Mapping[str, Any], shares: Sequence[float], n: int, cfg: Monitoring) -> dict[str, Any]:
    """One row of :func:`regime_rows` from the live shares over ``n`` values (also used by the streamed
    monitor, which counts the regimes chunk by chunk)."""
    train = np.asarray(base["shares"], dtype=np.float64)
    tvd = 0.5 * float(np.abs(np.asarray(shares) - train).sum()) if n else None
    return {"name": name, "kind": base.get("kind"), "rule": base["rule"], "train": train.tolist(),
            "live": list(shares), "n": n, "tvd": tvd, "threshold": cfg.regime_shift_max,
            "shifted": bool(tvd is not None and n >= cfg.drift_min_samples and tvd > cfg.regime_shift_max)}


def _fmt(shares: Sequence[float]) -> str:
    return "/".join(f"{100 * s:.0f}" for s in shares) + "%"


def regime_alerts(rows: Sequence[Mapping[str, Any]], cfg: Monitoring) -> list[dict[str, Any]]:
    """``regime_shift`` alerts for the shifted rows of :func:`regime_rows`."""
    return [{"code": "regime_shift", "value": r["tvd"], "threshold": cfg.regime_shift_max, "feature": r["name"],
             "message": (
                 f"regime shift on {r['name']}: live regime shares {_fmt(r['live'])} vs training "
                 f"{_fmt(r['train'])} over {r['n']} predictions (total variation {r['tvd']:.2f} > "
                 f"regime_shift_max {cfg.regime_shift_max:g}); the model saw little of this market state in "
                 "training: retrain on recent data, or raise monitoring.regime_shift_max")}
            for r in rows if r["shifted"]]
