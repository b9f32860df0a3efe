"""Feature kinds: the implementations a ``features.yaml`` entry can name, and their parameters.

A *feature* in ``features.yaml`` is a named instance of a *kind* with parameters
(``sma_ratio_20`` = kind ``sma_ratio`` with ``window: 20``). Each kind has one batch
implementation (:mod:`aitrader.features.batch`) and one streaming implementation
(:mod:`aitrader.features.streaming`) that follow the same recursion and seed, so the two agree
to float rounding after warm-up. This module is pure Python (no numpy) so that the registry and
``aitrader features list`` load fast.

``version`` is part of every feature's spec hash: bump it when a kind's definition changes so
that models trained with the old definition refuse the new pipeline.

Installed packages add kinds through the ``aitrader.features`` entry-point group
(:mod:`aitrader.plugins`): a :class:`FeatureKind` carries its own batch and streaming evaluators.
:func:`get_kind` and :func:`all_kinds` see the built-in kinds and the plug-in ones.
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
    #: Fitted kinds (:mod:`aitrader.features.fitted`) learn parameters from the training rows; their
    #: values come from those parameters and from plain base features, never from the batch/streaming
    #: code generators directly.
    fitted: bool = False


def _w(p: dict[str, Any]) -> int:
    return int(p["window"])


_WINDOW = {"window": Param(int, 1)}
_WINDOW2 = {"window": Param(int, 2)}

#: Fitted kinds (parameters learned on the training rows, stored in the artifact): docs/features-fitted.md.
FITTED_KINDS = (
    Kind("vol_regime", "realised volatility (window) against quantile edges frozen on the training rows: "
         "bin 0..bins-1, or percentile in [0, 1] interpolated between bins+1 training quantiles",
         {"window": Param(int, 2), "bins": Param(int, 2), "output": Param(str, choices=("bin", "percentile"))},
         _w, _w, fitted=True),
    Kind("hmm_regime_p", "causal (forward-filtered) probability of the highest-variance state of a Gaussian "
         "HMM on 1-bar returns, fitted on the training rows",
         {"states": Param(int, 2), "iterations": Param(int, 1)}, lambda p: 1, lambda p: 1, fitted=True),
    Kind("anomaly_score", "IsolationForest score in (0, 1] (> 0.5 unusual) of (ret_1, hl_range, "
         "volume_zscore(window), volatility(window)), forest fitted on the training rows",
         {"window": Param(int, 2), "trees": Param(int, 1)}, _w, _w, fitted=True),
)

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
        Kind("liquidity_shock", "volume z-score over window x (high - low) / Wilder ATR(window); 0 when flat",
             _WINDOW2, lambda p: _w(p) - 1, _w),
        *FITTED_KINDS,
    )
}


@dataclass(frozen=True)
class FeatureKind(Kind):
    """A feature kind from a plug-in: the built-in metadata plus its two evaluators.

    ``batch(o, h, low, c, v, params)`` gets the five float64 numpy arrays of a whole series and returns
    one float64 array of the same length (values before the warm-up are ignored: the pipeline sets
    them to NaN). ``stream(params)`` returns a fresh ``update(o, h, low, c, v) -> float`` holding its own
    state, called once per bar in order. Both must agree within 1e-7 after the warm-up, and the value at
    bar t may read only bars ``t - history(params) .. t`` (the chunked batch evaluator relies on it).
    ``features``: ``features.yaml`` entries (without ``kind``) the plug-in adds to every registry; the
    first one's params are what :mod:`aitrader.testing` checks the kind with.
    """

    batch: Callable[..., Any] | None = None
    stream: Callable[[dict[str, Any]], Callable[[float, float, float, float, float], float]] | None = None
    features: tuple[dict[str, Any], ...] = ()


def plugin_kind_problem(obj: Any) -> str | None:
    """Why ``obj`` (an ``aitrader.features`` entry point) is not a usable FeatureKind, or None."""
    if not isinstance(obj, FeatureKind):
        return f"is a {type(obj).__name__}, not an aitrader.features.kinds.FeatureKind"
    if not callable(obj.batch) or not callable(obj.stream):
        return "has no callable batch and stream evaluators"
    if obj.name in KINDS:
        return f"reuses the built-in kind name {obj.name!r}"
    return None


def plugin_kinds() -> dict[str, FeatureKind]:
    """Every loadable plug-in kind by name (a broken one is warned about and skipped)."""
    from aitrader import plugins

    loaded = plugins.load_all("features", plugin_kind_problem)
    out: dict[str, FeatureKind] = {}
    for name, kind in loaded.items():
        if kind.name != name:
            plugins.log.warning("skipping feature kind plug-in %r: its FeatureKind is named %r; the entry "
                                "point and the kind must have the same name", name, kind.name)
            continue
        out[name] = kind
    return out


def get_kind(name: str) -> Kind | None:
    """The built-in or plug-in kind called ``name``; None when nothing provides it. A plug-in that
    advertises it but fails to load raises PluginError (it is needed now)."""
    found = KINDS.get(name)
    if found is not None:
        return found
    from aitrader import plugins

    if name not in plugins.discover("features"):
        return None
    kind = plugins.load("features", name, plugin_kind_problem)
    if kind.name != name:
        raise plugins.PluginError(f"feature kind plug-in {name!r} provides a kind named {kind.name!r}; the entry "
                                  "point and the kind must have the same name")
    return kind  # type: ignore[no-any-return]


def is_plugin_kind(name: str) -> bool:
    """True for a kind an installed plug-in provides (evaluated by its own batch/stream functions)."""
    return name not in KINDS and isinstance(get_kind(name), FeatureKind)


def all_kinds() -> dict[str, Kind]:
    """Built-in kinds, then the loadable plug-in kinds."""
    return {**KINDS, **plugin_kinds()}


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
