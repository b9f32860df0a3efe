"""``check_bars``: what is in a bar file (rows, span, interval, gaps) and what is wrong with it.

Gaps, kept honest and simple (exchange calendars are out of scope):

* daily bars (interval of one day): a gap is a spacing of more than 4 days, so weekends and a
  holiday next to a weekend are not gaps;
* other bars of a day or longer (weekly, ...): a spacing of more than 1.5 intervals;
* intraday bars of a market that trades around the clock (bars on at least half of the Saturdays
  and half of the Sundays in the span, as crypto): every spacing of more than 1.5 intervals;
* intraday bars of a session market (equities, futures): a spacing of more than 1.5 intervals
  inside one trading day, or of more than 4 days across trading days. Overnight and weekend
  breaks are counted separately as ``session_breaks``, not as gaps. A trading day runs from the
  emptiest hour of the day (on the index's clock) to the next, so that sessions crossing
  midnight (US equities stamped in UTC) are not split.

Stamp convention (session markets only): a vendor stamps a bar at its start (09:30 = the minute
from 09:30 to 09:31) or at its end (09:31). Sessions open on the hour or the half hour, so with
bars of under 30 minutes the typical first bar of a day is on a :00/:30 mark when stamped at the
start and one interval past it when stamped at the end (and the other way round for the last
bar). The report says ``start``, ``end`` or ``unknown`` (longer bars, or no clear majority).
It matters when bars are joined with other data by time: an end-stamped bar at t holds what
happened up to t, a start-stamped one what happened up to t + interval.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aitrader.data._read import RawFrame, file_symbol, read_raw
from aitrader.data.loader import bar_files, infer_interval, symbol_groups
from aitrader.data.suspect import DataWarning, find_warnings
from aitrader.data.validate import Problem, Validated, validate
from aitrader.errors import DataError

log = logging.getLogger(__name__)

DAY = pd.Timedelta(days=1)
DAILY_GAP = pd.Timedelta(days=4)


@dataclass
class GapStats:
    count: int = 0
    largest: pd.Timedelta | None = None
    first_at: pd.Timestamp | None = None  # the bar after the first gap
    session_breaks: int = 0
    market: str = "unknown"  # daily | continuous | session | unknown


@dataclass
class SessionShape:
    """Typical first and last bar of a trading day (on the index's clock) and the stamp convention."""

    first_bar: str  # HH:MM
    last_bar: str
    stamps: str  # start | end | unknown

    def to_dict(self) -> dict[str, str]:
        return {"first_bar": self.first_bar, "last_bar": self.last_bar, "stamps": self.stamps}


@dataclass
class SymbolReport:
    """One symbol's bars after what ``--repair`` would fix, and the problems found."""

    symbol: str
    rows: int  # data rows of this symbol in the file
    usable_rows: int  # rows left after repair
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    interval: pd.Timedelta | None
    gaps: GapStats
    problems: list[Problem]
    repaired_rows: int
    tz: str | None
    session: SessionShape | None = None
    warnings: list[DataWarning] = field(default_factory=list)  # suspicious, still valid

    @property
    def valid(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        span = self.last - self.first if self.first is not None and self.last is not None else None
        return {
            "symbol": self.symbol,
            "valid": self.valid,
            "rows": self.rows,
            "usable_rows": self.usable_rows,
            "first": None if self.first is None else self.first.isoformat(),
            "last": None if self.last is None else self.last.isoformat(),
            "span": None if span is None else str(span),
            "interval": None if self.interval is None else str(self.interval),
            "tz": self.tz,
            "market": self.gaps.market,
            "gaps": {
                "count": self.gaps.count,
                "largest": None if self.gaps.largest is None else str(self.gaps.largest),
                "first_at": None if self.gaps.first_at is None else self.gaps.first_at.isoformat(),
            },
            "session_breaks": self.gaps.session_breaks,
            "session": None if self.session is None else self.session.to_dict(),
            "repaired_rows": self.repaired_rows,
            "problems": [p.to_dict() for p in self.problems],
            "warnings": [w.to_dict() for w in self.warnings],
        }


@dataclass
class DataReport:
    """The result of :func:`check_bars`: one entry per symbol; valid when every symbol is."""

    path: str
    symbols: list[SymbolReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # file-level: unreadable, missing columns
    repair: bool = False

    @property
    def valid(self) -> bool:
        if self.problems:
            return False
        if self.repair:  # repaired data is valid as long as something usable is left
            return all(s.usable_rows > 0 for s in self.symbols)
        return all(s.valid for s in self.symbols)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.symbols)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "valid": self.valid,
            "repair": self.repair,
            "rows": self.rows,
            "problems": [p.to_dict() for p in self.problems],
            "symbols": [s.to_dict() for s in self.symbols],
        }


def _session_days(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Each bar's trading day: the date after moving the day boundary to the emptiest hour.

    A session that crosses midnight on the index's clock (US equities stamped in UTC trade until
    01:00 UTC in extended hours) stays within one trading day.
    """
    counts = np.bincount(index.hour, minlength=24)
    boundary = int(counts.argmin())
    return (index - pd.Timedelta(hours=boundary)).normalize()


def _is_continuous(days: pd.DatetimeIndex) -> bool:
    """Bars on most Saturdays and most Sundays of the span: a market that never closes (crypto)."""
    unique = days.unique()
    span = pd.date_range(unique.min(), unique.max(), freq="D")
    for weekday in (5, 6):
        in_span = int((span.day_of_week == weekday).sum())
        if in_span == 0 or (unique.day_of_week == weekday).sum() < 0.5 * in_span:
            return False
    return True


def gap_stats(index: pd.DatetimeIndex, interval: pd.Timedelta | None) -> GapStats:
    """Count unexpected gaps in a sorted index (rules in the module docstring)."""
    if interval is None or len(index) < 2:
        return GapStats()
    spacing = pd.TimedeltaIndex(index[1:] - index[:-1])
    after = index[1:]
    breaks = 0
    if interval >= DAY:
        market = "daily"
        is_gap = np.asarray(spacing > (DAILY_GAP if interval == DAY else 1.5 * interval))
    else:
        days = _session_days(index)
        long = np.asarray(spacing > 1.5 * interval)
        if _is_continuous(days):
            market = "continuous"
            is_gap = long
        else:
            market = "session"
            same_day = np.asarray(days[1:] == days[:-1])
            very_long = np.asarray(spacing > DAILY_GAP)
            is_gap = (same_day & long) | (~same_day & very_long)
            breaks = int((~same_day & long & ~very_long).sum())
    if not is_gap.any():
        return GapStats(session_breaks=breaks, market=market)
    return GapStats(
        count=int(is_gap.sum()),
        largest=spacing[is_gap].max(),
        first_at=after[int(is_gap.argmax())],
        session_breaks=breaks,
        market=market,
    )


def session_shape(index: pd.DatetimeIndex, interval: pd.Timedelta) -> SessionShape:
    """Typical first/last bar of the trading days and whether bars are stamped at start or end."""
    stamps_by_day = pd.Series(index, index=_session_days(index)).groupby(level=0)
    # Minutes on the index's clock of each day's first and last bar (a day may cross midnight).
    first, last = ((s.dt.hour * 60 + s.dt.minute) for s in (stamps_by_day.min(), stamps_by_day.max()))
    step = interval / pd.Timedelta(minutes=1)
    stamps = "unknown"
    if step < 30 and 30 % step == 0:  # 1, 2, 3, 5, 6, 10, 15 minute bars
        on_mark = (first % 30 == 0).sum() + ((last + step) % 30 == 0).sum()
        past_mark = (((first - step) % 30 == 0) & (first % 30 != 0)).sum() + (last % 30 == 0).sum()
        votes = 2 * len(first)
        stamps = "start" if on_mark > 0.5 * votes else "end" if past_mark > 0.5 * votes else "unknown"

    def hhmm(m: int) -> str:
        return f"{m // 60:02d}:{m % 60:02d}"

    return SessionShape(hhmm(int(first.mode().iloc[0])), hhmm(int(last.mode().iloc[0])), stamps)


def symbol_report(symbol: str, validated: Validated, where: str) -> SymbolReport:
    bars = validated.bars
    index = pd.DatetimeIndex(bars.index)
    interval = infer_interval(index)
    gaps = gap_stats(index, interval)
    return SymbolReport(
        symbol=symbol,
        rows=validated.rows_in_file,
        usable_rows=len(bars),
        first=index[0] if len(index) else None,
        last=index[-1] if len(index) else None,
        interval=interval,
        gaps=gaps,
        problems=validated.problems,
        repaired_rows=validated.repaired_rows,
        tz=None if index.tz is None else str(index.tz),
        session=session_shape(index, interval) if gaps.market == "session" and interval is not None else None,
        warnings=find_warnings(bars, where=where, adjusted=validated.adjusted),
    )


def _file_reports(raw: RawFrame, symbol: str | None, default_symbol: str) -> list[SymbolReport]:
    if "symbol" not in raw.frame.columns:
        return [symbol_report(symbol or default_symbol, validate(raw), raw.source)]
    groups = symbol_groups(raw)
    if symbol is not None:
        picked = [s for s in groups if s.upper() == symbol.upper()]
        if not picked:
            # A wrong --symbol is the caller's mistake, not a problem of the file.
            raise _UnknownSymbol(f"{raw.source}: symbol {symbol!r} not found; available: {', '.join(groups)}")
        groups = {picked[0]: groups[picked[0]]}
    reports = []
    for s, labels in groups.items():
        where = f"{raw.source} [{s}]"
        reports.append(symbol_report(s, validate(raw, labels, where=where), where))
    return reports


class _UnknownSymbol(DataError):
    """Raised through check_bars instead of being recorded as a file problem."""


def _file_problem(exc: DataError) -> Problem:
    return Problem(rule="file", row=None, timestamp=None, message=str(exc))


def check_bars(path: str | Path, *, repair: bool = False, symbol: str | None = None) -> DataReport:
    """Inspect a bar file or directory without raising for broken rules.

    Content problems (missing columns, an empty or unreadable file, broken rules) go into the
    report, which is then ``valid=False`` (with ``repair=True``: valid when every symbol keeps at
    least one row after repair). A path that does not exist is a :class:`DataError`. ``symbol``
    restricts a long file or a directory to one symbol.
    """
    started = time.perf_counter()
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory; pass a bar file or a directory of bar files")
    report = DataReport(path=str(path), repair=repair)
    if path.is_dir():
        files = bar_files(path)
        if symbol is not None:
            files = [f for f in files if file_symbol(f).upper() == symbol.upper()]
            if not files:
                raise DataError(
                    f"{path}: no file for symbol {symbol!r}; available: "
                    f"{', '.join(file_symbol(f) for f in bar_files(path))}"
                )
    else:
        files = [path]
    for f in files:
        try:
            raw = read_raw(f)
            report.symbols.extend(_file_reports(raw, symbol if not path.is_dir() else None, file_symbol(f)))
        except _UnknownSymbol:
            raise
        except DataError as exc:
            if not f.exists():
                raise
            report.problems.append(_file_problem(exc))
        log.info("%s: checked", f)
    log.info("%s: %d rows, %d symbol(s), %s in %.2f s", path, report.rows, len(report.symbols),
             "valid" if report.valid else "INVALID", time.perf_counter() - started)
    return report
