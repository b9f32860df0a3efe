"""The one metrics module: every figure that train, paper-trade, status, monitor and retrain print.

Formulas and conventions (docs/metrics.md lists them with the commands that use them):

* Returns: per-bar simple returns of an equity curve, ``e[t] / e[t-1] - 1``, the first bar
  against the initial equity when it is given (:func:`simple_returns`).
* ``sharpe``: ``mean(r) / std(r, ddof=1) * sqrt(periods_per_year)`` of the per-bar returns (no
  risk-free rate); 0.0 when undefined (fewer than 2 returns, or no variance: never traded).
* ``sortino``: ``mean(r) / sqrt(mean(min(r, 0)**2)) * sqrt(periods_per_year)`` (target 0, the
  downside deviation over all bars, as empyrical/quantstats); None when no bar lost.
* ``max_drawdown``: a NEGATIVE fraction, ``min(e / running_peak - 1)`` with the initial equity
  as the first peak: -0.23 means 23% below the running peak (empyrical/quantstats); 0.0 when the
  curve never fell.
* ``hit_rate``: share of rows where ``sign(pred) == sign(y)``; rows whose outcome ``y`` is
  exactly 0 are excluded (a zero move has no direction); a prediction of exactly 0 takes no side
  and counts as a miss. Undefined (None) when every outcome is 0; the training tables store 0.0.
* ``ic`` (Pearson) and ``rank_ic`` (Spearman, average ranks for ties): undefined (None) with fewer
  than 3 pairs or a constant side (a constant prediction carries no ranking information); the
  training tables store 0.0.
* ``turnover``: traded notional per bar over the mean equity, ``sum(|traded notional|) /
  sum(equity before each bar)``; for the backtest, whose position is a fraction of equity, that
  is the equity-weighted mean ``|position change|`` (the plain mean while equity stays near 1).
* ``periods_per_year``: from :func:`market_calendar` (exchange 252 x bars per session, 24x5
  forex 260 x bars per day, 24x7 crypto 365.25 x bars per day).
* Backtest: the position is decided at the close of bar ``t`` from the prediction and held for
  one bar, earning the 1-bar return ``close[t+1] / close[t] - 1``. The target is an h-bar return
  and consecutive rows overlap, so trading the h-bar return would count each move h times.
  Costs: ``(fees_bps + slippage_bps) / 1e4`` times ``|position change|`` (entering from flat at
  the first row counts). Sharpe, drawdown and turnover of its P&L go through the functions above,
  exactly as the paper-trade summary does.
* Backtest report (``aitrader backtest``): :func:`cagr`, :func:`drawdown_duration`,
  :func:`exposure`, :func:`win_rate` and :func:`profit_factor` (docs/metrics.md).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas is imported where it is used: `status` and `export` summarise runs without it
    import pandas as pd

REGRESSION_METRICS = (
    "mae", "rmse", "r2", "hit_rate", "ic", "rank_ic", "total_return", "sharpe", "max_drawdown", "turnover",
)
CLASSIFICATION_METRICS = REGRESSION_METRICS + ("accuracy", "log_loss", "auc")
BASELINES = ("zero", "always_long", "prev_sign")


def _arrays(*values: Any) -> list[np.ndarray]:
    out = [np.asarray(v, dtype=np.float64).ravel() for v in values]
    if len({a.size for a in out}) != 1:
        raise ValueError(f"length mismatch: {[a.size for a in out]}")
    return out


def _or0(value: float | None) -> float:
    return 0.0 if value is None else value


# ---------------------------------------------------------------------------- equity curves
def simple_returns(equity: Any, initial: float | None = None) -> np.ndarray:
    """Per-bar simple returns ``e[t] / e[t-1] - 1``; with ``initial`` the first bar is against it."""
    e = np.asarray(equity, dtype=np.float64).ravel()
    if e.size + (initial is not None) < 2:
        return np.empty(0)
    # path[1:] / path[:-1] - 1 with path = [initial, *e], written into one array: the same float per bar
    # without a copy of the path beside it (a long run's summary holds the curve and its returns only).
    if initial is None:
        out = np.divide(e[1:], e[:-1])
    else:
        out = np.empty(e.size)
        out[0] = e[0] / float(initial)
        np.divide(e[1:], e[:-1], out=out[1:])
    out -= 1.0
    return out


def returns_over(path: np.ndarray) -> np.ndarray:
    """:func:`simple_returns` of ``path`` (``[initial, *equity]``, float64, contiguous) written over it:
    ``path[t] = path[t + 1] / path[t] - 1``, in pieces of :data:`_DRAWDOWN_PIECE` (each piece's divisor
    is read before it is overwritten). Returns the view ``path[:-1]``, the same floats as
    ``simple_returns(path[1:], initial=path[0])`` without a second array of the run's length."""
    if path.dtype != np.float64 or not path.flags.c_contiguous or path.ndim != 1:
        raise ValueError("returns_over needs a contiguous 1-D float64 path")
    n = path.size - 1
    for lo in range(0, max(n, 0), _DRAWDOWN_PIECE):
        hi = min(lo + _DRAWDOWN_PIECE, n)
        out = path[lo:hi]
        np.divide(path[lo + 1:hi + 1], out, out=out)  # numpy buffers the shifted operand (one piece)
        out -= 1.0
    return path[:max(n, 0)]


