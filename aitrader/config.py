"""Typed, validated configuration: one pydantic model per file, built once at load.

Resolution of a config file: an explicit ``--config PATH`` (must exist); otherwise
``./config/NAME`` when present (the project's working defaults); otherwise the copy shipped
inside the package (``aitrader/defaults/NAME``), so an installed aitrader works anywhere.

Environment overrides: ``AITRADER__<SECTION>__<KEY>=value`` (double underscores between path
parts, case-insensitive, the value parsed as YAML), e.g.
``AITRADER__SPLIT__N_FOLDS=3`` for train.yaml or
``AITRADER__ML_TRADING__EXECUTION__INITIAL_CASH=50000`` for ml_trading_config.yaml.
Validation errors name the path of the bad value: ``split.n_folds: must be >= 2, got 1``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aitrader.errors import ConfigError

TRAIN_CONFIG = "train.yaml"
TRADING_CONFIG = "ml_trading_config.yaml"
FEATURES_CONFIG = "features.yaml"
ENV_PREFIX = "AITRADER__"

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- train.yaml


class DataSection(StrictModel):
    path: str | None = None  # None: the built-in sample
    symbol: str | None = None  # None: AAPL for the sample; a data file names its own symbol
    repair: bool = False


class FeaturesSection(StrictModel):
    names: list[str] | None = None  # None or empty: the registry's default set


class TargetSection(StrictModel):
    horizon: int = Field(5, ge=1, le=10_000)
    task: Literal["regression", "classification"] = "regression"


class ModelSection(StrictModel):
    kind: Literal["lightgbm", "xgboost", "ridge", "random_forest"] = "lightgbm"
    params: dict[str, Any] = Field(default_factory=dict)
    random_state: int = 42


class SplitSection(StrictModel):
    n_folds: int = Field(5, ge=2, le=100)
    embargo: int = Field(5, ge=0)
    holdout: float = Field(0.2, gt=0)  # fraction of rows when < 1, else a number of bars
    min_train: int = Field(250, ge=20)  # bars in the first training fold
    window: int | None = Field(None, ge=100)  # use only the most recent N bars (retraining)


class BacktestSection(StrictModel):
    fees_bps: float = Field(1.0, ge=0)
    slippage_bps: float = Field(2.0, ge=0)
    short: bool = True  # short on negative predictions; flat when False


class OnnxSection(StrictModel):
    export: bool = True
    tolerance_rel: float = Field(1e-3, gt=0)


class TrainConfig(StrictModel):
    """``config/train.yaml``."""

    data: DataSection = Field(default_factory=DataSection)
    features: FeaturesSection = Field(default_factory=FeaturesSection)
    target: TargetSection = Field(default_factory=TargetSection)
    model: ModelSection = Field(default_factory=ModelSection)
    split: SplitSection = Field(default_factory=SplitSection)
    backtest: BacktestSection = Field(default_factory=BacktestSection)
    onnx: OnnxSection = Field(default_factory=OnnxSection)
    out: str = "artifacts/{symbol}_{model}"


# ----------------------------------------------------------------- ml_trading_config.yaml


class ModelEntry(StrictModel):
    model_id: str = Field(min_length=1)
    symbol: str = Field(min_length=1)
    strategy: Literal["ml_regression"] = "ml_regression"
    min_confidence: float = Field(0.6, ge=0, le=1)
    position_size: float = Field(0.02, gt=0, le=1)
    weight: float = Field(1.0, gt=0)
    enabled: bool = True


class RiskLimits(StrictModel):
    max_ml_position_size: float = Field(0.05, gt=0, le=1)
    max_ml_positions: int = Field(5, ge=1)
    daily_ml_loss_limit: float = Field(0.02, gt=0, le=1)


class Execution(StrictModel):
    initial_cash: float = Field(100_000, gt=0)
    commission_bps: float = Field(1.0, ge=0)
    slippage_bps: float = Field(2.0, ge=0)
    allow_short: bool = True


class ErrorPolicy(StrictModel):
    prediction_timeout_ms: float = Field(50, gt=0)
    fallback: Literal["previous", "rule", "skip"] = "previous"
    max_consecutive_errors: int = Field(5, ge=1)
    previous_max_bars: int = Field(3, ge=1)  # how long "previous" may reuse the last prediction


class FeaturePipelineSection(StrictModel):
    buffer_size: int = Field(500, ge=10)


class LiveSection(StrictModel):
    bad_bar: Literal["skip", "stop"] = "skip"  # --follow: a bar failing validation is skipped with an ALERT, or stops


class MLTrading(StrictModel):
    enabled: bool = True
    models: list[ModelEntry] = Field(default_factory=list)
    risk_limits: RiskLimits = Field(default_factory=RiskLimits)
    execution: Execution = Field(default_factory=Execution)
    errors: ErrorPolicy = Field(default_factory=ErrorPolicy)
    feature_pipeline: FeaturePipelineSection = Field(default_factory=FeaturePipelineSection)
    live: LiveSection = Field(default_factory=LiveSection)

    @model_validator(mode="after")
    def _position_within_limit(self) -> MLTrading:
        for i, m in enumerate(self.models):
            if m.position_size > self.risk_limits.max_ml_position_size:
                raise ValueError(
                    f"models[{i}].position_size {m.position_size} exceeds "
                    f"risk_limits.max_ml_position_size {self.risk_limits.max_ml_position_size}"
                )
        return self


class Monitoring(StrictModel):
    window: int = Field(100, ge=5)  # rolling window (predictions with known outcome)
    min_outcomes: int = Field(30, ge=1)  # accuracy alerts need at least this many outcomes
    mae_ratio_max: float = Field(1.2, gt=0)  # alert when live MAE > ratio x holdout MAE
    psi_max: float = Field(0.2, gt=0)  # alert when PSI of any feature or the predictions exceeds it
    hit_rate_min: float = Field(0.45, ge=0, le=1)
    error_rate_max: float = Field(0.05, ge=0, le=1)
    drift_min_samples: int = Field(100, ge=10)  # drift alerts wait for this many live predictions


class TradingConfig(StrictModel):
    """``config/ml_trading_config.yaml``."""

    ml_trading: MLTrading = Field(default_factory=MLTrading)
    monitoring: Monitoring = Field(default_factory=Monitoring)

    @field_validator("ml_trading", mode="before")
    @classmethod
    def _none_is_default(cls, v: Any) -> Any:
        return {} if v is None else v


# --------------------------------------------------------------------------- loading


def default_config_path(name: str) -> Path:
    """The project's ``config/NAME`` when present, else the packaged default."""
    local = Path("config") / name
    if local.is_file():
        return local
    return Path(str(resources.files("aitrader") / "defaults" / name))


