"""A paper-trading run end to end: models, data, ledger, engine, signals; new or resumed.

``paper_trade`` is what ``aitrader paper-trade`` calls. ``run_session`` is the same thing with
the models already built (``ModelSpec``), which tests and benchmarks use with fake predictors.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import secrets
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aitrader._util import pid_alive
from aitrader.config import TradingConfig
from aitrader.errors import TradingError
from aitrader.trading.batch import attach as attach_batch
from aitrader.trading.batch import resolve_workers, use_batch, worker_pool
from aitrader.trading.broker import PaperBroker
from aitrader.trading.engine import Engine, TargetSchedule
from aitrader.trading.events import EventBus
from aitrader.trading.ledger import LEDGER_NAME, Ledger, ledger_state, now_iso, remove_ledger
from aitrader.trading.ledger_writer import wanted as wanted_writer
from aitrader.trading.model_runner import FeatureStream, ModelSlot, Predictor
from aitrader.trading.signals import UnifiedSignalHandler
from aitrader.trading.sources import Step
from aitrader.trading.strategy import make_strategy
from aitrader.training.backtest import Costs, resolve_costs

if TYPE_CHECKING:  # the model swaps of --follow: imported by the runs that swap (a replay never does)
    from aitrader.trading.swap import SwapSettings

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
    trade_from: float | None = None  # epoch seconds: earlier bars only warm the features (no prediction)
    strategy: str = "ml_regression"  # built-in or plug-in strategy name (aitrader.trading.strategy.make_strategy)
    # the FeaturePipeline ``stream`` came from (fitted parameters and order-book snapshots attached), for
    # whoever needs another stream of the same features (a predict-worker taking over a shard)
    pipeline: Any = None


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
    live: bool = False  # --follow: prediction timeouts on the wall clock even at speed 0
    total_bars: int | None = None  # bars in the replayed data, for the progress view (None: --follow)
    # SHA-256 of the bars consumed up to the cursors ({symbol: {"bars", "sha256"}}), kept in the saved state
    fingerprint: Callable[[dict[str, tuple[int, str]]], dict[str, Any]] | None = None
    # --follow without --pin: swap in newly deployed versions at bar boundaries (aitrader.trading.swap)
    swap: SwapSettings | None = None
    # the engine once built (the Redis Streams trader checkpoints when its input is drained: aitrader.bus.trader)
    on_engine: Callable[[Engine], None] | None = None
    workers: int | str = 1  # --workers N|auto: threads of the batch route (aitrader.trading.batch.worker_pool)
    # --ledger-thread: a replay at speed 0 commits its checkpoints on a writer thread (aitrader.trading.ledger_writer)
    ledger_thread: bool = False
    # False: predictions written without their feature rows (a backtest's temporary ledger: nothing reads them)
    ledger_features: bool = True
    # True: a scratch ledger (backtest's temporary one): no outcome rows, no journal, no sync (Ledger.scratch)
    ledger_scratch: bool = False


def wall_clock_timeouts(opts: RunOptions) -> bool:
    """Live runs (--follow, --speed K) time predictions on the wall clock; a speed-0 replay on CPU time."""
    return opts.live or opts.speed > 0


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def horizon_of(manifest: dict[str, Any]) -> int:
    try:
        return max(1, int((manifest.get("target") or {}).get("horizon") or 1))
    except (TypeError, ValueError):
        return 1


def to_epoch(value: Any) -> float | None:
    """Epoch seconds of a stamp the way the bar sources count them (aware: UTC; naive: as if UTC)."""
    import pandas as pd

    if value is None or value == "":
        return None
    try:
        ts = pd.Timestamp(str(value))
    except (TypeError, ValueError):
        return None
    if ts is pd.NaT:
        return None
    if ts.tz is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return float(ts.as_unit("ns").value) / 1e9


def training_span(manifest: dict[str, Any]) -> tuple[float, float] | None:
    """First and last bar (epoch seconds, inclusive) of the rows the model was fit on, None: unknown.

    ``split.final_train_last`` is the last row of the final model's fit; manifests without it bound
    the span by ``split.holdout_first`` (exclusive), else by the end of the data.
    """
    data = manifest.get("data") or {}
    split = manifest.get("split") or {}
    first = to_epoch(data.get("first"))
    last = to_epoch(split.get("final_train_last"))
    if last is None:
        unseen = to_epoch(split.get("holdout_first"))
        last = unseen - 1e-9 if unseen is not None else to_epoch(data.get("last"))
    if last is None:
        return None
    return (first if first is not None else float("-inf"), last)


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
    extra: dict[str, Any] = {"clock": opts.clock} if opts.clock is not None else {}
    if not wall_clock_timeouts(opts):
        extra["timeout_clock"] = opts.clock or time.thread_time
    slots = [
        ModelSlot(
            model_id=s.model_id, symbol=s.symbol, digest=s.digest, predictor=s.predictor, stream=s.stream,
            strategy=make_strategy(s.strategy, s.manifest, min_confidence=s.min_confidence,
                                   position_size=s.position_size),
            weight=s.weight, horizon=horizon_of(s.manifest), bus=bus, timeout_ms=errs.prediction_timeout_ms,
            fallback=errs.fallback,
            # a remote predictor's circuit breaker replaces the permanent disable (aitrader.serve.client)
            max_consecutive_errors=errs.max_consecutive_errors if getattr(s.predictor, "breaker", None) is None
            else 2**62,
            previous_max_bars=errs.previous_max_bars, train_span=training_span(s.manifest),
            trade_from=s.trade_from, **extra,
        )
        for s in specs
    ]
    engine = Engine(bus, broker, handler, slots, ledger=ledger, schedules=schedules,
                    buffer_size=ml.feature_pipeline.buffer_size, commit_every=opts.commit_every)
    if opts.on_engine is not None:
        opts.on_engine(engine)
    return engine


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


def _create_ledger(run_dir: Path, meta: dict[str, Any]) -> None:
    """Create ``run_dir/ledger.db`` atomically: schema and the run's meta are committed under a
    temporary name, then hard-linked into place (which never replaces an existing file), so a run
    killed at any moment leaves either no ledger or a started one, and two runs started with one id
    at the same moment cannot both write it."""
    path = run_dir / LEDGER_NAME
    for stale in run_dir.glob(f".{LEDGER_NAME}.*.tmp"):  # from a run killed while creating its ledger
        pid = stale.name.split(".")[-2]
        if not (pid.isdigit() and pid_alive(int(pid))):
            remove_ledger(stale)
    tmp = run_dir / f".{LEDGER_NAME}.{os.getpid()}.tmp"
    remove_ledger(tmp)
    try:
        ledger = Ledger(tmp)
        try:
            ledger.write_meta(meta)
        finally:
            ledger.close()  # the last connection: SQLite folds the WAL back into the file
        try:  # a hard link never replaces: of two runs started with one id at once, the second is refused
            os.link(tmp, path)
        except FileExistsError:
            raise TradingError(f"{run_dir} already holds a run; resume it with --resume {run_dir.name} or pick "
                               "another --run-id/--state") from None
    finally:
        remove_ledger(tmp)
    with contextlib.suppress(OSError):  # make the rename durable
        fd = os.open(run_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_state(run_dir: Path, state: str, resume: bool) -> None:
    path = run_dir / LEDGER_NAME
    if not resume:
        if state in ("started", "damaged"):
            raise TradingError(f"{run_dir} already holds a run; resume it with --resume {run_dir.name} or pick "
                               "another --run-id/--state")
        return
    if state == "missing":
        raise TradingError(f"cannot resume: no ledger at {path}; pass the RUN_ID of an existing run (or --state DIR)")
    if state == "empty":
        raise TradingError(f"cannot resume: the run in {run_dir} was stopped before it started (its ledger is "
                           f"empty); start it again with --run-id {run_dir.name}")
    if state == "damaged":
        raise TradingError(f"cannot resume: {path} is damaged (not SQLite, or tables missing); start a new run")


def open_run(run_dir: Path, *, resume: bool, meta: dict[str, Any] | None = None, features: bool = True,
             scratch: bool = False) -> Ledger:
    """The run's ledger: an existing started one (``resume``), or a new one created with ``meta``
    (``features`` False: predictions recorded without their feature rows; ``scratch``: :class:`Ledger`)."""
    path = run_dir / LEDGER_NAME
    state = ledger_state(path)
    _check_state(run_dir, state, resume)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            if state == "empty":  # killed before its first commit: nothing to keep
                remove_ledger(path)
            _create_ledger(run_dir, meta or {})
        ledger = Ledger(path, features=features, scratch=scratch)
    except OSError as exc:
        raise TradingError(f"cannot create the run folder {run_dir}: {exc.strerror}; pass a writable --state") from exc
    except sqlite3.Error as exc:
        raise TradingError(f"cannot write the ledger {path}: {exc}; free disk space or pass a writable --state") \
            from exc
    if resume:
        try:
            saved = ledger.read_meta()
        except (sqlite3.Error, ValueError) as exc:
            ledger.close()
            raise TradingError(f"cannot read the run's meta from {path}: {exc}; start a new run") from exc
        if saved.get("status") == "running" and pid_alive(saved.get("pid")) and saved.get("pid") != os.getpid():
            ledger.close()
            raise TradingError(f"run {saved.get('run_id')} is running in process {saved.get('pid')}; stop it first")
    return ledger


def _recorded_costs(ledger: Ledger, resume: bool, meta: dict[str, Any] | None) -> Costs | None:
    """The costs the run trades with: a resumed run's recorded ones, else those ``paper_trade`` resolved."""
    try:
        recorded = (ledger.read_meta().get("costs") if resume else None) or (meta or {}).get("costs")
        return Costs.from_dict(recorded) if recorded else None
    except (KeyError, TypeError, ValueError, AttributeError, sqlite3.Error) as exc:
        raise TradingError(
            f"cannot resume: the recorded costs in {ledger.path} are damaged ({type(exc).__name__}: {exc}); "
            "start a new run"
        ) from exc


