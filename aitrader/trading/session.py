"""A paper-trading run end to end: models, data, ledger, engine, signals; new or resumed.

``paper_trade`` is what ``aitrader paper-trade`` calls. ``run_session`` is the same thing with
the models already built (``ModelSpec``), which tests and benchmarks use with fake predictors.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aitrader._util import pid_alive
from aitrader.config import TradingConfig
from aitrader.errors import TradingError
from aitrader.trading.broker import PaperBroker
from aitrader.trading.engine import Engine, TargetSchedule
from aitrader.trading.events import EventBus
from aitrader.trading.ledger import LEDGER_NAME, Ledger, now_iso
from aitrader.trading.model_runner import FeatureStream, ModelSlot, Predictor
from aitrader.trading.signals import UnifiedSignalHandler
from aitrader.trading.sources import Step
from aitrader.trading.strategy import ConfidenceModel, MLRegressionStrategy
from aitrader.training.backtest import Costs, resolve_costs

REPLAY_COMMIT_EVERY = 2000


@dataclass
class ModelSpec:
    """One configured model, ready to trade: its predictor, feature stream and manifest."""

    model_id: str  # NAME:vN
    symbol: str
    digest: str
    predictor: Predictor
    stream: FeatureStream
    manifest: dict[str, Any]
    name: str = ""  # the config's model_id (registry name or NAME:vN); defaults to model_id
    min_confidence: float = 0.6
    position_size: float = 0.02
    weight: float = 1.0


@dataclass
class RunOptions:
    speed: float = 0.0
    max_bars: int | None = None
    commit_every: int = REPLAY_COMMIT_EVERY
    progress: Callable[[Engine], None] | None = None
    on_finish: Callable[[], None] | None = None
    subscribers: list[Callable[[EventBus], None]] = field(default_factory=list)
    clock: Callable[[], float] | None = None
    handle_signals: bool = True


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def horizon_of(manifest: dict[str, Any]) -> int:
    try:
        return max(1, int((manifest.get("target") or {}).get("horizon") or 1))
    except (TypeError, ValueError):
        return 1


def build_engine(cfg: TradingConfig, specs: list[ModelSpec], bus: EventBus, ledger: Ledger | None,
                 opts: RunOptions, schedules: Iterable[TargetSchedule] = (), costs: Costs | None = None) -> Engine:
    """The engine of one run. ``costs``: resolved by the caller from the traded bars (see
    :func:`aitrader.training.backtest.resolve_costs`); None resolves the config without bars."""
    ml = cfg.ml_trading
    ex, risk, errs = ml.execution, ml.risk_limits, ml.errors
    if costs is None:
        costs = resolve_costs(ex)
    broker = PaperBroker(bus, initial_cash=ex.initial_cash, commission_bps=costs.commission_bps,
                         slippage_bps=costs.slippage_bps)
    handler = UnifiedSignalHandler(bus, broker, max_position_size=risk.max_ml_position_size,
                                   max_positions=risk.max_ml_positions, daily_loss_limit=risk.daily_ml_loss_limit,
                                   allow_short=ex.allow_short)
    extra = {"clock": opts.clock} if opts.clock is not None else {}
    slots = [
        ModelSlot(
            model_id=s.model_id, symbol=s.symbol, digest=s.digest, predictor=s.predictor, stream=s.stream,
            strategy=MLRegressionStrategy(ConfidenceModel.from_manifest(s.manifest), min_confidence=s.min_confidence,
                                          position_size=s.position_size),
            weight=s.weight, horizon=horizon_of(s.manifest), bus=bus, timeout_ms=errs.prediction_timeout_ms,
            fallback=errs.fallback, max_consecutive_errors=errs.max_consecutive_errors,
            previous_max_bars=errs.previous_max_bars, **extra,
        )
        for s in specs
    ]
    return Engine(bus, broker, handler, slots, ledger=ledger, schedules=schedules,
                  buffer_size=ml.feature_pipeline.buffer_size, commit_every=opts.commit_every)


@contextlib.contextmanager
def _stop_on_signals(engine: Engine, enabled: bool) -> Iterator[None]:
    """SIGINT/SIGTERM ask the loop to stop after the current bar (only from the main thread)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _stop(signum: int, frame: Any) -> None:
        engine.stop_event.set()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def open_run(run_dir: Path, *, resume: bool) -> Ledger:
    path = run_dir / LEDGER_NAME
    if resume and not path.is_file():
        raise TradingError(f"cannot resume: no ledger at {path}; pass the RUN_ID of an existing run (or --state DIR)")
    if not resume and path.is_file():
        raise TradingError(f"{run_dir} already holds a run; resume it with --resume {run_dir.name} or pick another "
                           "--run-id/--state")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TradingError(f"cannot create the run folder {run_dir}: {exc.strerror}; pass a writable --state") from exc
    ledger = Ledger(path)
    if resume:
        meta = ledger.read_meta()
        if meta.get("status") == "running" and pid_alive(meta.get("pid")) and meta.get("pid") != os.getpid():
            ledger.close()
            raise TradingError(f"run {meta.get('run_id')} is running in process {meta.get('pid')}; stop it first")
    return ledger


def run_session(
    cfg: TradingConfig,
    specs: list[ModelSpec],
    steps: Iterable[Step],
    run_dir: Path,
    *,
    run_id: str,
    resume: bool = False,
    meta: dict[str, Any] | None = None,
    opts: RunOptions | None = None,
    schedules: Iterable[TargetSchedule] = (),
    stop_event: threading.Event | None = None,
) -> dict[str, Any]:
    """Run (or continue) one run into ``run_dir``; returns the final summary."""
    from aitrader.trading.summary import summarise

    opts = opts or RunOptions()
    ledger = open_run(run_dir, resume=resume)
    try:
        bus = EventBus()
        ledger.attach(bus)
        for subscribe in opts.subscribers:
            subscribe(bus)
        saved = ledger.read_meta() if resume else {}
        # resolved by paper_trade from the bars (a resumed run: its recorded costs, else the caller's)
        recorded = (saved.get("costs") if resume else None) or (meta or {}).get("costs")
        engine = build_engine(cfg, specs, bus, ledger, opts, schedules,
                              costs=Costs.from_dict(recorded) if recorded else None)
        if resume and saved.get("state"):
            engine.restore(saved["state"], ledger.cursors())
        if not resume:
            models = [{"model_id": s.model_id, "name": s.name or s.model_id, "symbol": s.symbol, "digest": s.digest,
                       "version": _version(s.model_id)} for s in specs]
            ledger.write_meta({"run_id": run_id, "config": cfg.model_dump(mode="json"), "models": models,
                               "started_at": now_iso(), **(meta or {})})
        ledger.write_meta({"status": "running", "pid": os.getpid(), "updated_at": now_iso()})
        if stop_event is not None:  # shared with a follow source, so one request stops both
            engine.stop_event = stop_event
        try:
            with _stop_on_signals(engine, opts.handle_signals):
                status = engine.run(steps, speed=opts.speed, max_bars=opts.max_bars, progress=opts.progress)
        except BaseException:
            ledger.write_meta({"status": "stopped", "updated_at": now_iso()})
            raise
        finally:
            if opts.on_finish is not None:
                opts.on_finish()
        ledger.write_meta({"status": status, "updated_at": now_iso()})
    finally:
        ledger.close()
    return summarise(run_dir)


def _version(model_id: str) -> int | None:
    _, _, v = model_id.rpartition(":v")
    return int(v) if v.isdigit() else None
