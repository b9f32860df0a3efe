"""The previous ``retrain.live_feedback`` (commit 57d5136: every run ledger read whole, every feature
row decoded, one feature matrix), kept unchanged as the oracle of the streamed one: used by
tests/unit/test_retrain_feedback.py and, as the "before" row, by scripts/bench/scale.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aitrader.errors import AitraderError


def whole_ledger_feedback(name: str, runs_dir: Path, champion_digest: str | None, challenger: Any,
                          challenger_names: list[str], task: str) -> dict[str, Any]:
    """The previous ``retrain.live_feedback`` (commit 57d5136), unchanged: the oracle."""
    from aitrader.monitoring.accuracy import accuracy_metrics
    from aitrader.monitoring.ledger import feature_matrix, read_ledger
    from aitrader.monitoring.monitor import model_ids, model_name

    pred, outcome, feats, champ = [], [], [], []
    runs = 0
    for db in sorted(runs_dir.glob("*/ledger.db")) if runs_dir.is_dir() else []:
        try:
            ledger = read_ledger(db.parent)
        except AitraderError:
            continue
        entries = [m for m in ledger.models if model_name(m) == name]
        if not entries:
            continue
        p = ledger.predictions
        ids = set().union(*(model_ids(m) for m in entries))
        mine = p["model_id"].astype(str).isin(ids)
        rows = p[mine & p["outcome"].notna() & (p["source"].fillna("model") == "model")]
        if rows.empty:
            continue
        runs += 1
        pred.append(rows["prediction"].to_numpy(float))
        outcome.append(rows["outcome"].to_numpy(float))
        champ.append((rows["digest"] == champion_digest).to_numpy(bool) if champion_digest else
                     np.zeros(len(rows), bool))
        feats.append(feature_matrix(rows["features"], len(challenger_names)))
    if not runs:
        return {"runs": 0, "outcomes": 0, "champion": None, "challenger": None}
    p_all, y_all, c_mask, x_all = (np.concatenate(pred), np.concatenate(outcome), np.concatenate(champ),
                                   np.vstack(feats))
    ok = np.isfinite(x_all).all(axis=1)
    ch_pred = np.full(len(x_all), np.nan)
    if ok.any():
        ch_pred[ok] = challenger.predict_batch(x_all[ok])
    return {
        "runs": runs,
        "outcomes": int(y_all.size),
        "champion": accuracy_metrics(p_all[c_mask], y_all[c_mask], task=task) if c_mask.any() else None,
        "challenger": accuracy_metrics(ch_pred, y_all, task=task),
    }
