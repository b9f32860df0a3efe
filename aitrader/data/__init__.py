"""Bar data: load, validate and fingerprint OHLCV bars; the built-in sample; synthetic bars.

See docs/architecture.md (``aitrader.data``) for the contract.
"""

from __future__ import annotations

from aitrader.data.loader import (
    bars_fingerprint,
    infer_interval,
    load_bars,
    load_data_items,
    load_universe,
    write_bars,
)
from aitrader.data.report import DataReport, SymbolReport, check_bars
from aitrader.data.sample import SAMPLE_SYMBOLS, load_sample
from aitrader.data.synthetic import generate_bars
from aitrader.data.validate import MAX_PRICE, MAX_VOLUME, MIN_PRICE, Problem, validate_bar

__all__ = [
    "MAX_PRICE",
    "MAX_VOLUME",
    "MIN_PRICE",
    "SAMPLE_SYMBOLS",
    "DataReport",
    "Problem",
    "SymbolReport",
    "bars_fingerprint",
    "check_bars",
    "generate_bars",
    "infer_interval",
    "load_bars",
    "load_sample",
    "load_data_items",
    "load_universe",
    "validate_bar",
    "write_bars",
]
