"""Warnings about bars that pass validation but are probably not what a model should learn from.

Two patterns, both common in free daily data and both silent otherwise (issue 9, item 10):

* ``suspected_split``: a one-bar close-to-close move within ``SPLIT_TOLERANCE`` (1.5%) of 1/k or
  k for a usual split ratio k (2, 3, ... 10, 15, 20, 25, 30, 40, 50, 100), in a file without an
  adjusted close. A 2-for-1 split in unadjusted prices is a -50% bar that never happened; a model
  learns it as a crash. The median volume of up to 20 bars after the move over the 20 before it is
  reported beside each row: about k means the volume is unadjusted too (shares were split), about
  1 means only the prices jump. Genuine crashes rarely land within 1.5% of a ratio (AAPL's -51.9%
  on 2000-09-29 is 3.8% away from 1/2). A 3-for-2 ratio (+50%/-33%) is not tested: hourly AIG in
  2008 moved +50.2% in one bar.
* ``quantised_prices``: more than ``QUANTISED_SHARE`` (20%) of close-to-close returns are exactly
  zero, over at least ``QUANTISED_MIN_RETURNS`` returns. Prices rounded to a few decimals (MSFT
  1986-89 split-adjusted to 4 decimals: 53% zeros) or stale prices make returns and features
  zero-inflated. Liquid markets stay well below: SPY minute bars with extended hours 17.7%,
  5-minute coins quoted in BTC 3-9%, hourly equities 1.4-4.7%.

Warnings never make data invalid: ``data check`` lists them and exits 0, ``load_bars`` logs them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

SPLIT_RATIOS = (2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 100)
SPLIT_TOLERANCE = 0.015
SPLIT_VOLUME_BARS = 20
QUANTISED_SHARE = 0.20
QUANTISED_MIN_RETURNS = 30
MAX_LISTED_ROWS = 50  # rows kept in a warning (the count says how many there are)
MESSAGE_ROWS = 3  # rows quoted in the one-line message


@dataclass(frozen=True)
class DataWarning:
    """One suspicious pattern: a one-line message, how many rows show it and (some of) those rows."""

    rule: str
    message: str
    count: int
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(ts: Any) -> str:
    return pd.Timestamp(ts).isoformat()


def _short(ts: Any) -> str:
    ts = pd.Timestamp(ts)
    return ts.strftime("%Y-%m-%d") if ts.tz is None and ts == ts.normalize() else str(ts)


def split_candidates(close: np.ndarray) -> list[tuple[int, int, bool]]:
    """(bar position, ratio k, reverse) for each close-to-close move within tolerance of 1/k or k."""
    if close.size < 2:
        return []
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = close[1:] / close[:-1]
    # Only moves of about -50% or +100% and beyond can match: test the few bars past that first.
    near = np.flatnonzero((ratio <= 0.5 * (1 + SPLIT_TOLERANCE)) | (ratio >= 2.0 * (1 - SPLIT_TOLERANCE)))
    found: list[tuple[int, int, bool]] = []
    for k in SPLIT_RATIOS:
        for reverse, target in ((False, 1.0 / k), (True, float(k))):
            hits = near[np.abs(ratio[near] / target - 1.0) <= SPLIT_TOLERANCE]
            found.extend((int(i) + 1, k, reverse) for i in hits)
    return sorted(found)


def _volume_ratio(volume: np.ndarray, pos: int) -> float | None:
    before = volume[max(0, pos - SPLIT_VOLUME_BARS) : pos]
    after = volume[pos : pos + SPLIT_VOLUME_BARS]
    if before.size == 0 or after.size == 0:
        return None
    base = float(np.median(before))
    return float(np.median(after)) / base if base > 0 else None


def _volume_words(ratio: float | None, k: int, reverse: bool) -> str:
    if ratio is None:
        return "volume unknown"
    expected = 1.0 / k if reverse else float(k)
    if abs(np.log(ratio / expected)) <= np.log(1.5):
        return f"volume x{ratio:.2f}: shares split too"
    if abs(np.log(ratio)) <= np.log(1.5):
        return f"volume x{ratio:.2f}: only prices jump"
    return f"volume x{ratio:.2f}"


def suspected_splits(bars: pd.DataFrame, where: str) -> DataWarning | None:
    close = bars["close"].to_numpy(dtype="float64")
    candidates = split_candidates(close)
    if not candidates:
        return None
    volume = bars["volume"].to_numpy(dtype="float64")
    rows: list[dict[str, Any]] = []
    quoted: list[str] = []
    for pos, k, reverse in candidates:
        vr = _volume_ratio(volume, pos)
        ratio = f"1-for-{k} reverse split" if reverse else f"{k}-for-1 split"
        move = close[pos] / close[pos - 1] - 1.0
        if len(rows) < MAX_LISTED_ROWS:
            rows.append({
                "timestamp": _iso(bars.index[pos]),
                "previous_close": float(close[pos - 1]),
                "close": float(close[pos]),
                "move": round(float(move), 6),
                "looks_like": ratio,
                "volume_ratio": None if vr is None else round(vr, 4),
            })
        if len(quoted) < MESSAGE_ROWS:
            quoted.append(f"{_short(bars.index[pos])} {move:+.1%} (a {ratio}? {_volume_words(vr, k, reverse)})")
    n = len(candidates)
    more = f" and {n - len(quoted)} more" if n > len(quoted) else ""
    message = (
        f"{where}: {n} one-bar move{'s' if n > 1 else ''} at a split ratio and no adjusted close column: "
        f"{'; '.join(quoted)}{more}; if these are unadjusted splits, use split-adjusted bars or add an "
        "adj_close column, otherwise a model learns each jump as a real move"
    )
    return DataWarning("suspected_split", message, n, rows)


def quantised_prices(bars: pd.DataFrame, where: str) -> DataWarning | None:
    close = bars["close"].to_numpy(dtype="float64")
    if close.size - 1 < QUANTISED_MIN_RETURNS:
        return None
    diff = np.diff(close)
    zero = diff == 0.0
    share = float(zero.mean())
    if share <= QUANTISED_SHARE:
        return None
    moves = np.abs(diff[~zero])
    step = float(moves.min()) if moves.size else 0.0
    median = float(np.median(close))
    positions = np.flatnonzero(zero) + 1  # the bar whose close equals the one before it
    rows = [
        {"timestamp": _iso(bars.index[p]), "close": float(close[p]), "move": 0.0} for p in positions[:MAX_LISTED_ROWS]
    ]
    first, last = _short(bars.index[positions[0]]), _short(bars.index[positions[-1]])
    message = (
        f"{where}: {share:.1%} of close-to-close returns are exactly zero ({int(zero.sum())} of {zero.size}, "
        f"{first} .. {last}; over {QUANTISED_SHARE:.0%} suggests rounded or stale prices): smallest price step "
        f"{step:.6g} ({step / median:.4%} of the median close); returns and features are zero-inflated, use "
        "prices with more decimals or a longer bar interval"
    )
    return DataWarning("quantised_prices", message, int(zero.sum()), rows)


def find_warnings(bars: pd.DataFrame, *, where: str, adjusted: bool = False) -> list[DataWarning]:
    """Warnings for validated bars (sorted, unique stamps); ``adjusted``: an adj_close column was used."""
    found = [] if adjusted else [suspected_splits(bars, where)]
    found.append(quantised_prices(bars, where))
    return [w for w in found if w is not None]
