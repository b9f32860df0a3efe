"""Feature kinds: the implementations a ``features.yaml`` entry can name, and their parameters.

A *feature* in ``features.yaml`` is a named instance of a *kind* with parameters
(``sma_ratio_20`` = kind ``sma_ratio`` with ``window: 20``). Each kind has one batch
implementation (:mod:`aitrader.features.batch`) and one streaming implementation
(:mod:`aitrader.features.streaming`) that follow the same recursion and seed, so the two agree
to float rounding after warm-up. This module is pure Python (no numpy) so that the registry and
``aitrader features list`` load fast.

``version`` is part of every feature's spec hash: bump it when a kind's definition changes so
that models trained with the old definition refuse the new pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Param:
    """One parameter of a kind: its type and bounds (``choices`` for strings)."""

    type: type
    minimum: float | None = None
    choices: tuple[str, ...] = ()

    def check(self, value: Any) -> str | None:
        """Return a problem description, or None when ``value`` is acceptable."""
        if self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                return f"must be an integer, got {value!r}"
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return f"must be a number, got {value!r}"
        elif not isinstance(value, str):
            return f"must be a string, got {value!r}"
        if self.choices and value not in self.choices:
            import difflib

            close = difflib.get_close_matches(value, list(self.choices), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"must be one of {', '.join(self.choices)}, got {value!r}{hint}"
        if self.minimum is not None and value < self.minimum:
            return f"must be >= {self.minimum:g}, got {value!r}"
        return None


@dataclass(frozen=True)
class Kind:
    """A feature implementation: parameters, the structural minimum warm-up, a version."""

    name: str
    summary: str
    params: dict[str, Param] = field(default_factory=dict)
    #: Bars before the first value the definition can produce at all (``warmup`` must be >= it).
    min_warmup: Callable[[dict[str, Any]], int] = lambda p: 0
    #: Bars of history the streaming evaluator keeps (ring-buffer length needed, minus one).
    history: Callable[[dict[str, Any]], int] = lambda p: 1
    version: int = 1


def _w(p: dict[str, Any]) -> int:
    return int(p["window"])


_WINDOW = {"window": Param(int, 1)}
_WINDOW2 = {"window": Param(int, 2)}

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("price", "the close price itself (non-stationary: not for the default model set)"),
        Kind("return", "simple return close[t] / close[t-window] - 1", _WINDOW, _w, _w),
        Kind("sma_ratio", "close / SMA(close, window) - 1", _WINDOW2, lambda p: _w(p) - 1, _w),
        Kind("ema_ratio", "close / EMA(close, span) - 1 (EMA seeded with the first close)",
             {"span": Param(int, 2)}),
        Kind("rsi", "Wilder RSI in [0, 100], averages seeded with the SMA of the first window changes",
             _WINDOW2, _w),
        Kind("macd", "MACD line, signal or histogram divided by close",
             {"fast": Param(int, 2), "slow": Param(int, 3), "signal": Param(int, 2),
              "output": Param(str, choices=("line", "signal", "hist"))},
             lambda p: int(p["slow"]) - 1),
        Kind("bb_pctb", "Bollinger %B: (close - lower) / (upper - lower), bands SMA +- k population std",
             {"window": Param(int, 2), "k": Param(float, 1e-9)}, lambda p: _w(p) - 1, _w),
        Kind("atr", "Wilder average true range divided by close (seeded with the mean of the first window)",
             _WINDOW2, lambda p: _w(p) - 1),
        Kind("volatility", "sample standard deviation of 1-bar simple returns over window", _WINDOW2, _w, _w),
        Kind("volume_zscore", "(volume - mean) / population std of volume over window; 0 when flat",
             _WINDOW2, lambda p: _w(p) - 1, _w),
        Kind("volume_ratio", "volume / mean volume over window; 1 when the window has no volume",
             _WINDOW, lambda p: _w(p) - 1, _w),
        Kind("hl_range", "(high - low) / close"),
        Kind("close_location", "close location value ((close-low) - (high-close)) / (high-low); 0 when high == low"),
        Kind("stoch_k", "fast stochastic %K: 100 (close - lowest low) / (highest high - lowest low); 50 when flat",
             _WINDOW, lambda p: _w(p) - 1, _w),
        Kind("williams_r", "Williams %R: -100 (highest high - close) / (highest high - lowest low); -50 when flat",
             _WINDOW, lambda p: _w(p) - 1, _w),
        Kind("dist_high", "close / highest high over window - 1 (<= 0)", _WINDOW, lambda p: _w(p) - 1, _w),
        Kind("dist_low", "close / lowest low over window - 1 (>= 0)", _WINDOW, lambda p: _w(p) - 1, _w),
    )
}


_MAX_AGE = {"max_age": Param(float, 0.0)}  # seconds a snapshot stays usable after its timestamp
_LEVELS = {"levels": Param(int, 1)}

#: Order-book kinds (aitrader.features.book): they read depth-of-market snapshots aligned to each bar's
#: close (the last snapshot at or before the bar's stamp, NaN when it is older than ``max_age`` seconds).
BOOK_KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("book_spread_bps", "quoted spread 1e4 (ask_1 - bid_1) / mid, mid = (bid_1 + ask_1) / 2", _MAX_AGE),
        Kind("book_mid", "mid price (bid_1 + ask_1) / 2 (relative_to: none), or 1e4 (mid / close - 1) (close)",
             {**_MAX_AGE, "relative_to": Param(str, choices=("none", "close"))}),
        Kind("book_microprice", "1e4 (microprice / mid - 1), microprice = (bid_1 ask_sz_1 + ask_1 bid_sz_1) / "
             "(bid_sz_1 + ask_sz_1)", _MAX_AGE),
        Kind("book_imbalance", "(bid depth - ask depth) / (bid depth + ask depth) over the top `levels` levels "
             "(levels 1: top of book)", {**_MAX_AGE, **_LEVELS}),
        Kind("book_depth_change", "D[t] / D[t - window] - 1, D = bid + ask size over the top `levels` levels of the "
             "snapshot aligned to each bar", {**_MAX_AGE, **_LEVELS, "window": Param(int, 1)}, _w, _w),
    )
}
KINDS.update(BOOK_KINDS)


def check_params(kind: Kind, params: dict[str, Any]) -> list[str]:
    """Problems with ``params`` for ``kind`` as ``key: message`` strings (empty when valid)."""
    problems = [f"{key}: unknown parameter for kind {kind.name}; expected {sorted(kind.params) or 'none'}"
                for key in params if key not in kind.params]
    for key, spec in kind.params.items():
        if key not in params:
            problems.append(f"{key}: is required for kind {kind.name}")
            continue
        problem = spec.check(params[key])
        if problem:
            problems.append(f"{key}: {problem}")
    if not problems and kind.name == "macd" and params["fast"] >= params["slow"]:
        problems.append(f"fast: must be < slow ({params['slow']}), got {params['fast']}")
    return problems
