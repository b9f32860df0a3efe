"""``paper-trade --workers N`` (issue 11): the batch route's chunks computed ahead on worker threads
give the ledger of the single-threaded run, on synthetic multi-symbol replays and on real crypto bars."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_trading_batch import NAMES, FirstFeature  # noqa: E402
from trading_helpers import MANIFEST, bars, config, series  # noqa: E402

from aitrader.errors import ConfigError  # noqa: E402
from aitrader.features import FeaturePipeline  # noqa: E402
from aitrader.trading import batch as batch_mod  # noqa: E402
from aitrader.trading.ledger import ledger_content  # noqa: E402
from aitrader.trading.session import ModelSpec, RunOptions, run_session  # noqa: E402
from aitrader.trading.sources import replay_steps  # noqa: E402

SYMBOLS = ("AAA", "BBB", "CCC")


class BatchSized(FirstFeature):
    """Like FirstFeature, plus 1e-9 x the size of the batch it was called with: any change in how the
    rows are cut into batches changes the stored predictions (a model that is not row-independent)."""

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        return super().predict_batch(X) + 1e-9 * len(X)


def _content(run_dir: Path) -> dict[str, Any]:
    content = ledger_content(run_dir / "ledger.db")
    content["meta"] = [r for r in content["meta"] if r[0] != "run_id"]
    return content


def _run(tmp: Path, name: str, frames: dict[str, pd.DataFrame], workers: int, *, max_bars: int | None = None,
         resume: bool = False) -> Path:
    pipeline = FeaturePipeline(NAMES)
    specs = [ModelSpec(model_id=f"m{k}:v1", symbol=sym, digest="d" * 8,
                       predictor=BatchSized(raise_above=0.035, nan_below=-0.03), stream=pipeline.stream(500),
                       manifest={**MANIFEST, "features": pipeline.contract()}, min_confidence=0.6,
                       position_size=0.05) for k, sym in enumerate(frames)]
    cfg = config(models=[{"model_id": f"m{k}", "symbol": sym, "min_confidence": 0.6, "position_size": 0.05}
                         for k, sym in enumerate(frames)])
    opts = RunOptions(commit_every=40, handle_signals=False, workers=workers, max_bars=max_bars)
    run_session(cfg, specs, replay_steps(series(frames)), tmp / name, run_id=name, opts=opts, resume=resume)
    return tmp / name


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_mod, "PREDICT_CHUNK", 37)  # many batches per feature chunk
    monkeypatch.setattr(batch_mod, "FEATURE_CHUNK", 128)


def _frames() -> dict[str, pd.DataFrame]:
    # Different lengths and start times: the symbols' bars interleave unevenly.
    return {sym: bars(500 + 60 * k, seed=20 + k, start=f"2021-01-0{4 + k}", freq="1h") for k, sym in enumerate(SYMBOLS)}


def test_workers_give_the_single_thread_ledger(tmp_path: Path, small_chunks: None) -> None:
    frames = _frames()
    one = _content(_run(tmp_path, "w1", frames, 1))
    assert len(one["fills"]) > 5 and len(one["predictions"]) > 1000
    for workers in (2, 3):
        assert _content(_run(tmp_path, f"w{workers}", frames, workers)) == one


def test_resumed_run_with_workers_equals_the_uninterrupted_one(tmp_path: Path, small_chunks: None) -> None:
    frames = _frames()
    whole = _content(_run(tmp_path, "whole", frames, 1))
    _run(tmp_path, "cut", frames, 2, max_bars=555)  # stopped mid-batch, then resumed with another count
    resumed = _content(_run(tmp_path, "cut", frames, 2, resume=True))
    assert resumed == whole


def test_bad_worker_count_is_a_config_error() -> None:
    for bad in (0, -1, "0", "two", "", "1.5", True):
        with pytest.raises(ConfigError, match="--workers must be auto or a whole number >= 1"):
            batch_mod.worker_pool(bad)
    assert batch_mod.worker_pool(1) is None and batch_mod.worker_pool("1") is None
    assert batch_mod.parse_workers(" AUTO ") == "auto" and batch_mod.parse_workers("3") == 3


@pytest.mark.parametrize(("cpus", "load", "want"), [
    (2, 0.0, 2), (2, 0.49, 2), (2, 0.5, 1), (2, 3.0, 1),  # the loop takes one core; the rest must be free
    (1, 0.0, 1),  # one CPU: never a second thread
    (8, 6.4, 2), (8, 6.5, 1),
])
def test_auto_without_a_start_up_probe_goes_by_the_load_average(
    monkeypatch: pytest.MonkeyPatch, cpus: int, load: float, want: int
) -> None:
    monkeypatch.setattr(batch_mod.os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setattr(batch_mod.os, "getloadavg", lambda: (load, load, load))
    probe = batch_mod.IdleProbe()  # never started: no measurement
    assert probe.free_cores() is None
    assert batch_mod.auto_workers(probe) == want


def _fake_stat(monkeypatch: pytest.MonkeyPatch, samples: list[tuple[int, int]], clock: list[float]) -> None:
    reads = iter(samples)
    times = iter(clock)
    monkeypatch.setattr(batch_mod.IdleProbe, "_read", staticmethod(lambda: next(reads)))
    monkeypatch.setattr(batch_mod.time, "monotonic", lambda: next(times))


@pytest.mark.parametrize(("idle_ticks", "want_free", "want"), [
    (100, 1.0, 2),  # half of 2 CPUs' 200 ticks idle: one core free
    (60, 0.6, 2), (59, 0.59, 1),
    (0, 0.0, 1),  # both cores busy while this process started
])
def test_auto_goes_by_the_cores_idle_during_start_up(monkeypatch: pytest.MonkeyPatch, idle_ticks: int,
                                                     want_free: float, want: int) -> None:
    monkeypatch.setattr(batch_mod.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(batch_mod.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(batch_mod.os, "getloadavg", lambda: (9.0, 9.0, 9.0))  # not consulted: the probe measured
    probe = batch_mod.IdleProbe()
    # (idle + iowait, total) at the start and twice later, 0.5 s apart: 200 ticks passed each time
    _fake_stat(monkeypatch, [(1000, 5000), (1000 + idle_ticks, 5200), (1000 + idle_ticks, 5200)], [10.0, 10.5, 10.5])
    probe.start()
    assert probe.free_cores() == pytest.approx(want_free)
    assert batch_mod.auto_workers(probe) == want


def test_the_probe_needs_a_measurable_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = batch_mod.IdleProbe()
    _fake_stat(monkeypatch, [(1000, 5000), (1100, 5200)], [10.0, 10.01])
    probe.start()
    assert probe.free_cores() is None  # 10 ms: too short to say


def test_the_real_probe_reads_this_machine() -> None:
    if not Path("/proc/stat").is_file():
        pytest.skip("no /proc/stat")
    probe = batch_mod.IdleProbe()
    probe.start()
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:  # a busy start-up: this core is not idle
        sum(range(1000))
    free = probe.free_cores()
    assert free is not None and 0.0 <= free <= (os.cpu_count() or 1) - 0.5


def test_auto_without_a_load_average_stays_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_load() -> tuple[float, float, float]:
        raise OSError("no load average")

    monkeypatch.setattr(batch_mod.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(batch_mod.os, "getloadavg", no_load)
    assert batch_mod.auto_workers(batch_mod.IdleProbe()) == 1


def test_real_crypto_bars_with_a_real_model(tmp_path: Path, shared_data: Path) -> None:
    from aitrader.data import load_bars
    from aitrader.trading.service import paper_trade
    from tests.model_world import deploy_small_model

    folder = shared_data / "crypto_5m"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    syms = sorted(p.name.split(".")[0] for p in folder.glob("*.csv.gz"))[:3]
    registry = deploy_small_model(tmp_path, load_bars(folder / f"{syms[0]}.csv.gz").iloc[:1200], symbol=syms[0])
    lines = "\n".join(f"    - {{model_id: syn_lgbm, symbol: {s}}}" for s in syms)
    (tmp_path / "cfg.yaml").write_text(f"ml_trading:\n  models:\n{lines}\n")
    data = [f"{s}={folder / (s + '.csv.gz')}" for s in syms]
    runs = {}
    for workers in (1, 2):
        summary = paper_trade(config_path=str(tmp_path / "cfg.yaml"), data=data, run_id=f"w{workers}",
                              registry_root=str(registry), runs_dir=str(tmp_path / "runs"),
                              allow_symbol_mismatch=True, workers=workers, max_bars=4500)
        assert 4500 <= summary["bars"] < 4510  # stops at the end of a step of 3 symbols
        runs[workers] = _content(tmp_path / "runs" / f"w{workers}")
    assert len(runs[1]["predictions"]) > 3000 and len({p[3] for p in runs[1]["predictions"]}) == 3
    assert runs[2] == runs[1]


class Counting:
    """predict_batch = each row's first value (oracle: the rows themselves), counting the rows it was given."""

    def __init__(self) -> None:
        self.rows = 0

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        self.rows += len(X)
        return X[:, 0].copy()

    def predict_one(self, x: np.ndarray) -> float:
        self.rows += 1
        return float(x[0])


