"""Expected types of the known hyper-parameters of each model kind (no heavy imports).

The libraries fail deep inside ``fit`` with a bare TypeError (``n_estimators: lots``) or, worse,
accept a wrong type silently; this table lets the config loader and :func:`check_params` refuse
a wrong type first, naming the parameter. Parameters not listed here are passed on unchecked (the
library still validates the names).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# type names: int, float (int or float, finite), bool, str, none
_I, _F, _B, _S, _N = "int", "float", "bool", "str", "none"

_LIGHTGBM: dict[str, tuple[str, ...]] = {
    "boosting_type": (_S,), "boosting": (_S,), "num_leaves": (_I,), "max_depth": (_I,),
    "learning_rate": (_F,), "eta": (_F,), "n_estimators": (_I,), "num_iterations": (_I,),
    "num_boost_round": (_I,), "subsample_for_bin": (_I,), "objective": (_S,), "min_split_gain": (_F,),
    "min_child_weight": (_F,), "min_sum_hessian_in_leaf": (_F,), "min_child_samples": (_I,),
    "min_data_in_leaf": (_I,), "subsample": (_F,), "bagging_fraction": (_F,), "subsample_freq": (_I,),
    "bagging_freq": (_I,), "colsample_bytree": (_F,), "feature_fraction": (_F,), "reg_alpha": (_F,),
    "lambda_l1": (_F,), "reg_lambda": (_F,), "lambda_l2": (_F,), "n_jobs": (_I, _N), "num_threads": (_I,),
    "importance_type": (_S,), "verbose": (_I,), "verbosity": (_I,), "deterministic": (_B,),
    "force_row_wise": (_B,), "force_col_wise": (_B,), "max_bin": (_I,), "extra_trees": (_B,),
    "path_smooth": (_F,), "linear_tree": (_B,), "min_gain_to_split": (_F,), "max_delta_step": (_F,),
    "feature_fraction_bynode": (_F,), "early_stopping_round": (_I,), "first_metric_only": (_B,),
}

_XGBOOST: dict[str, tuple[str, ...]] = {
    "n_estimators": (_I,), "max_depth": (_I,), "max_leaves": (_I,), "max_bin": (_I,), "grow_policy": (_S,),
    "learning_rate": (_F,), "verbosity": (_I,), "objective": (_S,), "booster": (_S,), "tree_method": (_S,),
    "n_jobs": (_I, _N), "gamma": (_F,), "min_child_weight": (_F,), "max_delta_step": (_F,),
    "subsample": (_F,), "sampling_method": (_S,), "colsample_bytree": (_F,), "colsample_bylevel": (_F,),
    "colsample_bynode": (_F,), "reg_alpha": (_F,), "reg_lambda": (_F,), "scale_pos_weight": (_F,),
    "base_score": (_F, _N), "num_parallel_tree": (_I,), "importance_type": (_S, _N),
    "enable_categorical": (_B,), "max_cat_to_onehot": (_I,), "multi_strategy": (_S,),
    "validate_parameters": (_B,), "eval_metric": (_S, _N),
}

# ridge is Ridge (regression) or LogisticRegression (classification): the union of both.
_RIDGE: dict[str, tuple[str, ...]] = {
    "alpha": (_F,), "fit_intercept": (_B,), "copy_X": (_B,), "max_iter": (_I, _N), "tol": (_F,),
    "solver": (_S,), "positive": (_B,), "C": (_F,), "penalty": (_S, _N), "dual": (_B,),
    "intercept_scaling": (_F,), "verbose": (_I,), "warm_start": (_B,), "n_jobs": (_I, _N),
    "l1_ratio": (_F, _N),
}

_FOREST: dict[str, tuple[str, ...]] = {
    "n_estimators": (_I,), "criterion": (_S,), "max_depth": (_I, _N), "min_samples_split": (_I, _F),
    "min_samples_leaf": (_I, _F), "min_weight_fraction_leaf": (_F,), "max_features": (_I, _F, _S, _N),
    "max_leaf_nodes": (_I, _N), "min_impurity_decrease": (_F,), "bootstrap": (_B,), "oob_score": (_B,),
    "n_jobs": (_I, _N), "verbose": (_I,), "warm_start": (_B,), "ccp_alpha": (_F,),
    "max_samples": (_I, _F, _N),
}

PARAM_TYPES: dict[str, dict[str, tuple[str, ...]]] = {
    "lightgbm": _LIGHTGBM, "xgboost": _XGBOOST, "ridge": _RIDGE, "random_forest": _FOREST,
}

# Counts that, set absurdly high, make training run for days or start thousands of threads.
_RANGES: dict[str, tuple[int, int]] = {
    name: (1, 100_000) for name in ("n_estimators", "num_iterations", "num_boost_round", "num_parallel_tree")
} | {name: (-1, 1024) for name in ("n_jobs", "num_threads")}

_WORDS = {_I: "an integer", _F: "a finite number", _B: "true or false", _S: "a string", _N: "null"}


def _matches(value: Any, kind: str) -> bool:
    if kind == _N:
        return value is None
    if kind == _B:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == _I:
        return isinstance(value, int)
    if kind == _F:
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    return isinstance(value, str)


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere in a parameter value (lists and mappings included)."""
    stack, seen = [value], 0
    while stack and seen < 100_000:
        item = stack.pop()
        seen += 1
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return True


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def param_type_problems(kind: str, params: Mapping[Any, Any]) -> list[tuple[str, str]]:
    """``[(name, "must be an integer, got 'lots'"), ...]`` for the known parameters of ``kind``."""
    table = PARAM_TYPES.get(kind, {})
    problems = []
    for name, value in params.items():
        if not _finite(value):
            problems.append((str(name), f"must be finite (no .inf or .nan), got {_short(value)}"))
            continue
        expected = table.get(str(name))
        if expected is None or any(_matches(value, t) for t in expected):
            lo_hi = _RANGES.get(str(name))
            if lo_hi is not None and isinstance(value, int) and not lo_hi[0] <= value <= lo_hi[1]:
                problems.append((str(name), f"must be between {lo_hi[0]} and {lo_hi[1]:,}, got {_short(value)}"))
            continue
        problems.append((str(name), f"must be {' or '.join(_WORDS[t] for t in expected)}, got {_short(value)}"))
    return problems
