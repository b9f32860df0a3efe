"""Distribution drift of live values against a training baseline: PSI and a two-sample KS.

The baseline of one variable (a feature or the model's predictions) is stored in the manifest as
``{"quantiles": [101 values], "bin_edges": [...], "counts": [...]}``: the 0..100th percentiles of the
training distribution and a histogram over decile bins whose outer bins are open.

PSI uses the baseline's own bins: live values are counted into the same bins, both histograms are
turned into shares, empty bins get ``EPSILON`` (1e-4) so the logarithm stays finite, and
``PSI = sum((a - e) * ln(a / e))`` over bins (``a`` live share, ``e`` baseline share). Rules of thumb:
< 0.1 stable, 0.1-0.2 moderate shift, > 0.2 a significant shift (the default alert threshold).

KS: the training values themselves are not stored, only their 101 quantiles, so the baseline CDF
is reconstructed by linear interpolation between quantile points (``F(q_k) = k / 100``; 0 below
the minimum, 1 above the maximum). The statistic ``max |F_live - F_base|`` is evaluated at the
union of the live values and the quantile points, taking both one-sided limits of the live step
CDF. The approximation error is at most one percentile (0.01) from the reconstruction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aitrader.errors import ModelError

EPSILON = 1e-4
N_QUANTILES = 101


def _interior_edges(bin_edges: Sequence[float], n_counts: int, name: str) -> np.ndarray:
    """The cut points between bins, whatever way the outer edges were stored.

    Accepted layouts: interior edges only (``len(counts) == len(edges) + 1``) or all edges
    including the two outer ones (``len(counts) == len(edges) - 1``; the outer edges are ignored
    because the outer bins are open, which also accepts -inf/inf or the training min/max).
    """
    edges = np.asarray(bin_edges, dtype=float)
    if n_counts == edges.size + 1:
        interior = edges
    elif n_counts == edges.size - 1 and edges.size >= 2:
        interior = edges[1:-1]
    else:
        raise ModelError(
            f"baseline of {name!r}: {edges.size} bin_edges do not fit {n_counts} counts "
            f"(expected {n_counts - 1} interior or {n_counts + 1} edges); the manifest is damaged, "
            "retrain the model"
        )
    if interior.size and (not np.all(np.isfinite(interior)) or np.any(np.diff(interior) < 0)):
        raise ModelError(
            f"baseline of {name!r}: bin_edges must be finite and ascending, got {interior.tolist()}; "
            "the manifest is damaged, retrain the model"
        )
    return interior


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def bin_counts(values: Sequence[float] | np.ndarray, interior_edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the bins cut at ``interior_edges`` (outer bins open).

    A value equal to an edge falls in the bin to its right, as with ``np.histogram`` bins
    ``[a, b)``; ``searchsorted(side="right")`` gives exactly that.
    """
    idx = np.searchsorted(interior_edges, _finite(values), side="right")
    return np.bincount(idx, minlength=interior_edges.size + 1).astype(float)


