"""Typed configuration: defaults load, bad keys and values name their path, env overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from aitrader.config import (
    TradingConfig,
    TrainConfig,
    apply_env_overrides,
    build_model,
    load_trading_config,
    load_train_config,
    read_yaml,
    resolve_config_path,
)
from aitrader.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_defaults_validate() -> None:
    train = build_model(TrainConfig, read_yaml(REPO / "config" / "train.yaml"))
    assert train.split.n_folds >= 2
    trading = build_model(TradingConfig, read_yaml(REPO / "config" / "ml_trading_config.yaml"))
    assert trading.ml_trading.models[0].model_id == "aapl_lgbm"
    assert trading.monitoring.psi_max == 0.2


def test_packaged_default_used_outside_a_project(in_tmp: Path) -> None:
    cfg = load_train_config()
    assert cfg.model.kind == "lightgbm"
    assert load_trading_config().ml_trading.execution.initial_cash == 100_000


def test_value_error_names_its_path() -> None:
    with pytest.raises(ConfigError, match=r"split\.n_folds: must be >= 2, got 1"):
        build_model(TrainConfig, {"split": {"n_folds": 1}})


def test_unknown_key_names_its_path() -> None:
    with pytest.raises(ConfigError, match=r"split\.n_fold: unknown key"):
        build_model(TrainConfig, {"split": {"n_fold": 3}})


def test_list_index_in_path() -> None:
    raw = {"ml_trading": {"models": [{"model_id": "m", "symbol": "X", "min_confidence": 1.5}]}}
    with pytest.raises(ConfigError, match=r"ml_trading\.models\[0\]\.min_confidence: must be <= 1, got 1\.5"):
        build_model(TradingConfig, raw)


def test_literal_choices_listed() -> None:
    with pytest.raises(ConfigError, match=r"model\.kind: must be one of .*lightgbm.*got 'catboost'"):
        build_model(TrainConfig, {"model": {"kind": "catboost"}})


def test_position_size_cannot_exceed_risk_cap() -> None:
    raw = {"ml_trading": {"models": [{"model_id": "m", "symbol": "X", "position_size": 0.5}],
                          "risk_limits": {"max_ml_position_size": 0.05}}}
    with pytest.raises(ConfigError, match="exceeds risk_limits.max_ml_position_size"):
        build_model(TradingConfig, raw)


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "train.yaml"
    bad.write_text("split:\n  n_folds: [3\n")
    with pytest.raises(ConfigError, match=r"train\.yaml: invalid YAML at line \d+"):
        load_train_config(bad)


def test_non_mapping_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "train.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_train_config(bad)


def test_missing_explicit_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_config_path("train.yaml", tmp_path / "nope.yaml")


def test_env_overrides_apply_and_validate(monkeypatch: pytest.MonkeyPatch, in_tmp: Path) -> None:
    raw = apply_env_overrides({"split": {"n_folds": 5}}, {"AITRADER__SPLIT__N_FOLDS": "3", "OTHER": "x"})
    assert raw == {"split": {"n_folds": 3}}
    monkeypatch.setenv("AITRADER__ML_TRADING__EXECUTION__INITIAL_CASH", "50000")
    assert load_trading_config().ml_trading.execution.initial_cash == 50_000
    monkeypatch.setenv("AITRADER__SPLIT__N_FOLDS", "1")
    with pytest.raises(ConfigError, match=r"split\.n_folds: must be >= 2, got 1"):
        load_train_config()


def test_env_overrides_are_scoped_to_the_file_owning_the_section() -> None:
    env = {"AITRADER__SPLIT__WINDOW": "20000", "AITRADER__MONITORING__WINDOW": "7",
           "AITRADER__TRAIN__TARGET__HORIZON": "3", "AITRADER__TRADING__ML_TRADING__ENABLED": "false"}
    assert apply_env_overrides({}, env, name="train.yaml") == {"split": {"window": 20000}, "target": {"horizon": 3}}
    assert apply_env_overrides({}, env, name="ml_trading_config.yaml") == {
        "monitoring": {"window": 7}, "ml_trading": {"enabled": False}}


def test_a_cross_key_error_names_the_override_beside_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("ml_trading:\n  models:\n    - {model_id: m, symbol: X, position_size: 0.04}\n")
    monkeypatch.setenv("AITRADER__ML_TRADING__RISK_LIMITS__MAX_ML_POSITION_SIZE", "0.01")
    with pytest.raises(ConfigError, match=r"t\.yaml: ml_trading: models\[0\]\.position_size 0\.04 exceeds "
                                          r"risk_limits\.max_ml_position_size 0\.01 \(with environment variable "
                                          r"AITRADER__ML_TRADING__RISK_LIMITS__MAX_ML_POSITION_SIZE\)"):
        load_trading_config(path)
