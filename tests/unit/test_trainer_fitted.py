"""The trainer fits fitted features per walk-forward job, on that job's training rows only."""

from __future__ import annotations

import numpy as np
import pandas as pd

from aitrader.config import TrainConfig
from aitrader.training.splits import purged_walk_forward
from aitrader.training.trainer import build_dataset, fit_features
from tests.unit.test_features_fitted import regime_bars

CFG = TrainConfig.model_validate({
    "features": {"names": ["ret_1", "vol_regime", "hmm_regime_p", "anomaly_score"]},
    "target": {"horizon": 3},
    "split": {"n_folds": 2, "min_train": 300, "holdout": 0.2, "embargo": 5},
})


def _jobs(cfg: TrainConfig, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    sp = cfg.split
    plan = purged_walk_forward(n, n_folds=sp.n_folds, horizon=cfg.target.horizon, embargo=sp.embargo,
                               holdout=sp.holdout, min_train=sp.min_train)
    return [(f.train, f.test) for f in plan.folds] + [(plan.final_train, plan.holdout)]


def test_each_job_is_fitted_on_its_training_rows_only() -> None:
    bars = regime_bars(1000, seed=5)
    data = build_dataset(CFG, bars)
    jobs = _jobs(CFG, len(data.X))
    fitted, job_x = fit_features(data, jobs)
    assert fitted.X is job_x[-1] and not fitted.pipeline.needs_fit
    assert not job_x[0].equals(job_x[-1]), "fold 1 and the final model must have fits of their own"
    rng = np.random.default_rng(0)
    for k, (train_rows, _) in enumerate(jobs):
        last = int(data.positions[train_rows].max())  # last bar a training row of this job reads
        changed = bars.copy()
        after = changed.index[last + 1:]
        shock = rng.uniform(0.85, 1.15, len(after))[:, None]  # every later bar: a much wilder market
        changed.loc[after, ["open", "high", "low", "close"]] *= shock
        changed.loc[after, "volume"] *= 5.0
        other = build_dataset(CFG, changed)
        assert np.array_equal(other.positions, data.positions)
        _, other_x = fit_features(other, jobs)
        seen = data.positions <= last
        # Rows up to the job's last training bar are unchanged: the fit did not read the later bars.
        pd.testing.assert_frame_equal(job_x[k][seen], other_x[k][seen], rtol=0, atol=0)
        # ... and the later bars do change the later rows (the test can see a difference).
        assert not job_x[k][~seen].equals(other_x[k][~seen])
