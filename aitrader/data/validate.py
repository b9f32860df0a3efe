"""Validation rules for OHLCV bars, and the repairs ``--repair`` makes.

Rules (``Problem.rule``), each reported once with its first offending row and a count:

* ``timestamp``: the timestamp cell is empty or cannot be parsed (repair: drop the row);
* ``missing_price``: open/high/low/close (or adj_close) is empty or not a number (drop);
* ``nonpositive_price``: a price is zero or negative (drop);
* ``volume``: volume is empty, not a number or negative (drop);
* ``nonfinite``: a price or the volume is infinite (drop);
* ``implausible``: a price above ``MAX_PRICE`` (1e12) or below ``MIN_PRICE`` (1e-12), or a volume
  above ``MAX_VOLUME`` (1e18): no traded instrument has them, they are corrupt cells (drop);
* ``high_low``: high below max(open, close) or low above min(open, close) (drop);
* ``adj_close``: adjusting by adj_close / close would move a price or the volume past the bounds
  of ``implausible`` (drop);
* ``unsorted``: a timestamp is earlier than one above it (repair: stable sort);
* ``duplicate``: a timestamp appears more than once (repair: keep the last row in file order).

Row-level rules are checked on every row; ``unsorted`` and ``duplicate`` on the rows that pass
them. All checks are vectorised; only the first offending row of a rule is formatted.

:func:`validate_bar` applies the same row rules (and, given the previous stamp, the order rules)
to one bar, for bars that arrive one at a time (a followed file, a live feed).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from aitrader.data._read import BAR_COLUMNS, PRICE_COLUMNS, RawFrame

RULES = (
    "timestamp",
    "missing_price",
    "nonpositive_price",
    "volume",
    "nonfinite",
    "implausible",
    "high_low",
    "adj_close",
    "unsorted",
    "duplicate",
)
_DROP_FIX = "fix the row or pass --repair to drop it"

#: Upper bounds of a plausible bar: no instrument trades above a trillion per unit (BRK.A is ~7e5,
#: a satoshi-quoted coin or a hyperinflated currency pair stays far below), and 1e18 units exceed the
#: daily volume of anything (the whole supply of the largest meme tokens is ~1e15). Values past them
#: are corrupt cells, and they overflow the squares of the feature statistics (1e300**2 = inf).
#: Below MIN_PRICE (a ten-thousandth of a satoshi) means of subnormal prices round to 0.0.
MAX_PRICE = 1e12
MIN_PRICE = 1e-12
MAX_VOLUME = 1e18


@dataclass(frozen=True)
class Problem:
    """One broken rule: where it first occurs (1-based data row, header not counted) and how often."""

    rule: str
    row: int | None
    timestamp: str | None
    message: str
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Validated:
    """The repaired bars of one symbol, the problems found on the way and the repair counts."""

    bars: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    repairs: dict[str, int] = field(default_factory=dict)
    rows_in_file: int = 0
    adjusted: bool = False  # prices were multiplied by adj_close / close

    @property
    def repaired_rows(self) -> int:
        return sum(self.repairs.values())


def format_ts(ts: Any) -> str:
    """Dates print as ``2020-01-31``, other stamps in full (with their offset when tz-aware)."""
    if ts is None or ts is pd.NaT:
        return "NaT"
    ts = pd.Timestamp(ts)
    if ts.tz is None and ts == ts.normalize():
        return ts.strftime("%Y-%m-%d")
    return str(ts)


def _blank(cell: Any) -> bool:
    """An empty cell as read from the file (NaN, None or whitespace)."""
    return bool(pd.isna(cell)) or str(cell).strip() == ""


def _num(value: Any) -> str:
    return repr(float(value))


class _Checker:
    """Builds the problems of one frame; ``labels`` are data-row numbers minus one."""

    def __init__(self, raw: RawFrame, labels: pd.Index, where: str) -> None:
        self.raw = raw
        self.where = where
        self.frame = raw.frame.loc[labels]
        self.ts = raw.ts.loc[labels]
        self.problems: list[Problem] = []

    def add(self, rule: str, label: int, what: str, fix: str, count: int) -> None:
        ts: Any = self.ts.at[label]
        stamp = None if pd.isna(ts) else format_ts(ts)
        at = f"row {label + 1} ({stamp})" if stamp else f"row {label + 1}"
        more = f" ({count - 1} more row{'s' if count > 2 else ''} like this)" if count > 1 else ""
        message = f"{self.where}: {at}: {what}; {fix}{more}"
        self.problems.append(Problem(rule, label + 1, stamp, message, int(count)))

    def first(self, mask: pd.Series) -> tuple[int, int] | None:
        count = int(mask.sum())
        return (int(mask.index[int(mask.to_numpy().argmax())]), count) if count else None

    def timestamps(self) -> pd.Series:
        bad = self.ts.isna()
        if hit := self.first(bad):
            label, count = hit
            cell: Any = self.raw.ts_raw.at[label]
            what = (
                "timestamp is empty"
                if _blank(cell)
                else f"timestamp {str(cell)!r} cannot be parsed (expected ISO 8601 such as 2020-01-31 or "
                "2020-01-31T09:30:00-05:00, another common date format, or epoch seconds/milliseconds)"
            )
            self.add("timestamp", label, what, _DROP_FIX, count)
        return bad

    def prices(self) -> pd.Series:
        cols = [c for c in (*PRICE_COLUMNS, "adj_close") if c in self.frame.columns]
        values = self.frame[cols]
        missing = values.isna()
        if hit := self.first(missing.any(axis=1)):
            label, count = hit
            col = cols[int(missing.loc[label].to_numpy().argmax())]
            cell: Any = self.raw.cell(label, col)
            what = f"{col} is empty" if _blank(cell) else (f"{col} {str(cell)!r} is not a number")
            self.add("missing_price", label, what, _DROP_FIX, count)
        infinite = values.isin([np.inf, -np.inf])
        nonpos = (values <= 0) & ~infinite
        if hit := self.first(nonpos.any(axis=1)):
            label, count = hit
            col = cols[int(nonpos.loc[label].to_numpy().argmax())]
            what = f"{col} {_num(values.at[label, col])} is not positive (prices must be > 0)"
            self.add("nonpositive_price", label, what, _DROP_FIX, count)
        huge = ((values > MAX_PRICE) & ~infinite) | ((values > 0) & (values < MIN_PRICE))
        self.extremes(infinite, huge, "price")
        return missing.any(axis=1) | nonpos.any(axis=1) | infinite.any(axis=1) | huge.any(axis=1)

    def extremes(self, infinite: pd.DataFrame, huge: pd.DataFrame, kind: str) -> None:
        """Report the ``nonfinite`` and ``implausible`` rules for price or volume cells."""
        if hit := self.first(infinite.any(axis=1)):
            label, count = hit
            col = str(infinite.columns[int(infinite.loc[label].to_numpy().argmax())])
            what = f"{col} {_num(self.frame.at[label, col])} is not finite ({kind} must be a finite number)"
            self.add("nonfinite", label, what, _DROP_FIX, count)
        if hit := self.first(huge.any(axis=1)):
            label, count = hit
            col = str(huge.columns[int(huge.loc[label].to_numpy().argmax())])
            value = float(self.frame.loc[label, col])  # type: ignore[arg-type]
            what = _implausible(col, value, kind)
            self.add("implausible", label, what, _DROP_FIX, count)

    def volume(self) -> pd.Series:
        vol = self.frame["volume"]
        infinite = vol.isin([np.inf, -np.inf])
        bad = vol.isna() | ((vol < 0) & ~infinite)
        if hit := self.first(bad):
            label, count = hit
            cell: Any = self.raw.cell(label, "volume")
            if bool(vol.isna().at[label]):
                what = "volume is empty" if _blank(cell) else (f"volume {str(cell)!r} is not a number")
            else:
                what = f"volume {_num(vol.at[label])} is negative (volume must be >= 0)"
            self.add("volume", label, what, _DROP_FIX, count)
        huge = (vol > MAX_VOLUME) & ~infinite
        self.extremes(infinite.to_frame(), huge.to_frame(), "volume")
        return bad | infinite | huge

    def adjustment(self, skip: pd.Series) -> pd.Series:
        """Rows that adj_close / close would push outside the bounds (``skip``: rows already bad)."""
        f = self.frame
        if "adj_close" not in f.columns:
            return pd.Series(False, index=f.index)
        with np.errstate(all="ignore"):
            ratio = f["adj_close"] / f["close"]
            prices = f[list(PRICE_COLUMNS)].mul(ratio, axis=0)
            volume = f["volume"] / ratio
        out_of_bounds = (prices < MIN_PRICE) | (prices > MAX_PRICE) | prices.isna()
        bad_volume = (volume > MAX_VOLUME) | volume.isna()
        bad = (out_of_bounds.any(axis=1) | bad_volume) & ~skip
        if hit := self.first(bad):
            label, count = hit
            if bool(out_of_bounds.loc[label].any()):
                col = str(PRICE_COLUMNS[int(out_of_bounds.loc[label].to_numpy().argmax())])
                moved = f"{col} {_num(prices.at[label, col])}, outside [{MIN_PRICE:g}, {MAX_PRICE:g}]"
            else:
                moved = f"volume {_num(volume.at[label])}, above {MAX_VOLUME:g}"
            what = f"adj_close / close = {_num(ratio.at[label])} makes the adjusted {moved} (a corrupt adj_close?)"
            self.add("adj_close", label, what, _DROP_FIX, count)
        return bad

    def high_low(self, skip: pd.Series) -> pd.Series:
        """Rows whose wicks do not contain the body; ``skip`` rows (bad prices) are not checked."""
        f = self.frame
        body_top = f[["open", "close"]].max(axis=1)
        body_bottom = f[["open", "close"]].min(axis=1)
        high_bad = (f["high"] < body_top) & ~skip
        low_bad = (f["low"] > body_bottom) & ~skip
        bad = high_bad | low_bad
        if hit := self.first(bad):
            label, count = hit
            if high_bad.at[label]:
                what = f"high {_num(f.at[label, 'high'])} is below max(open, close) {_num(body_top.at[label])}"
            else:
                what = f"low {_num(f.at[label, 'low'])} is above min(open, close) {_num(body_bottom.at[label])}"
            self.add("high_low", label, what, _DROP_FIX, count)
        return bad

    def order(self, kept: pd.Series) -> tuple[int, int]:
        """Report unsorted and duplicate stamps among kept rows; return (unsorted, duplicates)."""
        ts = self.ts[kept]
        if ts.empty:
            return 0, 0
        ns = (
            ts.to_numpy(dtype="datetime64[ns]").view("int64")
            if ts.dt.tz is None
            else ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").view("int64")
        )
        running_max = np.maximum.accumulate(ns)
        unsorted = np.zeros(len(ns), dtype=bool)
        unsorted[1:] = ns[1:] < running_max[:-1]
        if unsorted.any():
            pos = int(unsorted.argmax())
            prev_pos = int(np.flatnonzero(ns[:pos] == running_max[pos - 1])[0])
            label, prev_label = int(ts.index[pos]), int(ts.index[prev_pos])
            what = f"timestamp is earlier than {format_ts(ts.iat[prev_pos])} on row {prev_label + 1}"
            self.add(
                "unsorted", label, what, "sort the file by timestamp or pass --repair to sort it", int(unsorted.sum())
            )
        dup_first = ts.duplicated(keep="first")
        if hit := self.first(dup_first):
            label, count = hit
            earlier = int(ts.index[int((ts == ts.at[label]).to_numpy().argmax())])
            what = f"duplicate timestamp (also on row {earlier + 1})"
            self.add("duplicate", label, what, "remove one of the rows or pass --repair to keep the last", count)
        return int(unsorted.sum()), int(dup_first.sum())


def validate(raw: RawFrame, labels: pd.Index | None = None, *, where: str | None = None) -> Validated:
    """Check the rows ``labels`` of ``raw`` (all rows by default) and build the repaired bars.

    The returned bars are what ``repair=True`` yields: bad rows dropped, sorted, duplicates
    collapsed (last wins), prices adjusted by ``adj_close / close`` when an adjusted close exists
    (volume divided by the same ratio so that price x volume is unchanged across splits).
    """
    labels = raw.frame.index if labels is None else labels
    check = _Checker(raw, labels, where or raw.source)
    bad_ts = check.timestamps()
    bad_price = check.prices()
    bad_volume = check.volume()
    bad_hl = check.high_low(bad_price)
    bad_adj = check.adjustment(bad_ts | bad_price | bad_volume | bad_hl)
    dropped = bad_ts | bad_price | bad_volume | bad_hl | bad_adj
    kept = ~dropped
    n_unsorted, n_dup = check.order(kept)
    order = {p.rule: i for i, p in enumerate(check.problems)}
    check.problems.sort(key=lambda p: (p.row or 0, order[p.rule]))

    frame = check.frame[kept]
    bars = bars_of(frame, check.ts[kept])
    if n_unsorted:
        bars = bars.sort_index(kind="stable")
    if n_dup:
        bars = bars[~bars.index.duplicated(keep="last")]
    bars = bars.astype("float64")
    repairs = {
        "dropped_invalid_rows": int(dropped.sum()),
        "sorted_rows": n_unsorted,
        "dropped_duplicates": n_dup,
    }
    return Validated(
        bars=bars,
        problems=check.problems,
        repairs=repairs,
        rows_in_file=len(labels),
        adjusted="adj_close" in frame.columns,
    )


def bars_of(frame: pd.DataFrame, ts: pd.Series) -> pd.DataFrame:
    """The bars of rows that pass every rule: the five columns indexed by their stamps, prices
    adjusted by ``adj_close / close`` when an adjusted close exists (volume divided by the same
    ratio so that price x volume is unchanged across splits)."""
    bars = frame[list(BAR_COLUMNS)].copy()
    if "adj_close" in frame.columns:
        ratio = frame["adj_close"] / frame["close"]
        bars[list(PRICE_COLUMNS)] = bars[list(PRICE_COLUMNS)].mul(ratio, axis=0)
        bars["volume"] = bars["volume"] / ratio
    bars.index = pd.DatetimeIndex(ts, name="timestamp")
    return bars


def _implausible(name: str, value: float, kind: str) -> str:
    if kind == "volume":
        return f"volume {value!r} is implausibly large (a volume above {MAX_VOLUME:g} is a corrupt value)"
    if value < MIN_PRICE:
        return f"{name} {value!r} is implausibly small (a price below {MIN_PRICE:g} is a corrupt value)"
    return f"{name} {value!r} is implausibly large (a price above {MAX_PRICE:g} is a corrupt value)"


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def validate_bar(
    ts: Any, o: Any, h: Any, l: Any, c: Any, v: Any, *, prev_ts: Any = None  # noqa: E741
) -> Problem | None:
    """The first rule one bar breaks, as a :class:`Problem` (``row`` None), or None when it is valid.

    The same row rules as a file (``timestamp``, ``missing_price``, ``nonpositive_price``,
    ``volume``, ``nonfinite``, ``implausible``, ``high_low``); with ``prev_ts`` (the stamp of the last
    accepted bar) also ``unsorted`` (earlier), ``duplicate`` (equal) and ``timezone`` (one stamp has a
    time zone and the other has none). Values may be any numbers or numeric strings; nothing is
    raised. ``Problem.message`` names the bar, the bad value and the rule, without a file name: the
    caller prefixes where the bar came from.
    """
    try:
        stamp = None if ts is None else pd.Timestamp(ts)
    except (TypeError, ValueError, OverflowError):
        stamp = None
    if stamp is None or stamp is pd.NaT:
        return Problem("timestamp", None, None, f"bar {ts!r}: the timestamp cannot be parsed")
    text = format_ts(stamp)
    found = _value_problem({"open": o, "high": h, "low": l, "close": c, "volume": v})
    if found is None and prev_ts is not None:
        found = _order_problem(stamp, prev_ts)
    if found is None:
        return None
    rule, what = found
    return Problem(rule, None, text, f"bar {text}: {what}")


def _value_problem(values: dict[str, Any]) -> tuple[str, str] | None:
    """(rule, what) for the first bad value of one bar's open, high, low, close, volume."""
    nums: dict[str, float] = {}
    for name, raw in values.items():
        num = _as_float(raw)
        if num is None or math.isnan(num):
            return ("volume" if name == "volume" else "missing_price"), f"{name} {raw!r} is not a number"
        nums[name] = num
    for name, num in nums.items():
        kind, bound = ("volume", MAX_VOLUME) if name == "volume" else ("price", MAX_PRICE)  # upper bounds
        if math.isinf(num):
            return "nonfinite", f"{name} {num!r} is not finite ({kind} must be a finite number)"
        if kind == "price" and num <= 0:
            return "nonpositive_price", f"{name} {num!r} is not positive (prices must be > 0)"
        if kind == "volume" and num < 0:
            return "volume", f"volume {num!r} is negative (volume must be >= 0)"
        if num > bound or (kind == "price" and num < MIN_PRICE):
            return "implausible", _implausible(name, num, kind)
    top, bottom = max(nums["open"], nums["close"]), min(nums["open"], nums["close"])
    if nums["high"] < top:
        return "high_low", f"high {nums['high']!r} is below max(open, close) {top!r}"
    if nums["low"] > bottom:
        return "high_low", f"low {nums['low']!r} is above min(open, close) {bottom!r}"
    return None


def _order_problem(stamp: pd.Timestamp, prev_ts: Any) -> tuple[str, str] | None:
    """(rule, what) when ``stamp`` cannot follow ``prev_ts``: earlier, equal, or another kind of clock."""
    try:
        prev = pd.Timestamp(prev_ts)
    except (TypeError, ValueError, OverflowError):
        return None
    if prev is pd.NaT:
        return None
    if (prev.tz is None) != (stamp.tz is None):
        zoned, naive = (stamp, prev) if stamp.tz is not None else (prev, stamp)
        return "timezone", (
            f"the time zone changed: {format_ts(zoned)} has one and {format_ts(naive)} has none; "
            "stamp every bar in the same time zone"
        )
    if stamp < prev:
        return "unsorted", f"timestamp is earlier than the previous bar's {format_ts(prev)}"
    if stamp == prev:
        return "duplicate", f"timestamp equals the previous bar's {format_ts(prev)}"
    return None