def sharpe_ratio(returns: Any, periods_per_year: float) -> float:
    """``mean / std(ddof=1) * sqrt(periods_per_year)``; 0.0 with < 2 returns or no variance."""
    return sharpe_over(np.array(returns, dtype=np.float64).ravel(), periods_per_year)


def sharpe_over(r: np.ndarray, periods_per_year: float) -> float:
    """:func:`sharpe_ratio` of the 1-D float64 array ``r``, computed in it (``r`` is overwritten): the
    same float as ``np.mean(r) / np.std(r, ddof=1)``, without np.std's temporary of ``r``'s length."""
    if r.size < 2:
        return 0.0
    mean = np.mean(r)
    sd = _std_over(r, ddof=1)
    if not sd > 1e-15:  # also catches NaN
        return 0.0
    return float(mean / sd * math.sqrt(periods_per_year))


def _std_over(r: np.ndarray, ddof: int) -> float:
    """``np.std(r, ddof=ddof)`` by np.std's own steps (numpy's ``_methods._var``: the sum and mean kept as
    1-element arrays, the deviations squared, summed pairwise, divided, square root) done in ``r``."""
    mean = np.add.reduce(r, keepdims=True)
    np.true_divide(mean, r.size, out=mean)
    np.subtract(r, mean, out=r)
    np.square(r, out=r)
    return float(np.sqrt(np.add.reduce(r) / max(r.size - ddof, 0)))


def sortino_ratio(returns: Any, periods_per_year: float) -> float | None:
    """``mean / sqrt(mean(min(r, 0)**2)) * sqrt(periods_per_year)``; None when no bar lost."""
    return sortino_over(np.array(returns, dtype=np.float64).ravel(), periods_per_year)


def sortino_over(r: np.ndarray, periods_per_year: float) -> float | None:
    """:func:`sortino_ratio` of the 1-D float64 array ``r``, computed in it (``r`` is overwritten)."""
    if r.size == 0:
        return None
    mean = np.mean(r)
    np.minimum(r, 0.0, out=r)
    downside = math.sqrt(float(np.mean(np.square(r, out=r))))  # min(r, 0)**2, in place
    if not downside > 1e-15:
        return None
    return float(mean / downside * math.sqrt(periods_per_year))


def max_drawdown(equity: Any, initial: float | None = None) -> float:
    """Deepest fall below the running peak, as a negative fraction (-0.23: 23% below); 0.0 if none."""
    e = np.asarray(equity, dtype=np.float64).ravel()
    if e.size == 0 and initial is None:
        return 0.0
    # In pieces of _DRAWDOWN_PIECE with the running peak carried: the same value per bar as over the whole
    # path, without four whole-length temporaries (a 1M-bar run's summary peaked on them: ~32 MB).
    peak = float(initial) if initial is not None else float(e[0])
    low = 0.0 if initial is not None else math.inf
    for lo in range(0, e.size, _DRAWDOWN_PIECE):
        piece = e[lo:lo + _DRAWDOWN_PIECE]
        peaks = np.maximum.accumulate(np.concatenate(([peak], piece)))[1:]
        deepest = float(np.min(piece / peaks - 1.0))
        if math.isnan(deepest):
            return 0.0  # as min(0.0, nan) over the whole path
        low = min(low, deepest)
        peak = float(peaks[-1])
    return float(min(0.0, low))


