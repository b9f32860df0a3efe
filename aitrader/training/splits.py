"""Purged walk-forward splits with an embargo and a final holdout.

Rows are the bars left after feature warm-up that have a known target; row ``i``'s target is
the forward return over closes ``i .. i + horizon``, so two rows whose windows share a close are
not independent. The plan, for ``n`` rows::

    [ selection: 0 .. S )  [ purge gap: horizon rows ]  [ holdout: last H rows ]

* Holdout: the last ``H`` rows (``holdout < 1``: ``floor(holdout * n)``; ``>= 1``: a count).
  It is never used for model selection; the final model is evaluated on it once.
* Purge gap: the ``horizon`` rows before the holdout belong to nothing, so that no selection
  row's target window reaches into the holdout (``S = n - H - horizon``).
* Folds: an expanding window over the selection period. The first ``min_train`` rows (plus the
  remainder of the division below) only ever train; after them come ``n_folds`` equal test
  blocks ``[t0_k, t1_k)``. Fold ``k`` trains on rows ``i < t0_k - horizon`` (the ``horizon`` rows
  just before the test block are purged: their target windows would overlap it), minus the
  embargo: the ``embargo`` rows right after every earlier test block ``j < k``
  (``[t1_j, t1_j + embargo)``) are excluded, because with an expanding window an earlier test
  block becomes training data for later folds, and the rows right after it are the ones most
  correlated with it.
* Final model: trained on the whole selection period ``[0, S)`` (no embargo: the embargo only
  protects fold scores), evaluated on the holdout.

Every fold satisfies: for each train row ``i``, ``[i, i + horizon]`` does not intersect
``[min(test), max(test) + horizon]``; train and test are disjoint; test blocks move forward in
time; no holdout row is in any fold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aitrader.errors import ConfigError, DataError

# Fewer rows than this make the per-fold and holdout metrics (IC, Sharpe, hit rate) noise.
MIN_TEST_ROWS = 10
MIN_HOLDOUT_ROWS = 10


@dataclass(frozen=True)
class Fold:
    """Row indices (ascending int64 arrays) of one walk-forward fold."""

    train: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class SplitPlan:
    """The folds, the holdout and the final model's training rows for ``n_rows`` rows."""

    n_rows: int
    horizon: int
    embargo: int
    min_train: int
    folds: list[Fold] = field(default_factory=list)
    holdout: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    final_train: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for the manifest's ``split`` section (row positions, not bars)."""
        return {
            "method": "purged_walk_forward",
            "n_rows": self.n_rows,
            "n_folds": len(self.folds),
            "horizon": self.horizon,
            "purge": self.horizon,
            "embargo": self.embargo,
            "min_train": self.min_train,
            "folds": [
                {
                    "train_rows": int(f.train.size),
                    "test_start": int(f.test[0]),
                    "test_end": int(f.test[-1]) + 1,
                }
                for f in self.folds
            ],
            "final_train_rows": int(self.final_train.size),
            "holdout_start": int(self.holdout[0]),
            "holdout_rows": int(self.holdout.size),
        }


def holdout_rows(n_rows: int, holdout: float) -> int:
    """Number of holdout rows: ``floor(holdout * n_rows)`` for a fraction, else the count itself."""
    if holdout <= 0:
        raise ConfigError(f"split.holdout: must be > 0, got {holdout!r}")
    if holdout < 1:
        return int(math.floor(holdout * n_rows))
    if holdout != int(holdout):
        raise ConfigError(
            f"split.holdout: a value >= 1 is a number of bars and must be whole, got {holdout!r}; "
            "use a fraction below 1 (e.g. 0.2) or a whole count (e.g. 250)"
        )
    return int(holdout)


def _feasible(n_rows: int, *, n_folds: int, horizon: int, holdout: float, min_train: int) -> bool:
    n_hold = holdout_rows(n_rows, holdout)
    selection = n_rows - n_hold - horizon
    return n_hold >= MIN_HOLDOUT_ROWS and selection - min_train >= n_folds * MIN_TEST_ROWS


