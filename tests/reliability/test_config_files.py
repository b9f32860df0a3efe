"""Hostile and careless config files, environment overrides and log files (issue 10, "Configs").

Every case ends in one ConfigError (or one `error:` line from the CLI) naming the file or the
environment variable and the fix; none may give a traceback, hang, or be silently accepted.
"""

from __future__ import annotations

import json
import math
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.config import (
    TradingConfig,
    TrainConfig,
    build_model,
    format_out_template,
    load_trading_config,
    load_train_config,
    read_yaml,
)
from aitrader.errors import ConfigError, ModelError

runner = CliRunner()

BOMB = """\
model:
  kind: lightgbm
  params:
    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def write(folder: Path, text: str | bytes, name: str = "cfg.yaml") -> Path:
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# ----------------------------------------------------------------------------- YAML itself


@pytest.mark.parametrize("loader", [load_train_config, load_trading_config])
def test_an_alias_bomb_under_a_real_key_is_refused_before_expansion(tmp_path, loader):
    # 9**9 = 387M strings if expanded (the issue saw ~5 GB allocated and a hang).
    text = BOMB if loader is load_train_config else BOMB.replace("model:\n  kind: lightgbm\n  params:",
                                                                    "monitoring:\n  window:")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=r"cfg\.yaml: YAML anchor &a at line \d+: anchors and aliases are not"):
        loader(path)


def test_a_lone_alias_or_merge_key_is_refused_too(tmp_path):
    path = write(tmp_path, "base: &b {n_folds: 3}\nsplit:\n  <<: *b\n")
    with pytest.raises(ConfigError, match="anchors and aliases are not allowed"):
        read_yaml(path)


def test_duplicate_keys_name_the_key_and_both_lines(tmp_path):
    path = write(tmp_path, "split:\n  n_folds: 3\n  embargo: 2\n  n_folds: 8\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: duplicate key 'n_folds' at line 4 \(first at line 2\)"):
        load_train_config(path)
    same_line = write(tmp_path, "split: {n_folds: 3, n_folds: 4}\n", "flow.yaml")
    with pytest.raises(ConfigError, match=r"duplicate key 'n_folds' at line 1 \(first at line 1\)"):
        load_train_config(same_line)
    top = write(tmp_path, "split: {}\nmodel: {}\nsplit: {n_folds: 3}\n", "top.yaml")
    with pytest.raises(ConfigError, match=r"duplicate key 'split' at line 3 \(first at line 1\)"):
        load_train_config(top)


def test_a_non_utf8_file_is_a_config_error_naming_the_byte_and_line(tmp_path):
    path = write(tmp_path, "data:\n  symbol: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"cfg\.yaml: not UTF-8 text \(byte 0xe9 at line 2\); save the file as UTF-8"):
        load_train_config(path)


def test_a_huge_or_endless_config_is_not_read_whole(tmp_path):
    path = write(tmp_path, "# " + "x" * 2_000_000 + "\n")
    with pytest.raises(ConfigError, match="larger than 1,000,000 bytes"):
        load_train_config(path)
    with pytest.raises(ConfigError, match="/dev/zero is not a regular file"):
        load_train_config("/dev/zero")


@pytest.mark.parametrize("depth", [40, 900, 20_000])
def test_deep_nesting_is_a_config_error(tmp_path, depth):
    path = write(tmp_path, "model:\n  params:\n    x: " + "[" * depth + "]" * depth + "\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: .*(nested too deeply|exceeded maximum nesting depth)"):
        load_train_config(path)


def test_a_nul_character_is_refused(tmp_path):
    path = write(tmp_path, 'data:\n  path: "bars\\0.csv"\n')
    with pytest.raises(ConfigError, match=r"data\.path: contains a NUL character"):
        load_train_config(path)


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("split:\n  holdout: .inf\n", r"split\.holdout: must be a finite number"),
        ("split:\n  holdout: .nan\n", r"split\.holdout: must be a finite number"),
        ("split:\n  holdout: 1e400\n", r"split\.holdout: must be a finite number"),
        ("split:\n  holdout: 1.5\n", r"split\.holdout: a value >= 1 is a number of bars and must be whole"),
        ("split:\n  n_folds: true\n", r"split\.n_folds: must be a number, not true"),
        ("split:\n  window: 100000000000000000000\n", r"split\.window: must be <= 1000000000"),
        ("backtest:\n  slippage_bps: 10000\n", r"backtest\.slippage_bps: must be <= 1000, got 10000"),
        ("backtest:\n  fees_bps: -1\n", r"backtest\.fees_bps: must be >= 0"),
        ("model:\n  random_state: -1\n", r"model\.random_state: must be >= 0"),
        ("features:\n  names: []\n", r"features\.names: must not be empty: list feature names, or use null"),
        ("model:\n  params: {n_estimators: lots}\n", r"model\.params: n_estimators must be an integer, got 'lots'"),
        ("model:\n  params: {learning_rate: .nan}\n", r"model\.params: learning_rate must be finite \(no \.inf"),
        ("model:\n  kind: ridge\n  params: {fit_intercept: 3}\n", r"model\.params: fit_intercept must be true or"),
        ("model:\n  params: {n_estimators: 1000000000}\n", r"model\.params: n_estimators must be between 1 and "),
        ("model:\n  kind: xgboost\n  params: {n_jobs: 100000}\n", r"model\.params: n_jobs must be between -1 and "),
    ],
)
def test_bad_train_values_are_config_errors(tmp_path, text, message):
    with pytest.raises(ConfigError, match=r"cfg\.yaml: " + message):
        load_train_config(write(tmp_path, text))


def test_null_feature_names_still_mean_the_default_set(tmp_path):
    assert load_train_config(write(tmp_path, "features:\n  names: null\n")).features.names is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("  execution:\n    initial_cash: .inf\n", r"ml_trading\.execution\.initial_cash: must be a finite number"),
        ("  execution:\n    initial_cash: 1.0e16\n", r"execution\.initial_cash: must be <= 1000000000000000,"),
        ("  execution:\n    slippage_bps: .inf\n", r"ml_trading\.execution\.slippage_bps: must be a finite number"),
        ("  execution:\n    slippage_bps: 10000\n", r"ml_trading\.execution\.slippage_bps: must be <= 1000"),
        ("  execution:\n    commission_bps: 20000\n", r"ml_trading\.execution\.commission_bps: must be <= 1000"),
        ("  models:\n    - {model_id: m, symbol: X, weight: .inf}\n", r"ml_trading\.models\[0\]\.weight: must be a"),
        ("  feature_pipeline:\n    buffer_size: 100000000000\n", r"feature_pipeline\.buffer_size: must be <= 10000000"),
        ("  errors:\n    prediction_timeout_ms: .inf\n", r"errors\.prediction_timeout_ms: must be a finite number"),
    ],
)
def test_bad_trading_values_are_config_errors(tmp_path, section, message):
    with pytest.raises(ConfigError, match=message):
        load_trading_config(write(tmp_path, "ml_trading:\n" + section))


def test_bad_monitoring_values_are_config_errors(tmp_path):
    path = write(tmp_path, "monitoring:\n  psi_max: .inf\n  window: 1e999\n  hit_rate_min: 2\n")
    with pytest.raises(ConfigError) as info:
        load_trading_config(path)
    text = str(info.value)
    assert "monitoring.psi_max: must be a finite number" in text
    assert "monitoring.hit_rate_min: must be <= 1, got 2" in text and "monitoring.window" in text


def _numeric_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, typing.Any]]:
    found = []
    for name, info in model.model_fields.items():
        args = [info.annotation, *typing.get_args(info.annotation)]
        nested = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        for sub in nested + [b for a in args for b in typing.get_args(a) if isinstance(b, type)
                             and issubclass(b, BaseModel)]:
            found += _numeric_fields(sub, f"{prefix}{name}.")
        if any(a in (int, float) for a in args) or any(
            typing.get_origin(a) is typing.Annotated and typing.get_args(a)[0] in (int, float) for a in args
        ):
            found.append((prefix + name, info))
    return found


@pytest.mark.parametrize("model", [TrainConfig, TradingConfig])
def test_every_numeric_setting_has_finite_bounds_and_refuses_inf(model):
    fields = _numeric_fields(model)
    assert len(fields) >= (8 if model is TrainConfig else 16)
    for path, info in fields:
        lower = [m for m in info.metadata if getattr(m, "ge", None) is not None or getattr(m, "gt", None) is not None]
        upper = [m for m in info.metadata if getattr(m, "le", None) is not None or getattr(m, "lt", None) is not None]
        assert lower and upper, f"{path} has no lower or upper bound"
        bound = getattr(upper[0], "le", None) or getattr(upper[0], "lt", None)
        assert math.isfinite(bound), path
    assert model.model_config.get("allow_inf_nan") is False


def test_slippage_can_no_longer_produce_negative_fill_prices():
    # A sell fills at open * (1 - slippage_bps / 1e4): the bound keeps that factor >= 0.9.
    cap = TradingConfig.model_fields["ml_trading"].annotation.model_fields["execution"].annotation \
        .model_fields["slippage_bps"].metadata
    le = next(m.le for m in cap if getattr(m, "le", None) is not None)
    assert 1 - le / 1e4 >= 0.9


def test_hyperparameter_types_are_checked_before_the_library_sees_them():
    from aitrader.models import create_model

    with pytest.raises(ModelError, match=r"lightgbm: parameter 'n_estimators' must be an integer, got 'lots'"):
        create_model("lightgbm", params={"n_estimators": "lots"})
    with pytest.raises(ModelError, match=r"unknown parameter\(s\) 'n_estimator' \(did you mean 'n_estimators'\?\)"):
        create_model("xgboost", params={"n_estimator": 10})
    with pytest.raises(ModelError, match=r"'max_feature' \(did you mean 'max_features'\?\)"):
        create_model("random_forest", params={"max_feature": 0.5})
    with pytest.raises(ModelError, match=r"ridge: parameter 'alpha' must be a finite number, got True"):
        create_model("ridge", params={"alpha": True})


def test_the_cli_reports_a_bad_hyperparameter_in_one_line(in_tmp):
    (in_tmp / "t.yaml").write_text("model:\n  params: {n_estimators: lots}\n")
    result = runner.invoke(app, ["train", "-c", "t.yaml"])
    assert result.exit_code == 1
    assert result.stderr == "error: t.yaml: model.params: n_estimators must be an integer, got 'lots'\n"


# ----------------------------------------------------------------------------- out template


@pytest.mark.parametrize(
    "template",
    ["{symbol.__class__.__mro__}", "{symbol[0]}", "{symbol!r}", "{model:>{symbol}}", "{model:10}", "{0}", "{}",
     "{other}", "{symbol", "x}"],
)
def test_the_out_template_allows_only_plain_symbol_and_model(template):
    with pytest.raises(ConfigError, match=r"^out: bad (placeholder|template)"):
        build_model(TrainConfig, {"out": template})


def test_a_plain_template_formats_and_literal_braces_survive():
    cfg = build_model(TrainConfig, {"out": "art/{{x}}/{symbol}_{model}"})
    assert format_out_template(cfg.out, symbol="AAPL", model="ridge") == "art/{x}/AAPL_ridge"


# ----------------------------------------------------------------------------- environment


def test_an_env_override_error_names_the_variable_not_the_file(in_tmp, monkeypatch):
    monkeypatch.setenv("AITRADER__SPLIT__N_FOLDS", "1")
    with pytest.raises(ConfigError) as info:
        load_train_config()
    assert str(info.value) == "environment variable AITRADER__SPLIT__N_FOLDS: split.n_folds: must be >= 2, got 1"
    monkeypatch.setenv("AITRADER__SPLIT__N_FOLDS", "[3")
    with pytest.raises(ConfigError, match=r"^environment variable AITRADER__SPLIT__N_FOLDS: value '\[3' is not valid"):
        load_train_config()


def test_file_and_env_problems_are_reported_together_each_with_its_origin(in_tmp, monkeypatch):
    path = write(in_tmp, "split:\n  n_folds: 1\n")
    monkeypatch.setenv("AITRADER__BACKTEST__FEES_BPS", ".inf")
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    assert str(info.value) == (
        f"{path}: split.n_folds: must be >= 2, got 1; environment variable AITRADER__BACKTEST__FEES_BPS: "
        "backtest.fees_bps: must be a finite number (not .inf or .nan), got inf"
    )


def test_a_train_override_does_not_break_trading_and_monitoring(in_tmp, monkeypatch):
    monkeypatch.setenv("AITRADER__SPLIT__WINDOW", "20000")
    monkeypatch.setenv("AITRADER__MONITORING__WINDOW", "50")
    assert load_train_config().split.window == 20_000
    assert load_trading_config().monitoring.window == 50
    result = runner.invoke(app, ["monitor", "--runs-dir", "runs", "--json"])
    assert result.exit_code == 1 and "split" not in result.stderr and "Traceback" not in result.output


def test_a_file_prefix_scopes_an_override_and_the_old_form_still_works(in_tmp, monkeypatch):
    monkeypatch.setenv("AITRADER__TRAIN__SPLIT__N_FOLDS", "3")
    monkeypatch.setenv("AITRADER__TRADING__ML_TRADING__EXECUTION__INITIAL_CASH", "5000")
    monkeypatch.setenv("AITRADER__TRADING__ML_TRADING__MODELS__0__WEIGHT", "2.5")
    monkeypatch.setenv("AITRADER__TARGET__HORIZON", "7")
    train_cfg, trading = load_train_config(), load_trading_config()
    assert (train_cfg.split.n_folds, train_cfg.target.horizon) == (3, 7)
    assert trading.ml_trading.execution.initial_cash == 5000 and trading.ml_trading.models[0].weight == 2.5


def test_an_override_for_no_known_section_is_a_typo_with_a_suggestion(in_tmp, monkeypatch):
    monkeypatch.setenv("AITRADER__SPLT__N_FOLDS", "3")
    with pytest.raises(ConfigError, match=r"^environment variable AITRADER__SPLT__N_FOLDS: no config file has a "
                                          r"section 'splt'; did you mean 'split'\?"):
        load_trading_config()


def test_an_alias_in_an_env_value_is_refused(in_tmp, monkeypatch):
    monkeypatch.setenv("AITRADER__MODEL__PARAMS", "{a: &a [1, 2], b: [*a, *a]}")
    with pytest.raises(ConfigError, match=r"AITRADER__MODEL__PARAMS: .*anchors and aliases are not allowed"):
        load_train_config()


# ----------------------------------------------------------------------------- log file


def test_a_log_file_on_a_full_disk_is_one_error_line(in_tmp):
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full is not available")
    result = runner.invoke(app, ["--log-file", "/dev/full", "data", "check", "nope.csv"])
    assert result.exit_code == 1
    assert result.stderr == ("error: cannot write log file /dev/full: No space left on device; free space or pass "
                             "another --log-file\n")


def test_a_log_file_that_is_a_directory_is_one_error_line(in_tmp):
    (in_tmp / "logs.d").mkdir()
    result = runner.invoke(app, ["--log-file", str(in_tmp / "logs.d"), "data", "check", "nope.csv"])
    assert result.exit_code == 1
    assert result.stderr == (f"error: cannot open log file {in_tmp / 'logs.d'}: Is a directory; pass a writable "
                             "--log-file path\n")


def test_a_log_file_failing_mid_run_warns_once_and_keeps_the_exit_code(in_tmp, monkeypatch):
    import logging

    from aitrader.cli.main import setup_logging

    setup_logging(False, "run.log")
    handler = next(h for h in logging.getLogger("aitrader").handlers if hasattr(h, "failure"))

    class Full:
        def write(self, _: str) -> None:
            raise OSError(28, "No space left on device")

        def flush(self) -> None:
            pass

        def seek(self, *_: int) -> int:
            return 0

        def tell(self) -> int:
            return 0

    handler.stream = Full()
    import io
    import sys

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    for _ in range(3):
        logging.getLogger("aitrader.test").warning("disk is full")
    lines = err.getvalue().splitlines()
    assert [line for line in lines if line.startswith("warning: cannot write log file")] == [
        f"warning: cannot write log file {in_tmp / 'logs' / 'run.log'}: No space left on device; no longer "
        "logging to it"
    ]
    assert "Traceback" not in err.getvalue() and "Logging error" not in err.getvalue()
    assert handler not in logging.getLogger("aitrader").handlers
    setup_logging(False, None)


def test_the_shipped_defaults_still_load(in_tmp):
    repo = Path(__file__).resolve().parents[2]
    for name in ("train.yaml", "ml_trading_config.yaml"):
        assert read_yaml(repo / "config" / name) == yaml.safe_load((repo / "config" / name).read_text())
    assert load_train_config().split.n_folds >= 2 and load_trading_config().ml_trading.execution.initial_cash > 0
    assert json.loads(json.dumps(load_trading_config().model_dump()))  # finite, plain JSON