_DRAWDOWN_PIECE = 65_536


def turnover(traded: Any, equity_before: Any) -> float:
    """Traded notional per bar over the mean equity: ``sum(|traded|) / sum(equity_before)``.

    ``equity_before``: the equity before each bar (one entry per bar); ``traded``: the absolute
    notional traded, per bar or per fill (only its total matters). 0.0 without bars.
    """
    t = np.abs(np.asarray(traded, dtype=np.float64).ravel())
    e = np.asarray(equity_before, dtype=np.float64).ravel()
    denominator = float(np.sum(e))
    if e.size == 0 or not denominator > 0:
        return 0.0
    return float(np.sum(t) / denominator)


def cagr(equity: Any, initial: float, periods_per_year: float) -> float | None:
    """Compound annual growth rate: ``(e[-1] / initial) ** (periods_per_year / n) - 1`` over ``n`` bars.

    The curve's length in years is ``n / periods_per_year`` (the bars' calendar, :func:`periods_per_year`).
    None without bars; -1.0 when the final equity is 0 or below (everything lost).
    """
    e = np.asarray(equity, dtype=np.float64).ravel()
    if e.size == 0 or not initial > 0 or not periods_per_year > 0:
        return None
    growth = float(e[-1]) / float(initial)
    if not growth > 0:
        return -1.0
    return float(growth ** (periods_per_year / e.size) - 1.0)


def drawdown_duration(equity: Any, initial: float | None = None) -> tuple[int, int, int]:
    """The longest stretch of consecutive bars below the running peak: ``(bars, first, last)``.

    ``first``/``last`` index the first and last underwater bar of ``equity`` (with ``initial``, the
    initial equity is the first peak and is not itself a bar); ``(0, -1, -1)`` when the curve never
    fell. A stretch still underwater at the end counts up to the last bar.
    """
    e = np.asarray(equity, dtype=np.float64).ravel()
    offset = 1 if initial is not None else 0
    if e.size + offset == 0:
        return 0, -1, -1
    # In pieces of _DRAWDOWN_PIECE with the running peak and the open stretch carried (a bar is underwater
    # when below the highest value so far, itself included): the stretches' edges found per piece,
    # vectorised; the first of the longest kept, as a scan keeping only a strictly longer stretch finds it.
    # Indices count the path [initial, *equity]; no array of the curve's length beside it.
    peak = float(initial) if initial is not None else None
    best, best_first = 0, -1
    open_at = -1  # the path index where the stretch still underwater began (-1: none)
    n = e.size + offset
    for lo in range(0, n, _DRAWDOWN_PIECE):
        hi = min(n, lo + _DRAWDOWN_PIECE)
        piece = e[lo - offset if lo else 0:hi - offset]
        if not lo and offset:
            piece = np.concatenate(([float(initial)], piece))  # type: ignore[arg-type]
        peaks = np.maximum.accumulate(piece)
        if peak is not None and lo:
            np.maximum(peaks, peak, out=peaks)
        peak = float(peaks[-1])
        under = piece < peaks
        edges = np.flatnonzero(np.diff(np.concatenate(([open_at >= 0], under)).astype(np.int8))) + lo
        starts = edges[under[edges - lo]]  # a rise: the first bar of a stretch
        ends = edges[~under[edges - lo]]  # a fall: the bar after a stretch
        if open_at >= 0:
            starts = np.concatenate(([open_at], starts))
        closed = len(ends)
        if closed:
            lengths = ends - starts[:closed]
            k = int(np.argmax(lengths))
            if int(lengths[k]) > best:
                best, best_first = int(lengths[k]), int(starts[k])
        open_at = int(starts[closed]) if len(starts) > closed else -1
    if open_at >= 0 and n - open_at > best:
        best, best_first = n - open_at, open_at
    if not best:
        return 0, -1, -1
    return best, best_first - offset, best_first + best - 1 - offset