def min_rows(*, n_folds: int, horizon: int, holdout: float, min_train: int) -> int:
    """The smallest number of rows for which :func:`purged_walk_forward` succeeds.

    Feasibility is monotone in ``n_rows`` (``n - floor(f n)`` never decreases), so a doubling
    search followed by bisection finds the exact minimum.
    """
    if holdout >= 1:
        holdout_rows(1, holdout)  # validates a whole count
        if holdout < MIN_HOLDOUT_ROWS:
            raise ConfigError(
                f"split.holdout: must be at least {MIN_HOLDOUT_ROWS} bars, got {holdout!r}; "
                "raise it or use a fraction such as 0.2"
            )
    kwargs = {"n_folds": n_folds, "horizon": horizon, "holdout": holdout, "min_train": min_train}
    lo = min_train + n_folds * MIN_TEST_ROWS + horizon + MIN_HOLDOUT_ROWS  # never enough below this
    if _feasible(lo, **kwargs):  # type: ignore[arg-type]
        return lo
    hi = lo * 2
    while not _feasible(hi, **kwargs):  # type: ignore[arg-type]
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # invariant: lo infeasible, hi feasible
        mid = (lo + hi) // 2
        if _feasible(mid, **kwargs):  # type: ignore[arg-type]
            hi = mid
        else:
            lo = mid
    return hi


def _check_params(n_folds: int, horizon: int, embargo: int, min_train: int) -> None:
    if n_folds < 2:
        raise ConfigError(f"split.n_folds: must be >= 2, got {n_folds}")
    if horizon < 1:
        raise ConfigError(f"target.horizon: must be >= 1, got {horizon}")
    if embargo < 0:
        raise ConfigError(f"split.embargo: must be >= 0, got {embargo}")
    if min_train - horizon < MIN_TEST_ROWS:
        # The first fold trains on min_train - horizon rows (the purge eats the rest).
        raise ConfigError(
            f"split.min_train: must be at least target.horizon + {MIN_TEST_ROWS} = "
            f"{horizon + MIN_TEST_ROWS}, got {min_train}; raise split.min_train or lower the horizon"
        )


def purged_walk_forward(
    n_rows: int, *, n_folds: int, horizon: int, embargo: int, holdout: float, min_train: int
) -> SplitPlan:
    """Plan the purged, embargoed walk-forward folds and the holdout (see the module docstring).

    Raises ``DataError`` naming the minimum number of rows when ``n_rows`` is too small.
    """
    _check_params(n_folds, horizon, embargo, min_train)
    needed = min_rows(n_folds=n_folds, horizon=horizon, holdout=holdout, min_train=min_train)
    if n_rows < needed:
        raise DataError(
            f"too few rows for the split: {n_rows} rows with a known target, need at least {needed} "
            f"(min_train {min_train} + {n_folds} folds x {MIN_TEST_ROWS} + purge {horizon} + holdout); "
            "use more data, fewer folds, a smaller min_train or a smaller holdout"
        )
    n_hold = holdout_rows(n_rows, holdout)
    selection = n_rows - n_hold - horizon
    block, remainder = divmod(selection - min_train, n_folds)
    # The remainder goes to the first training window so that the last test block ends right at
    # the purge gap: fold scores then describe the period closest to the holdout.
    first_test = min_train + remainder
    all_rows = np.arange(n_rows, dtype=np.int64)
    excluded = np.zeros(n_rows, dtype=bool)  # embargoed rows accumulated fold by fold
    folds: list[Fold] = []
    for k in range(n_folds):
        t0 = first_test + k * block
        t1 = t0 + block
        train_mask = all_rows < t0 - horizon
        train_mask &= ~excluded
        folds.append(Fold(train=all_rows[train_mask], test=all_rows[t0:t1]))
        excluded[t1 : min(t1 + embargo, selection)] = True
    return SplitPlan(
        n_rows=n_rows,
        horizon=horizon,
        embargo=embargo,
        min_train=min_train,
        folds=folds,
        holdout=all_rows[n_rows - n_hold :],
        final_train=all_rows[:selection],
    )
