"""Live model swaps (aitrader.trading.swap) with fake models and a scripted deployment source.

The oracle for "no position or cash lost" is a second run: the same bars traded with the old
version up to the swap point, its ledger edited to name the new version (what a run started on the
new version at that bar with the same positions records), then resumed with the new version.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aitrader.trading.ledger import ledger_content
from aitrader.trading.session import RunOptions, run_session
from aitrader.trading.sources import Step, replay_steps
from aitrader.trading.swap import Offer, Prepared, SwapRefused, SwapSettings, watched_alias
from tests.unit.trading_helpers import MANIFEST, MomentumStream, bars, config, series, spec


class Contrarian:
    """The 'new version': bets against the 3-bar momentum (so its trades differ from the old one's)."""

    def predict_one(self, x: np.ndarray) -> float:
        return -float(x[0])


class SlowStream:
    """Features [k-bar return, 1-bar return]; NaN until k+1 bars were seen; ``ready`` like StreamingFeatures."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.closes: deque[float] = deque(maxlen=k + 1)
        self.row = np.empty(2)
        self.seen = 0

    @property
    def ready(self) -> bool:
        return self.seen > self.k

    def update(self, ts: Any, o: float, h: float, l: float, c: float, v: float) -> np.ndarray:  # noqa: E741
        self.closes.append(c)
        self.seen += 1
        if self.seen <= self.k:
            self.row[:] = math.nan
        else:
            self.row[0] = c / self.closes[0] - 1.0
            self.row[1] = c / self.closes[-2] - 1.0
        return self.row


class FakeSource:
    """Scripted deployments: ``deploy(offer)`` moves the alias; ``table`` maps digests to what prepare gives."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table
        self.offer: Offer | None = Offer("m:v1", "d" * 8)
        self.bumped = False
        self.changed_calls = self.queries = self.prepares = 0
        self.fail_target: Exception | None = None

    def deploy(self, offer: Offer | None) -> None:
        self.offer, self.bumped = offer, True

    def changed(self) -> bool:
        self.changed_calls += 1
        bumped, self.bumped = self.bumped, False
        return bumped

    def target(self, name: str, alias: str) -> Offer | None:
        self.queries += 1
        if self.fail_target is not None:
            raise self.fail_target
        return self.offer

    def prepare(self, offer: Offer, buffer_size: int) -> Prepared:
        self.prepares += 1
        made = self.table[offer.digest]()
        if isinstance(made, Exception):
            raise made
        return made


def v2(stream: Any = None) -> Prepared:
    return Prepared("m:v2", "e" * 8, Contrarian(), stream or MomentumStream(), MANIFEST)


def deploying_at(steps: Iterator[Step], at: int, source: FakeSource, offer: Offer | None) -> Iterator[Step]:
    """The bars, with a deployment completed just before bar ``at`` arrives."""
    for step in steps:
        if step[2][0][1] == at:
            source.deploy(offer)
        yield step


def live_opts(source: FakeSource, **kw: Any) -> RunOptions:
    return RunOptions(commit_every=1, live=True, handle_signals=False,
                      swap=SwapSettings(source, stat_every_s=0.0, poll_s=math.inf, **kw))


def frames() -> dict[str, Any]:
    return {"AAA": bars(140, seed=7)}


def read(run_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    """``sql`` on the ledger with its predictions and equity decoded into one-row-per-item tables."""
    from aitrader.trading.ledger import decoded_copy

    conn = decoded_copy(run_dir / "ledger.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def meta(run_dir: Path) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in read(run_dir, "SELECT key, value FROM meta")}


def swapped_run(tmp_path: Path, at: int, prepared: Any) -> tuple[Path, FakeSource]:
    source = FakeSource({"e" * 8: prepared})
    steps = deploying_at(replay_steps(series(frames())), at, source, Offer("m:v2", "e" * 8))
    run_dir = tmp_path / "swapped"
    run_session(config(), [spec(name="m")], steps, run_dir, run_id="swapped", opts=live_opts(source))
    return run_dir, source


def test_a_deployed_version_takes_over_at_the_next_bar_without_losing_positions_or_cash(tmp_path: Path) -> None:
    run_dir, source = swapped_run(tmp_path, 60, v2)
    swaps = read(run_dir, "SELECT ts, symbol, model_id, reason, payload FROM events WHERE type = 'MODEL_SWAPPED'")
    assert len(swaps) == 1
    ts, symbol, model_id, reason, payload = swaps[0]
    stamps = series(frames())[0].ts
    assert (ts, symbol, model_id, reason) == (stamps[60], "AAA", "m:v2", "production")
    assert json.loads(payload) == {"old_model_id": "m:v1", "old_digest": "d" * 8, "new_model_id": "m:v2",
                                   "new_digest": "e" * 8, "bar_index": 60, "alias": "production"}
    by_bar = read(run_dir, "SELECT bar_index, model_id, digest FROM predictions ORDER BY bar_index")
    assert {(m, d) for i, m, d in by_bar if i < 60} == {("m:v1", "d" * 8)}
    assert {(m, d) for i, m, d in by_bar if i >= 60} == {("m:v2", "e" * 8)}
    assert 60 in {i for i, _, _ in by_bar}  # the new version predicted at the swap bar itself (re-warmed)
    models = meta(run_dir)["models"]
    assert [(m["model_id"], m["digest"], m["version"]) for m in models] == [("m:v2", "e" * 8, 2)]
    assert source.prepares == 1

    # The oracle: the old version up to bar 59, then the ledger says "new version" and the run resumes with it.
    ref = tmp_path / "ref"
    run_session(config(), [spec(name="m")], replay_steps(series(frames())), ref, run_id="swapped",
                opts=RunOptions(commit_every=1, live=True, handle_signals=False, max_bars=60))
    assert read(ref, "SELECT bar_index FROM cursors") == [(59,)]
    saved = meta(ref)
    slots = saved["state"]["slots"]
    old = slots.pop("m:v1@AAA")
    slots["m:v2@AAA"] = {**old, "last_valid": None, "previous_age": 0, "consecutive_errors": 0, "disabled": False}
    saved["models"][0].update(model_id="m:v2", digest="e" * 8, version=2)
    conn = sqlite3.connect(ref / "ledger.db")
    with conn:
        conn.executemany("UPDATE meta SET value = ? WHERE key = ?",
                         [(json.dumps(saved["state"], sort_keys=True), "state"),
                          (json.dumps(saved["models"], sort_keys=True), "models")])
    conn.close()
    new = spec(model_id="m:v2", predictor=Contrarian())
    new.digest, new.name = "e" * 8, "m"
    run_session(config(), [new], replay_steps(series(frames())), ref, run_id="swapped", resume=True,
                opts=RunOptions(commit_every=1, live=True, handle_signals=False))
    got, want = ledger_content(run_dir / "ledger.db"), ledger_content(ref / "ledger.db")
    got["events"] = [e[1:] for e in got["events"] if e[2] != "MODEL_SWAPPED"]  # ids shift after the swap
    want["events"] = [e[1:] for e in want["events"]]
    assert got["fills"] and any(f[2] >= stamps[60] for f in got["fills"])  # the new version traded
    for table in ("orders", "fills", "positions", "equity", "predictions", "cursors", "events"):
        assert got[table] == want[table], table
    assert dict(got["meta"])["state"] == dict(want["meta"])["state"]


def test_a_stream_that_needs_more_than_the_buffer_keeps_the_old_version_until_it_is_warm(tmp_path: Path) -> None:
    """buffer_size 50, the new version needs 71 bars: fed 50 at bar 60, one more per bar, switch at bar 81."""
    run_dir, _ = swapped_run(tmp_path, 60, lambda: v2(SlowStream(70)))
    (payload,) = read(run_dir, "SELECT payload FROM events WHERE type = 'MODEL_SWAPPED'")[0]
    assert json.loads(payload)["bar_index"] == 81
    rows = read(run_dir, "SELECT bar_index, model_id, features FROM predictions ORDER BY bar_index")
    assert max(i for i, m, _ in rows if m == "m:v1") <= 80 and min(i for i, m, _ in rows if m == "m:v2") == 81
    closes = frames()["AAA"]["close"].to_numpy()
    first = next(json.loads(f) for i, m, f in rows if m == "m:v2")
    # the ledger stores feature vectors as float32 (docs/trading.md, *Blocks*): the hand values rounded the same way
    expected = np.float32([closes[81] / closes[11] - 1.0, closes[81] / closes[80] - 1.0]).astype(float).tolist()
    assert first == expected


def test_a_version_failing_a_check_is_refused_once_with_an_alert_and_the_old_one_keeps_trading(
        tmp_path: Path) -> None:
    refusal = SwapRefused("hashes", "model.txt: sha256 differs from the index")
    source = FakeSource({"e" * 8: lambda: refusal})

    def bumping(steps: Iterator[Step]) -> Iterator[Step]:
        for step in steps:  # the registry keeps changing: the refused version is not checked again
            if step[2][0][1] >= 60:
                source.deploy(Offer("m:v2", "e" * 8))
            yield step

    run_dir = tmp_path / "r"
    run_session(config(), [spec(name="m")], bumping(replay_steps(series(frames()))), run_dir, run_id="r",
                opts=live_opts(source))
    alerts = read(run_dir, "SELECT model_id, reason, payload FROM events WHERE type = 'ALERT'")
    assert len(alerts) == 1 and alerts[0][:2] == ("m:v2", "swap_refused")
    assert json.loads(alerts[0][2]) == {"alias": "production", "running": "m:v1", "refused": "m:v2",
                                        "digest": "e" * 8, "check": "hashes", "detail": refusal.detail}
    assert source.prepares == 1
    assert read(run_dir, "SELECT DISTINCT model_id FROM predictions") == [("m:v1",)]
    assert read(run_dir, "SELECT count(*) FROM events WHERE type = 'MODEL_SWAPPED'") == [(0,)]
    assert meta(run_dir)["models"][0]["model_id"] == "m:v1"


def test_an_unreadable_registry_is_one_alert_and_the_run_goes_on(tmp_path: Path) -> None:
    from aitrader.errors import RegistryError

    source = FakeSource({})
    source.fail_target = RegistryError("registry index models/registry.db is damaged")

    def bumping(steps: Iterator[Step]) -> Iterator[Step]:
        for step in steps:
            source.bumped = True
            yield step

    run_dir = tmp_path / "r"
    summary = run_session(config(), [spec(name="m")], bumping(replay_steps(series(frames()))), run_dir, run_id="r",
                          opts=live_opts(source))
    assert summary["status"] == "finished" and summary["bars"] == 140
    alerts = read(run_dir, "SELECT reason, payload FROM events WHERE type = 'ALERT'")
    assert [a[0] for a in alerts] == ["swap_check_failed"]
    assert "damaged" in json.loads(alerts[0][1])["detail"] and source.queries == 140


def test_the_registry_is_read_only_when_it_changed_or_every_poll_interval() -> None:
    """stat at most every stat_every_s, aliases only on a change or every poll_s (a fake clock, 0.1 s per bar)."""
    source = FakeSource({})
    now = [0.0]

    def ticking(steps: Iterator[Step]) -> Iterator[Step]:
        for step in steps:
            now[0] += 0.1
            if step[2][0][1] == 70:
                source.bumped = True  # something was written to the registry (a register, say)
            yield step

    from aitrader.trading.events import EventBus
    from aitrader.trading.session import build_engine
    from aitrader.trading.swap import SwapWatcher

    engine = build_engine(config(), [spec(name="m")], EventBus(), None, RunOptions())
    settings = SwapSettings(source, stat_every_s=1.0, poll_s=5.0, clock=lambda: now[0])
    watcher = SwapWatcher.create(engine, [spec(name="m")], settings, [], buffer_size=50)
    engine.run(watcher.wrap(ticking(replay_steps(series(frames())))))
    # 140 bars over 14 s: ~14 stats; queries at the start, at the change seen by the stat after bar 70, and
    # every 5 s otherwise; never once per bar.
    assert 12 <= source.changed_calls <= 15
    assert 3 <= source.queries <= 5 and source.prepares == 0


def test_pinned_versions_are_not_watched_and_aliases_are_followed() -> None:
    assert watched_alias("aapl_lgbm") == "production"
    assert watched_alias("aapl_lgbm@staging") == "staging"
    assert watched_alias("aapl_lgbm:v3") is None
    from aitrader.trading.events import EventBus
    from aitrader.trading.session import build_engine
    from aitrader.trading.swap import SwapWatcher

    pinned = spec(name="m:v1")
    engine = build_engine(config(), [pinned], EventBus(), None, RunOptions())
    source = FakeSource({})
    watcher = SwapWatcher.create(engine, [pinned], SwapSettings(source), [], buffer_size=50)
    list(watcher.wrap(replay_steps(series(frames()))))
    assert watcher.watches == [] and source.changed_calls == 0 and source.queries == 0


def test_a_resumed_run_catches_up_without_checking_then_swaps_at_its_first_new_bar(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    run_session(config(), [spec(name="m")], replay_steps(series(frames())), run_dir, run_id="r",
                opts=RunOptions(commit_every=1, live=True, handle_signals=False, max_bars=50))
    source = FakeSource({"e" * 8: v2})
    source.offer = Offer("m:v2", "e" * 8)  # deployed while the run was stopped
    run_session(config(), [spec(name="m")], replay_steps(series(frames())), run_dir, run_id="r", resume=True,
                opts=live_opts(source))
    (payload,) = read(run_dir, "SELECT payload FROM events WHERE type = 'MODEL_SWAPPED'")[0]
    assert json.loads(payload)["bar_index"] == 50 and source.queries == 1
    assert meta(run_dir)["models"][0]["model_id"] == "m:v2"
