"""`aitrader deploy` and the training verdict: a warning without an edge, `--require-edge` refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.registry import Registry, clear_cache
from aitrader.training.verdict import NO_VERDICT
from tests.unit.test_registry_support import make_real_artifact

runner = CliRunner()

NO_EDGE = {"edge": False, "text": "no edge over always_long: Sharpe -0.33 [-1.20, 0.61] vs 0.37, IC -0.005 "
           "[-0.100, 0.120] (Sharpe not above always_long's; IC interval not above 0)", "warnings": []}
EDGE = {"edge": True, "text": "edge over always_long: Sharpe 1.10 [0.20, 2.00] vs 0.37, IC 0.060 [0.020, 0.100]",
        "warnings": []}


def artifact(base: Path, name: str, verdict: dict | None) -> Path:
    """A real tiny model whose manifest records ``verdict`` (None: an artifact from before verdicts)."""
    from aitrader.features import FeaturePipeline

    path = make_real_artifact(base / name, seed=1, contract=FeaturePipeline(["ret_1", "ret_5", "ret_10"]).contract())
    manifest = json.loads((path / "manifest.json").read_text())
    if verdict is not None:
        manifest["metrics"]["verdict"] = verdict
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture
def reg(tmp_path: Path) -> Path:
    clear_cache()
    root = tmp_path / "reg"
    registry = Registry(root)
    for name, verdict in (("old", None), ("flat", NO_EDGE), ("good", EDGE)):
        registry.register(artifact(tmp_path, name, verdict), name)
    yield root
    clear_cache()


def deploy(root: Path, *args: str):
    return runner.invoke(app, ["deploy", "--registry", str(root), *args])


def test_no_edge_deploys_with_a_warning_on_stderr_and_in_json(reg):
    result = deploy(reg, "--model-id", "flat")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"warning: flat:v1 has no edge by its training verdict: {NO_EDGE['text']}; deploy --require-edge "
        "refuses such a model"]
    assert "production: nothing -> v1" in result.stdout
    doc = json.loads(deploy(reg, "--model-id", "flat", "--json").stdout)  # already holds it: warned again
    assert doc["warnings"] == [result.stderr.splitlines()[0].removeprefix("warning: ")]
    assert [c["name"] for c in doc["checks"]] == ["hashes", "loads", "reproduces_sample", "feature_contract",
                                                  "backend"]


def test_an_old_manifest_without_a_verdict_warns_to_retrain(reg):
    result = deploy(reg, "--model-id", "old", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["warnings"] == [
        f"old:v1: {NO_VERDICT}; deploy --require-edge refuses such a model"]
    assert "retrain" in NO_VERDICT


@pytest.mark.parametrize(("name", "text"), [("flat", NO_EDGE["text"]), ("old", NO_VERDICT)])
def test_require_edge_refuses_with_one_error_line(reg, name, text):
    result = deploy(reg, "--model-id", name, "--require-edge")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: deploy check edge failed for {name}:v1: training verdict: {text}; deploy a model whose verdict "
        "says edge, or deploy without --require-edge; nothing was promoted (production stays on nothing)"]
    registry = Registry(reg)
    assert registry.alias_target(name, "production") is None
    (event,) = registry.history(name).events  # the refusal is logged like any failed check
    assert event.status == "failed"
    assert [c["status"] for c in event.checks if c["name"] == "edge"] == ["failed"]
    dry = deploy(reg, "--model-id", name, "--require-edge", "--dry-run")
    assert dry.exit_code == 1 and len(dry.stderr.splitlines()) == 1
    assert dry.stderr.startswith(f"error: deploy check edge failed for {name}:v1: training verdict: ")


def test_require_edge_promotes_a_model_with_an_edge(reg):
    result = deploy(reg, "--model-id", "good", "--require-edge", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["promoted"] and doc["warnings"] == []
    assert doc["checks"][-1] == {"name": "edge", "status": "passed", "detail": f"training verdict: {EDGE['text']}"}
    plain = deploy(reg, "--model-id", "good", "--alias", "staging")
    assert plain.exit_code == 0 and plain.stderr == ""


def test_require_edge_with_from_file_and_not_with_rollback(reg, tmp_path):
    fresh = artifact(tmp_path, "fresh", NO_EDGE)
    result = deploy(reg, "--model-id", "fresh", "--from-file", str(fresh), "--require-edge")
    assert result.exit_code == 1 and "deploy check edge failed for fresh:v1" in result.stderr
    misuse = deploy(reg, "--model-id", "flat", "--rollback", "--require-edge")
    words = " ".join(misuse.stderr.replace("│", " ").split())  # rich boxes and wraps usage errors
    assert misuse.exit_code == 2 and "--require-edge does not apply to --rollback" in words
