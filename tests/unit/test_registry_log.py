"""The deploy log: evaluation entries (record_decision), append-only rows, schema 1 -> 2 migration."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from aitrader.errors import ModelNotFoundError, RegistryError
from aitrader.registry import Registry
from tests.unit.test_registry_support import deploy_log_rows, make_artifact, make_real_artifact


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from aitrader.features import FeaturePipeline

    contract = FeaturePipeline(["ret_1", "ret_5"]).contract()
    base = tmp_path_factory.mktemp("log_artifacts")
    return {k: make_real_artifact(base / k, contract=contract, seed=i) for i, k in enumerate(("a", "b", "c"))}


def test_rejected_challenger_is_logged_and_moves_nothing(reg: Registry, real: dict[str, Path]) -> None:
    reg.register(real["a"], "aapl")
    reg.deploy("aapl:v1", reason="first")
    reg.register(real["b"], "aapl")
    scores = {"metric": "ic", "challenger_score": 0.012, "champion_score": 0.031, "rows": 250, "psi": float("nan")}
    event = reg.record_decision("aapl:v2", decision="rejected", reason="ic 0.012 < 0.031 + 0.005", details=scores)
    assert (event.action, event.status, event.alias, event.from_version, event.to_version) == (
        "evaluate", "rejected", "production", 1, 2,
    )
    assert event.details == {**scores, "psi": None} and event.checks == [] and event.user and event.host
    assert reg.resolve("aapl@production").version == 1  # nothing promoted
    row = deploy_log_rows(reg)[-1]
    assert (row["id"], row["action"], row["status"], row["to_version"]) == (event.id, "evaluate", "rejected", 2)
    assert json.loads(row["details"])["champion_score"] == 0.031
    hist = reg.history("aapl")
    assert [(e.action, e.status) for e in hist.events] == [("promote", "success"), ("evaluate", "rejected")]
    assert hist.events[-1].details == event.details and hist.events[-1].reason == "ic 0.012 < 0.031 + 0.005"
    assert hist.to_dict()["events"][-1]["details"]["rows"] == 250
    conn = sqlite3.connect(reg.db_path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE deploy_log SET status='promoted' WHERE id=?", (event.id,))
    conn.close()


def test_evaluations_never_count_as_alias_moves(reg: Registry, real: dict[str, Path]) -> None:
    for k in ("a", "b", "c"):
        reg.register(real[k], "aapl")
    reg.deploy("aapl:v1")
    reg.deploy("aapl:v2")
    for decision in ("rejected", "unchanged", "registered"):
        reg.record_decision("aapl:v3", decision=decision, reason=f"{decision} by retrain")
    reg.record_decision("aapl:v2", decision="promoted", reason="v2 is live", details={"ic": 0.04})
    last = reg.history("aapl").events[-1].ts
    assert reg.history("aapl", at=last).holders == {"production": 2}
    back = reg.rollback("aapl")  # the last alias move is v1 -> v2, whatever was evaluated since
    assert (back.from_version, back.to_version) == (2, 1)


def test_promoted_needs_the_alias_to_hold_the_version(reg: Registry, real: dict[str, Path]) -> None:
    reg.register(real["a"], "aapl")
    with pytest.raises(RegistryError, match=r"cannot record aapl:v1 as promoted: production holds nothing; deploy it"):
        reg.record_decision("aapl:v1", decision="promoted", reason="better")
    reg.deploy("aapl:v1", alias="staging")
    event = reg.record_decision("aapl", alias="staging", decision="promoted", reason="better")
    assert (event.from_version, event.to_version, event.alias) == (1, 1, "staging")
    assert [r["action"] for r in deploy_log_rows(reg)] == ["promote", "evaluate"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decision": "accepted"}, "unknown decision 'accepted'; expected one of promoted, rejected"),
        ({"reason": "  "}, "a decision needs a reason"),
        ({"alias": "Prod"}, "Prod"),
        ({"details": {"when": object()}}, r"details value at details.when is a object"),
        ({"details": {1: 0.5}}, "details key 1 at details is not a string"),
        ({"details": [1, 2]}, "details must be a dict of scores, got list"),
        ({"details": {"blob": "x" * 70_000}}, "above 64000"),
    ],
)
def test_bad_decisions_are_refused_and_nothing_is_appended(
    reg: Registry, tmp_path: Path, kwargs: dict, message: str
) -> None:
    reg.register(make_artifact(tmp_path / "a"), "aapl")
    call = {"decision": "rejected", "reason": "worse", **kwargs}
    with pytest.raises(RegistryError, match=message):
        reg.record_decision("aapl:v1", **call)
    assert deploy_log_rows(reg) == []


def test_unknown_model_is_refused(reg: Registry, tmp_path: Path) -> None:
    reg.register(make_artifact(tmp_path / "a"), "aapl")
    with pytest.raises(ModelNotFoundError, match="aapl:v9"):
        reg.record_decision("aapl:v9", decision="rejected", reason="worse")
    assert deploy_log_rows(reg) == []


def test_numpy_scores_are_stored_as_plain_json(reg: Registry, tmp_path: Path) -> None:
    import numpy as np

    reg.register(make_artifact(tmp_path / "a"), "aapl")
    details = {"ic": np.float64(0.02), "n": np.int64(7), "better": np.bool_(False), "folds": (np.float32(0.5),)}
    event = reg.record_decision("aapl", decision="rejected", reason="worse", details=details)
    assert json.loads(deploy_log_rows(reg)[0]["details"]) == {"better": False, "folds": [0.5], "ic": 0.02, "n": 7}
    assert event.details == {"ic": 0.02, "n": 7, "better": False, "folds": [0.5]}


def test_schema_1_index_is_read_then_migrated(reg: Registry, tmp_path: Path) -> None:
    reg.register(make_artifact(tmp_path / "a"), "aapl")
    reg.close()
    conn = sqlite3.connect(reg.db_path)  # turn it back into what round 1 wrote
    conn.execute("ALTER TABLE deploy_log DROP COLUMN details")
    conn.execute(
        "INSERT INTO deploy_log (ts, user, host, name, alias, action, from_version, to_version, status, checks, reason)"
        " VALUES ('2026-01-01T00:00:00+00:00', 'u', 'h', 'aapl', 'production', 'promote', NULL, 1, 'success', '[]',"
        " 'old')"
    )
    conn.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    old = Registry(reg.root).history("aapl")  # a reader does not migrate
    assert [(e.reason, e.details) for e in old.events] == [("old", None)]
    writer = Registry(reg.root)
    writer.record_decision("aapl", decision="unchanged", reason="same files", details={"digest": "abc"})
    conn = sqlite3.connect(reg.db_path)
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "2"
    conn.close()
    assert [e.details for e in writer.history("aapl").events] == [None, {"digest": "abc"}]
