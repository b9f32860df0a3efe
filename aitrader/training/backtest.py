"""The executed holdout backtest of ``aitrader train``: the paper-trading engine itself, no second model.

``train`` replays the holdout bars (led by the feature warm-up bars, exactly as ``paper-trade``'s
default replay cuts them) through :func:`aitrader.trading.session.build_engine` with the fitted
model in the loop: the predictor ``paper-trade`` would use (``model.onnx`` when exported, else the
native model), streaming features, the confidence gate (``min_confidence``), the position sizing
(``position_size`` of equity), the risk limits, next-open fills and the trading config's costs.
So ``train``'s holdout backtest and a ``paper-trade`` of the same bars with the same trading config
agree to the cent (``tests/e2e/test_train_equals_paper.py``).

The naive baselines run through the same engine as fixed predictors: ``zero`` (always flat),
``always_long`` and ``prev_sign`` (the sign of the previous h-bar return), with the values of
:func:`aitrader.training.metrics.baseline_predictions`. A constant prediction has no meaningful
confidence, so the baselines trade with ``min_confidence`` 0 (every non-zero prediction takes its
side at ``position_size``).

Costs by asset class: ``ml_trading.execution.asset_class`` (``auto|equity|forex|crypto``) picks the
default commission and slippage (:data:`ASSET_CLASS_COSTS`, sources in docs/trading.md) for each of
``commission_bps``/``slippage_bps`` left null; ``auto`` reads the class from the bars' calendar with
:func:`asset_class_of`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from aitrader.errors import ConfigError

ASSET_CLASSES = ("equity", "forex", "crypto")
# (commission_bps, slippage_bps) per side; see docs/trading.md "Costs by asset class" for the sources.
ASSET_CLASS_COSTS: dict[str, tuple[float, float]] = {
    "equity": (1.0, 2.0),  # liquid US equities: ~1 bp broker/exchange fees, ~2 bp half-spread + impact
    "forex": (0.2, 0.5),  # majors: no commission at most venues (~0.2 bp ECN), 0.5-1 pip spread ~0.5 bp
    "crypto": (10.0, 5.0),  # exchange taker fee 0.1% (Binance spot), ~5 bp slippage on liquid pairs
}
FALLBACK_CLASS = "equity"  # auto without bars to look at (a run with no frames yet)


def asset_class_of(index: pd.DatetimeIndex) -> str:
    """``crypto``, ``forex`` or ``equity`` from the calendar of ``index`` (the bars' timestamps).

    One calendar rule for annualising and for costs: :func:`aitrader.training.metrics.market_calendar`
    decides (exchange -> equity; it tells daily forex from an exchange by the missing holidays).
    """
    from aitrader.training import metrics as M

    index = pd.DatetimeIndex(index)
    if len(index) < 3:
        return FALLBACK_CLASS
    kind = str(M.market_calendar(index)[0])
    return "equity" if kind == "exchange" else kind


@dataclass(frozen=True)
class Costs:
    """The costs one run trades with, and where they came from."""

    asset_class: str
    commission_bps: float
    slippage_bps: float
    source: str  # "config" (both set), "class default" (both null) or "config + class default"
    detected: bool = False  # asset_class was "auto" and read from the bars

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Costs:
        return cls(asset_class=str(raw["asset_class"]), commission_bps=float(raw["commission_bps"]),
                   slippage_bps=float(raw["slippage_bps"]), source=str(raw.get("source", "config")),
                   detected=bool(raw.get("detected", False)))


def resolve_costs(execution: Any, indexes: Sequence[pd.DatetimeIndex] = ()) -> Costs:
    """Commission and slippage of ``execution`` (``ml_trading.execution``) for bars with ``indexes``.

    ``asset_class: auto`` reads the class of every index with :func:`asset_class_of` (several symbols
    must agree, else a ConfigError asks to set it); with no index it is ``equity``. A set
    ``commission_bps``/``slippage_bps`` wins over the class default, each on its own.
    """
    cls = execution.asset_class
    detected = cls == "auto"
    if detected:
        found = sorted({asset_class_of(ix) for ix in indexes})
        if len(found) > 1:
            raise ConfigError(
                f"ml_trading.execution.asset_class is auto but the traded bars look like {' and '.join(found)}; "
                "set asset_class (or commission_bps and slippage_bps) in the trading config"
            )
        cls = found[0] if found else FALLBACK_CLASS
    commission, slippage = ASSET_CLASS_COSTS[cls]
    given = [execution.commission_bps is not None, execution.slippage_bps is not None]
    source = "config" if all(given) else "config + class default" if any(given) else "class default"
    return Costs(
        asset_class=cls,
        commission_bps=float(execution.commission_bps if execution.commission_bps is not None else commission),
        slippage_bps=float(execution.slippage_bps if execution.slippage_bps is not None else slippage),
        source=source,
        detected=detected,
    )


def signal_backtest_kwargs(costs: Costs, index: pd.DatetimeIndex, *, short: bool) -> dict[str, Any]:
    """``backtest_kwargs`` of :func:`aitrader.training.metrics.evaluate` (the fold signal backtest)."""
    from aitrader.training import metrics as M

    return {"fees_bps": costs.commission_bps, "slippage_bps": costs.slippage_bps, "short": short,
            "periods": M.periods_per_year(pd.DatetimeIndex(index))}


def trading_entry(trading: Any, symbol: str) -> dict[str, float]:
    """``min_confidence``/``position_size`` of the trading config's model entry for ``symbol``.

    The first enabled entry trading ``symbol``, else the first entry, else the entry defaults."""
    from aitrader.config import ModelEntry

    entries = list(trading.ml_trading.models)
    chosen = next((m for m in entries if m.enabled and m.symbol.upper() == symbol.upper()), None)
    if chosen is None:
        chosen = entries[0] if entries else ModelEntry(model_id="train", symbol=symbol)
    return {"min_confidence": float(chosen.min_confidence), "position_size": float(chosen.position_size)}


def replay_frame(bars: pd.DataFrame, holdout_first: Any, warmup: int) -> pd.DataFrame:
    """The bars ``paper-trade`` replays by default: from ``holdout_first`` on, led by ``warmup`` bars."""
    first = int(bars.index.searchsorted(holdout_first, side="left"))
    return bars.iloc[max(0, first - warmup):]


# ---------------------------------------------------------------------------- the engine in the loop
class _TapStream:
    """A feature stream that also tells the fixed predictors which bar they are predicting."""

    def __init__(self, stream: Any, on_bar: Any) -> None:
        self.stream = stream
        self.on_bar = on_bar

    def update(self, ts: Any, o: float, h: float, l: float, c: float, v: float) -> np.ndarray:  # noqa: E741
        self.on_bar(c)
        row: np.ndarray = self.stream.update(ts, o, h, l, c, v)
        return row


class _FixedPredictor:
    """A naive baseline as a predictor: constant, or by the sign of the previous h-bar return."""

    def __init__(self, values: dict[int, float], horizon: int, momentum: bool) -> None:
        self.values = values  # prediction by direction -1, 0, +1 (constant: the same three)
        self.momentum = momentum
        self.horizon = horizon
        self.closes: deque[float] = deque(maxlen=horizon + 1)

    def on_bar(self, close: float) -> None:
        self.closes.append(close)

    def predict_one(self, x: np.ndarray) -> float:
        if not self.momentum:
            return self.values[1]
        if len(self.closes) < self.horizon + 1:
            return self.values[0]  # no close h bars back: no previous return (NaN -> direction 0)
        prev = self.closes[-1] / self.closes[0] - 1.0
        return self.values[int(np.sign(prev))]


@dataclass
class BacktestRun:
    """One replay: its figures, fills and equity marks (one per step, warm-up bars included)."""

    metrics: dict[str, Any]
    fills: list[dict[str, Any]] = field(default_factory=list)
    timestamps: list[str] = field(default_factory=list)
    equity: np.ndarray = field(default_factory=lambda: np.empty(0))
    returns: np.ndarray = field(default_factory=lambda: np.empty(0))  # per-step equity returns


def equity_metrics(equity: np.ndarray, initial: float, periods: float, traded: float) -> dict[str, float]:
    """Total return, Sharpe, max drawdown and turnover of an equity curve starting from ``initial``.

    The figures the run summary reports for the same curve, through the one metrics module
    (docs/metrics.md): per-step simple returns of ``[initial, *equity]``, Sharpe = mean / std
    (ddof=1) x sqrt(periods), a negative max drawdown, turnover = traded value over the equity
    before each step.
    """
    from aitrader.training import metrics as M

    equity = np.asarray(equity, dtype=np.float64)
    total = float(equity[-1] / initial - 1.0) if equity.size else 0.0
    rets = M.simple_returns(equity, initial=initial)
    before = np.concatenate([[initial], equity[:-1]])
    return {"total_return": total, "sharpe": float(M.sharpe_ratio(rets, periods)),
            "max_drawdown": float(M.max_drawdown(equity, initial=initial)),
            "turnover": float(M.turnover([traded], before))}


def run_backtest(
    trading: Any,
    frame: pd.DataFrame,
    *,
    symbol: str,
    predictor: Any,
    stream: Any,
    manifest: dict[str, Any],
    min_confidence: float,
    position_size: float,
    costs: Costs,
    periods: float,
    model_id: str = "train",
    pipeline: Any = None,
) -> BacktestRun:
    """Replay ``frame`` through the trading engine with one model; no ledger, no wall clock.

    The prediction timeout is judged on a clock that never advances: a backtest (and the artifact
    that records it) must not depend on the machine's load.
    """
    from aitrader.trading.batch import attach, use_batch
    from aitrader.trading.events import EventBus, EventType
    from aitrader.trading.session import ModelSpec, RunOptions, build_engine
    from aitrader.trading.sources import BarSeries, replay_steps

    bus = EventBus()
    fills: list[dict[str, Any]] = []
    marks: list[tuple[str, float]] = []
    errors = [0]
    bus.subscribe(EventType.FILL, lambda f: fills.append(
        {"ts": f.ts, "symbol": f.symbol, "side": f.side, "quantity": f.quantity, "price": f.price,
         "commission": f.commission, "slippage": f.slippage}))
    bus.subscribe(EventType.EQUITY, lambda e: marks.append((e.ts, e.equity)))
    bus.subscribe(EventType.ML_ERROR, lambda e: errors.__setitem__(0, errors[0] + 1))
    spec = ModelSpec(model_id=model_id, symbol=symbol, digest="", predictor=predictor, stream=stream,
                     manifest=manifest, name=model_id, min_confidence=min_confidence, position_size=position_size)
    opts = RunOptions(speed=0.0, clock=lambda: 0.0, handle_signals=False)
    engine = build_engine(trading, [spec], bus, None, opts, costs=costs)
    steps = replay_steps([BarSeries.from_frame(symbol, frame)])
    if pipeline is not None and use_batch(trading.ml_trading.replay, speed=opts.speed, live=opts.live):
        # The route paper-trade takes for the same replay (the naive baselines' tapped streams stream).
        attach(engine, [spec], steps.series, clock=opts.clock, pipelines=[pipeline])
    engine.run(steps)
    initial = float(trading.ml_trading.execution.initial_cash)
    equity = np.array([e for _, e in marks], dtype=np.float64)
    perf = equity_metrics(equity, initial, periods, engine.broker.turnover)
    path = np.concatenate([[initial], equity])
    return BacktestRun(
        metrics={
            **perf,
            "fills": len(fills),
            "final_equity": float(equity[-1]) if equity.size else initial,
            "fees": float(engine.broker.fees),
            "ml_errors": errors[0],
        },
        fills=fills,
        timestamps=[t for t, _ in marks],
        equity=equity,
        returns=path[1:] / path[:-1] - 1.0,
    )


def holdout_backtest(
    trading: Any,
    bars: pd.DataFrame,
    *,
    symbol: str,
    holdout_first: Any,
    pipeline: Any,
    predictor: Any,
    manifest: dict[str, Any],
    task: str,
    y_train: np.ndarray,
    costs: Costs,
) -> tuple[dict[str, Any], dict[str, BacktestRun]]:
    """The model and the three naive baselines through the engine over the default replay bars.

    Returns the manifest's ``metrics.holdout_backtest`` section and the runs (``"model"`` and each
    baseline name) with their fills and equity.
    """
    from aitrader.training import metrics as M

    frame = replay_frame(bars, holdout_first, pipeline.warmup)
    periods = M.periods_per_year(pd.DatetimeIndex(frame.index))
    entry = trading_entry(trading, symbol)
    buffer = trading.ml_trading.feature_pipeline.buffer_size
    horizon = int(manifest["target"]["horizon"])
    common: dict[str, Any] = {"symbol": symbol, "manifest": manifest, "costs": costs, "periods": periods,
              "position_size": entry["position_size"]}
    runs = {"model": run_backtest(trading, frame, predictor=predictor, stream=pipeline.stream(buffer),
                                  min_confidence=entry["min_confidence"], pipeline=pipeline, **common)}
    by_direction = M.baseline_predictions(task, y_train, np.array([-1.0, 0.0, 1.0]))
    for name, values in by_direction.items():
        fixed = _FixedPredictor(dict(zip((-1, 0, 1), values.tolist(), strict=True)), horizon, name == "prev_sign")
        stream = _TapStream(pipeline.stream(buffer), fixed.on_bar)
        runs[name] = run_backtest(trading, frame, predictor=fixed, stream=stream, min_confidence=0.0,
                                  model_id=name, **common)
    section = {
        "execution": "decide at bar t's close, fill at bar t+1's open (the paper-trade engine)",
        "first_bar": str(frame.index[0]), "holdout_first": str(holdout_first), "last_bar": str(frame.index[-1]),
        "bars": len(frame), "warmup_bars": int(frame.index.searchsorted(holdout_first, side="left")),
        "costs": costs.to_dict(), "initial_cash": float(trading.ml_trading.execution.initial_cash),
        "min_confidence": entry["min_confidence"], "position_size": entry["position_size"],
        "allow_short": bool(trading.ml_trading.execution.allow_short),
        "max_position_size": float(trading.ml_trading.risk_limits.max_ml_position_size),
        "periods_per_year": periods,
        "model": runs["model"].metrics,
        "baselines": {name: run.metrics for name, run in runs.items() if name != "model"},
    }
    return section, runs
