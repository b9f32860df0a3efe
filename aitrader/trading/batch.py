"""The batch route of a replay at ``--speed 0``: features and predictions computed per batch.

A replay knows all its bars in advance, so instead of the streaming features and one model call
per bar, each model slot gets a :class:`BatchFeed`: the feature rows of its symbol's replayed
bars from the batch evaluator, :data:`FEATURE_CHUNK` bars at a time as the symbol's blocks are
read (``aitrader.features.batch.compute_stream``: the same floats as one evaluation over the whole
frame; the features of bar ``t`` depend only on bars ``<= t``, so a resumed run computes the same
rows and reads them from its cursor on), and predictions from ``ModelRunner.predict_batch`` over
:data:`PREDICT_CHUNK` rows at a time, computed when the loop first asks for a row of the batch.
The engine loop itself is unchanged (strategy, signal handler, risk, broker, ledger: one execution
model); the slot reads the row and the prediction of the bar instead of computing them.

What the per-bar path records is kept: the prediction rows with their feature vectors,
``source=model``, outcomes, ``in_sample``, ML_ERROR and the fallbacks. A chunk whose batch call
raises (or returns the wrong number of values) is predicted again row by row with ``predict_one``,
so an exception or a NaN lands on the same bars as in the per-bar path. ``latency_us`` of a batch
prediction is the chunk's wall time divided by its rows (amortised); a batch has no per-bar
timeout (docs/trading.md, "Replay routes").

The route is used when ``ml_trading.replay`` is ``batch`` (the default), the run is a replay at
speed 0 (never ``--follow`` or ``--speed K``), and a slot's model can predict in batches with a
known feature contract; any other slot (a test's fake predictor, train's naive baselines) streams.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import numpy as np

#: Rows predicted per batch call: large enough to amortise the call, small enough that a short
#: ``--max-bars`` run does not predict the whole replay.
PREDICT_CHUNK = 8192
#: Bars of features evaluated at a time (``aitrader.features.batch.compute_stream``: the same floats
#: as over the whole frame), so a replay's memory does not grow with its length. 8192 (one prediction
#: batch): a 1M-bar replay's peak RSS 10 MB lower than with 16k at the same speed; 4096 cost ~20% more
#: time per bar in the evaluator's per-chunk work (scripts/bench/scale.py, docs/trading.md).
FEATURE_CHUNK = 8192

Chunks = Iterator[tuple[int, np.ndarray]]


class BatchFeed:
    """The feature rows and predictions of one slot over its symbol's replayed bars (by bar index).

    ``chunks`` yields ``(first bar index, feature matrix)`` in order; the loop asks for bars in
    increasing order, so only the current chunk is held (a resumed run skips the chunks before its
    cursor)."""

    __slots__ = ("_chunks", "first", "rows", "ready", "preds", "errors", "latency", "done", "predictor", "clock",
                 "chunk", "_pool", "_next")

    def __init__(self, chunks: Iterable[tuple[int, np.ndarray]], predictor: Any, *,
                 clock: Callable[[], float] = time.perf_counter, chunk: int = PREDICT_CHUNK,
                 pool: Executor | None = None) -> None:
        self._chunks: Chunks = iter(chunks)
        self.predictor = predictor
        self.clock = clock
        self.chunk = max(1, int(chunk))
        self.first = 0
        # pool: once the loop asks for a bar of a chunk, the next chunk's predictions are made ahead on a
        # worker thread (the model's batch call releases the GIL), one chunk ahead. The chunks a resumed
        # run passes on the way to its cursor are loaded, never predicted.
        self._pool = pool
        self._next: Future[BatchFeed | None] | None = None
        self._load(0, np.empty((0, 0)))

    @classmethod
    def from_matrix(cls, rows: np.ndarray, predictor: Any, **kw: Any) -> BatchFeed:
        return cls([(0, rows)], predictor, **kw)

    def _load(self, first: int, rows: np.ndarray) -> None:
        self.first = first
        self.rows = np.ascontiguousarray(rows, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            self.ready: list[bool] = (~np.isnan(self.rows).any(axis=1)).tolist()  # type: ignore[assignment]
        n = len(self.rows)
        self.preds = np.full(n, np.nan)
        self.errors: dict[int, str] = {}  # row in the chunk -> "ExcType: message" of a prediction that raised
        self.latency = np.zeros(n)  # amortised wall microseconds per row of its batch
        self.done = np.zeros(n, dtype=bool)

    def _submit_next(self) -> Future[BatchFeed | None]:
        """The next chunk's features, computed here (the evaluator's many small numpy calls would fight
        the loop for the GIL on a worker), and its predictions submitted to the pool (one batch call
        per ``chunk`` rows: the model's native code runs without the GIL); a done future of None at the end."""
        assert self._pool is not None
        nxt = next(self._chunks, None)
        if nxt is None:
            done: Future[BatchFeed | None] = Future()
            done.set_result(None)
            return done
        part = BatchFeed((), self.predictor, clock=self.clock, chunk=self.chunk)
        part._load(*nxt)
        return self._pool.submit(part._predict_all)

    def _predict_all(self) -> BatchFeed:
        """(On a worker thread) every prediction of this detached chunk."""
        for k in range(0, len(self.rows), self.chunk):
            self._predict_from(k)
        return self

    def _advance(self, wanted: int) -> bool:
        """Move to the next chunk (False at the end). With a pool, when that chunk holds bar ``wanted``
        (the one the loop asks for), the chunk after it goes to the worker."""
        if self._next is not None:
            part, self._next = self._next.result(), None
            if part is None:
                return False
            for name in ("first", "rows", "ready", "preds", "errors", "latency", "done"):
                setattr(self, name, getattr(part, name))
        else:
            nxt = next(self._chunks, None)
            if nxt is None:
                return False
            self._load(*nxt)
        if self._pool is not None and wanted < self.first + len(self.rows):
            self._next = self._submit_next()
        return True

    def _at(self, i: int) -> int:
        """Row of bar ``i`` in the current chunk (advancing to the chunk that holds it)."""
        k = i - self.first
        while k >= len(self.rows):
            if not self._advance(i):
                raise IndexError(f"bar {i} is past the replayed bars")
            k = i - self.first
        if k < 0:
            raise IndexError(f"bar {i} is before the current chunk (from bar {self.first}): bars come in order")
        return k

    def row(self, i: int) -> tuple[np.ndarray, bool]:
        """The feature row of bar ``i`` and whether it is complete (no NaN)."""
        k = self._at(i)
        return self.rows[k], self.ready[k]

    def _predict_from(self, k: int) -> None:
        """Predict the ready rows of the batch holding row ``k`` of the chunk. Batches are aligned to
        multiples of ``chunk`` rows in the chunk, so a resumed run and a prefetched one call the model
        on exactly the same rows as an uninterrupted one."""
        k -= k % self.chunk
        hi = min(len(self.rows), k + self.chunk)
        idx = np.flatnonzero(np.asarray(self.ready[k:hi], dtype=bool)) + k
        self.done[k:hi] = True
        if not idx.size:
            return
        X = self.rows[idx]
        t0 = self.clock()
        try:
            out = np.asarray(self.predictor.predict_batch(X), dtype=np.float64).reshape(-1)
            if out.shape[0] != idx.size:
                raise ValueError(f"predict_batch returned {out.shape[0]} values for {idx.size} rows")
        except Exception:  # noqa: BLE001 - row by row instead: the errors land on the bars they belong to
            out = np.empty(idx.size)
            for m, j in enumerate(idx.tolist()):
                try:
                    out[m] = float(self.predictor.predict_one(self.rows[j]))
                except Exception as exc:  # noqa: BLE001 - any model failure is an ML_ERROR, never a crash
                    out[m] = np.nan
                    self.errors[j] = f"{type(exc).__name__}: {exc}"
        self.preds[idx] = out
        self.latency[idx] = (self.clock() - t0) * 1e6 / idx.size

    def prediction(self, i: int) -> tuple[float, float, str | None]:
        """(raw prediction, latency_us, "ExcType: message" when the model raised on bar ``i``)."""
        k = self._at(i)
        if not self.done[k]:
            self._predict_from(k)
        return float(self.preds[k]), float(self.latency[k]), self.errors.get(k)

    def batch(self, i: int) -> tuple[int, np.ndarray, list[bool], list[float], list[float], dict[int, str]]:
        """The prediction batch holding bar ``i``, predicted: (its first bar, feature rows, ready flags,
        raw predictions, latency_us, errors by row of the batch), for a caller that walks the bars in
        order (``ModelSlot`` on this route): the values :meth:`row` and :meth:`prediction` give bar by
        bar, from the same model calls, as Python lists read without a numpy call per bar. The rows
        are a view of the chunk, which is never written after it is loaded."""
        k = self._at(i)
        lo = k - k % self.chunk
        hi = min(len(self.rows), lo + self.chunk)
        if not self.done[lo]:
            self._predict_from(lo)  # the whole aligned batch (done is set for all its rows at once)
        errors = {j - lo: e for j, e in self.errors.items() if lo <= j < hi}
        return (self.first + lo, self.rows[lo:hi], self.ready[lo:hi], self.preds[lo:hi].tolist(),
                self.latency[lo:hi].tolist(), errors)


def eligible(spec: Any) -> bool:
    """A model that predicts in batches, with the streaming evaluator of a known feature contract."""
    from aitrader.features.streaming import StreamingFeatures

    return (callable(getattr(spec.predictor, "predict_batch", None))
            and isinstance(spec.stream, StreamingFeatures)
            and isinstance((spec.manifest or {}).get("features"), dict))


def use_batch(route: str, *, speed: float, live: bool, swap: Any = None) -> bool:
    """The batch route applies to replays at speed 0 with ``ml_trading.replay: batch``."""
    return route == "batch" and speed == 0 and not live and swap is None


def attach(engine: Any, specs: Sequence[Any], series: Iterable[Any], *,
           clock: Callable[[], float] | None = None, pipelines: Sequence[Any] | None = None,
           pool: Executor | None = None) -> int:
    """Give each eligible slot of ``engine`` (built from ``specs``, in order) its :class:`BatchFeed`
    over the replayed ``series`` (:class:`aitrader.trading.sources.BarSeries`); returns how many.

    ``pipelines``: the FeaturePipeline of each spec when the caller has it (train, before its
    manifest is complete); else the spec's own (``ModelSpec.pipeline``: the one paper-trade built the
    spec's stream with, so ``features.yaml`` is not parsed again), else each is rebuilt from
    ``manifest["features"]``. ``pool``: worker threads that compute each slot's next chunk ahead
    (``paper-trade --workers N``); the same rows and predictions either way."""
    from aitrader.features import FeaturePipeline
    from aitrader.features import batch as fbatch

    by_symbol = {s.symbol: s for s in series}
    n = 0
    for k, (slot, spec) in enumerate(zip(engine.slots, specs, strict=True)):
        bars = by_symbol.get(slot.symbol)
        if bars is None or not eligible(spec):
            continue
        pipeline = pipelines[k] if pipelines is not None else getattr(spec, "pipeline", None)
        if pipeline is None:
            pipeline = FeaturePipeline.from_contract(spec.manifest["features"])
        # The slot's reader of its symbol's blocks (shared with the steps: sources.SharedPass).
        blocks = ((first, values) for first, _, values in bars.blocks(size=FEATURE_CHUNK))
        chunks = fbatch.compute_stream(pipeline.specs, blocks, FEATURE_CHUNK)
        # A model behind `aitrader serve` (a client with a circuit breaker) keeps its socket on the loop's thread.
        ahead = pool if getattr(spec.predictor, "breaker", None) is None else None
        slot.feed = BatchFeed(chunks, spec.predictor, clock=clock or slot.clock, chunk=PREDICT_CHUNK, pool=ahead)
        n += 1
    return n


class IdleProbe:
    """How many cores stood idle between :meth:`start` and :meth:`free_cores` (Linux ``/proc/stat``: the
    machine's idle and iowait time over its total, times the online CPUs). ``paper_trade`` starts it
    before loading the models and reading the bars, and ``--workers auto`` asks it just before the
    replay: the load of that moment, with this process's own start-up counted as the one core the loop
    will keep busy. None where there is no ``/proc/stat`` or the interval is too short to say."""

    MIN_SECONDS = 0.05

    def __init__(self) -> None:
        self._mark: tuple[float, int, int] | None = None

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            with Path("/proc/stat").open("rb") as f:
                first = f.readline().split()
        except OSError:
            return None
        if not first or first[0] != b"cpu" or len(first) < 5:
            return None
        ticks = [int(x) for x in first[1:9]]  # user nice system idle iowait irq softirq steal
        return ticks[3] + ticks[4], sum(ticks)

    def start(self) -> None:
        now = self._read()
        self._mark = None if now is None else (time.monotonic(), *now)

    def free_cores(self) -> float | None:
        now = self._read()
        if self._mark is None or now is None or time.monotonic() - self._mark[0] < self.MIN_SECONDS:
            return None
        idle, total = now[0] - self._mark[1], now[1] - self._mark[2]
        if total <= 0:
            return None
        return idle / total * (os.cpu_count() or 1)


#: Started by :func:`aitrader.trading.service.paper_trade` (see :class:`IdleProbe`).
IDLE = IdleProbe()


def auto_workers(probe: IdleProbe | None = None) -> int:
    """``--workers auto``: 2 when this process may run on two or more CPUs and one of them is free for the
    worker thread, else 1. Free: at least 0.6 of a core stood idle while this process started (``probe``,
    default :data:`IDLE`; the start-up kept one core busy, as the loop will), else, where that cannot be
    measured, a 1-minute load average below the CPU count minus 1.5. The worker thread only helps with a
    free core: on the 2-core development machine it gave 1.37x with one (200-tree LightGBM, ONNX) and
    lost to the single thread when another process kept a core busy (docs/trading.md, *Workers*). The
    ledger is the same either way."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    if cpus < 2:
        return 1
    free = (probe or IDLE).free_cores()
    if free is not None:
        return 2 if free >= 0.6 else 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this platform: do not guess
        return 1
    return 2 if load < cpus - 1.5 else 1


def parse_workers(workers: int | str) -> int | str:
    """``--workers``' value: ``auto`` or a whole number >= 1 (ConfigError naming the fix otherwise)."""
    from aitrader.errors import ConfigError

    if isinstance(workers, str):
        text = workers.strip().lower()
        if text == "auto":
            return "auto"
        workers = int(text) if text.isdigit() else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be auto or a whole number >= 1 (1: no worker threads), got {workers!r}")
    return workers


def requested_workers(workers: int | str) -> int | str:
    """:func:`parse_workers`; for ``auto``, :data:`IDLE` starts measuring how busy the machine is while
    the run loads its models and reads its bars."""
    n = parse_workers(workers)
    if n == "auto":
        IDLE.start()
    return n


def resolve_workers(workers: int | str) -> int:
    """The threads a run uses: ``workers``, or for ``auto`` :func:`auto_workers`' choice."""
    n = parse_workers(workers)
    return auto_workers() if n == "auto" else int(n)


def worker_pool(workers: int | str) -> Executor | None:
    """The threads that compute the batch route's predictions ahead (``paper-trade --workers N``: N - 1
    of them beside the loop's own thread; ``auto``: :func:`auto_workers`); None for 1 (everything on
    the loop's thread)."""
    n = resolve_workers(workers)
    if n == 1:
        return None
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="aitrader-batch")
