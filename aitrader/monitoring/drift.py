"""Distribution drift of live values against a training baseline: PSI and a two-sample KS.

The baseline of one variable (a feature or the model's predictions) is stored in the manifest as
``{"quantiles": [101 values], "bin_edges": [...], "counts": [...]}``: the 0..100th percentiles of the
training distribution and a histogram over decile bins whose outer bins are open.

PSI uses the baseline's own bins: live values are counted into the same bins, both histograms are
turned into shares, empty bins get ``EPSILON`` (1e-4) so the logarithm stays finite, and
``PSI = sum((a - e) * ln(a / e))`` over bins (``a`` live share, ``e`` baseline share). Rules of thumb:
< 0.1 stable, 0.1-0.2 moderate shift, > 0.2 a significant shift (the default alert threshold).

Noise. PSI of a finite sample is never 0: ``n`` values drawn from the baseline distribution itself
give a PSI of about ``(bins - 1) / n`` on average, and far more when the values are autocorrelated:
a 14-bar ATR or a 20-bar volatility changes little from one bar to the next, so 1,000 live bars hold
only a handful of independent values and land in a few neighbouring bins. Each series is therefore
judged against the noise expected at its *effective* sample size:

* ``rho`` = lag-1 autocorrelation of the live series (finite values in order, clipped to
  ``[0, 0.999]``), ``tau`` = its integrated autocorrelation time ``1 + 2 sum rho_k`` (Sokal's
  window), ``n_eff = n / max((1 + rho) / (1 - rho), tau)``: the AR(1) variance-inflation rule
  ``n (1 - rho) / (1 + rho)``, or the slower decay that rolling-window and volatility features
  show when that inflates more (for a bin indicator the inflation is at most that of the series,
  so this errs on the side of fewer alerts). The training baseline is autocorrelated too; its
  size ``N`` is corrected the same way (its own autocorrelation is not stored), and the two
  combine as
  ``m = 1 / (1 / n_eff + 1 / N_eff)`` (the variance of a share compared between two samples).
* ``noise`` = the 99th percentile of PSI between the baseline shares and ``m`` values drawn
  independently from them (Monte Carlo, 2,000 multinomial draws with a fixed seed, the same
  ``EPSILON`` floor as the real PSI; deterministic).
* A series has drifted (``significant``) when ``PSI > threshold = max(psi_max, noise)``: past the
  practical limit and past what chance explains at that ``n_eff``.

KS: the training values themselves are not stored, only their 101 quantiles, so the baseline CDF
is reconstructed by linear interpolation between quantile points (``F(q_k) = k / 100``; 0 below
the minimum, 1 above the maximum). The statistic ``max |F_live - F_base|`` is evaluated at the
union of the live values and the quantile points, taking both one-sided limits of the live step
CDF. The approximation error is at most one percentile (0.01) from the reconstruction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from aitrader.errors import ModelError

EPSILON = 1e-4
N_QUANTILES = 101
NOISE_QUANTILE = 0.99  # a drift must exceed the PSI that chance reaches 1 time in 100
NOISE_DRAWS = 2000
MAX_RHO = 0.999


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


def lag1_autocorrelation(values: Sequence[float] | np.ndarray) -> float:
    """Lag-1 autocorrelation of the finite values in order (0 for fewer than 3 or a constant series)."""
    x = _finite(values)
    if x.size < 3:
        return 0.0
    a, b = x[:-1] - x[:-1].mean(), x[1:] - x[1:].mean()
    den = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b) / den) if den > 0 else 0.0


def autocorrelation_time(values: Sequence[float] | np.ndarray, *, c: float = 5.0) -> float:
    """Integrated autocorrelation time ``tau = 1 + 2 sum_{k=1..M} rho_k`` of the finite values in order.

    The window ``M`` is Sokal's: the smallest lag with ``M >= c * tau(M)`` (at most ``n / 2``), which
    keeps the noisy far tail of the autocorrelation function out. ``n / tau`` values carry as much
    information about the mean as ``n`` independent ones. At least 1; 1 for fewer than 3 values.
    """
    x = _finite(values)
    n = x.size
    if n < 3:
        return 1.0
    x = x - x.mean()
    var = float(np.dot(x, x))
    if var <= 0:
        return 1.0
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(x, size)
    acf = np.fft.irfft(f * np.conj(f), size)[: n // 2 + 1] / var
    taus = 1.0 + 2.0 * np.cumsum(acf[1:])
    lags = np.arange(1, taus.size + 1)
    ok = lags >= c * taus
    tau = float(taus[np.argmax(ok)]) if ok.any() else float(taus[-1])
    return max(1.0, tau)


def effective_sample_size(n: float, rho: float, tau: float = 1.0) -> float:
    """``n / max((1 + rho) / (1 - rho), tau)``: the AR(1) rule with ``rho`` clipped to ``[0, MAX_RHO]``,
    or the integrated autocorrelation time ``tau`` when that is larger (slowly decaying memory, as
    in rolling-window features); at least 1 (0 when ``n`` is 0)."""
    if n <= 0:
        return 0.0
    r = min(max(float(rho), 0.0), MAX_RHO) if np.isfinite(rho) else 0.0
    inflation = max((1.0 + r) / (1.0 - r), float(tau) if np.isfinite(tau) else 1.0, 1.0)
    return max(1.0, n / inflation)


@functools.lru_cache(maxsize=4096)
def _noise_cached(shares: tuple[float, ...], size: int, quantile: float) -> float:
    e = np.asarray(shares, dtype=float)
    rng = np.random.default_rng(20261202)
    counts = rng.multinomial(size, e / e.sum(), size=NOISE_DRAWS).astype(float)
    a = np.maximum(counts / size, EPSILON)
    ee = np.maximum(e / e.sum(), EPSILON)
    values = np.sum((a - ee) * np.log(a / ee), axis=1)
    return float(np.quantile(values, quantile))


def psi_noise(expected: Sequence[float] | np.ndarray, size: float, *, quantile: float = NOISE_QUANTILE) -> float:
    """The ``quantile`` of PSI between the histogram ``expected`` and ``size`` independent draws from it.

    ``size`` is rounded to a whole number of draws (at least 1). Monte Carlo with a fixed seed, so
    the same inputs always give the same level.
    """
    e = np.asarray(expected, dtype=float)
    if e.size < 2 or e.sum() <= 0 or not np.isfinite(size) or size <= 0:
        return float("nan")
    shares = tuple(np.round(e / e.sum(), 6).tolist())
    return _noise_cached(shares, max(1, int(round(size))), float(quantile))


def drift_stats(baseline: Mapping[str, Any], live: Sequence[float] | np.ndarray, *, psi_max: float,
                name: str = "value") -> dict[str, Any]:
    """PSI, KS and the noise-aware verdict of one live series against its baseline entry.

    Keys: ``psi``, ``ks``, ``n``, ``rho``, ``n_eff``, ``noise`` (99% PSI level at the combined
    effective size), ``threshold`` (``max(psi_max, noise)``), ``significant`` (``psi > threshold``);
    numbers are None when there is nothing to compare.
    """
    col = np.asarray(live, dtype=float).ravel()
    n = int(np.isfinite(col).sum())
    p = psi(baseline, col, name=name)
    k = ks_statistic(baseline.get("quantiles") or [], col)
    return drift_verdict(baseline, psi_value=p, ks=k, n=n, rho=lag1_autocorrelation(col),
                         tau=autocorrelation_time(col), psi_max=psi_max)


def drift_verdict(baseline: Mapping[str, Any], *, psi_value: float, ks: float, n: int, rho: float, tau: float,
                  psi_max: float) -> dict[str, Any]:
    """The :func:`drift_stats` dict from its parts (shared with the streamed monitor,
    :mod:`aitrader.monitoring.stream`, which computes the parts chunk by chunk)."""
    p, k = psi_value, ks
    counts = np.asarray(baseline.get("counts") or [], dtype=float)
    n_eff = effective_sample_size(n, rho, tau)
    n_base = effective_sample_size(float(counts.sum()), rho, tau)
    noise = float("nan")
    if n_eff > 0 and n_base > 0:
        noise = psi_noise(counts, 1.0 / (1.0 / n_eff + 1.0 / n_base))
    threshold = max(psi_max, noise) if np.isfinite(noise) else psi_max
    ok = np.isfinite(p)
    return {
        "psi": float(p) if ok else None,
        "ks": None if np.isnan(k) else float(k),
        "n": n,
        "rho": rho,
        "tau": tau,
        "n_eff": n_eff,
        "noise": None if np.isnan(noise) else noise,
        "threshold": threshold,
        "significant": bool(ok and p > threshold),
    }


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


def importance_weights(names: Sequence[str], importance: Mapping[str, Any] | None) -> tuple[dict[str, float], str]:
    """Each feature's weight (its share of the model's importance, summing to 1 over ``names``) and
    where the weights came from: ``"manifest"``, or ``"uniform"`` when the manifest has none (an
    artifact trained before importance was stored) or every importance is 0."""
    raw = {}
    if importance:
        for n in names:
            v = importance.get(n)
            raw[n] = float(v) if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) and v > 0 \
                else 0.0
    total = sum(raw.values())
    if not names:
        return {}, "uniform"
    if total <= 0:
        return {n: 1.0 / len(names) for n in names}, "uniform"
    return {n: raw[n] / total for n in names}, "manifest"


def drift_table(
    baselines: Mapping[str, Mapping[str, Any]],
    names: Sequence[str],
    live: np.ndarray,
    *,
    psi_max: float = 0.2,
    weights: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Drift of each named column of ``live`` (rows x len(names)), worst first.

    Each row: :func:`drift_stats` plus ``weight`` (the feature's importance share; uniform when
    ``weights`` is None), ``weighted_psi`` (weight x PSI) and ``contribution`` (weighted PSI when
    the drift is significant, else 0: what it adds to the importance-weighted drift score). Rows are
    ranked by contribution, then weighted PSI, then PSI; columns without a baseline come last with
    ``psi = None`` and ``note`` saying so.
    """
    matrix = np.asarray(live, dtype=float)
    if matrix.ndim != 2 or matrix.shape[1] != len(names):
        raise ModelError(
            f"live feature matrix has shape {matrix.shape}, expected (rows, {len(names)}) for the "
            "manifest's features; the run was made with another model version"
        )
    return rank_drift_rows(
        baselines, names, lambda j, name: drift_stats(baselines[name], matrix[:, j], psi_max=psi_max, name=name),
        [int(np.isfinite(matrix[:, j]).sum()) for j in range(len(names))], weights=weights)