def exposure(positions: Any) -> float:
    """Share of bars holding a position (any non-zero quantity, long or short); 0.0 without bars."""
    q = np.asarray(positions, dtype=np.float64).ravel()
    if q.size == 0:
        return 0.0
    return float(np.mean(q != 0.0))


def win_rate(pnls: Any) -> float | None:
    """Share of round trips whose P&L (net of costs) is above 0; None without trades."""
    p = np.asarray(pnls, dtype=np.float64).ravel()
    if p.size == 0:
        return None
    return float(np.mean(p > 0.0))


def profit_factor(pnls: Any) -> float | None:
    """Gross profit over gross loss of the round trips, ``sum(p > 0) / |sum(p < 0)|``.

    None when no trade lost (undefined: infinite, or no trades); 0.0 when trades lost and none won.
    """
    p = np.asarray(pnls, dtype=np.float64).ravel()
    loss = float(-np.sum(p[p < 0.0]))
    if not loss > 0:
        return None
    return float(np.sum(p[p > 0.0]) / loss)


# ---------------------------------------------------------------------------- predictions vs outcomes
def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    # A tiny but nonzero spread (1e-170) can have a variance that underflows to 0: no usable correlation.
    with np.errstate(divide="ignore", invalid="ignore"):
        r = float(np.corrcoef(a, b)[0, 1])
    return float(np.clip(r, -1.0, 1.0)) if np.isfinite(r) else None


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks for ties, as Spearman's definition needs (1-based, NaN kept): pandas'
    ``Series.rank(method="average")`` in numpy (no pandas import for ``monitor``, no scipy)."""
    a = np.asarray(a, dtype=np.float64)
    out = np.full(a.size, np.nan)
    keep = np.flatnonzero(~np.isnan(a))
    order = keep[np.argsort(a[keep], kind="stable")]
    s = a[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if s.size else np.empty(0, dtype=np.int64)
    ends = np.r_[starts[1:], s.size]
    out[order] = np.repeat((starts + 1 + ends) / 2.0, ends - starts)  # the mean of positions starts+1..ends
    return out


def ic(pred: Any, y: Any) -> float | None:
    """Pearson correlation of prediction and outcome; None with < 3 pairs or a constant side."""
    p, y_ = _arrays(pred, y)
    return _corr(p, y_)


def rank_ic(pred: Any, y: Any) -> float | None:
    """Spearman correlation (average ranks for ties); None with < 3 pairs or a constant side."""
    p, y_ = _arrays(pred, y)
    return _corr(_ranks(p), _ranks(y_))


def hit_rate(y: Any, pred: Any) -> float | None:
    """Share of rows with ``y != 0`` where ``sign(pred) == sign(y)``; None when every ``y`` is 0."""
    y_, p = _arrays(y, pred)
    known = y_ != 0
    if not known.any():
        return None
    return float(np.mean(np.sign(p[known]) == np.sign(y_[known])))


def regression_metrics(y: Any, pred: Any) -> dict[str, float]:
    """``mae, rmse, r2, hit_rate, ic, rank_ic`` of predictions ``pred`` against targets ``y``."""
    y_, p = _arrays(y, pred)
    if y_.size == 0:
        raise ValueError("regression_metrics needs at least one row")
    err = p - y_
    sst = float(np.sum((y_ - y_.mean()) ** 2))
    sse = float(np.sum(err**2))
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": math.sqrt(sse / y_.size),
        "r2": 1.0 - sse / sst if sst > 0 else 0.0,
        "hit_rate": _or0(hit_rate(y_, p)),
        "ic": _or0(ic(p, y_)),
        "rank_ic": _or0(rank_ic(p, y_)),
    }


def auc_score(label: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula; 0.5 when only one class is present."""
    pos = label == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    ranks = _ranks(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(fwd: Any, proba_up: Any) -> dict[str, float]:
    """Metrics of P(up) against the realised forward return ``fwd`` (label: ``fwd > 0``).

    ``mae``/``rmse``/``r2`` are of the probability against the 0/1 label (``rmse**2`` is the Brier
    score); ``hit_rate``/``ic``/``rank_ic`` use the signal ``P(up) - 0.5`` against ``fwd``.
    """
    f, p = _arrays(fwd, proba_up)
    label = (f > 0).astype(np.float64)
    out = regression_metrics(label, p)
    signal = p - 0.5
    out["hit_rate"] = _or0(hit_rate(f, signal))
    out["ic"] = _or0(ic(signal, f))
    out["rank_ic"] = _or0(rank_ic(signal, f))
    clipped = np.clip(p, 1e-15, 1 - 1e-15)
    out["accuracy"] = float(np.mean((p > 0.5) == (label == 1)))
    out["log_loss"] = float(-np.mean(label * np.log(clipped) + (1 - label) * np.log(1 - clipped)))
    out["auc"] = auc_score(label, p)
    return out


CALENDAR_KINDS = ("exchange", "forex", "crypto")
EXCHANGE_SESSIONS_PER_YEAR = 252.0
FOREX_DAYS_PER_YEAR = 260.0  # 52.18 weeks x 5 weekdays, less the few days the whole market closes
CRYPTO_DAYS_PER_YEAR = 365.25


def _week_ids(days: pd.DatetimeIndex) -> np.ndarray:
    """The Monday of each (normalised) date, as an integer day number: a week key free of ISO quirks."""
    local = days.tz_localize(None) if days.tz is not None else days
    ordinal = local.as_unit("s").asi8 // 86400
    # 1970-01-01 was a Thursday: day 0 has day_of_week 3.
    return np.asarray(ordinal - (ordinal + 3) % 7)


#: Stamps looked at a piece at a time by :func:`market_calendar`: its temporaries (weekdays, dates) stay
#: a few MB however long the index is; the figures are counts and order statistics, exactly the same.
_CALENDAR_PIECE = 1 << 16


def _pieces(n: int) -> range:
    return range(0, n, _CALENDAR_PIECE)


def _strictly_increasing(index: pd.DatetimeIndex) -> bool:
    """No NaT, no duplicate, in order (NaT is the smallest integer: it could only be first)."""
    a = index.asi8
    if not len(a):
        return True
    if a[0] == np.iinfo(np.int64).min:
        return False
    return all(not (np.diff(a[lo:lo + _CALENDAR_PIECE + 1]) <= 0).any() for lo in _pieces(len(a)))


def _median_step(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The median interval of a strictly increasing index, as ``Series(index).diff().median()``: the
    differences go into one integer array sorted in place around the middle, and the pandas median of
    its one or two middle values is the pandas median of them all (the same values, the same formula)."""
    import pandas as pd

    a = index.asi8
    d = np.empty(len(a) - 1, dtype=np.int64)
    for lo in _pieces(len(d)):
        hi = min(lo + _CALENDAR_PIECE, len(d))
        np.subtract(a[lo + 1:hi + 1], a[lo:hi], out=d[lo:hi])
    half = len(d) // 2
    kth = [half] if len(d) % 2 else [half - 1, half]
    d.partition(kth)
    middle = d[kth].view(f"m8[{index.unit}]")
    return pd.Timedelta(pd.Series(middle).median())


def _weekday_counts(index: pd.DatetimeIndex) -> np.ndarray:
    """Bars per day of the week (Monday = 0), in the index's own time zone."""
    counts = np.zeros(7, dtype=np.int64)
    for lo in _pieces(len(index)):
        counts += np.bincount(np.asarray(index[lo:lo + _CALENDAR_PIECE].day_of_week), minlength=7)
    return counts


def _bars_per_date(index: pd.DatetimeIndex) -> pd.Series:
    """Bars per calendar date of the index's own time zone (a sorted index of midnights -> count), as
    ``Series(1, index).groupby(index.normalize()).size()`` for a strictly increasing index."""
    import pandas as pd

    dates: list[pd.DatetimeIndex] = []
    counts: list[np.ndarray] = []
    for lo in _pieces(len(index)):
        norm = index[lo:lo + _CALENDAR_PIECE].normalize()
        keys = norm.asi8
        starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        dates.append(norm[starts])
        counts.append(np.diff(np.append(starts, len(keys))))
    every = pd.DatetimeIndex(dates[0].append(dates[1:]) if len(dates) > 1 else dates[0])
    n = np.concatenate(counts)
    keys = every.asi8  # a date cut by two pieces is there twice, side by side: add its counts up
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    return pd.Series(np.add.reduceat(n, starts), index=pd.DatetimeIndex(every[starts]))


def _continuous(index: pd.DatetimeIndex, step: pd.Timedelta) -> bool:
    """Trades every day of the week (24x7)."""
    import pandas as pd

    day = pd.Timedelta(days=1)
    if index[-1] - index[0] >= pd.Timedelta(days=7):
        # Every day of the week holds at least half the bars of the median day: a few weekend bars are
        # not enough (an exchange stamped in UTC spills its after-hours bars into Saturday).
        counts = _weekday_counts(index)
        return bool(counts.min() >= 0.5 * np.median(counts))
    # Under a week: a tenth of the bars on a weekend, or a weekend date at least half covered.
    weekday = np.asarray(index.day_of_week)
    if np.mean(weekday >= 5) >= 0.1:
        return True
    if step < day:
        weekend = pd.DatetimeIndex(index[weekday >= 5])
        if len(weekend):
            per_date = pd.Series(1, index=weekend).groupby(weekend.normalize()).size()
            return bool(per_date.max() >= 0.5 * (day / step))
    return False


def _weekdays_without_holidays(days: pd.DatetimeIndex) -> bool:
    """Daily bars with (almost) no missing weekdays over half a year or more: a 24x5 (forex) calendar.

    ``days``: the dates that hold bars (sorted midnights). Counted by week, so a feed that stamps
    Monday's bar on Sunday evening still has 5 bars a week: an exchange closes on 6 to 15 weekdays a
    year (US: 9 or 10), which leaves >= 10% of its weeks short; forex leaves at most Christmas and New
    Year (<= 4%). Fewer than 26 whole weeks decide nothing and stay an exchange (the common convention
    for daily bars).
    """
    weeks = _week_ids(days)
    ids, counts = np.unique(weeks, return_counts=True)
    whole = counts[1:-1]  # the first and last week may be cut by the span
    if whole.size < 26:
        return False
    return bool(np.mean(whole < 5) <= 0.05)


def market_calendar(index: pd.DatetimeIndex) -> tuple[str, float]:
    """The market calendar of a bar index: ``(kind, periods_per_year)``, kind in :data:`CALENDAR_KINDS`.

    * ``crypto`` (24x7): every day of the week holds bars (over a week or more: each day of the week
      at least half the bars of the median day; under a week: a tenth of the bars on a weekend, or a
      weekend date half covered). ``365.25 x bars per day``, bars per day being
      ``1 day / the median bar interval`` (105,192 for 5-minute bars).
    * ``forex`` (24x5): no weekend, but each weekday nearly covered (intraday: the median weekday
      holds >= 75% of ``1 day / interval`` bars; daily: no missing weekdays, see
      :func:`_weekdays_without_holidays`). ``260 x bars per day`` (6,240 for hourly bars).
    * ``exchange`` (sessions with holidays): ``252 x the median bars per session`` (a session = a
      calendar date of the index's own time zone): 252 for daily bars, 1,764 for 7 hourly bars a
      session. Bars two days apart or more (weekly, monthly) are ``365.25 days / interval``.

    Fewer than 3 bars: ``("exchange", 252.0)``. Works on any datetime resolution (s, ms, us, ns):
    only Timedelta arithmetic, never raw epoch integers. NaT and duplicate stamps are dropped and the
    stamps sorted first; an index already in order (a validated bar file) is read a piece at a time,
    so a run of millions of bars needs one integer array of its intervals beside it, no more.
    """
    import pandas as pd

    day = pd.Timedelta(days=1)
    idx = pd.DatetimeIndex(index)
    if not _strictly_increasing(idx):
        idx = pd.DatetimeIndex(idx[~np.asarray(idx.isna())].unique().sort_values())
    if len(idx) < 3:
        return "exchange", EXCHANGE_SESSIONS_PER_YEAR
    step = _median_step(idx)
    if _continuous(idx, step):
        bars_per_day = day / step
        return "crypto", float(CRYPTO_DAYS_PER_YEAR * bars_per_day)
    if step >= 2 * day:  # weekly or monthly bars
        return "exchange", float(pd.Timedelta(days=CRYPTO_DAYS_PER_YEAR) / step)
    per_date = _bars_per_date(idx)
    if step < day:
        day_of_week = np.asarray(pd.DatetimeIndex(per_date.index).day_of_week)
        weekdays = per_date.to_numpy()[day_of_week < 5]
        full = day / step
        if weekdays.size and float(np.median(weekdays)) >= 0.75 * full:
            return "forex", float(FOREX_DAYS_PER_YEAR * full)
        return "exchange", float(EXCHANGE_SESSIONS_PER_YEAR * float(per_date.median()))
    if _weekdays_without_holidays(pd.DatetimeIndex(per_date.index)):
        return "forex", FOREX_DAYS_PER_YEAR
    return "exchange", EXCHANGE_SESSIONS_PER_YEAR


def periods_per_year(index: pd.DatetimeIndex) -> float:
    """Bars per year for annualising (:func:`market_calendar`'s second value)."""
    return market_calendar(index)[1]


def backtest(
    signal: Any,
    ret1: Any,
    *,
    fees_bps: float = 1.0,
    slippage_bps: float = 2.0,
    short: bool = True,
    periods: float = 252.0,
) -> dict[str, float]:
    """Trade ``sign(signal)`` (long/short, or long/flat with ``short=False``) on 1-bar returns."""
    s, r = _arrays(signal, ret1)
    position = np.sign(s) if short else (s > 0).astype(np.float64)
    change = np.abs(np.diff(position, prepend=0.0))
    pnl = position * r - (fees_bps + slippage_bps) / 1e4 * change
    equity = np.cumprod(1.0 + pnl)  # starts from 1.0
    # The position is a fraction of the equity before the bar: |change| x that equity is the traded notional.
    before = np.concatenate(([1.0], equity[:-1]))
    return {
        "total_return": float(equity[-1] - 1.0) if equity.size else 0.0,
        "sharpe": sharpe_ratio(pnl, periods),  # pnl is the per-bar simple return of the equity
        "max_drawdown": max_drawdown(equity, initial=1.0),
        "turnover": turnover(change * before, before),
    }


def evaluate(
    task: str,
    fwd: Any,
    pred: Any,
    ret1: Any,
    *,
    backtest_kwargs: dict[str, Any],
) -> dict[str, float]:
    """All headline metrics of one prediction vector (regression output or P(up))."""
    if task == "classification":
        out = classification_metrics(fwd, pred)
        signal = np.asarray(pred, dtype=np.float64) - 0.5
    else:
        out = regression_metrics(fwd, pred)
        signal = np.asarray(pred, dtype=np.float64)
    out.update(backtest(signal, ret1, **backtest_kwargs))
    return out


def baseline_predictions(task: str, y_train: Any, prev_return: Any) -> dict[str, np.ndarray]:
    """Predictions of the naive baselines for rows whose previous h-bar return is ``prev_return``.

    Regression: ``zero`` predicts 0 (flat); ``always_long`` predicts the mean absolute training
    target (long every bar); ``prev_sign`` predicts that magnitude with the sign of the previous
    h-bar return (momentum). Classification: the same three as P(up): 0.5, the training up-rate
    (at least 0.51 so it goes long), and 0.5 +/- that margin by the previous return's sign.
    """
    yt, prev = np.asarray(y_train, dtype=np.float64), np.asarray(prev_return, dtype=np.float64)
    n = prev.size
    direction = np.sign(np.nan_to_num(prev, nan=0.0))
    if task == "classification":
        up = float(np.mean(yt > 0)) if yt.size else 0.5
        p_long = max(up, 1.0 - up, 0.51)
        return {
            "zero": np.full(n, 0.5),
            "always_long": np.full(n, p_long),
            "prev_sign": 0.5 + direction * (p_long - 0.5),
        }
    magnitude = float(np.mean(np.abs(yt))) if yt.size else 0.0
    return {
        "zero": np.zeros(n),
        "always_long": np.full(n, magnitude),
        "prev_sign": direction * magnitude,
    }


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over folds (the CV summary)."""
    if not rows:
        return {}
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