def _restore(engine: Engine, ledger: Ledger) -> None:
    """Put the engine back at the ledger's last checkpoint, or say plainly that the state is damaged."""
    try:
        saved = ledger.read_meta()
        state = saved.get("state")
        if state:
            if not isinstance(state, dict):
                raise TypeError(f"state is a {type(state).__name__}, not an object")
            _check_numbers(state)
            engine.restore(state, ledger.cursors())
    except TradingError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, sqlite3.Error) as exc:
        raise TradingError(
            f"cannot resume: the saved state in {ledger.path} is damaged ({type(exc).__name__}: {exc}); "
            "start a new run"
        ) from exc


def _check_numbers(value: Any, where: str = "state") -> None:
    """Every number of a saved state is finite and fits SQLite's 64-bit integers (counters, ids, cash)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_numbers(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_numbers(v, f"{where}[{i}]")
    elif isinstance(value, int | float) and not isinstance(value, bool) and not (
        math.isfinite(value) and abs(value) < 2**63
    ):
        raise ValueError(f"{where} is {value!r}")


def _ledger_failure(exc: BaseException, path: Path) -> TradingError:
    """A write the disk refused (full disk, file size limit, I/O error) as one clean error."""
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return TradingError(
        f"cannot write the ledger {path}: {detail}; free disk space (or raise the file size limit), then "
        f"continue with --resume {path.parent.name}"
    )


def _choose_route(cfg: TradingConfig, engine: Engine, specs: list[ModelSpec], steps: Iterable[Step],
                  opts: RunOptions, pool: Any = None) -> str:
    """``batch`` when the replay's models take the batch route (:mod:`aitrader.trading.batch`), else
    ``streaming``; recorded in the ledger's meta as ``route``."""
    series = getattr(steps, "series", None)  # a replay's steps carry their bars (sources.ReplaySteps)
    if series is None or not use_batch(cfg.ml_trading.replay, speed=opts.speed, live=opts.live, swap=opts.swap):
        return "streaming"
    return "batch" if attach_batch(engine, specs, series, clock=opts.clock, pool=pool) else "streaming"