def psi_from_counts(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """Population stability index between two histograms over the same bins (counts or shares)."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape or e.sum() <= 0 or a.sum() <= 0:
        return float("nan")
    e = np.maximum(e / e.sum(), EPSILON)
    a = np.maximum(a / a.sum(), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def psi(baseline: Mapping[str, Any], live: Sequence[float] | np.ndarray, *, name: str = "value") -> float:
    """PSI of ``live`` values against one baseline entry (NaN when there is nothing to compare)."""
    counts = np.asarray(baseline.get("counts") or [], dtype=float)
    if counts.size < 2 or counts.sum() <= 0:
        return float("nan")  # no training values (an all-NaN feature): nothing to compare with
    edges = _interior_edges(baseline.get("bin_edges") or [], counts.size, name)
    return psi_from_counts(counts, bin_counts(live, edges))


def baseline_cdf(quantiles: Sequence[float] | np.ndarray, x: np.ndarray, *, left: bool = False) -> np.ndarray:
    """The baseline CDF at ``x``, interpolated linearly between the stored quantiles.

    Tied quantiles (a discrete feature) make the CDF jump; ``left=False`` gives the
    right-continuous value ``P(X <= x)`` and ``left=True`` the left limit ``P(X < x)``, so both
    sides of a jump are seen by the KS statistic.
    """
    q = np.sort(np.asarray(quantiles, dtype=float))
    pts = np.asarray(x, dtype=float)
    n = q.size
    step = 1.0 / (n - 1)
    j = np.searchsorted(q, pts, side="left" if left else "right")  # quantiles below (or at) x
    inner = (j > 0) & (j < n)
    out = np.where(j >= n, 1.0, 0.0)
    lo = q[np.clip(j - 1, 0, n - 1)]
    hi = q[np.clip(j, 0, n - 1)]
    width = np.where(hi > lo, hi - lo, 1.0)
    frac = np.clip((pts - lo) / width, 0.0, 1.0)
    return np.where(inner, (j - 1) * step + frac * step, out)


def ks_statistic(quantiles: Sequence[float] | np.ndarray, live: Sequence[float] | np.ndarray) -> float:
    """Two-sample KS statistic between live values and the quantile-reconstructed baseline."""
    q = _finite(quantiles)
    x = np.sort(_finite(live))
    if q.size < 2 or x.size == 0:
        return float("nan")
    points = np.union1d(x, q)
    # Both CDFs are non-decreasing with jumps only at these points, so the supremum of their
    # difference is reached at a point or just before it: compare values and left limits.
    right = np.abs(np.searchsorted(x, points, side="right") / x.size - baseline_cdf(q, points))
    left = np.abs(np.searchsorted(x, points, side="left") / x.size - baseline_cdf(q, points, left=True))
    return float(max(right.max(), left.max()))


def make_baseline(values: Sequence[float] | np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """A baseline entry in the manifest's layout (quantiles, interior decile edges, counts).

    The trainer writes the real baselines; this mirrors that layout so monitoring can be tested
    and a baseline can be rebuilt for a model trained before baselines existed.
    """
    arr = _finite(values)
    if arr.size == 0:
        return {"quantiles": [], "bin_edges": [], "counts": []}
    quantiles = np.quantile(arr, np.linspace(0, 1, N_QUANTILES))
    edges = np.unique(np.quantile(arr, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return {
        "quantiles": quantiles.tolist(),
        "bin_edges": edges.tolist(),
        "counts": bin_counts(arr, edges).astype(int).tolist(),
    }


def drift_table(
    baselines: Mapping[str, Mapping[str, Any]],
    names: Sequence[str],
    live: np.ndarray,
) -> list[dict[str, Any]]:
    """PSI and KS for each named column of ``live`` (rows x len(names)), ranked by PSI, worst first.

    Columns without a baseline are listed with ``psi = None`` and ``note`` saying so, at the end.
    """
    matrix = np.asarray(live, dtype=float)
    if matrix.ndim != 2 or matrix.shape[1] != len(names):
        raise ModelError(
            f"live feature matrix has shape {matrix.shape}, expected (rows, {len(names)}) for the "
            "manifest's features; the run was made with another model version"
        )
    rows: list[dict[str, Any]] = []
    for j, name in enumerate(names):
        col = matrix[:, j]
        n = int(np.isfinite(col).sum())
        base = baselines.get(name)
        if not base:
            rows.append({"name": name, "psi": None, "ks": None, "n": n, "note": "no baseline"})
            continue
        p = psi(base, col, name=name)
        k = ks_statistic(base.get("quantiles") or [], col)
        rows.append({
            "name": name,
            "psi": None if np.isnan(p) else p,
            "ks": None if np.isnan(k) else k,
            "n": n,
        })
    rows.sort(key=lambda r: (r["psi"] is None, -(r["psi"] or 0.0)))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows
