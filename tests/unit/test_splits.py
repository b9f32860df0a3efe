"""Purged walk-forward splits: leakage, ordering, holdout isolation and the too-little-data bound."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aitrader.errors import ConfigError, DataError
from aitrader.training.splits import MIN_HOLDOUT_ROWS, min_rows, purged_walk_forward


@st.composite
def plans(draw):
    n_folds = draw(st.integers(2, 8))
    horizon = draw(st.integers(1, 30))
    embargo = draw(st.integers(0, 40))
    min_train = draw(st.integers(horizon + 10, horizon + 200))
    holdout = draw(st.one_of(st.floats(0.05, 0.5), st.integers(MIN_HOLDOUT_ROWS, 200).map(float)))
    need = min_rows(n_folds=n_folds, horizon=horizon, holdout=holdout, min_train=min_train)
    n_rows = draw(st.integers(need, need + 2000))
    return n_rows, n_folds, horizon, embargo, min_train, holdout


@settings(max_examples=150, deadline=None)
@given(plans())
def test_no_train_target_window_overlaps_the_test_span(args):
    n_rows, n_folds, horizon, embargo, min_train, holdout = args
    plan = purged_walk_forward(
        n_rows, n_folds=n_folds, horizon=horizon, embargo=embargo, holdout=holdout, min_train=min_train
    )
    assert len(plan.folds) == n_folds
    holdout_set = set(plan.holdout.tolist())
    prev_end = -1
    for fold in plan.folds:
        assert fold.train.size > 0 and fold.test.size > 0
        lo, hi = int(fold.test.min()), int(fold.test.max()) + horizon
        # closed intervals [i, i+h] and [lo, hi] intersect iff i <= hi and i + h >= lo
        overlap = (fold.train <= hi) & (fold.train + horizon >= lo)
        assert not overlap.any()
        assert np.intersect1d(fold.train, fold.test).size == 0
        assert int(fold.test.min()) > prev_end  # forward in time, blocks do not overlap
        prev_end = int(fold.test.max())
        assert np.all(np.diff(fold.test) == 1)  # contiguous block
        assert not holdout_set & set(fold.train.tolist())
        assert not holdout_set & set(fold.test.tolist())
    # the final training rows' targets never reach into the holdout
    assert int(plan.final_train.max()) + horizon < int(plan.holdout.min())
    assert int(plan.holdout.max()) == n_rows - 1


@settings(max_examples=100, deadline=None)
@given(plans())
def test_embargo_excludes_rows_after_each_earlier_test_block(args):
    n_rows, n_folds, horizon, embargo, min_train, holdout = args
    plan = purged_walk_forward(
        n_rows, n_folds=n_folds, horizon=horizon, embargo=embargo, holdout=holdout, min_train=min_train
    )
    for k, fold in enumerate(plan.folds):
        train = set(fold.train.tolist())
        for earlier in plan.folds[:k]:
            end = int(earlier.test.max()) + 1
            assert not train & set(range(end, end + embargo))
        # everything before the purge that is not embargoed is used: nothing else is dropped
        embargoed = set()
        for earlier in plan.folds[:k]:
            end = int(earlier.test.max()) + 1
            embargoed |= set(range(end, end + embargo))
        expected = set(range(int(fold.test.min()) - horizon)) - embargoed
        assert train == expected


@settings(max_examples=100, deadline=None)
@given(plans())
def test_minimum_is_exact(args):
    _, n_folds, horizon, embargo, min_train, holdout = args
    need = min_rows(n_folds=n_folds, horizon=horizon, holdout=holdout, min_train=min_train)
    kwargs = dict(n_folds=n_folds, horizon=horizon, embargo=embargo, holdout=holdout, min_train=min_train)
    purged_walk_forward(need, **kwargs)  # exactly the minimum works
    with pytest.raises(DataError, match=f"need at least {need}"):
        purged_walk_forward(need - 1, **kwargs)


def test_layout_of_a_small_plan():
    plan = purged_walk_forward(100, n_folds=2, horizon=2, embargo=3, holdout=0.2, min_train=40)
    # holdout 20 rows, purge gap 2, selection 78: first test at 40 (remainder 0), blocks of 19
    assert plan.holdout.tolist() == list(range(80, 100))
    assert plan.final_train.tolist() == list(range(78))
    assert plan.folds[0].test.tolist() == list(range(40, 59))
    assert plan.folds[0].train.tolist() == list(range(38))
    assert plan.folds[1].test.tolist() == list(range(59, 78))
    assert plan.folds[1].train.tolist() == list(range(57))  # 59..61 embargoed lie after the purge
    plan = purged_walk_forward(200, n_folds=3, horizon=2, embargo=3, holdout=20, min_train=40)
    f0, f1, f2 = plan.folds
    end0 = int(f0.test.max()) + 1
    assert set(range(end0, end0 + 3)).isdisjoint(f2.train.tolist())
    assert end0 + 3 in f2.train.tolist()
    desc = plan.describe()
    assert desc["purge"] == 2 and desc["holdout_rows"] == 20 and len(desc["folds"]) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n_folds=1), "split.n_folds: must be >= 2, got 1"),
        (dict(horizon=0), "target.horizon: must be >= 1"),
        (dict(min_train=12), "split.min_train: must be at least"),
        (dict(holdout=12.5), "split.holdout: .* must be whole"),
        (dict(holdout=3.0), "split.holdout: must be at least 10 bars"),
    ],
)
def test_bad_parameters_name_their_config_path(kwargs, message):
    args = dict(n_folds=3, horizon=5, embargo=2, holdout=0.2, min_train=50) | kwargs
    with pytest.raises(ConfigError, match=message):
        purged_walk_forward(1000, **args)
