"""Bar data: load, validate and fingerprint OHLCV bars; the built-in sample; synthetic bars.

See docs/architecture.md (``aitrader.data``) for the contract.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aitrader.data.loader import (
    bars_fingerprint,
    infer_interval,
    load_bars,
    load_data_items,
    load_universe,
    write_bars,
)
from aitrader.data.validate import MAX_PRICE, MAX_VOLUME, MIN_PRICE, Problem, validate_bar

if TYPE_CHECKING:
    from aitrader.data.report import DataReport, SymbolReport, check_bars
    from aitrader.data.sample import SAMPLE_SYMBOLS, load_sample
    from aitrader.data.synthetic import generate_bars

#: Names imported from their module on first use: the report (``data check``), the sample and the
#: synthetic bars are not on the path of a command that reads a data file (``paper-trade --data``).
_LAZY = {"DataReport": "report", "SymbolReport": "report", "check_bars": "report", "SAMPLE_SYMBOLS": "sample",
         "load_sample": "sample", "generate_bars": "synthetic"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

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
