"""Where the tasks of a universe retrain run: a local process pool or a Dask cluster.

Both executors take a picklable, module-level function and a list of items and yield
``(index, result, error)`` as tasks finish, in completion order, so the parent can register
each model while the others still train. Workers never touch the registry.

- ``ProcessExecutor(jobs)``: a ``spawn`` process pool (no fork of a parent that already holds
  native thread pools). A worker killed mid-task (SIGKILL, out of memory) breaks the pool: the
  unfinished tasks are resubmitted to a fresh pool; a task that was running when a pool broke
  (its own crash, or a neighbour's) is retried at most ``retries`` times (default once), then
  reported as failed with :class:`WorkerCrashed`.
- ``DaskExecutor(scheduler, jobs)``: ``dask.distributed`` (imported only here, only when chosen):
  an existing cluster at ``scheduler`` (``tcp://HOST:8786``) or, without it, a LocalCluster of
  ``jobs`` single-threaded worker processes. The scheduler reschedules the tasks of a lost worker.

Each task fits with one thread: :func:`single_thread_env` pins OpenMP/BLAS pools and the
trainer's own fit pool (``AITRADER_FIT_THREADS``) to 1 in every worker process.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from aitrader.errors import AitraderError, ConfigError

Outcome = tuple[int, Any, BaseException | None]
EXECUTORS = ("process", "dask")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "AITRADER_FIT_THREADS")


class WorkerCrashed(AitraderError):
    """A worker process died while running a task (killed, out of memory) more often than retried."""


def single_thread_env() -> None:
    """One thread per task: set before LightGBM/XGBoost/numpy start their pools in this process."""
    for var in THREAD_VARS:
        os.environ[var] = "1"


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class ProcessExecutor:
    """A local process pool of ``jobs`` workers (see the module docstring)."""

    name = "process"

    def __init__(self, jobs: int | None = None, retries: int = 1) -> None:
        self.jobs = jobs or default_jobs()
        self.retries = retries

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "jobs": self.jobs}

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Outcome]:
        import multiprocessing

        pending = dict(enumerate(items))
        crashes = dict.fromkeys(pending, 0)
        ctx = multiprocessing.get_context("spawn")
        with tempfile.TemporaryDirectory(prefix="aitrader-pool-") as flags:
            while pending:
                yield from self._one_pool(ctx, fn, pending, crashes, Path(flags))

    def _one_pool(self, ctx: Any, fn: Callable[[Any], Any], pending: dict[int, Any], crashes: dict[int, int],
                  flags: Path) -> Iterator[Outcome]:
        """Run ``pending`` in one pool until it finishes or breaks; a break costs one attempt to each task
        that had started (each touches a flag file first) and had not finished."""
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        workers = max(1, min(self.jobs, len(pending)))
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=single_thread_env) as pool:
            futures = {pool.submit(_flagged, fn, item, str(flags / str(i))): i for i, item in pending.items()}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    result = future.result()
                except BrokenProcessPool:
                    # A worker died; the pool's unfinished tasks all run again in a new pool.
                    flag = flags / str(i)
                    if flag.exists():
                        flag.unlink()
                        crashes[i] += 1
                    if crashes[i] > self.retries:
                        del pending[i]
                        yield i, None, WorkerCrashed(
                            f"a worker process died while running this task ({crashes[i]} times; killed or "
                            "out of memory); check the machine's memory and rerun: finished symbols are skipped"
                        )
                    continue
                except Exception as exc:  # the task's own error: reported, never retried
                    del pending[i]
                    yield i, None, exc
                    continue
                del pending[i]
                yield i, result, None


class DaskExecutor:
    """``dask.distributed``: an existing scheduler, or a LocalCluster of ``jobs`` workers."""

    name = "dask"

    def __init__(self, scheduler: str | None = None, jobs: int | None = None, timeout: float = 30.0) -> None:
        self.scheduler = scheduler
        self.jobs = jobs or default_jobs()
        self.timeout = timeout

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "scheduler": self.scheduler or "LocalCluster",
                "jobs": None if self.scheduler else self.jobs}

    def _client(self) -> tuple[Any, Any]:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise ConfigError(
                "--executor dask needs dask.distributed: pip install 'aitrader[dask]' (or use --executor process)"
            ) from exc
        if self.scheduler:
            try:
                return Client(self.scheduler, timeout=self.timeout), None
            except (OSError, TimeoutError) as exc:
                raise AitraderError(
                    f"cannot reach the Dask scheduler {self.scheduler}: {exc}; start it (`dask scheduler`) or "
                    "check --scheduler tcp://HOST:PORT"
                ) from exc
        cluster = LocalCluster(n_workers=self.jobs, threads_per_worker=1, processes=True,
                               dashboard_address=":0", env=dict.fromkeys(THREAD_VARS, "1"))
        return Client(cluster), cluster

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Outcome]:
        from distributed import as_completed

        client, cluster = self._client()
        try:
            batch = uuid.uuid4().hex[:8]
            futures = [client.submit(_in_worker, fn, item, key=f"aitrader-{batch}-{i}", pure=False)
                       for i, item in enumerate(items)]
            index = {f.key: i for i, f in enumerate(futures)}
            for future in as_completed(futures):
                i = index[future.key]
                if future.status == "error":
                    yield i, None, future.exception()
                else:
                    yield i, future.result(), None
                future.release()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def _flagged(fn: Callable[[Any], Any], item: Any, flag: str) -> Any:
    Path(flag).touch()
    return fn(item)


def _in_worker(fn: Callable[[Any], Any], item: Any) -> Any:
    single_thread_env()
    return fn(item)


def make_executor(kind: str, *, jobs: int | None = None, scheduler: str | None = None) -> Any:
    """The executor named ``kind`` (``process`` | ``dask``); options are checked here."""
    if kind not in EXECUTORS:
        import difflib

        close = difflib.get_close_matches(str(kind).lower(), list(EXECUTORS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"--executor {kind!r} is not supported; {hint}expected one of {', '.join(EXECUTORS)}")
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if scheduler and kind != "dask":
        raise ConfigError("--scheduler applies only with --executor dask")
    if kind == "dask":
        return DaskExecutor(scheduler, jobs)
    return ProcessExecutor(jobs)