def resolve_config_path(name: str, explicit: str | Path | None) -> Path:
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}; pass an existing file to --config")
        return path
    return default_config_path(name)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a syntax error or a non-mapping is a ConfigError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}; fix the syntax") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(raw).__name__}")
    return raw


def apply_env_overrides(raw: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Apply ``AITRADER__A__B=value`` overrides (value parsed as YAML) to a raw config mapping."""
    env = os.environ if environ is None else environ
    for key, value in sorted(env.items()):
        if not key.upper().startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        node: dict[str, Any] = raw
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment variable {key}: value {value!r} is not valid YAML") from exc
    return raw


_TEMPLATES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "literal_error": "must be one of {expected}",
    "missing": "is required",
    "extra_forbidden": "unknown key",
    "string_too_short": "must not be empty",
}


def format_validation_error(exc: ValidationError, source: str | Path | None = None) -> str:
    """One line per problem: ``path.to.key: must be >= 2, got 1``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in err["loc"]).replace(".[", "[")
        ctx = {k: (int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in (err.get("ctx") or {}).items()}
        template = _TEMPLATES.get(err["type"])
        if template is not None:
            try:
                msg = template.format(**ctx)
            except (KeyError, IndexError):
                msg = err["msg"]
        else:
            msg = err["msg"].removeprefix("Value error, ")
        if err["type"] not in ("missing", "extra_forbidden") and "input" in err:
            msg += f", got {err['input']!r}"
        lines.append(f"{loc}: {msg}" if loc else msg)
    where = f"{source}: " if source else ""
    return where + "; ".join(lines)


def build_model(model: type[M], raw: dict[str, Any], source: str | Path | None = None) -> M:
    """Validate a raw mapping into ``model``; a ValidationError becomes a ConfigError with paths."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(model: type[M], name: str, explicit: str | Path | None = None, *, env: bool = True) -> M:
    """Resolve, read, apply environment overrides and validate one config file."""
    path = resolve_config_path(name, explicit)
    raw = read_yaml(path)
    if env:
        raw = apply_env_overrides(raw)
    return build_model(model, raw, path)


def load_train_config(explicit: str | Path | None = None) -> TrainConfig:
    return load_config(TrainConfig, TRAIN_CONFIG, explicit)


def load_trading_config(explicit: str | Path | None = None) -> TradingConfig:
    return load_config(TradingConfig, TRADING_CONFIG, explicit)
