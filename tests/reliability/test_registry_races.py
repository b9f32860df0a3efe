"""Deploy races (issue 10): resolution and the same-version check happen inside the write lock.

The race windows are made deterministic: ``run_checks`` (which runs outside the lock, between the
first resolution and the commit) is wrapped so a thread waits there until the test lets it go.
Each thread has its own ``Registry`` (its own SQLite connection), as separate processes would.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from aitrader.registry import Registry, clear_cache
from aitrader.registry import deploy as deploy_mod
from tests.unit.test_registry_support import deploy_log_rows, make_real_artifact


@pytest.fixture(scope="module")
def arts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three tiny real LightGBM artifacts (different seeds: different digests) that pass every check."""
    from aitrader.features import FeaturePipeline

    contract = FeaturePipeline(["ret_1", "ret_5"]).contract()
    base = tmp_path_factory.mktemp("arts")
    return [make_real_artifact(base / f"a{i}", seed=i, contract=contract) for i in range(3)]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    clear_cache()
    yield tmp_path / "models"
    clear_cache()


def _held_checks(monkeypatch: pytest.MonkeyPatch, gate: threading.Event, arrived: threading.Semaphore) -> None:
    """Every run_checks call signals ``arrived`` then waits for ``gate`` (the race window, held open)."""
    real = deploy_mod.run_checks

    def slow(catalog: Any, info: Any, **kw: Any) -> Any:
        result = real(catalog, info, **kw)
        arrived.release()
        assert gate.wait(30)
        return result

    monkeypatch.setattr(deploy_mod, "run_checks", slow)


def _success_rows(reg: Registry) -> list[sqlite3.Row]:
    return [r for r in deploy_log_rows(reg) if r["status"] == "success"]


def test_two_concurrent_deploys_of_one_version_log_one_move(root: Path, arts: list[Path], monkeypatch) -> None:
    reg = Registry(root)
    reg.register(arts[0], "m")
    reg.register(arts[1], "m")
    reg.deploy("m:v1")
    gate, arrived = threading.Event(), threading.Semaphore(0)
    _held_checks(monkeypatch, gate, arrived)
    results: list[Any] = []

    def work() -> None:
        results.append(Registry(root).deploy("m:v2"))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in threads:  # both resolved m:v2 and saw production on v1 before either commits
        assert arrived.acquire(timeout=30)
    gate.set()
    for t in threads:
        t.join(30)
    assert sorted(r.promoted for r in results) == [False, True]
    rows = deploy_log_rows(reg)
    assert [(r["from_version"], r["to_version"]) for r in rows] == [(None, 1), (1, 2)]  # no "v2 -> v2"
    assert reg.alias_target("m", "production").version == 2
    # and a rollback now goes to v1, not "v2 -> v2"
    monkeypatch.undo()
    result = reg.rollback("m")
    assert (result.from_version, result.to_version) == (2, 1)


def test_a_slow_deploy_of_latest_never_moves_production_backwards(root: Path, arts: list[Path], monkeypatch) -> None:
    reg = Registry(root)
    reg.register(arts[0], "m")
    gate, arrived = threading.Event(), threading.Semaphore(0)
    _held_checks(monkeypatch, gate, arrived)
    results: list[Any] = []
    slow = threading.Thread(target=lambda: results.append(Registry(root).deploy("m")))
    slow.start()
    assert arrived.acquire(timeout=30)  # the slow deploy resolved "latest" = v1 and is checking it
    monkeypatch.undo()  # the others run at full speed
    reg.register(arts[1], "m")
    fast = Registry(root).deploy("m")  # latest is now v2
    assert fast.to_version == 2 and fast.promoted
    gate.set()
    slow.join(30)
    # the slow one re-resolved "latest" inside the write lock: v2, already held -> nothing written
    assert results[0].to_version == 2 and not results[0].promoted
    assert reg.alias_target("m", "production").version == 2
    assert [(r["from_version"], r["to_version"]) for r in deploy_log_rows(reg)] == [(None, 2)]


