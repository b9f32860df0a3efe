"""The built-in real sample: daily OHLCV 2000-2013 of four US stocks, split-adjusted, offline.

The bars come from ``bokeh_sampledata``'s packaged ``stocks.csv.gz`` (columns Ticker, Date, Open,
High, Low, Close, Volume, Adj Close; unadjusted OHLC with split jumps). They are read through
:func:`aitrader.data.load_bars`, so the sample exercises the long-file and adjusted-close paths:
open/high/low/close are multiplied by ``Adj Close / Close`` (which also folds in dividends) and
volume is divided by it. The raw sample passes every validation rule, so it is loaded WITHOUT
repair: if a future bokeh_sampledata release shipped broken rows, loading would fail loudly
instead of silently dropping rows. No network access, ever.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aitrader.errors import DataError

SAMPLE_SYMBOLS = ("AAPL", "MSFT", "IBM", "GOOG")
SAMPLE_FILE = "stocks.csv.gz"


def sample_path() -> Path:
    """Path of the packaged ``stocks.csv.gz`` (a DataError when bokeh_sampledata is missing)."""
    try:
        from bokeh_sampledata import package_path
    except ImportError as exc:
        raise DataError(
            "the built-in sample needs the bokeh_sampledata package; install it with "
            "`pip install bokeh_sampledata` (it is a dependency of aitrader)"
        ) from exc
    path = Path(package_path(SAMPLE_FILE))
    if not path.is_file():
        raise DataError(f"sample file missing: {path}; reinstall bokeh_sampledata")
    return path


def load_sample(symbol: str = "AAPL") -> pd.DataFrame:
    """Split-adjusted daily bars of ``symbol`` (one of :data:`SAMPLE_SYMBOLS`)."""
    from aitrader.data.loader import load_bars

    if symbol.upper() not in SAMPLE_SYMBOLS:
        raise DataError(f"unknown sample symbol {symbol!r}; choose one of {', '.join(SAMPLE_SYMBOLS)}")
    symbol = symbol.upper()
    bars = load_bars(sample_path(), symbol=symbol)
    bars.attrs["source"] = f"bokeh_sampledata/{SAMPLE_FILE} [{symbol}]"
    return bars


def write_sample(symbol: str = "AAPL", out: str | Path | None = None) -> dict[str, object]:
    """Write the sample bars of ``symbol`` to ``out`` (default ``data/sample_<SYMBOL>.csv``).

    The write is atomic (temp file, then rename). Returns what was written: path, symbol, rows,
    first, last and the bars' fingerprint.
    """
    from aitrader.data.loader import bars_fingerprint, write_bars

    bars = load_sample(symbol)
    sym = str(bars.attrs["symbol"])
    path = write_bars(bars, Path(out) if out is not None else Path("data") / f"sample_{sym}.csv")
    return {
        "path": str(path),
        "symbol": sym,
        "rows": len(bars),
        "first": bars.index[0].isoformat(),
        "last": bars.index[-1].isoformat(),
        "sha256": bars_fingerprint(bars),
    }
