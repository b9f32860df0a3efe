"""The registry commands through Typer's CliRunner: exit codes, stdout JSON, stderr messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.registry import clear_cache
from tests.unit.test_registry_support import flip_byte, make_artifact, make_real_artifact

runner = CliRunner()


@pytest.fixture(scope="module")
def arts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from aitrader.features import FeaturePipeline

    contract = FeaturePipeline(["ret_1", "ret_5", "ret_10"]).contract()
    base = tmp_path_factory.mktemp("cli_artifacts")
    return {
        "a": make_real_artifact(base / "a", contract=contract, seed=1),
        "b": make_real_artifact(base / "b", contract=contract, seed=2),
        "dummy": make_artifact(base / "dummy"),
    }


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def run(*args: str):
    return runner.invoke(app, list(args))


def one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert pattern in result.stderr, result.stderr


def test_register_prints_id_and_digest(in_tmp: Path, arts) -> None:
    result = run("register", str(arts["a"]), "--name", "aapl", "--tag", "source=test")
    assert result.exit_code == 0, result.stderr
    model_id, digest = result.stdout.split()
    assert model_id == "aapl:v1" and len(digest) == 64
    assert (in_tmp / "models" / "aapl" / "v1" / "checksums.sha256").is_file()
    again = run("register", str(arts["a"]), "--name", "aapl", "--json")
    assert again.exit_code == 0
    doc = json.loads(again.stdout)
    assert doc["model_id"] == "aapl:v1" and doc["reused"] is True and doc["tags"] == {"source": "test"}
    trusted = run("register", str(arts["a"]), "--name", "aapl", "--trust-pickle")
    assert trusted.exit_code == 0 and trusted.stdout.split()[0] == "aapl:v1"
    assert "nothing copied; it is now marked trusted" in trusted.stderr


def test_registry_option_and_env(in_tmp: Path, arts, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("register", str(arts["dummy"]), "--name", "x", "--registry", "elsewhere").exit_code == 0
    assert (in_tmp / "elsewhere" / "x" / "v1").is_dir() and not (in_tmp / "models").exists()
    monkeypatch.setenv("AITRADER_REGISTRY", str(in_tmp / "fromenv"))
    assert run("register", str(arts["dummy"]), "--name", "y").exit_code == 0
    assert (in_tmp / "fromenv" / "y" / "v1").is_dir()
    listing = json.loads(run("list", "--json").stdout)
    assert [v["model_id"] for v in listing["versions"]] == ["y:v1"]


def test_list_marks_production(in_tmp: Path, arts) -> None:
    empty = run("list")
    assert empty.exit_code == 0 and "no models registered" in empty.stdout
    run("register", str(arts["a"]), "--name", "aapl")
    run("register", str(arts["b"]), "--name", "aapl")
    assert run("deploy", "--model-id", "aapl:v1").exit_code == 0
    human = run("list")
    assert human.exit_code == 0 and "production*" in human.stdout and "v2" in human.stdout
    doc = json.loads(run("list", "--name", "aapl", "--json").stdout)
    v1, v2 = doc["versions"]
    header = next(line for line in human.stdout.splitlines() if line.split()[:2] == ["name", "ver"])
    assert header.split() == ["name", "ver", "aliases", "created", "kind", "IC", "hit", "Sharpe", "digest"]
    row = next(line for line in human.stdout.splitlines() if "production*" in line).split()
    m = v1["metrics"]
    assert row == [
        "aapl", "v1", "production*", v1["created_at"][:10], "lightgbm",
        f"{m['ic']:.3f}", f"{m['hit_rate']:.3f}", f"{m['sharpe']:.2f}", v1["digest"][:10],
    ]
    assert max(len(line) for line in human.stdout.splitlines()) <= 80
    assert v1["aliases"] == ["production"] and v2["aliases"] == []
    assert set(v1) >= {"name", "version", "created_at", "kind", "metrics", "digest", "tags", "trusted"}
    one_line_error(run("list", "--name", "msft"), "unknown model 'msft'")


def test_deploy_rollback_history(in_tmp: Path, arts) -> None:
    run("register", str(arts["a"]), "--name", "aapl")
    run("register", str(arts["b"]), "--name", "aapl")
    first = run("deploy", "--model-id", "aapl:v1", "--json", "--reason", "initial")
    assert first.exit_code == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["promoted"] and [c["status"] for c in doc["checks"]] == ["passed"] * 5
    human = run("deploy", "--model-id", "aapl")
    assert human.exit_code == 0 and "production: v1 -> v2" in human.stdout and "reproduces_sample" in human.stdout
    back = json.loads(run("deploy", "--model-id", "aapl", "--rollback", "--json", "--reason", "drift").stdout)
    assert (back["action"], back["from_version"], back["to_version"]) == ("rollback", 2, 1)
    hist = json.loads(run("history", "aapl", "--json").stdout)
    assert [(e["action"], e["to_version"]) for e in hist["events"]] == [("promote", 1), ("promote", 2), ("rollback", 1)]
    assert hist["current"] == {"production": 1}
    at = json.loads(run("history", "aapl", "--at", hist["events"][0]["ts"], "--json").stdout)
    assert at["holders"] == {"production": 1}
    human_hist = run("history", "aapl")
    assert human_hist.exit_code == 0 and "rollback" in human_hist.stdout and "drift" in human_hist.stdout


def test_deploy_from_file_and_dry_run(in_tmp: Path, arts) -> None:
    dry = run("deploy", "--from-file", str(arts["a"]), "--model-id", "aapl", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    doc = json.loads(dry.stdout)
    assert doc["dry_run"] and not doc["promoted"] and doc["registered"]["model_id"] == "aapl:v1"
    assert json.loads(run("history", "aapl", "--json").stdout)["events"] == []
    real = run("deploy", "--from-file", str(arts["a"]), "--model-id", "aapl", "--tag", "k=v")
    assert real.exit_code == 0, real.stderr


def test_failed_dry_run_prints_checks_and_exits_1(in_tmp: Path, arts) -> None:
    run("register", str(arts["dummy"]), "--name", "junk")
    result = run("deploy", "--model-id", "junk", "--dry-run", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert [c["status"] for c in doc["checks"]][:2] == ["passed", "failed"]
    assert result.stderr.startswith("error: deploy check loads failed for junk:v1")


def test_failed_deploy_is_one_error_line_and_promotes_nothing(in_tmp: Path, arts) -> None:
    run("register", str(arts["a"]), "--name", "aapl")
    flip_byte(in_tmp / "models" / "aapl" / "v1" / "model.txt")
    result = run("deploy", "--model-id", "aapl")
    one_line_error(result, "deploy check hashes failed for aapl:v1: sha256 mismatch in")
    assert "nothing was promoted" in result.stderr
    assert json.loads(run("list", "--json").stdout)["versions"][0]["aliases"] == []


def test_verify_exit_codes(in_tmp: Path, arts) -> None:
    run("register", str(arts["dummy"]), "--name", "aapl")
    ok = run("verify", "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["ok"] is True
    assert "aapl:v1: OK" in run("verify", "aapl:v1").stdout
    flip_byte(in_tmp / "models" / "aapl" / "v1" / "manifest.json")
    bad = run("verify", "--json")
    assert bad.exit_code == 1
    doc = json.loads(bad.stdout)
    assert doc["ok"] is False and doc["mismatches"][0]["path"].endswith("manifest.json")
    assert bad.stderr.startswith("error: 1 mismatch(es) in aapl:v1")
    human = run("verify")
    assert human.exit_code == 1 and "changed:" in human.stdout
    (in_tmp / "models" / "aapl" / "v1" / "notes.txt").write_text("added later")
    human = run("verify", "aapl")
    assert human.exit_code == 1 and "notes.txt (not part of the registered version)" in human.stdout
    assert human.stderr.startswith("error: 2 mismatch(es) in aapl:v1")


def test_bad_inputs_are_one_line_errors_and_write_nothing(in_tmp: Path, arts, tmp_path_factory) -> None:
    empty = tmp_path_factory.mktemp("empty")
    one_line_error(run("register", str(empty), "--name", "aapl"), "no manifest.json in")
    one_line_error(run("register", str(arts["a"]), "--name", "../up"), "invalid model name '../up'")
    one_line_error(run("register", str(arts["a"]), "--name", "Bad/Name"), "invalid model name")
    one_line_error(run("register", str(arts["a"]), "--name", "aapl", "--tag", "novalue"), "expected KEY=VALUE")
    assert not (in_tmp / "models").exists()
    (in_tmp / "blocker").write_text("a file")
    one_line_error(run("register", str(arts["a"]), "--name", "aapl", "--registry", "blocker/models"), "is not writable")
    one_line_error(run("deploy", "--model-id", "nope"), "registry at models is empty")
    run("register", str(arts["dummy"]), "--name", "aapl")
    one_line_error(run("deploy", "--model-id", "aapl:v7"), "registered: aapl (v1)")
    one_line_error(run("verify", "msft"), "unknown model 'msft'")
    one_line_error(run("history", "aapl", "--at", "noon"), "invalid timestamp 'noon'")


def test_conflicting_deploy_options_are_usage_errors(in_tmp: Path, arts) -> None:
    assert run("deploy", "--model-id", "a", "--rollback", "--from-file", str(arts["a"])).exit_code == 2
    assert run("deploy", "--model-id", "a", "--trust-pickle").exit_code == 2
    assert run("deploy").exit_code == 2


def test_history_shows_evaluations_that_promoted_nothing(in_tmp: Path, arts) -> None:
    from aitrader.registry import Registry

    run("register", str(arts["a"]), "--name", "aapl")
    run("register", str(arts["b"]), "--name", "aapl")
    assert run("deploy", "--model-id", "aapl:v1").exit_code == 0
    scores = {"metric": "ic", "challenger_score": 0.0123456}
    Registry().record_decision("aapl:v2", decision="rejected", reason="challenger worse", details=scores)
    human = run("history", "aapl")
    assert human.exit_code == 0, human.stderr
    assert "evaluate production: v2 vs v1  rejected  reason: challenger worse" in human.stdout
    assert "details: challenger_score=0.01235, metric=ic" in human.stdout
    assert "now: production -> aapl:v1" in human.stdout
    doc = json.loads(run("history", "aapl", "--json").stdout)
    last = doc["events"][-1]
    assert (last["action"], last["status"], last["from_version"], last["to_version"]) == ("evaluate", "rejected", 1, 2)
    assert last["details"] == {"challenger_score": 0.0123456, "metric": "ic"} and doc["events"][0]["details"] is None


def test_list_detail_shows_the_feature_importance(in_tmp: Path) -> None:
    from tests.unit.test_registry_support import make_artifact

    art = make_artifact(in_tmp / "art")
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["importance"] = {"method": "gain", "features": {"ret_1": 0.25, "ret_5": 0.7, "ret_10": 0.05}}
    (art / "manifest.json").write_text(json.dumps(manifest))
    assert run("register", str(art), "--name", "imp").exit_code == 0
    plain = make_artifact(in_tmp / "plain", payload=b"another model\n")
    assert run("register", str(plain), "--name", "imp").exit_code == 0

    result = run("list", "--detail", "imp:v1")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("imp:v1: ")
    ranked = [ln.split()[1:3] for ln in lines if ln.strip()[:1].isdigit()]
    assert ranked == [["ret_5", "70.0%"], ["ret_1", "25.0%"], ["ret_10", "5.0%"]]
    doc = json.loads(run("list", "--detail", "imp:v1", "--json").stdout)
    assert doc["version"]["model_id"] == "imp:v1"
    assert list(doc["importance"]["features"]) == ["ret_5", "ret_1", "ret_10"]
    assert doc["importance"]["method"] == "gain"

    older = run("list", "--detail", "imp")  # latest: v2, trained before importance was stored
    assert older.exit_code == 0 and "no feature importance recorded" in older.stdout
    assert json.loads(run("list", "--detail", "imp", "--json").stdout)["importance"] is None
    one_line_error(run("list", "--detail", "nope"), "unknown model id 'nope'")
