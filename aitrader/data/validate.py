"""Validation rules for OHLCV bars, and the repairs ``--repair`` makes.

Rules (``Problem.rule``), each reported once with its first offending row and a count:

* ``timestamp``: the timestamp cell is empty or cannot be parsed (repair: drop the row);
* ``missing_price``: open/high/low/close (or adj_close) is empty or not a number (drop);
* ``nonpositive_price``: a price is zero or negative (drop);
* ``volume``: volume is empty, not a number or negative (drop);
* ``high_low``: high below max(open, close) or low above min(open, close) (drop);
* ``unsorted``: a timestamp is earlier than one above it (repair: stable sort);
* ``duplicate``: a timestamp appears more than once (repair: keep the last row in file order).

Row-level rules are checked on every row; ``unsorted`` and ``duplicate`` on the rows that pass
them. All checks are vectorised; only the first offending row of a rule is formatted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from aitrader.data._read import BAR_COLUMNS, PRICE_COLUMNS, RawFrame

RULES = ("timestamp", "missing_price", "nonpositive_price", "volume", "high_low", "unsorted", "duplicate")
_DROP_FIX = "fix the row or pass --repair to drop it"


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
        nonpos = values <= 0
        if hit := self.first(nonpos.any(axis=1)):
            label, count = hit
            col = cols[int(nonpos.loc[label].to_numpy().argmax())]
            what = f"{col} {_num(values.at[label, col])} is not positive (prices must be > 0)"
            self.add("nonpositive_price", label, what, _DROP_FIX, count)
        return missing.any(axis=1) | nonpos.any(axis=1)

    def volume(self) -> pd.Series:
        vol = self.frame["volume"]
        bad = vol.isna() | (vol < 0)
        if hit := self.first(bad):
            label, count = hit
            cell: Any = self.raw.cell(label, "volume")
            if bool(vol.isna().at[label]):
                what = "volume is empty" if _blank(cell) else (f"volume {str(cell)!r} is not a number")
            else:
                what = f"volume {_num(vol.at[label])} is negative (volume must be >= 0)"
            self.add("volume", label, what, _DROP_FIX, count)
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
    dropped = bad_ts | bad_price | bad_volume | bad_hl
    kept = ~dropped
    n_unsorted, n_dup = check.order(kept)
    order = {p.rule: i for i, p in enumerate(check.problems)}
    check.problems.sort(key=lambda p: (p.row or 0, order[p.rule]))

    frame = check.frame[kept]
    ts = check.ts[kept]
    bars = frame[list(BAR_COLUMNS)].copy()
    if "adj_close" in frame.columns:
        ratio = frame["adj_close"] / frame["close"]
        bars[list(PRICE_COLUMNS)] = bars[list(PRICE_COLUMNS)].mul(ratio, axis=0)
        bars["volume"] = bars["volume"] / ratio
    bars.index = pd.DatetimeIndex(ts, name="timestamp")
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
    return Validated(bars=bars, problems=check.problems, repairs=repairs, rows_in_file=len(labels))
