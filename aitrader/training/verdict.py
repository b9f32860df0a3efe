"""Uncertainty and an honest verdict for a trained model: pure functions over arrays and dicts.

Nothing here knows how the holdout backtest was run or how its Sharpe is defined elsewhere: the
caller passes the holdout predictions and forward returns (for the IC), the backtest's per-bar
P&L as simple returns (for the Sharpe), the bars per year, the naive baselines' metrics and the
fold ICs. Everything is deterministic (a fixed seed).

Block bootstrap (circular moving blocks, Politis & Romano 1992): each resample glues
``ceil(n / b)`` blocks of ``b`` consecutive rows, each starting at a uniformly drawn row and
wrapping around the end, and keeps the first ``n`` rows. Consecutive h-bar forward returns
overlap (and so do the predictions made from rolling features), so rows are dependent over at
least ``h`` bars; a block of ``b >= h`` rows keeps that dependence inside each resample, which an
i.i.d. bootstrap would destroy (its interval would be ~sqrt(h) times too narrow).
``b = max(2h, ceil(n ** (1/3)))``: the n^(1/3) rate is the MSE-optimal order for variance
estimation, and 2h rather than h because blocks taper the autocovariances they keep (lag k gets
weight 1 - k/b): on overlapping 10-bar returns (tests/unit/test_verdict.py) b = h covered the true
IC 89% of the time, b = 2h 92%, an i.i.d. bootstrap 57%. The 95% interval is the 2.5% and
97.5% percentile of the statistic over ``RESAMPLES`` resamples. Correlation and Sharpe need only
sums over a resample's rows, so each resample adds up precomputed block sums: O(n / b) work per
resample instead of O(n) (100,000 holdout rows take well under a second).

Verdict ("edge", documented in docs/operations.md, "Verdicts and uncertainty"): the model has an
edge when all three hold:

1. the lower end of the holdout IC's 95% interval is above 0 (the ranking is better than chance);
2. the holdout backtest's Sharpe is above the best naive baseline's Sharpe (``zero``,
   ``always_long``, ``prev_sign``; the best is the one with the highest Sharpe, so a model must at
   least beat staying flat, whose Sharpe is 0);
3. no implausibility warning fired (see :func:`implausibility_warnings`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

RESAMPLES = 1000
SEED = 20260901
CONFIDENCE = 0.95
# Implausibility thresholds (docs/operations.md).
IMPLAUSIBLE_IC = 0.2
IMPLAUSIBLE_SHARPE = 5.0
BOUNCE_AUTOCORR = -0.1
CV_GAP_STDS = 3.0
CV_GAP_MIN = 0.05
# Block starts drawn per chunk of resamples: bounds memory for long holdouts (8 bytes each).
_CHUNK_VALUES = 1_000_000
_MIN_STD = 1e-15  # below this the P&L has no variance: Sharpe 0 (the backtest's convention)


def block_length(n: int, horizon: int = 1) -> int:
    """Bootstrap block length: ``max(2 x horizon, ceil(n ** (1/3)))``, at most ``n`` (at least 1)."""
    if n <= 0:
        return 1
    return int(min(n, max(1, 2 * horizon, math.ceil(n ** (1.0 / 3.0) - 1e-9))))


def block_starts(n: int, block: int, resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """First rows of each resample's ``ceil(n / block)`` blocks, in chunks of shape ``(k, blocks)``."""
    n_blocks = -(-n // block)
    chunk = max(1, _CHUNK_VALUES // n_blocks)
    done = 0
    while done < resamples:
        k = min(chunk, resamples - done)
        yield rng.integers(0, n, size=(k, n_blocks))
        done += k


def resample_rows(starts: np.ndarray, n: int, block: int) -> np.ndarray:
    """The ``(k, n)`` row indices the block starts stand for (circular blocks, cut to ``n`` rows).

    The intervals never build this matrix (they sum whole blocks, see :func:`_resampled_sums`);
    it defines what a resample is, and the tests recompute the statistics from it.
    """
    k, n_blocks = starts.shape
    rows = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(k, n_blocks * block)[:, :n]
    return np.asarray(rows % n)


def _circular_sums(values: np.ndarray, length: int) -> np.ndarray:
    """Sum of ``length`` consecutive values starting at each row, wrapping around the end."""
    n = values.size
    c = np.concatenate(([0.0], np.cumsum(np.concatenate((values, values[:length])))))
    return np.asarray(c[length : length + n] - c[:n])


def _resampled_sums(columns: Sequence[np.ndarray], starts: np.ndarray, block: int) -> list[np.ndarray]:
    """Per resample, the sum of each column over its rows: whole blocks plus the cut last block.

    Equal to ``column[resample_rows(starts, n, block)].sum(axis=1)`` in O(k x blocks) instead of
    O(k x n): correlation and Sharpe need only these sums.
    """
    n = columns[0].size
    last = n - (starts.shape[1] - 1) * block  # rows kept of the last block
    out = []
    for col in columns:
        full, cut = _circular_sums(col, block), _circular_sums(col, last)
        out.append(full[starts[:, :-1]].sum(axis=1) + cut[starts[:, -1]])
    return out


def _corr_from_sums(n: int, sx: Any, sy: Any, sxx: Any, syy: Any, sxy: Any) -> np.ndarray:
    """Pearson correlation from sums; 0 where either side has no variance (as metrics.ic)."""
    vx, vy = np.asarray(sxx - sx * sx / n), np.asarray(syy - sy * sy / n)
    cov = np.asarray(sxy - sx * sy / n)
    denom = np.sqrt(np.clip(vx, 0.0, None) * np.clip(vy, 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(denom > 0, cov / denom, 0.0)
    return np.clip(np.nan_to_num(r, nan=0.0), -1.0, 1.0)


def _sharpe_from_sums(n: int, s: Any, ss: Any, shift: float, periods_per_year: float) -> np.ndarray:
    """Annualised Sharpe (mean / std ddof=1 x sqrt(periods)) from sums of ``r - shift``; 0 with no variance."""
    if n < 2:
        return np.zeros(np.shape(s))
    var = np.clip(np.asarray(ss - s * s / n) / (n - 1), 0.0, None)
    std = np.sqrt(var)
    mean = np.asarray(s) / n + shift
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(std > _MIN_STD, mean / std, 0.0) * math.sqrt(periods_per_year)
    return np.nan_to_num(out, nan=0.0)


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def _columns(*arrays: Any) -> list[np.ndarray]:
    data = [np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays]
    if len({a.size for a in data}) != 1:
        raise ValueError(f"arrays differ in length {[a.size for a in data]}")
    return data


def ic_interval(
    pred: Any, fwd: Any, *, horizon: int = 1, resamples: int = RESAMPLES, seed: int = SEED,
    confidence: float = CONFIDENCE, block: int | None = None,
) -> tuple[float, float]:
    """Block-bootstrap percentile interval of the IC (Pearson correlation of predictions and forward
    returns); the pairs are resampled together. ``block``: override :func:`block_length`."""
    p, f = _columns(pred, fwd)
    n = p.size
    if n < 2:
        return (math.nan, math.nan)
    p, f = p - p.mean(), f - f.mean()  # centred: the raw sums below do not cancel catastrophically
    b = max(1, min(n, block_length(n, horizon) if block is None else block))
    cols = [p, f, p * p, f * f, p * f]
    rng = np.random.default_rng(seed)
    values = [_corr_from_sums(n, *_resampled_sums(cols, st, b)) for st in block_starts(n, b, resamples, rng)]
    return _percentiles(np.concatenate(values), confidence)


def sharpe_interval(
    returns: Any, periods_per_year: float, *, horizon: int = 1, resamples: int = RESAMPLES, seed: int = SEED,
    confidence: float = CONFIDENCE, block: int | None = None,
) -> tuple[float, float]:
    """Block-bootstrap percentile interval of the annualised Sharpe of per-bar simple returns."""
    (r,) = _columns(returns)
    n = r.size
    if n < 2:
        return (math.nan, math.nan)
    shift = float(r.mean())
    c = r - shift
    b = max(1, min(n, block_length(n, horizon) if block is None else block))
    rng = np.random.default_rng(seed)
    values = []
    for st in block_starts(n, b, resamples, rng):
        s1, s2 = _resampled_sums([c, c * c], st, b)
        values.append(_sharpe_from_sums(n, s1, s2, shift, periods_per_year))
    return _percentiles(np.concatenate(values), confidence)


def sharpe(returns: Any, periods_per_year: float) -> float:
    """Annualised Sharpe of one return series (mean / std ddof=1 x sqrt(periods); 0 with no variance)."""
    (r,) = _columns(returns)
    if r.size < 2:
        return 0.0
    std = float(np.std(r, ddof=1))
    return float(np.mean(r)) / std * math.sqrt(periods_per_year) if std > _MIN_STD else 0.0


def ic(pred: Any, fwd: Any) -> float:
    """Pearson correlation of predictions and forward returns (0 when either is constant)."""
    p, f = _columns(pred, fwd)
    if p.size < 2:
        return 0.0
    p, f = p - p.mean(), f - f.mean()
    return float(_corr_from_sums(p.size, 0.0, 0.0, p @ p, f @ f, p @ f))


def lag1_autocorr(x: Any) -> float:
    """Lag-1 autocorrelation (Pearson of x[t] with x[t-1]); NaN with fewer than 3 finite values."""
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    a = a[np.isfinite(a)]
    if a.size < 3:
        return math.nan
    return ic(a[1:], a[:-1])


def implausibility_warnings(
    *,
    ic_value: float,
    sharpe_value: float,
    bar_returns: Any = None,
    fold_ics: Sequence[float] | None = None,
) -> list[str]:
    """Reasons to distrust a holdout result, as one-line messages (empty when none applies).

    * bid/ask bounce: ``|IC| > 0.2`` or ``Sharpe > 5`` while the lag-1 autocorrelation of the
      1-bar returns is below -0.1 (prices bouncing between bid and ask look predictable and are
      not tradable at the mid);
    * holdout far better than cross-validation: holdout IC above the walk-forward folds' mean IC
      by more than ``max(3 x their std, 0.05)`` (a lucky or leaky holdout).
    """
    out: list[str] = []
    rho = lag1_autocorr(bar_returns) if bar_returns is not None else math.nan
    strong = abs(ic_value) > IMPLAUSIBLE_IC or sharpe_value > IMPLAUSIBLE_SHARPE
    if strong and math.isfinite(rho) and rho < BOUNCE_AUTOCORR:
        out.append(
            f"holdout IC {ic_value:.3f} / Sharpe {sharpe_value:.2f} with lag-1 autocorrelation of 1-bar "
            f"returns {rho:.2f} (< {BOUNCE_AUTOCORR:g}): looks like bid/ask bounce, not a tradable edge; "
            "use mid prices or longer bars, and test with realistic costs"
        )
    ics = np.asarray([v for v in (fold_ics or []) if v is not None and math.isfinite(v)], dtype=np.float64)
    if ics.size >= 2:
        mean, std = float(ics.mean()), float(ics.std(ddof=1))
        gap = max(CV_GAP_STDS * std, CV_GAP_MIN)
        if ic_value - mean > gap:
            out.append(
                f"holdout IC {ic_value:.3f} is far above the walk-forward folds' mean IC {mean:.3f} "
                f"(std {std:.3f}, {ics.size} folds; more than max({CV_GAP_STDS:g} x std, {CV_GAP_MIN:g})): "
                "a lucky or leaky holdout; check for look-ahead and try a different holdout size"
            )
    return out


@dataclass
class Verdict:
    """The verdict line and the figures behind it (``metrics.verdict`` in the manifest)."""

    edge: bool
    text: str
    best_baseline: str | None
    baseline_sharpe: float
    ic: float
    ic_ci: tuple[float, float]
    sharpe: float
    sharpe_ci: tuple[float, float]
    warnings: list[str] = field(default_factory=list)
    method: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ic_ci"] = list(self.ic_ci)
        out["sharpe_ci"] = list(self.sharpe_ci)
        return out


def best_baseline(baselines: Mapping[str, Mapping[str, Any]]) -> tuple[str | None, float]:
    """The naive baseline with the highest Sharpe (first in order on ties) and that Sharpe."""
    best: tuple[str | None, float] = (None, 0.0)
    for name, scores in baselines.items():
        value = scores.get("sharpe")
        if value is None or not math.isfinite(float(value)):
            continue
        if best[0] is None or float(value) > best[1]:
            best = (name, float(value))
    return best


def _ci(lo_hi: tuple[float, float], spec: str) -> str:
    return f"[{lo_hi[0]:{spec}}, {lo_hi[1]:{spec}}]"


def verdict_text(v: Verdict, *, ic_ok: bool, sharpe_ok: bool) -> str:
    """One line: ``edge over B: ...`` / ``no edge over B: ... (why)`` / ``suspect result over B: ...``."""
    base = v.best_baseline or "the baselines"
    figures = (f"Sharpe {v.sharpe:.2f} {_ci(v.sharpe_ci, '.2f')} vs {v.baseline_sharpe:.2f}, "
               f"IC {v.ic:.3f} {_ci(v.ic_ci, '.3f')}")
    if v.edge:
        return f"edge over {base}: {figures}"
    why = []
    if not sharpe_ok:
        why.append(f"Sharpe not above {base}'s")
    if not ic_ok:
        why.append("IC interval not above 0")
    if ic_ok and sharpe_ok:  # only the warnings stand in the way
        return f"suspect result over {base}: {figures} (implausible, see the warnings)"
    return f"no edge over {base}: {figures} ({'; '.join(why)})"


def holdout_verdict(
    *,
    pred: Any,
    fwd: Any,
    returns: Any,
    periods_per_year: float,
    baselines: Mapping[str, Mapping[str, Any]],
    horizon: int = 1,
    bar_returns: Any = None,
    fold_ics: Sequence[float] | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> Verdict:
    """Intervals, implausibility warnings and the edge verdict of one holdout.

    ``pred``/``fwd``: holdout predictions (forward return or P(up)) and realised h-bar forward
    returns; ``returns``: the holdout backtest's per-bar simple returns (its P&L); ``baselines``:
    ``{name: {"sharpe": ...}}`` of the naive baselines on the same holdout; ``bar_returns``: the
    holdout's 1-bar market returns (bounce check); ``fold_ics``: the walk-forward folds' ICs.
    """
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    f = np.asarray(fwd, dtype=np.float64).reshape(-1)
    r = np.asarray(returns, dtype=np.float64).reshape(-1)
    ic_value, sharpe_value = ic(p, f), sharpe(r, periods_per_year)
    ic_ci = ic_interval(p, f, horizon=horizon, resamples=resamples, seed=seed, confidence=confidence)
    sharpe_ci = sharpe_interval(r, periods_per_year, horizon=horizon, seed=seed + 1,
                                resamples=resamples, confidence=confidence)
    name, base_sharpe = best_baseline(baselines)
    warnings = implausibility_warnings(ic_value=ic_value, sharpe_value=sharpe_value, bar_returns=bar_returns,
                                       fold_ics=fold_ics)
    ic_ok = bool(math.isfinite(ic_ci[0]) and ic_ci[0] > 0.0)
    sharpe_ok = sharpe_value > base_sharpe
    v = Verdict(
        edge=ic_ok and sharpe_ok and not warnings, text="", best_baseline=name, baseline_sharpe=base_sharpe,
        ic=ic_value, ic_ci=ic_ci, sharpe=sharpe_value, sharpe_ci=sharpe_ci, warnings=warnings,
        method={"bootstrap": "circular block", "resamples": resamples, "confidence": confidence, "seed": seed,
                "ic_block": block_length(p.size, horizon), "sharpe_block": block_length(r.size, horizon),
                "ic_rows": int(p.size), "sharpe_rows": int(r.size), "periods_per_year": periods_per_year},
    )
    v.text = verdict_text(v, ic_ok=ic_ok, sharpe_ok=sharpe_ok)
    return v


NO_VERDICT = "no verdict recorded (trained before verdicts existed); retrain it with this aitrader to record one"


def recorded_verdict(manifest: Mapping[str, Any]) -> tuple[bool | None, str]:
    """``(edge, text)`` from a manifest's ``metrics.verdict``; ``(None, NO_VERDICT)`` when absent."""
    metrics = manifest.get("metrics")
    v = metrics.get("verdict") if isinstance(metrics, Mapping) else None
    if not isinstance(v, Mapping) or not isinstance(v.get("edge"), bool):
        return None, NO_VERDICT
    return bool(v["edge"]), str(v.get("text") or ("edge" if v["edge"] else "no edge"))
