"""Bar data: load, validate and fingerprint OHLCV bars; the built-in sample; synthetic bars.

See docs/architecture.md (``aitrader.data``) for the contract.
"""

from __future__ import annotations

from aitrader.data.synthetic import generate_bars

__all__ = ["generate_bars"]
