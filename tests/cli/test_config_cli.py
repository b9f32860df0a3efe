"""`aitrader config show`: the effective configuration with the source of every value (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from aitrader.cli.main import app

runner = CliRunner()


def _show(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["config", "show", *args], env={"COLUMNS": "100", **(env or {})})


def test_each_value_names_its_source(in_tmp: Path) -> None:
    (in_tmp / "my.yaml").write_text("split: {n_folds: 4}\nmodel: {kind: ridge}\n")
    result = _show("train", "--config", "my.yaml", "--set", "target.horizon=7", "--json",
                   env={"AITRADER__SPLIT__EMBARGO": "9"})
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["file"] == "my.yaml" and doc["packaged"] is False
    values = doc["values"]
    # hand-written expectations: 4 and ridge from the file, 9 from the variable, 7 from the flag,
    # the rest from the schema's defaults (TrainConfig: n_folds 5, min_train 250, holdout 0.2)
    assert values["split.n_folds"] == {"value": 4, "source": "file"}
    assert values["model.kind"] == {"value": "ridge", "source": "file"}
    assert values["split.embargo"] == {"value": 9, "source": "environment AITRADER__SPLIT__EMBARGO"}
    assert values["target.horizon"] == {"value": 7, "source": "flag --set target.horizon=7"}
    assert values["split.min_train"] == {"value": 250, "source": "default"}
    assert values["split.holdout"] == {"value": 0.2, "source": "default"}
    assert doc["config"]["split"]["n_folds"] == 4


def test_a_trading_override_does_not_reach_the_train_file_and_lists_index_keys(in_tmp: Path) -> None:
    env = {"AITRADER__ML_TRADING__EXECUTION__INITIAL_CASH": "50000"}
    doc = json.loads(_show("trading", "--json", env=env).stdout)
    assert doc["packaged"] is True
    assert doc["values"]["ml_trading.execution.initial_cash"] == {
        "value": 50000.0, "source": "environment AITRADER__ML_TRADING__EXECUTION__INITIAL_CASH"}
    assert doc["values"]["ml_trading.models[0].model_id"] == {"value": "aapl_lgbm", "source": "file"}
    train = json.loads(_show("train", "--json", env=env).stdout)
    assert all(not v["source"].startswith("environment") for v in train["values"].values())


def test_both_files_without_an_argument_and_readable_at_100_columns(in_tmp: Path) -> None:
    result = _show(env={"AITRADER__SPLIT__N_FOLDS": "3"})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("train: ") for line in lines) and any(line.startswith("trading: ") for line in lines)
    assert max(len(line) for line in lines) <= 100
    row = next(line for line in lines if line.strip().startswith("split.n_folds"))
    assert row.split() == ["split.n_folds", "3", "environment", "AITRADER__SPLIT__N_FOLDS"]
    doc = json.loads(_show("--json").stdout)
    assert set(doc) == {"train", "trading"}


def test_bad_values_are_the_same_clean_errors_as_load(in_tmp: Path) -> None:
    bad = _show("train", "--set", "split.n_folds=1")
    assert bad.exit_code == 1
    assert bad.stderr == "error: --set split.n_folds=1: split.n_folds: must be >= 2, got 1\n"
    typo = _show("train", "--set", "model.kind=xgbost")
    assert typo.stderr.strip().endswith("got 'xgbost'; did you mean 'xgboost'?")
    assert _show("train", "--set", "nokey").stderr.startswith("error: --set 'nokey': expected KEY=VALUE")
    assert "pass `train` or `trading`" in _show("--config", "x.yaml").stderr
    env_bad = _show("train", env={"AITRADER__SPLIT__N_FOLDS": "1"})
    assert env_bad.stderr == ("error: environment variable AITRADER__SPLIT__N_FOLDS: split.n_folds: must be >= 2, "
                              "got 1\n")