def _start_route(cfg: TradingConfig, engine: Engine, specs: list[ModelSpec], steps: Iterable[Step],
                 opts: RunOptions) -> tuple[str, Any, int]:
    """The route, the batch route's worker threads (``opts.workers``; shut down by the caller) and how many
    threads compute its predictions (1: the loop's own; a streaming route uses no worker)."""
    workers = resolve_workers(opts.workers)
    pool = worker_pool(workers)
    try:
        route = _choose_route(cfg, engine, specs, steps, opts, pool)
    except BaseException:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        raise
    if route != "batch" and pool is not None:
        pool.shutdown()
        pool, workers = None, 1
    return route, pool, workers


def _finish(pool: Any, opts: RunOptions) -> None:
    if pool is not None:
        pool.shutdown(cancel_futures=True)
    if opts.on_finish is not None:
        opts.on_finish()


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
    first: dict[str, Any] = {}
    if not resume:
        models = [{"model_id": s.model_id, "name": s.name or s.model_id, "symbol": s.symbol, "digest": s.digest,
                   "version": _version(s.model_id)} for s in specs]
        first = {"run_id": run_id, "config": cfg.model_dump(mode="json"), "models": models,
                 "started_at": now_iso(), "status": "running", "updated_at": now_iso(), **(meta or {})}
    ledger = open_run(run_dir, resume=resume, meta=first, features=opts.ledger_features, scratch=opts.ledger_scratch)
    try:
        bus = EventBus()
        ledger.attach(bus)
        for subscribe in opts.subscribers:
            subscribe(bus)
        engine = build_engine(cfg, specs, bus, ledger, opts, schedules, costs=_recorded_costs(ledger, resume, meta))
        if opts.fingerprint is not None:
            engine.fingerprint = opts.fingerprint
        if resume:
            _restore(engine, ledger)
        route, pool, workers = _start_route(cfg, engine, specs, steps, opts)
        # (a swap wraps the steps below, but a swap never takes the writer: the same answer as after it)
        writer = wanted_writer(opts.ledger_thread, steps=steps, speed=opts.speed, live=opts.live, swap=opts.swap)
        try:
            # threads: how this process runs it (--workers auto's choice), not a result: the ledger is the
            # same either way, so ledger_content leaves it out with the other wall-clock keys
            ledger.write_meta({"status": "running", "pid": os.getpid(), "updated_at": now_iso(), "route": route,
                               "threads": {"workers": workers, "ledger_thread": writer}})
        except sqlite3.Error as exc:
            raise _ledger_failure(exc, ledger.path) from exc
        if stop_event is not None:  # shared with a follow source, so one request stops both
            engine.stop_event = stop_event
        if opts.swap is not None:
            from aitrader.trading.swap import SwapWatcher

            watcher = SwapWatcher.create(engine, specs, opts.swap, ledger.read_meta().get("models") or [],
                                         buffer_size=cfg.ml_trading.feature_pipeline.buffer_size)
            steps = watcher.wrap(steps)
        if writer:
            ledger.start_writer()
        try:
            with _stop_on_signals(engine, opts.handle_signals):
                status = engine.run(steps, speed=opts.speed, max_bars=opts.max_bars, progress=opts.progress)
            ledger.flush()  # the final checkpoint committed (a writer thread's error raised here)
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error, OSError):  # the disk may be what failed
                ledger.write_meta({"status": "stopped", "updated_at": now_iso()})
            if isinstance(exc, sqlite3.Error | OSError):
                raise _ledger_failure(exc, ledger.path) from exc
            raise
        finally:
            _finish(pool, opts)
        try:
            ledger.write_meta({"status": status, "updated_at": now_iso()})
        except sqlite3.Error as exc:
            raise _ledger_failure(exc, ledger.path) from exc
    finally:
        ledger.close()
    return summarise(run_dir)


def _version(model_id: str) -> int | None:
    _, _, v = model_id.rpartition(":v")
    return int(v) if v.isdigit() else None
