"""Issue 12 leftovers: `status` and `export` without pandas, and did-you-mean for every enumerated value
(CLI choices, config choices, hyper-parameters, export tables, --executor, feature definitions)."""

from __future__ import annotations

import enum
import json
import math
import random
import re
import subprocess
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.errors import ConfigError, FeatureError, ModelError, TradingError

runner = CliRunner()

CONFIG = """
ml_trading:
  models:
    - {model_id: syn_lgbm, symbol: SYN, min_confidence: 0.6, position_size: 0.02}
  errors: {prediction_timeout_ms: 5000}
"""


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run: a 10-tree LightGBM trained, registered, deployed, then paper-traded over 200 unseen bars.
    Returns the runs folder (one run, ``r1``)."""
    from aitrader.data.synthetic import generate_bars
    from aitrader.trading.service import paper_trade
    from tests.model_world import deploy_small_model

    base = tmp_path_factory.mktemp("slim")
    bars = generate_bars(1200, seed=5, signal=0.3)
    registry = deploy_small_model(base, bars, name="syn_lgbm", n_estimators=10)
    data = base / "SYN.csv"
    bars.iloc[900:].rename_axis("timestamp").to_csv(data)
    config = base / "trading.yaml"
    config.write_text(CONFIG)
    summary = paper_trade(config_path=str(config), data=[str(data)], run_id="r1", runs_dir=str(base / "runs"),
                          registry_root=str(registry))
    assert summary["status"] == "finished" and summary["fills"] > 0
    return base / "runs"


# ------------------------------------------------------------------ status and export without pandas


def test_status_and_export_import_no_pandas(small_run: Path, tmp_path: Path) -> None:
    """`status --json` and `export` of ledger tables read SQLite only: proven by sys.modules, not a clock."""
    code = textwrap.dedent(
        f"""
        import json, sys
        from typer.testing import CliRunner
        from aitrader.cli.main import app
        runs = {str(small_run)!r}
        status = CliRunner().invoke(app, ["status", "--json", "--runs-dir", runs])
        assert status.exit_code == 0, status.output
        doc = json.loads(status.stdout)
        for args in (["fills"], ["equity", "--out", "eq.csv.gz"], ["predictions", "--out", "p.csv"]):
            out = CliRunner().invoke(app, ["export", "r1", *args, "--runs-dir", runs])
            assert out.exit_code == 0, out.output
        print(json.dumps({{"run_id": doc["run_id"], "bars": doc["bars"],
                          "heavy": [m for m in ("pandas", "pyarrow", "lightgbm", "onnxruntime") if m in sys.modules]}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["run_id"] == "r1" and doc["bars"] == 300
    assert doc["heavy"] == [], f"status/export imported {doc['heavy']}"
    assert (tmp_path / "eq.csv.gz").stat().st_size > 0 and (tmp_path / "p.csv").stat().st_size > 0


def test_exported_csv_is_what_pandas_writes_for_every_table(small_run: Path, tmp_path: Path) -> None:
    """Oracle: pandas' own DataFrame.from_records(...).to_csv of the same rows (stdout, .csv and .csv.gz)."""
    import gzip

    import pandas as pd

    from aitrader.trading.ledger import EXPORT_TABLES, LEDGER_NAME, read_table
    from aitrader.trading.service import export_table

    for table in EXPORT_TABLES:
        cols, rows = read_table(small_run / "r1" / LEDGER_NAME, table)
        expected = pd.DataFrame.from_records(rows, columns=cols).to_csv(index=False, lineterminator="\n")
        assert export_table("r1", table, runs_dir=str(small_run)) == expected, table
        export_table("r1", table, str(tmp_path / f"{table}.csv"), runs_dir=str(small_run))
        export_table("r1", table, str(tmp_path / f"{table}.csv.gz"), runs_dir=str(small_run))
        assert (tmp_path / f"{table}.csv").read_text(encoding="utf-8") == expected, table
        with gzip.open(tmp_path / f"{table}.csv.gz", "rt", encoding="utf-8", newline="") as fh:
            assert fh.read() == expected, table
    assert len(export_table("r1", "fills", runs_dir=str(small_run)).splitlines()) > 1  # type: ignore[union-attr]


def _value(rnd: random.Random, kind: str) -> Any:
    if kind == "int":
        return rnd.choice([0, 1, -5, 10 ** rnd.randint(0, 18), rnd.randint(-10**9, 10**9)])
    if kind == "float":
        return rnd.choice([0.0, -0.0, 0.1, 1e-5, 1e16, 1e15, 123456789.123456789, math.inf, math.nan,
                           rnd.uniform(-1e6, 1e6), 10 ** rnd.uniform(-12, 25), -(10 ** rnd.uniform(-12, 25))])
    if kind == "str":
        return rnd.choice(["", "a", "a,b", 'q"x', "two\nlines", "2024-01-01T00:00:00", " sp ", "1.0", "None", "é"])
    if kind == "bool":
        return rnd.random() < 0.5
    return None


def test_csv_text_matches_pandas_on_random_tables() -> None:
    """Mixed ints, floats, NaN, None, bools and strings per column: pandas' inference is the oracle."""
    import pandas as pd

    from aitrader.trading.service import csv_text

    rnd = random.Random(12)
    for _ in range(400):
        ncol, nrow = rnd.randint(1, 4), rnd.randint(0, 6)
        kinds = [rnd.sample(["int", "float", "str", "bool", "none"], rnd.randint(1, 3)) for _ in range(ncol)]
        rows = [tuple(_value(rnd, rnd.choice(k)) for k in kinds) for _ in range(nrow)]
        cols = [f"c{i}" for i in range(ncol)]
        expected = pd.DataFrame.from_records(rows, columns=cols).to_csv(index=False, lineterminator="\n")
        assert csv_text(cols, rows) == expected, rows


def test_csv_text_leaves_what_it_cannot_format_to_pandas() -> None:
    import numpy as np

    from aitrader.trading.service import csv_text

    assert csv_text(["a"], [(np.float32(0.1),)]) is None
    assert csv_text(["a"], [(2**64,)]) is None
    assert csv_text(["a", "b"], []) == "a,b\n"


# ------------------------------------------------------------------ did you mean


def test_unknown_export_table_names_the_closest(small_run: Path) -> None:
    for typo, meant in (("fill", "fills"), ("trade", "trades"), ("Equity", "equity"), ("predictons", "predictions")):
        result = runner.invoke(app, ["export", "r1", typo, "--runs-dir", str(small_run)])
        assert result.exit_code == 1
        assert result.stderr.startswith(f"error: unknown table {typo!r} (did you mean {meant!r}?); expected one of ")
        assert len(result.stderr.strip().splitlines()) == 1
    result = runner.invoke(app, ["export", "r1", "zzz", "--runs-dir", str(small_run)])
    assert result.stderr.strip() == ("error: unknown table 'zzz'; expected one of fills, orders, equity, predictions, "
                                     "events, positions, trades")
    from aitrader.trading.ledger import read_table

    with pytest.raises(TradingError, match=r"unknown table 'fils' \(did you mean 'fills'\?\)"):
        read_table(small_run / "r1" / "ledger.db", "fils")


def test_unknown_hyperparameter_is_one_short_line_with_the_closest_names() -> None:
    from aitrader.models import create_model

    with pytest.raises(ModelError) as info:
        create_model("lightgbm", params={"num_leave": 3})
    message = str(info.value)
    assert "\n" not in message and len(message) < 200, message
    assert "'num_leave' (did you mean 'num_leaves'" in message
    assert "bagging_fraction" not in message  # not the ~300 LightGBM names
    assert re.search(r"; fix model\.params \(see the LightGBM documentation of its \d{3} parameters\)$", message)
    with pytest.raises(ModelError, match=r"'alpah' \(did you mean 'alpha'\?\); fix model.params \(valid: alpha, "):
        create_model("ridge", params={"alpah": 1.0})  # few names: listed
    with pytest.raises(ModelError, match=r"'zzzqq' \(no close name\)"):
        create_model("xgboost", params={"zzzqq": 1})


def test_unknown_hyperparameter_from_a_config_file_through_train(in_tmp: Path) -> None:
    """The typed validation still runs: a typo in model.params fails `train` with the one line."""
    (in_tmp / "train.yaml").write_text(yaml.safe_dump({"model": {"kind": "lightgbm",
                                                                 "params": {"learning_rat": 0.1}}}))
    result = runner.invoke(app, ["train", "--config", "train.yaml", "--out", "art"])
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line and "(did you mean 'learning_rate'?)" in line, line
    assert len(line) < 250, line


def _choice_params() -> list[tuple[list[str], Any, list[str]]]:
    """``(command path, param, choices)`` of every CLI parameter whose type is an enumeration."""
    import typer.main

    found = []

    def walk(cmd: Any, path: list[str]) -> None:
        for param in cmd.params:
            annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
            choices = getattr(getattr(param, "type", None), "choices", None)
            if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
                choices = [str(m.value) for m in annotation]
            elif typing.get_origin(annotation) is typing.Literal:
                choices = [str(c) for c in typing.get_args(annotation)]
            if choices:
                found.append((path, param, list(choices)))
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def _near_miss(choices: list[str]) -> tuple[str, str]:
    """A choice with its last letter dropped (one whose truncation is no other choice's)."""
    for choice in sorted(choices, key=len, reverse=True):
        if len(choice) > 2 and choice[:-1] not in choices:
            return choice[:-1], choice
    raise AssertionError(f"no near miss for {choices}")


def test_every_enumerated_cli_option_suggests_the_closest_choice(in_tmp: Path) -> None:
    params = _choice_params()
    assert {tuple(p) for p, _, _ in params} >= {("data", "sample"), ("features", "list"), ("config", "show")}
    for path, param, choices in params:
        typo, meant = _near_miss(choices)
        value = [typo] if param.param_type_name == "argument" else [param.opts[0], typo]
        result = runner.invoke(app, [*path, *value], env={"COLUMNS": "200"})
        text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.stderr).split())
        assert result.exit_code == 2, (path, param.name, result.output)
        assert f"did you mean {meant.lower()!r}?" in text.lower(), (path, param.name, text)  # choices ignore case


def _literal_fields(model: Any, path: list[str]) -> typing.Iterator[tuple[list[str], list[str]]]:
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        ann = field.annotation
        if typing.get_origin(ann) is typing.Literal:
            yield [*path, name], [str(c) for c in typing.get_args(ann)]
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _literal_fields(ann, [*path, name])


def test_every_config_choice_suggests_the_closest_value() -> None:
    from aitrader.config import TradingConfig, TrainConfig, build_model

    seen = 0
    for root in (TrainConfig, TradingConfig):
        for path, choices in _literal_fields(root, []):
            typo, meant = _near_miss(choices)
            raw: Any = typo
            for key in reversed(path):
                raw = {key: raw}
            with pytest.raises(ConfigError, match=re.escape(f"got {typo!r}; did you mean {meant!r}?")):
                build_model(root, raw)
            seen += 1
    assert seen >= 5  # task, model kind, asset_class, fallback, bad_bar


def test_free_text_choices_suggest_the_closest_value() -> None:
    from aitrader.models import create_model
    from aitrader.monitoring.executors import make_executor
    from aitrader.monitoring.retrain import _check_args

    with pytest.raises(ConfigError, match=r"--executor 'proces' is not supported; did you mean 'process'\? "):
        make_executor("proces")
    with pytest.raises(ConfigError, match=r"--metric 'sharp' is not supported; did you mean 'sharpe'\? "):
        _check_args("sharp", 0.0)
    with pytest.raises(ModelError, match=r"unknown task 'regresion'; did you mean 'regression'\? expected one of"):
        create_model("ridge", task="regresion")


def test_feature_definition_choices_suggest_the_closest_value(tmp_path: Path) -> None:
    from aitrader.features.registry import FeatureRegistry

    def load(**over: Any) -> None:
        entry = {"name": "ret_3", "description": "3-bar return", "group": "price", "kind": "return",
                 "params": {"window": 3}, "warmup": 3, **over}
        path = tmp_path / "features.yaml"
        path.write_text(yaml.safe_dump({"version": 1, "features": [entry]}), encoding="utf-8")
        FeatureRegistry.load(path)

    with pytest.raises(FeatureError, match=r"group: must be one of .*, got 'volum' \(did you mean 'volume'\?\)"):
        load(group="volum")
    with pytest.raises(FeatureError, match=r"kind: must be one of .*, got 'retrun' \(did you mean 'return'\?\)"):
        load(kind="retrun", params={})
    with pytest.raises(FeatureError, match=r"got 'signl' \(did you mean 'signal'\?\)"):
        load(name="macd_x", kind="macd", params={"fast": 3, "slow": 6, "signal": 2, "output": "signl"}, warmup=20)