def rank_drift_rows(
    baselines: Mapping[str, Mapping[str, Any]],
    names: Sequence[str],
    stats_of: Callable[[int, str], dict[str, Any]],
    counts: Sequence[int],
    *,
    weights: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """:func:`drift_table`'s rows from each column's :func:`drift_stats` (``stats_of(j, name)``,
    called for the columns with a baseline) and its count of finite values (``counts[j]``)."""
    w = dict(weights) if weights is not None else {n: 1.0 / max(1, len(names)) for n in names}
    rows: list[dict[str, Any]] = []
    for j, name in enumerate(names):
        base = baselines.get(name)
        weight = float(w.get(name, 0.0))
        if not base:
            rows.append({"name": name, "psi": None, "ks": None, "n": int(counts[j]), "weight": weight,
                         "weighted_psi": None, "contribution": 0.0, "significant": False, "note": "no baseline"})
            continue
        stats = stats_of(j, name)
        wpsi = None if stats["psi"] is None else weight * stats["psi"]
        rows.append({"name": name, **stats, "weight": weight, "weighted_psi": wpsi,
                     "contribution": (wpsi or 0.0) if stats["significant"] else 0.0})
    rows.sort(key=lambda r: (r["psi"] is None, -r["contribution"], -(r["weighted_psi"] or 0.0), -(r["psi"] or 0.0)))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows


def feature_drift_score(rows: Sequence[Mapping[str, Any]]) -> float:
    """The importance-weighted drift score: sum of weight x PSI over the significantly drifted features."""
    return float(sum(r.get("contribution") or 0.0 for r in rows))
