"""Bar sources: replay of one or several symbols merged by timestamp, and a file tail (live mode).

Both yield *steps*: all the bars sharing one timestamp, ordered by symbol, as plain Python floats
(the hot loop never touches pandas). Timestamps become ISO-8601 strings once, vectorised: naive
stamps stay naive, tz-aware ones are written in UTC (``+00:00``).
"""

from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import count, repeat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aitrader.errors import DataError

# (symbol, bar_index, open, high, low, close, volume)
BarTuple = tuple[str, int, float, float, float, float, float]
# (ts, epoch seconds, bars at that timestamp: a list, or a tuple when one symbol is replayed)
Step = tuple[str, float, Sequence[BarTuple]]


def iso_strings(index: pd.DatetimeIndex) -> tuple[list[str], np.ndarray]:
    """ISO-8601 strings and epoch seconds of a DatetimeIndex, vectorised."""
    suffix = ""
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
        suffix = "+00:00"
    ns = index.as_unit("ns").asi8
    if len(ns) and not (ns % 1_000_000_000).any():
        # Whole seconds (the usual bars): each distinct day and time of day is formatted once and
        # the stamps are joined from them, twice as fast as numpy formatting every stamp.
        days, second = np.divmod(ns // 1_000_000_000, 86400)
        day_code, day_values = pd.factorize(days)
        time_code, time_values = pd.factorize(second)
        day_text = np.datetime_as_string(day_values.astype("datetime64[D]")).tolist()
        time_text = [f"T{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}{suffix}" for t in time_values.tolist()]
        strings = [day_text[d] + time_text[t] for d, t in zip(day_code.tolist(), time_code.tolist(), strict=True)]
        return strings, ns / 1e9
    values: Any = ns.astype("datetime64[ns]")
    text = np.datetime_as_string(values, unit="us")  # type: ignore[call-overload]
    strings = [s + suffix for s in text.tolist()] if suffix else text.tolist()
    return strings, ns / 1e9


@dataclass
class BarSeries:
    symbol: str
    ts: list[str]
    epoch: np.ndarray
    open: list[float]
    high: list[float]
    low: list[float]
    close: list[float]
    volume: list[float]

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def from_frame(cls, symbol: str, df: pd.DataFrame) -> BarSeries:
        missing = [c for c in ("open", "high", "low", "close", "volume") if c not in df.columns]
        if missing:
            raise DataError(f"bars for {symbol} lack columns {missing}; expected open, high, low, close, volume")
        if not isinstance(df.index, pd.DatetimeIndex):
            raise DataError(f"bars for {symbol} must have a DatetimeIndex; load them with aitrader.data.load_bars")
        ts, epoch = iso_strings(df.index)
        cols = [df[c].to_numpy(dtype="float64").tolist() for c in ("open", "high", "low", "close", "volume")]
        return cls(symbol, ts, epoch, *cols)


def replay_steps(series: list[BarSeries]) -> Iterator[Step]:
    """Merge several symbols' bars by timestamp (ties ordered by symbol)."""
    series = sorted(series, key=lambda s: s.symbol)
    if len(series) == 1:
        # One symbol (the common replay): the steps are built by zip in C, no Python frame per bar;
        # a step's bars are a 1-tuple here (the engine only iterates and indexes them).
        s = series[0]
        bars = zip(repeat(s.symbol), count(), s.open, s.high, s.low, s.close, s.volume, strict=False)
        return zip(s.ts, s.epoch.tolist(), zip(bars, strict=False), strict=True)  # type: ignore[return-value]
    return _merged_steps(series)


def _merged_steps(series: list[BarSeries]) -> Iterator[Step]:
    epochs = np.concatenate([s.epoch for s in series]) if series else np.empty(0)
    which = np.concatenate([np.full(len(s), k) for k, s in enumerate(series)]) if series else np.empty(0, int)
    local = np.concatenate([np.arange(len(s)) for s in series]) if series else np.empty(0, int)
    order = np.lexsort((which, epochs))
    cur_ep: float | None = None
    cur_ts = ""
    bars: list[BarTuple] = []
    for ep, k, i in zip(epochs[order].tolist(), which[order].tolist(), local[order].tolist(), strict=True):
        if ep != cur_ep:
            if bars:
                yield cur_ts, cur_ep, bars  # type: ignore[misc]
            cur_ep, bars = ep, []
            cur_ts = series[k].ts[i]
        s = series[k]
        bars.append((s.symbol, i, s.open[i], s.high[i], s.low[i], s.close[i], s.volume[i]))
    if bars:
        yield cur_ts, cur_ep, bars  # type: ignore[misc]


class FollowSource:
    """Tail a CSV file (``timestamp,open,high,low,close,volume``) that another process appends to.

    Yields every bar already in the file, then each new complete line as it arrives, until
    :meth:`stop` is called (the engine calls it on SIGINT/SIGTERM and stops after the current bar).
    """

    def __init__(self, path: Path, symbol: str, *, poll_s: float = 0.05,
                 stop_event: threading.Event | None = None) -> None:
        self.path = path
        self.symbol = symbol
        self.poll_s = poll_s
        self.stop_event = stop_event or threading.Event()

    def stop(self) -> None:
        self.stop_event.set()

    def _parse(self, header: list[str], line: str, index: int) -> Step:
        row = dict(zip(header, next(csv.reader(io.StringIO(line))), strict=False))
        try:
            stamp = pd.Timestamp(str(row.get("timestamp") or row.get("date") or row.get("time")))
            vals = [float(row[c]) for c in ("open", "high", "low", "close", "volume")]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"{self.path}: line {index + 2} {line.strip()!r} is not a bar ({exc}); "
                "expected timestamp,open,high,low,close,volume"
            ) from exc
        ts, epoch = iso_strings(pd.DatetimeIndex([stamp]))
        return ts[0], float(epoch[0]), [(self.symbol, index, *vals)]  # type: ignore[list-item]

    def steps(self) -> Iterator[Step]:
        if not self.path.is_file():
            raise DataError(f"--follow file not found: {self.path}; create it or pass an existing file")
        with self.path.open("r", encoding="utf-8", newline="") as fh:
            header: list[str] | None = None
            partial = ""
            index = 0
            while not self.stop_event.is_set():
                chunk = fh.readline()
                if not chunk:
                    self.stop_event.wait(self.poll_s)
                    continue
                partial += chunk
                if not partial.endswith("\n"):
                    continue  # the writer has not finished this line yet
                line, partial = partial, ""
                if not line.strip():
                    continue
                if header is None:
                    header = [h.strip().lower() for h in line.strip().split(",")]
                    continue
                yield self._parse(header, line, index)
                index += 1


def describe(frames: dict[str, Any]) -> dict[str, Any]:
    """Short description of replayed data for the run's meta."""
    return {s: {"rows": len(df), "first": str(df.index[0]) if len(df) else None,
                "last": str(df.index[-1]) if len(df) else None} for s, df in sorted(frames.items())}


def pace(speed: float, epoch0: float, wall0: float, epoch: float) -> None:
    """Sleep so that bars replay at ``speed`` times their own cadence (no-op when speed is 0)."""
    if speed > 0:
        delay = wall0 + (epoch - epoch0) / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
