"""Deterministic synthetic OHLCV bars for tests, examples and benchmarks.

The bars are NOT a market model. They are a seeded random walk with one deliberately planted,
weak, predictable component so that tests can check that a trained model beats naive baselines
(and that a model trained on pure noise does not, with ``signal=0``):

* a latent factor ``f`` follows a slow AR(1) process (``phi = 0.97``, unit stationary variance,
  a memory of roughly 30 bars);
* each bar's log return is ``volatility * (signal * f[t] + sqrt(1 - signal**2) * eps[t])`` with
  ``eps`` i.i.d. standard normal.

So returns have a small, persistent drift: the next returns correlate with the recent returns
(momentum), and the correlation is weak: with the default ``signal=0.1`` the drift explains about
1% of a single bar's return variance (about 5% of a 5-bar forward return's variance when ``f`` is
known exactly; a model that must estimate ``f`` from past prices gets less: the correlation of
20-bar momentum with the next 5-bar return is about 0.07 +- 0.04 over 5,000 bars). Tests that must
see a model beat a baseline reliably should use ``signal=0.3`` (about 3x that correlation) and a
few thousand bars. The total return standard deviation per bar stays ``volatility``.

Everything is vectorised numpy (the AR(1) recursion runs in blocks), so a million
bars take well under a second.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from aitrader.errors import DataError

#: AR(1) coefficient of the latent drift factor (persistence of the planted signal).
LATENT_PHI = 0.97

COLUMNS = ("open", "high", "low", "close", "volume")


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """AR(1) ``f[t] = phi * f[t-1] + e[t]`` with unit stationary variance, vectorised in blocks.

    Within a block of ``B`` bars, ``f[k] = phi**k * (carry * phi + cumsum(e[j] * phi**-j)[k])``;
    ``B`` is small enough that ``phi**-B`` stays well conditioned, and only the carry between
    blocks runs in a Python loop (n / B iterations). Avoids importing scipy just for lfilter.
    """
    block = 128
    shocks = rng.standard_normal(n) * np.sqrt(1.0 - phi * phi)
    # Start in the stationary distribution so the first bars are not special.
    shocks[0] = rng.standard_normal()
    n_blocks = -(-n // block)
    padded = np.zeros(n_blocks * block)
    padded[:n] = shocks
    e = padded.reshape(n_blocks, block)
    powers = phi ** np.arange(block)
    partial = np.cumsum(e / powers, axis=1) * powers  # each block started from zero
    # Carry the last value of each block into the next: f_block += phi**(k+1) * carry.
    decay = phi * powers
    last = partial[:, -1]
    carry = np.empty(n_blocks)
    c = 0.0
    phi_b = phi**block
    for i in range(n_blocks):
        carry[i] = c
        c = phi_b * c + last[i]
    out: np.ndarray = (partial + carry[:, None] * decay[None, :]).reshape(-1)[:n]
    return out


def _index(n: int, start: str | pd.Timestamp, freq: str, tz: str | None) -> pd.DatetimeIndex:
    try:
        index = pd.date_range(start=start, periods=n, freq=freq, tz=tz, name="timestamp", unit="ns")
    except (ValueError, OverflowError) as exc:
        # pandas' OutOfBoundsDatetime is a ValueError subclass.
        raise DataError(
            f"cannot build {n} bars of {freq!r} from {start!r}: {exc}; use fewer bars, a shorter "
            "freq (e.g. '1min') or an earlier start (timestamps must end before 2262)"
        ) from exc
    return index


def generate_bars(
    n: int,
    *,
    seed: int = 0,
    start: str | pd.Timestamp = "2020-01-01",
    freq: str = "1D",
    start_price: float = 100.0,
    volatility: float = 0.01,
    signal: float = 0.1,
    tz: str | None = None,
) -> pd.DataFrame:
    """Generate ``n`` valid OHLCV bars, identical for identical arguments.

    Args:
        n: number of bars (>= 1).
        seed: seed of the numpy Generator; same seed, same bars.
        start, freq, tz: first timestamp, spacing (a pandas frequency such as ``"1D"``,
            ``"1h"``, ``"5min"``) and optional time zone of the index. Calendar gaps
            (weekends) are not simulated: bars are evenly spaced.
        start_price: close-to-close walk starts from this open price (> 0).
        volatility: standard deviation of one bar's log return (> 0).
        signal: strength of the planted predictable drift, in [0, 1): the share of the return
            standard deviation that comes from the slow latent factor (see the module doc).
            ``0`` gives an unpredictable random walk.

    Returns:
        A DataFrame indexed by a ``DatetimeIndex`` named ``timestamp`` (ns resolution) with
        float64 columns ``open, high, low, close, volume``. Invariants: all prices > 0,
        ``high >= max(open, close)``, ``low <= min(open, close)``, ``volume > 0``.
        ``df.attrs`` holds ``symbol="SYN"``, ``source="synthetic(seed=...)"``,
        ``repaired_rows=0`` like :func:`aitrader.data.load_bars`.
    """
    if not isinstance(n, int | np.integer) or n < 1:
        raise DataError(f"generate_bars: n must be a positive integer, got {n!r}")
    if not start_price > 0:
        raise DataError(f"generate_bars: start_price must be > 0, got {start_price!r}")
    if not volatility > 0:
        raise DataError(f"generate_bars: volatility must be > 0, got {volatility!r}")
    if not 0 <= signal < 1:
        raise DataError(f"generate_bars: signal must be in [0, 1), got {signal!r}")
    n = int(n)
    index = _index(n, start, freq, tz)
    rng = np.random.default_rng(seed)

    latent = _ar1(rng, n, LATENT_PHI)
    noise = rng.standard_normal(n)
    log_ret = volatility * (signal * latent + np.sqrt(1.0 - signal * signal) * noise)

    # Each bar opens near the previous close (a small overnight-style gap) and closes at
    # open * exp(intrabar return); the log-price path is the cumulative sum of both parts.
    gap = 0.1 * volatility * rng.standard_normal(n)
    gap[0] = 0.0
    log_open = np.log(start_price) + np.cumsum(gap) + np.concatenate(([0.0], np.cumsum(log_ret)[:-1]))
    log_close = log_open + log_ret
    open_ = np.exp(log_open)
    close = np.exp(log_close)

    # Wicks extend beyond the body by a half-normal amount; multiplying by exp(+-x) with x >= 0
    # keeps high >= max(open, close) and low <= min(open, close) exactly in floating point.
    wick_up = 0.5 * volatility * np.abs(rng.standard_normal(n))
    wick_dn = 0.5 * volatility * np.abs(rng.standard_normal(n))
    high = np.maximum(open_, close) * np.exp(wick_up)
    low = np.minimum(open_, close) * np.exp(-wick_dn)
    # Rounding in the products above could in principle cross the body; clamp to be exact.
    high = np.maximum(high, np.maximum(open_, close))
    low = np.minimum(low, np.minimum(open_, close))

    # Volume: lognormal around 1e6, higher on large moves (as in real markets); always > 0.
    volume = 1e6 * np.exp(0.3 * rng.standard_normal(n)) * (1.0 + np.abs(log_ret) / volatility)

    df = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
        index=index,
        dtype="float64",
    )
    df.attrs.update({"symbol": "SYN", "source": f"synthetic(seed={seed})", "repaired_rows": 0})
    return df


def generate_book(
    bars: pd.DataFrame,
    *,
    seed: int = 0,
    levels: int = 5,
    per_bar: int = 4,
    spread_bps: float = 4.0,
    missing: float = 0.05,
    signal: float = 0.5,
) -> Any:
    """Seeded order-book snapshots aligned to ``bars`` (an :class:`aitrader.data.book.Book`).

    Bar ``i`` (stamped ``t_i``, spacing ``d``) gets ``per_bar`` snapshots at ``t_i - j * d / per_bar``
    for ``j = per_bar - 1 .. 0``: the last one at the bar's own stamp, its mid within a fraction of the
    spread of the close, the earlier ones on the straight line from the open to the close. A share
    ``missing`` of the bars gets no snapshot at all (the book then ages past a short staleness limit).
    The spread is ``spread_bps`` on average (lognormal), levels are 1 to 3 ticks apart (a tick is 1 bp of
    the mid) and sizes lognormal; ``signal`` tilts the top-of-book sizes toward the side of the next
    bar's return (a synthetic order-flow lead, so a model has something to find in the book), ``0`` makes
    the sizes pure noise. Always a valid book: sorted levels, positive sizes, bid < ask.
    """
    from aitrader.data.book import MAX_LEVELS, Book

    if not 1 <= levels <= MAX_LEVELS:
        raise DataError(f"generate_book: levels must be in 1..{MAX_LEVELS}, got {levels!r}")
    if per_bar < 1 or not 0 <= missing < 1 or not spread_bps > 0 or not 0 <= signal < 1:
        raise DataError("generate_book: per_bar >= 1, 0 <= missing < 1, spread_bps > 0 and 0 <= signal < 1 are "
                        f"required, got per_bar={per_bar!r} missing={missing!r} spread_bps={spread_bps!r} "
                        f"signal={signal!r}")
    n = len(bars)
    if n < 2:
        raise DataError("generate_book: needs at least 2 bars (the spacing of the snapshots comes from them)")
    rng = np.random.default_rng(seed)
    idx = pd.DatetimeIndex(bars.index)
    tz_aware = idx.tz is not None
    ns = (idx.tz_convert("UTC").tz_localize(None) if tz_aware else idx).as_unit("ns").asi8
    step = int(np.median(np.diff(ns))) // per_bar
    if step <= 0:
        raise DataError("generate_book: the bars' spacing is too small for per_bar snapshots a bar")
    o = bars["open"].to_numpy(dtype="float64")
    c = bars["close"].to_numpy(dtype="float64")
    keep = rng.random(n) >= missing
    keep[0] = True
    j = np.arange(per_bar - 1, -1, -1)  # the last snapshot of a bar is at its stamp
    frac = 1.0 - j / per_bar  # share of the way from the open to the close
    rows_bar = np.repeat(np.flatnonzero(keep), per_bar)
    rows_j = np.tile(np.arange(per_bar), int(keep.sum()))
    ts = ns[rows_bar] - j[rows_j] * step
    m = len(ts)
    half = 0.5 * spread_bps * 1e-4 * np.exp(0.25 * rng.standard_normal(m))  # half spread, fraction of mid
    mid_line = o[rows_bar] + (c[rows_bar] - o[rows_bar]) * frac[rows_j]
    mid = mid_line * (1.0 + 0.5 * half * rng.uniform(-1.0, 1.0, m))
    nxt = np.concatenate([np.log(c[1:] / c[:-1]), [0.0]])
    z = nxt / max(float(np.std(nxt)), 1e-12)
    tilt = signal * np.tanh(z[rows_bar])  # in (-signal, signal)
    gaps = 1e-4 * rng.integers(1, 4, size=(m, 2, levels - 1)) if levels > 1 else np.zeros((m, 2, 0))
    bid_px = np.empty((m, levels))
    ask_px = np.empty((m, levels))
    bid_px[:, 0] = mid * (1.0 - half)
    ask_px[:, 0] = mid * (1.0 + half)
    if levels > 1:
        bid_px[:, 1:] = bid_px[:, :1] * (1.0 - np.cumsum(gaps[:, 0], axis=1))
        ask_px[:, 1:] = ask_px[:, :1] * (1.0 + np.cumsum(gaps[:, 1], axis=1))
    depth = 100.0 * np.exp(0.5 * rng.standard_normal((m, 2, levels))) * (1.0 + 0.3 * np.arange(levels))
    bid_sz = np.round(depth[:, 0] * np.where(np.arange(levels) == 0, 1.0 + tilt[:, None], 1.0), 0) + 1.0
    ask_sz = np.round(depth[:, 1] * np.where(np.arange(levels) == 0, 1.0 - tilt[:, None], 1.0), 0) + 1.0
    return Book(ts_ns=ts.astype(np.int64), bid_px=bid_px, bid_sz=bid_sz, ask_px=ask_px, ask_sz=ask_sz,
                tz_aware=tz_aware, source=f"synthetic_book(seed={seed})")