def test_a_resumed_feed_predicts_no_chunk_before_its_cursor() -> None:
    from concurrent.futures import ThreadPoolExecutor

    rows = np.arange(400 * 3, dtype=float).reshape(400, 3)
    chunks = [(a, rows[a : a + 100]) for a in range(0, 400, 100)]
    model = Counting()
    with ThreadPoolExecutor(1) as pool:
        feed = batch_mod.BatchFeed(chunks, model, chunk=50, pool=pool)
        first, _, _, preds, _, _ = feed.batch(250)  # a run resumed at bar 250
        assert first == 250 and preds == rows[250:300, 0].tolist()
        assert feed._next is not None
        feed._next.result()  # the chunk after the cursor's, predicted ahead by the worker
        assert model.rows == 50 + 100  # the cursor's batch (on this thread) + the next chunk; none before
        assert feed.batch(399)[3] == rows[350:400, 0].tolist()
        assert model.rows == 50 + 100 + 0  # already predicted ahead
    with pytest.raises(IndexError, match="past the replayed bars"):
        feed.batch(400)


def test_the_threads_used_are_in_the_ledger_meta_not_in_the_summary(tmp_path: Path) -> None:
    import json
    import sqlite3

    from aitrader.trading.summary import summarise

    frames = _frames()
    runs = {w: _run(tmp_path, f"t{w}", frames, w) for w in (1, 2)}
    for w, run in runs.items():
        with sqlite3.connect(run / "ledger.db") as conn:
            (value,) = conn.execute("SELECT value FROM meta WHERE key = 'threads'").fetchone()
        assert json.loads(value) == {"workers": w, "ledger_thread": False}
    one, two = (summarise(runs[w]) for w in (1, 2))
    for s in (one, two):
        assert "threads" not in s
        s.pop("state_dir"), s.pop("run_id")
    assert one == two and one["fills"] > 5