def test_deploy_of_an_alias_reference_is_resolved_under_the_lock(root: Path, arts: list[Path], monkeypatch) -> None:
    reg = Registry(root)
    for a in arts:
        reg.register(a, "m")
    reg.deploy("m:v1", alias="staging")
    gate, arrived = threading.Event(), threading.Semaphore(0)
    _held_checks(monkeypatch, gate, arrived)
    results: list[Any] = []
    slow = threading.Thread(target=lambda: results.append(Registry(root).deploy("m@staging")))
    slow.start()
    assert arrived.acquire(timeout=30)  # resolved m@staging = v1
    monkeypatch.undo()
    Registry(root).deploy("m:v3", alias="staging")  # staging moves meanwhile
    gate.set()
    slow.join(30)
    assert results[0].to_version == 3  # it followed the alias: checked v3 again, then promoted v3
    assert reg.alias_target("m", "production").version == 3


def test_rollback_follows_the_real_history_past_a_no_op_row(root: Path, arts: list[Path]) -> None:
    reg = Registry(root)
    reg.register(arts[0], "m")
    reg.register(arts[1], "m")
    reg.deploy("m:v1")
    reg.deploy("m:v2")
    # what the old race wrote: a second "v2 -> v2" success row (INSERT is allowed; the log is append-only)
    conn = sqlite3.connect(reg.db_path)
    conn.execute(
        "INSERT INTO deploy_log (ts, user, host, name, alias, action, from_version, to_version, status, checks)"
        " VALUES ('2026-01-01T00:00:00+00:00', 'u', 'h', 'm', 'production', 'promote', 2, 2, 'success', '[]')"
    )
    conn.commit()
    conn.close()
    result = reg.rollback("m")  # the old code took the latest row's from_version: v2 -> v2, forever
    assert (result.from_version, result.to_version, result.promoted) == (2, 1, True)
    again = reg.rollback("m")  # rolling back the rollback restores the version it replaced
    assert (again.from_version, again.to_version) == (1, 2)


def test_concurrent_rollbacks_do_not_undo_each_other(root: Path, arts: list[Path], monkeypatch) -> None:
    reg = Registry(root)
    for a in arts[:2]:
        reg.register(a, "m")
    reg.deploy("m:v1")
    reg.deploy("m:v2")
    gate, arrived = threading.Event(), threading.Semaphore(0)
    _held_checks(monkeypatch, gate, arrived)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(Registry(root).rollback("m"))) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in threads:
        assert arrived.acquire(timeout=30)  # both saw v2 and chose v1
    gate.set()
    for t in threads:
        t.join(30)
    assert sorted(r.promoted for r in results) == [False, True]
    assert reg.alias_target("m", "production").version == 1
    moves = [(r["from_version"], r["to_version"]) for r in _success_rows(reg)]
    assert moves == [(None, 1), (1, 2), (2, 1)]


def test_concurrent_deploys_of_latest_while_registering_only_move_forward(tmp_path: Path) -> None:
    """8 threads `deploy m` (latest) while 4 threads register new versions, no window held open:
    every committed move lands on the latest version at its commit, so production only moves up."""
    from aitrader.features import FeaturePipeline

    contract = FeaturePipeline(["ret_1", "ret_5"]).contract()
    pool = [make_real_artifact(tmp_path / f"p{i}", seed=10 + i, contract=contract) for i in range(6)]
    root = tmp_path / "models"
    clear_cache()
    reg = Registry(root)
    reg.register(pool[0], "m")
    reg.register(pool[1], "m")
    errors: list[BaseException] = []
    start = threading.Barrier(12)

    def deployer() -> None:
        try:
            start.wait(30)
            for _ in range(3):
                Registry(root).deploy("m")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    def registrar(art: Path) -> None:
        try:
            start.wait(30)
            Registry(root).register(art, "m")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=deployer) for _ in range(8)]
    threads += [threading.Thread(target=registrar, args=(a,)) for a in pool[2:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    moves = [(r["from_version"], r["to_version"]) for r in deploy_log_rows(reg)]
    assert all(r["status"] == "success" for r in deploy_log_rows(reg))
    assert all(frm != to for frm, to in moves)  # no no-op row
    assert [to for _, to in moves] == sorted({to for _, to in moves})  # strictly forward
    for (_, prev_to), (frm, _) in zip(moves, moves[1:], strict=False):
        assert frm == prev_to
    clear_cache()
