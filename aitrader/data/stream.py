"""Bars read in blocks: a validated bar file held as its timestamps only, its prices read on demand.

:func:`load_bars` returns the whole validated frame (~48 bytes a bar plus the transient copies of
reading and validating, ~0.3 KB a bar at its peak). A replay or a feature build needs the bars in
order, a block at a time, so :class:`BarFile` keeps only the timestamps (8 bytes a bar: the window,
the calendar and the asset class are decided from them) and yields ``open, high, low, close,
volume`` in blocks, reading the file again for them: memory is bounded by the block, not the file.

The bars a :class:`BarFile` yields are exactly those :func:`aitrader.data.load_bars` returns for
the same file and symbol (same floats, same index); a file that changed between the two reads is
a :class:`DataError`, never a silent mix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from aitrader.errors import DataError

#: Rows read, validated and yielded at a time.
BLOCK_ROWS = 65_536

#: ``(first row, values)``: ``values`` is a C-contiguous float64 array of shape ``(5, n)``; its rows
#: are open, high, low, close and volume of bars ``first .. first + n - 1`` (each row contiguous).
Block = tuple[int, np.ndarray]

_COLUMNS = ("open", "high", "low", "close", "volume")


class BarFile:
    """One symbol's validated bars: ``index`` held, prices yielded by :meth:`blocks`.

    ``reader(lo, hi, size)`` yields the blocks of rows ``lo:hi`` in order; :meth:`from_frame`
    wraps bars already in memory (the built-in sample, a backtest's frame, tests).
    """

    __slots__ = ("symbol", "source", "index", "_reader", "attrs")

    def __init__(self, symbol: str, source: str, index: pd.DatetimeIndex,
                 reader: Callable[[int, int, int], Iterator[Block]], attrs: dict | None = None) -> None:
        self.symbol = symbol
        self.source = source
        self.index = index
        self._reader = reader
        self.attrs = dict(attrs or {})

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"BarFile({self.symbol!r}, {self.source!r}, {len(self)} bars)"

    def blocks(self, lo: int = 0, hi: int | None = None, *, size: int = BLOCK_ROWS) -> Iterator[Block]:
        """The bars ``lo:hi`` (default: to the end) in blocks of at most ``size`` rows, in order."""
        n = len(self)
        hi = n if hi is None else min(int(hi), n)
        lo = max(0, int(lo))
        if lo >= hi:
            return iter(())
        return self._reader(lo, hi, max(1, int(size)))

    def frame(self, lo: int = 0, hi: int | None = None) -> pd.DataFrame:
        """Bars ``lo:hi`` as a frame like :func:`load_bars` returns (columns open..volume, the index)."""
        hi = len(self) if hi is None else min(int(hi), len(self))
        parts = [v for _, v in self.blocks(lo, hi)]
        values = np.concatenate(parts, axis=1) if parts else np.empty((5, 0))
        df = pd.DataFrame({c: values[k] for k, c in enumerate(_COLUMNS)}, index=self.index[lo:hi])
        df.attrs = {"symbol": self.symbol, "source": self.source, **self.attrs}
        return df

    @classmethod
    def from_frame(cls, symbol: str, df: pd.DataFrame) -> BarFile:
        """Bars already in memory (a validated frame: DatetimeIndex, columns open..volume)."""
        missing = [c for c in _COLUMNS if c not in df.columns]
        if missing:
            raise DataError(f"bars for {symbol} lack columns {missing}; expected open, high, low, close, volume")
        if not isinstance(df.index, pd.DatetimeIndex):
            raise DataError(f"bars for {symbol} must have a DatetimeIndex; load them with aitrader.data.load_bars")
        values = np.ascontiguousarray(np.vstack([df[c].to_numpy(dtype="float64") for c in _COLUMNS]))

        def read(lo: int, hi: int, size: int) -> Iterator[Block]:
            for start in range(lo, hi, size):
                stop = min(start + size, hi)
                yield start, np.ascontiguousarray(values[:, start:stop])

        attrs = {k: v for k, v in df.attrs.items() if k not in ("symbol", "source")}
        return cls(symbol, str(df.attrs.get("source") or symbol), df.index, read, attrs)
