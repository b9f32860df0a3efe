"""Deploy checks, promotion, the append-only log, rollback and history (real tiny models)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aitrader.errors import DeployCheckError, ModelNotFoundError, RegistryError
from aitrader.registry import Registry
from aitrader.registry.deploy import sample_max_rel_diff
from tests.unit.test_registry_support import deploy_log_rows, flip_byte, make_real_artifact, write_manifest


@pytest.fixture(scope="module")
def contract() -> dict:
    from aitrader.features import FeaturePipeline

    return FeaturePipeline(["ret_1", "ret_5", "ret_10"]).contract()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, contract: dict) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("artifacts")
    return {
        "a": make_real_artifact(base / "a", contract=contract, seed=1),
        "b": make_real_artifact(base / "b", contract=contract, seed=2),
        "c": make_real_artifact(base / "c", contract=contract, seed=3),
        "onnx": make_real_artifact(base / "onnx", contract=contract, seed=4, onnx=True),
    }


def test_deploy_runs_every_check_and_promotes(reg: Registry, artifacts: dict[str, Path]) -> None:
    reg.register(artifacts["a"], "aapl")
    result = reg.deploy("aapl", reason="first")
    assert [(c.name, c.status) for c in result.checks] == [
        ("hashes", "passed"),
        ("loads", "passed"),
        ("reproduces_sample", "passed"),
        ("feature_contract", "passed"),
        ("backend", "passed"),
    ]
    assert (result.promoted, result.from_version, result.to_version, result.alias) == (True, None, 1, "production")
    assert reg.resolve("aapl@production").version == 1
    assert reg.resolve("aapl:v1").aliases == ["production"]
    (row,) = deploy_log_rows(reg)
    assert (row["action"], row["status"], row["from_version"], row["to_version"], row["reason"]) == (
        "promote",
        "success",
        None,
        1,
        "first",
    )
    assert row["user"] and row["host"]
    assert [c["status"] for c in json.loads(row["checks"])] == ["passed"] * 5


def test_onnx_backend_is_checked_within_its_tolerance(reg: Registry, artifacts: dict[str, Path]) -> None:
    reg.register(artifacts["onnx"], "aapl")
    loaded = reg.load("aapl")
    assert loaded.runner.backend == "onnx"
    result = reg.deploy("aapl", dry_run=True)
    sample = next(c for c in result.checks if c.name == "reproduces_sample")
    assert sample.status == "passed" and "onnx backend" in sample.detail and "0.001" in sample.detail


def test_wrong_sample_predictions_fail_and_are_logged(reg: Registry, artifacts: dict[str, Path], tmp_path) -> None:
    art = tmp_path / "bad"
    import shutil

    shutil.copytree(artifacts["a"], art)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["sample"]["predictions"] = [p + 0.5 for p in manifest["sample"]["predictions"]]
    write_manifest(art, manifest)
    reg.register(artifacts["a"], "aapl")
    reg.deploy("aapl:v1")
    reg.register(art, "aapl")
    with pytest.raises(
        DeployCheckError, match=r"deploy check reproduces_sample failed for aapl:v2: .*nothing was promoted"
    ):
        reg.deploy("aapl:v2", reason="try")
    assert reg.resolve("aapl@production").version == 1
    last = deploy_log_rows(reg)[-1]
    assert (last["status"], last["from_version"], last["to_version"]) == ("failed", 1, 2)
    statuses = [(c["name"], c["status"]) for c in json.loads(last["checks"])]
    assert statuses[2:] == [("reproduces_sample", "failed"), ("feature_contract", "skipped"),
                            ("backend", "skipped")]


def test_unknown_feature_fails_the_contract_check(reg: Registry, artifacts: dict[str, Path], tmp_path) -> None:
    import shutil

    art = tmp_path / "feat"
    shutil.copytree(artifacts["a"], art)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["features"]["spec_hash"] = "f" * 64
    write_manifest(art, manifest)
    reg.register(art, "aapl")
    result = reg.deploy("aapl", dry_run=True)
    assert [c.status for c in result.checks] == ["passed", "passed", "passed", "failed", "skipped"]
    assert result.promoted is False and deploy_log_rows(reg) == []


def test_tampered_version_fails_hashes_and_never_loads(
    reg: Registry, artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightgbm

    info = reg.register(artifacts["a"], "aapl")
    flip_byte(info.path / "model.txt")

    def boom(*a, **k):
        raise AssertionError("a loader ran before verification")

    monkeypatch.setattr(lightgbm, "Booster", boom)
    with pytest.raises(
        DeployCheckError, match=r"deploy check hashes failed for aapl:v1: sha256 mismatch in .*model\.txt"
    ):
        reg.deploy("aapl")
    assert reg.alias_target("aapl", "production") is None


def test_dry_run_promotes_and_logs_nothing(reg: Registry, artifacts: dict[str, Path]) -> None:
    reg.register(artifacts["a"], "aapl")
    result = reg.deploy("aapl", dry_run=True)
    assert result.dry_run and not result.promoted and all(c.passed for c in result.checks)
    assert reg.alias_target("aapl", "production") is None and deploy_log_rows(reg) == []


def test_redeploying_the_current_version_changes_nothing(reg: Registry, artifacts: dict[str, Path]) -> None:
    reg.register(artifacts["a"], "aapl")
    reg.deploy("aapl")
    again = reg.deploy("aapl:v1")
    assert not again.promoted and "already holds production" in again.note
    assert len(deploy_log_rows(reg)) == 1


def test_other_alias_and_rollback_chain(reg: Registry, artifacts: dict[str, Path]) -> None:
    for key in ("a", "b", "c"):
        reg.register(artifacts[key], "aapl")
    with pytest.raises(RegistryError, match="no previous production version of aapl"):
        reg.rollback("aapl")
    reg.deploy("aapl:v1")
    with pytest.raises(RegistryError, match="no previous production version"):
        reg.rollback("aapl")
    reg.deploy("aapl:v2")
    reg.deploy("aapl:v3")
    staging = reg.deploy("aapl:v1", alias="staging")
    assert staging.alias == "staging" and reg.resolve("aapl@staging").version == 1
    back = reg.rollback("aapl", reason="bad fills")
    assert (back.action, back.from_version, back.to_version) == ("rollback", 3, 2)
    assert reg.resolve("aapl@production").version == 2
    assert reg.resolve("aapl@staging").version == 1  # other aliases untouched
    undo = reg.rollback("aapl")  # rolling back a rollback restores what it replaced
    assert undo.to_version == 3
    with pytest.raises(RegistryError, match="--rollback takes a model name"):
        reg.rollback("aapl:v1")


def test_history_and_alias_at_a_time(reg: Registry, artifacts: dict[str, Path]) -> None:
    reg.register(artifacts["a"], "aapl")
    reg.register(artifacts["b"], "aapl")
    with pytest.raises(ModelNotFoundError):
        reg.history("msft")
    assert reg.history("aapl").events == []
    reg.deploy("aapl:v1")
    time.sleep(0.01)
    between = reg.history("aapl").events[0].ts
    time.sleep(0.01)
    reg.deploy("aapl:v2", reason="better IC")
    hist = reg.history("aapl")
    assert [(e.from_version, e.to_version, e.status) for e in hist.events] == [(None, 1, "success"), (1, 2, "success")]
    assert hist.current == {"production": 2}
    assert reg.history("aapl", at="2000-01-01").holders == {"production": None}
    assert reg.history("aapl", at=between).holders == {"production": 1}
    assert reg.history("aapl", at="2999-01-01T00:00:00Z").holders == {"production": 2}
    with pytest.raises(RegistryError, match="invalid timestamp 'yesterday'"):
        reg.history("aapl", at="yesterday")
    assert json.loads(json.dumps(hist.to_dict()))["events"][1]["reason"] == "better IC"


def test_deploy_from_file_registers_then_deploys(reg: Registry, artifacts: dict[str, Path]) -> None:
    result = reg.deploy_from_file(artifacts["a"], "aapl", reason="one step")
    assert result.registered is not None and result.registered.model_id == "aapl:v1"
    assert result.promoted and reg.resolve("aapl@production").version == 1
    again = reg.deploy_from_file(artifacts["a"], "aapl")
    assert again.registered is not None and again.registered.reused and not again.promoted


@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=30))
def test_sample_diff_is_zero_on_identical_and_catches_shifts(values: list[float]) -> None:
    assert sample_max_rel_diff(values, values) == 0.0
    shifted = [v + 0.01 for v in values]
    assert sample_max_rel_diff(shifted, values) > 0.0
    assert sample_max_rel_diff([math.nan, *values], [0.0, *values]) == math.inf
    assert sample_max_rel_diff([math.nan, *values], [math.nan, *values]) == 0.0
