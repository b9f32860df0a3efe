"""Prediction targets: forward returns and their direction. Never part of the feature matrix.

A target at bar t reads close[t + h], the future: it exists only to label training rows, so it
lives apart from the features (which read bars <= t only) and is NaN where the future is unknown.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from aitrader.errors import FeatureError


def forward_return(close: pd.Series, horizon: int) -> pd.Series:
    """Simple return from close t to close t+horizon, named ``fwd_return_{horizon}``; NaN for the last rows."""
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
        raise FeatureError(f"target horizon must be an integer >= 1, got {horizon!r}; use e.g. 5 for fwd_return_5")
    values = close.to_numpy(dtype="float64")
    out = np.full(len(values), np.nan)
    if len(values) > horizon:
        out[:-horizon] = values[horizon:] / values[:-horizon] - 1.0
    return pd.Series(out, index=close.index, name=f"fwd_return_{int(horizon)}", dtype="float64")


def direction(fwd: pd.Series) -> pd.Series:
    """Classification label of a forward return: 1.0 when it is > 0, 0.0 otherwise, NaN where unknown."""
    values = fwd.to_numpy(dtype="float64")
    out = np.where(np.isnan(values), np.nan, (values > 0.0).astype("float64"))
    name = f"{fwd.name}_up" if fwd.name else "direction"
    return pd.Series(out, index=fwd.index, name=name, dtype="float64")
