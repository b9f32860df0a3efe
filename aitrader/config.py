"""Typed, validated configuration: one pydantic model per file, built once at load.

Resolution of a config file: an explicit ``--config PATH`` (must exist); otherwise
``./config/NAME`` when present (the project's working defaults); otherwise the copy shipped
inside the package (``aitrader/defaults/NAME``), so an installed aitrader works anywhere.

Environment overrides: ``AITRADER__<SECTION>__<KEY>=value`` (double underscores between path
parts, case-insensitive, the value parsed as YAML), e.g. ``AITRADER__SPLIT__N_FOLDS=3`` for
train.yaml or ``AITRADER__ML_TRADING__EXECUTION__INITIAL_CASH=50000`` for ml_trading_config.yaml.
An override applies only to the file whose schema has its section (so a train override never
breaks ``monitor``); ``AITRADER__TRAIN__...`` / ``AITRADER__TRADING__...`` name the file
explicitly, and a number indexes a list (``AITRADER__TRADING__ML_TRADING__MODELS__0__WEIGHT``).
Validation errors name the path of the bad value, ``split.n_folds: must be >= 2, got 1``, after
the file or the environment variable it came from.

Files are refused, naming the file, when they are not UTF-8, use YAML anchors or aliases (an alias
bomb expands to gigabytes), repeat a key, or hold NaN/inf or out-of-range numbers: every numeric
field is finite and bounded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from aitrader.bus.settings import BusSection
from aitrader.errors import ConfigError

TRAIN_CONFIG = "train.yaml"
TRADING_CONFIG = "ml_trading_config.yaml"
FEATURES_CONFIG = "features.yaml"
ENV_PREFIX = "AITRADER__"

M = TypeVar("M", bound=BaseModel)
MAX_STRING = 4096  # no setting is longer; a megabyte string is a mistake


def _not_a_bool(value: Any) -> Any:
    # pydantic's lax mode reads true/false as 1/0; a switch where a number belongs is a mistake.
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {str(value).lower()}")
    return value


Int = Annotated[int, BeforeValidator(_not_a_bool)]
Float = Annotated[float, BeforeValidator(_not_a_bool)]
Str = Annotated[str, Field(max_length=MAX_STRING)]

# Upper bounds for counts and sizes: far beyond any real setting, small enough that no setting can
# overflow an int64, a float conversion or memory.
MAX_COUNT = 1_000_000_000
MAX_BPS = 1_000.0  # 10%: costs at or above 100% would fill sells at negative prices
MAX_CASH = 1e15


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors, values are validated on assignment,
    and no float may be NaN or infinite (every numeric field also has finite bounds)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- train.yaml


class DataSection(StrictModel):
    path: Str | None = Field(None, min_length=1)  # None: the built-in sample
    symbol: Str | None = Field(None, min_length=1)  # None: AAPL for the sample; a data file names its own
    repair: bool = False
    # Order-book snapshots for book features (docs/orderbook.md): a file, or {SYMBOL: file}.
    book: (Annotated[Str, Field(min_length=1)]
           | dict[Annotated[Str, Field(min_length=1)], Annotated[Str, Field(min_length=1)]] | None) = None


class FeaturesSection(StrictModel):
    names: list[Annotated[Str, Field(min_length=1)]] | None = Field(None, max_length=1000)  # None: default set

    @field_validator("names")
    @classmethod
    def _empty_is_not_default(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("must not be empty: list feature names, or use null for the default feature set")
        return v


class TargetSection(StrictModel):
    horizon: Int = Field(5, ge=1, le=10_000)
    task: Literal["regression", "classification"] = "regression"


def _one_of(value: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices`` (built-ins and installed plug-ins), else the same error
    as a ``Literal`` field (``must be one of ..., got 'x'; did you mean 'y'?``)."""
    if value in choices:
        return value
    from pydantic_core import PydanticCustomError

    quoted = [repr(c) for c in choices]
    expected = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})


class ModelSection(StrictModel):
    # Built-in kinds (aitrader.models.MODEL_KINDS) or an installed plug-in's (aitrader.models group).
    kind: Str = "lightgbm"
    params: dict[Annotated[Str, Field(min_length=1)], Any] = Field(default_factory=dict)
    random_state: Int = Field(42, ge=0, le=2**31 - 1)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        from aitrader.models import model_kinds  # entry-point metadata only: imports no plug-in

        return _one_of(v, model_kinds())

    @field_validator("params")
    @classmethod
    def _param_types(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from aitrader.models.params import param_type_problems  # no heavy imports

        problems = param_type_problems(str(info.data.get("kind", "")), v)
        if problems:
            raise ValueError("; ".join(f"{name} {why}" for name, why in problems))
        return v


class SplitSection(StrictModel):
    n_folds: Int = Field(5, ge=2, le=100)
    embargo: Int = Field(5, ge=0, le=MAX_COUNT)
    holdout: Float = Field(0.2, gt=0, le=MAX_COUNT)  # fraction of rows when < 1, else a number of bars
    min_train: Int = Field(250, ge=20, le=MAX_COUNT)  # bars in the first training fold
    window: Int | None = Field(None, ge=100, le=MAX_COUNT)  # use only the most recent N bars (retraining)

    @field_validator("holdout")
    @classmethod
    def _whole_count(cls, v: float) -> float:
        if v >= 1 and v != int(v):
            raise ValueError(f"a value >= 1 is a number of bars and must be whole, got {v!r}; "
                             "use a fraction below 1 or a whole number of bars")
        return v


class BacktestSection(StrictModel):
    # Removed settings: the holdout backtest runs through the trading engine with the trading
    # config's costs (ml_trading.execution), one set of costs for train and paper-trade alike.
    fees_bps: Float | None = Field(None, ge=0, le=MAX_BPS)
    slippage_bps: Float | None = Field(None, ge=0, le=MAX_BPS)
    short: bool = True  # the fold (signal) backtest: short on negative predictions; flat when False

    @model_validator(mode="after")
    def _costs_moved(self) -> BacktestSection:
        for key, new in (("fees_bps", "commission_bps"), ("slippage_bps", "slippage_bps")):
            if getattr(self, key) is not None:
                raise ValueError(
                    f"backtest.{key} is no longer used: train's backtest takes its costs from the trading "
                    f"config (ml_trading.execution.{new}, or the asset-class default when null); "
                    f"remove backtest.{key} from train.yaml and set ml_trading.execution.{new} instead"
                )
        return self


class OnnxSection(StrictModel):
    export: bool = True
    tolerance_rel: Float = Field(1e-3, gt=0, le=1)


class TrainConfig(StrictModel):
    """``config/train.yaml``."""

    data: DataSection = Field(default_factory=DataSection)
    features: FeaturesSection = Field(default_factory=FeaturesSection)
    target: TargetSection = Field(default_factory=TargetSection)
    model: ModelSection = Field(default_factory=ModelSection)
    split: SplitSection = Field(default_factory=SplitSection)
    backtest: BacktestSection = Field(default_factory=BacktestSection)
    onnx: OnnxSection = Field(default_factory=OnnxSection)
    out: Str = Field("artifacts/{symbol}_{model}", min_length=1)

    @field_validator("out")
    @classmethod
    def _plain_template(cls, v: str) -> str:
        check_out_template(v)
        return v


OUT_FIELDS = ("symbol", "model")


def check_out_template(template: str) -> None:
    """``out`` may hold only the plain placeholders ``{symbol}`` and ``{model}``: no attribute or
    index access, conversion or format spec (``str.format`` would evaluate them)."""
    import string

    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad template {template!r} ({exc}); use the placeholders {{symbol}} and {{model}} "
                         "only, and {{ }} for a literal brace") from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in OUT_FIELDS or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"bad placeholder {shown} in {template!r}; only plain {{symbol}} and {{model}} "
                             "are allowed")


def format_out_template(template: str, *, symbol: str, model: str) -> str:
    """The ``out`` template filled in; each value must be a safe single path component."""
    try:
        check_out_template(template)
    except ValueError as exc:
        raise ConfigError(f"out: {exc}") from None
    for name, value in (("symbol", symbol), ("model", model)):
        if not value or value in (".", "..") or any(c in value for c in "/\\\0") or not value.isprintable():
            raise ConfigError(
                f"out: the {name} {value!r} cannot be part of a folder name (empty, '.', '..', a path "
                f"separator or a control character); pass --out or set data.symbol to a plain name"
            )
    return template.format(symbol=symbol, model=model)


# ----------------------------------------------------------------- ml_trading_config.yaml


class ModelEntry(StrictModel):
    model_id: Str = Field(min_length=1)
    symbol: Str = Field(min_length=1)
    # ml_regression or an installed plug-in's (aitrader.strategies group).
    strategy: Str = "ml_regression"
    min_confidence: Float = Field(0.6, ge=0, le=1)
    position_size: Float = Field(0.02, gt=0, le=1)
    weight: Float = Field(1.0, gt=0, le=1_000)
    enabled: bool = True
    # tcp://HOST:PORT of an `aitrader serve` that predicts for this model (None: in-process runner)
    endpoint: Str | None = Field(None, min_length=1)


    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        from aitrader import plugins  # entry-point metadata only: imports no plug-in

        return _one_of(v, ("ml_regression", *(n for n in plugins.names("strategies") if n != "ml_regression")))


class RiskLimits(StrictModel):
    max_ml_position_size: Float = Field(0.05, gt=0, le=1)
    max_ml_positions: Int = Field(5, ge=1, le=100_000)
    daily_ml_loss_limit: Float = Field(0.02, gt=0, le=1)


class Execution(StrictModel):
    initial_cash: Float = Field(100_000, gt=0, le=MAX_CASH)
    # auto: from the bars' calendar (weekend bars: crypto; 24h weekdays only: forex; else equity).
    asset_class: Literal["auto", "equity", "forex", "crypto"] = "auto"
    # None: the asset class's default (aitrader.training.backtest.ASSET_CLASS_COSTS, docs/trading.md).
    commission_bps: Float | None = Field(None, ge=0, le=MAX_BPS)
    slippage_bps: Float | None = Field(None, ge=0, le=MAX_BPS)
    allow_short: bool = True


class ErrorPolicy(StrictModel):
    prediction_timeout_ms: Float = Field(50, gt=0, le=3_600_000)
    fallback: Literal["previous", "rule", "skip"] = "previous"
    max_consecutive_errors: Int = Field(5, ge=1, le=MAX_COUNT)
    previous_max_bars: Int = Field(3, ge=1, le=MAX_COUNT)  # how long "previous" may reuse the last prediction


class FeaturePipelineSection(StrictModel):
    buffer_size: Int = Field(500, ge=10, le=10_000_000)


class LiveSection(StrictModel):
    bad_bar: Literal["skip", "stop"] = "skip"  # --follow: a bar failing validation is skipped with an ALERT, or stops


class ServiceClientSection(StrictModel):
    """The client of a prediction service (a model with ``endpoint``; docs/serving.md, *Client*)."""

    timeout_ms: Float = Field(50, gt=0, le=3_600_000)  # per request, no retry past it
    breaker_failures: Int = Field(3, ge=1, le=MAX_COUNT)  # failures in a row that open the circuit
    breaker_reset_bars: Int = Field(20, ge=1, le=MAX_COUNT)  # bars the circuit stays open before a probe
    prediction_cooldown: Int = Field(0, ge=0, le=MAX_COUNT)  # bars a service prediction is reused without a request
    prediction_confidence_threshold: Float = Field(0.0, ge=0, le=1)  # below it a reply counts as unsure
    feedback: bool = True  # send (prediction, outcome) pairs to the service
    max_feedback_buffer: Int = Field(10_000, ge=1, le=MAX_COUNT)
    feedback_batch_size: Int = Field(100, ge=1, le=100_000)
    feedback_send_interval: Int = Field(50, ge=1, le=MAX_COUNT)  # bars (outcomes) between sends


class MLTrading(StrictModel):
    enabled: bool = True
    models: list[ModelEntry] = Field(default_factory=list, max_length=10_000)
    risk_limits: RiskLimits = Field(default_factory=RiskLimits)
    execution: Execution = Field(default_factory=Execution)
    errors: ErrorPolicy = Field(default_factory=ErrorPolicy)
    feature_pipeline: FeaturePipelineSection = Field(default_factory=FeaturePipelineSection)
    live: LiveSection = Field(default_factory=LiveSection)
    service: ServiceClientSection = Field(default_factory=ServiceClientSection)
    # A replay at --speed 0 (paper-trade, backtest, train's holdout backtest): batch features and batch
    # predictions, or the per-bar streaming path of live runs (docs/trading.md, "Replay routes").
    replay: Literal["batch", "streaming"] = "batch"

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
    window: Int = Field(100, ge=5, le=MAX_COUNT)  # rolling window (predictions with known outcome)
    min_outcomes: Int = Field(30, ge=1, le=MAX_COUNT)  # accuracy alerts need at least this many outcomes
    mae_ratio_max: Float = Field(1.2, gt=0, le=1_000)  # alert when live MAE > ratio x holdout MAE
    psi_max: Float = Field(0.2, gt=0, le=1_000)  # drift limit: PSI > max(psi_max, chance at n_eff); docs/operations.md
    hit_rate_min: Float = Field(0.45, ge=0, le=1)
    error_rate_max: Float = Field(0.05, ge=0, le=1)
    drift_min_samples: Int = Field(100, ge=10, le=MAX_COUNT)  # drift alerts wait for this many live predictions
    regime_shift_max: Float = Field(0.3, gt=0, le=1)  # regime_shift: live vs training regime shares (TVD) above this


class TradingConfig(StrictModel):
    """``config/ml_trading_config.yaml``."""

    ml_trading: MLTrading = Field(default_factory=MLTrading)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    bus: BusSection = Field(default_factory=BusSection)  # the Redis Streams pipeline (docs/bus.md)

    @field_validator("ml_trading", mode="before")
    @classmethod
    def _none_is_default(cls, v: Any) -> Any:
        return {} if v is None else v


# --------------------------------------------------------------------------- loading

# Config files are a few kilobytes; the cap stops a wrong --config (a data file, /dev/zero's
# cousins) from being read whole.
MAX_CONFIG_BYTES = 1_000_000

# Which config file owns which top-level keys: an unprefixed AITRADER__<SECTION>__... override
# applies only to the file whose schema has that section; AITRADER__<FILE>__<SECTION>__... names
# the file explicitly.
CONFIG_MODELS: dict[str, type[BaseModel]] = {}  # filled below: prefix -> model
FILE_PREFIXES = {TRAIN_CONFIG: "TRAIN", TRADING_CONFIG: "TRADING"}


# libyaml when present: about 40 times faster than the pure-Python parser on a config file.
_YamlBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_YAML_DEPTH = 32  # a config is a few levels deep; model.params values a few more


class _ConfigLoader(_YamlBase):  # type: ignore[valid-type,misc]
    """Safe loader that refuses duplicate keys (YAML keeps the last one silently); anchors and
    aliases are refused before it runs (see :func:`_load_yaml`)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:
                raise _Refused(f"unhashable key at line {line}; keys must be plain names") from None
            if first is not None:
                raise _Refused(f"duplicate key {key!r} at line {line} (first at line {first}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


class _Refused(Exception):
    """A YAML construct config files may not use."""


def _line(event: Any) -> int | str:
    mark = getattr(event, "start_mark", None)
    return mark.line + 1 if mark is not None else "?"


def _load_yaml(text: str) -> Any:
    """Parse config YAML: one pass over the events refuses anchors and aliases (an alias bomb of a
    few lines expands to gigabytes once validated) and deep nesting, before anything is built."""
    depth = 0
    for event in yaml.parse(text, Loader=_YamlBase):
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent) or anchor is not None:
            what = "alias *" if isinstance(event, yaml.AliasEvent) else "anchor &"
            raise _Refused(f"YAML {what}{anchor} at line {_line(event)}: anchors and "
                           "aliases are not allowed in config files; write the values out")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise _Refused(f"nested too deeply (more than {MAX_YAML_DEPTH} levels at line {_line(event)}); "
                               "a config file is a few levels of settings")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise _Refused("nested too deeply; a config file is a few levels of settings") from None


def default_config_path(name: str) -> Path:
    """The project's ``config/NAME`` when present, else the packaged default."""
    local = Path("config") / name
    if local.is_file():
        return local
    return Path(str(resources.files("aitrader") / "defaults" / name))


def resolve_config_path(name: str, explicit: str | Path | None) -> Path:
    if explicit is not None:
        path = Path(explicit)
        try:
            found = path.is_file()
        except (OSError, ValueError):
            found = False
        if not found and path.exists():
            raise ConfigError(f"config path {path} is not a regular file; pass a YAML file to --config")
        if not found:
            raise ConfigError(f"config file not found: {path}; pass an existing file to --config")
        return path
    return default_config_path(name)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a syntax error, a refused construct (anchor, alias, duplicate key), a
    non-UTF-8 or oversized file or a non-mapping is a ConfigError naming the file."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES:,} bytes; is this a config file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}); "
                          "save the file as UTF-8") from None
    try:
        raw = _load_yaml(text)
    except _Refused as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}; fix the syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(raw).__name__}")
    return raw


def _did_you_mean(word: str, choices: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def env_overrides(
    environ: Mapping[str, str] | None = None, *, name: str | None = None
) -> list[tuple[str, list[str], str]]:
    """The ``AITRADER__...`` variables that apply to config file ``name``: ``(variable, path, value)``.

    ``AITRADER__<FILE>__<SECTION>__<KEY>`` (FILE: TRAIN or TRADING) applies to that file only;
    ``AITRADER__<SECTION>__<KEY>`` to the file whose schema has SECTION. A section no config file
    has is a ConfigError naming the variable (a typo must not be ignored). ``name=None``: every
    variable, whatever its file (for callers without a file name).
    """
    env = os.environ if environ is None else environ
    wanted = FILE_PREFIXES.get(name) if name else None
    out = []
    for var, value in sorted(env.items()):
        if not var.upper().startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        file_prefix = parts[0].upper()
        if file_prefix in CONFIG_MODELS and len(parts) > 1:
            if wanted is not None and file_prefix != wanted:
                continue
            parts = parts[1:]
            owner = file_prefix
        else:
            owners = [p for p, model in CONFIG_MODELS.items() if parts[0] in model.model_fields]
            if not owners:
                sections = sorted({f for m in CONFIG_MODELS.values() for f in m.model_fields})
                raise ConfigError(
                    f"environment variable {var}: no config file has a section {parts[0]!r}; "
                    f"{_did_you_mean(parts[0], sections)}sections: {', '.join(sections)}; files: "
                    f"{', '.join(f'AITRADER__{p}__...' for p in CONFIG_MODELS)}"
                )
            owner = owners[0]
        if wanted is not None and owner != wanted:
            continue
        out.append((var, parts, value))
    return out


def apply_env_overrides(
    raw: dict[str, Any], environ: Mapping[str, str] | None = None, *, name: str | None = None
) -> dict[str, Any]:
    """Apply ``AITRADER__A__B=value`` overrides (value parsed as YAML) to a raw config mapping."""
    _apply_overrides(raw, env_overrides(environ, name=name))
    return raw


def _apply_overrides(raw: dict[str, Any], overrides: list[tuple[str, list[str], str]]) -> None:
    for var, parts, value in overrides:
        node: Any = raw
        for part in parts[:-1]:
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                child = node[int(part)]
            else:
                child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict | list):
                child = {}
                if isinstance(node, list):
                    node[int(part)] = child
                else:
                    node[part] = child
            node = child
        try:
            parsed = _load_yaml(value)
        except (yaml.YAMLError, _Refused) as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{_who(var)}: value {_short(value)} is not valid YAML "
                              f"({problem}); quote it or fix it") from None
        last = parts[-1]
        if isinstance(node, list):
            if not (last.isdigit() and int(last) < len(node)):
                raise ConfigError(f"{_who(var)}: {last!r} is not an index of a list of "
                                  f"{len(node)}; use 0..{len(node) - 1}")
            node[int(last)] = parsed
        else:
            node[last] = parsed


_TEMPLATES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "literal_error": "must be one of {expected}",
    "missing": "is required",
    "extra_forbidden": "unknown key",
    "string_too_short": "must not be empty",
    "finite_number": "must be a finite number (not .inf or .nan)",
}


def _short(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _loc(parts: tuple[Any, ...]) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in parts).replace(".[", "[")


def format_validation_error(
    exc: ValidationError, source: str | Path | None = None, origins: Mapping[tuple[str, ...], str] | None = None
) -> str:
    """One line per problem: ``path.to.key: must be >= 2, got 1``; a value that came from an
    environment override (``origins``: key path -> variable) names the variable, not the file."""
    from_file, from_env = [], []
    for err in exc.errors():
        loc = _loc(err["loc"])
        ctx = {k: (int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in (err.get("ctx") or {}).items()}
        template = _TEMPLATES.get(err["type"])
        if template is not None:
            try:
                msg = template.format(**ctx)
            except (KeyError, IndexError):
                msg = err["msg"]
        else:
            msg = err["msg"].removeprefix("Value error, ")
        # Custom validators (value_error) name the value themselves where it helps.
        if err["type"] not in ("missing", "extra_forbidden", "value_error") and "input" in err:
            msg += f", got {_short(err['input'])}"
            if err["type"] == "literal_error" and isinstance(err["input"], str):  # --model lightgmb
                import re

                msg += "; " + _did_you_mean(err["input"], re.findall(r"'([^']*)'", str(ctx.get("expected"))))
                msg = msg.rstrip("; ").replace("? ", "?")
        line = f"{loc}: {msg}" if loc else msg
        path = tuple(str(p) for p in err["loc"])
        # The override that set this value (or a parent of it) owns the error; overrides below a
        # section-level error (a rule across keys) are named beside the file.
        owner = [name for key, name in (origins or {}).items() if path[: len(key)] == key]
        within = [name for key, name in (origins or {}).items() if len(key) > len(path) and key[: len(path)] == path]
        if owner:
            from_env.append(f"{_who(owner[-1])}: {line}")
        elif within:
            from_file.append(f"{line} (with {', '.join(_who(w) for w in within)})")
        else:
            from_file.append(line)
    lines = []
    if from_file:
        lines.append((f"{source}: " if source else "") + "; ".join(from_file))
    return "; ".join(lines + from_env)


def _nul_free(raw: Any, path: str = "") -> None:
    # A NUL byte (YAML "\0") passes pydantic but breaks every path and file name built from it.
    stack = [(raw, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str) and "\0" in node:
            raise ConfigError(f"{where or 'value'}: contains a NUL character; remove it")
        if isinstance(node, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in node.items())
            stack.extend((k, where) for k in node if isinstance(k, str))
        elif isinstance(node, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(node))


def build_model(
    model: type[M], raw: dict[str, Any], source: str | Path | None = None,
    origins: Mapping[tuple[str, ...], str] | None = None,
) -> M:
    """Validate a raw mapping into ``model``; a ValidationError becomes a ConfigError with paths."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, origins)) from None
    except RecursionError:
        raise ConfigError(f"{source or 'config'}: values nested too deeply; a setting is a few levels "
                          "deep at most") from None


def _who(var: str) -> str:
    """How an override is named in an error: ``environment variable AITRADER__X`` or ``flag --set x=1``."""
    return var if var.startswith("--") else f"environment variable {var}"


def parse_set(item: str) -> tuple[str, list[str], str]:
    """``--set split.n_folds=3`` as an override ``(name, path, value)`` (the value parsed as YAML later)."""
    key, sep, value = item.partition("=")
    parts = [p.strip().lower() for p in key.split(".")]
    if not sep or not all(parts):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. --set split.n_folds=3")
    return f"--set {item}", parts, value


def _load_raw(
    name: str, explicit: str | Path | None, env: bool, flags: list[tuple[str, list[str], str]],
) -> tuple[Path, dict[str, Any], dict[str, Any], dict[tuple[str, ...], str]]:
    """The file, its raw mapping, the mapping with overrides applied, and where each override came from."""
    import copy

    path = resolve_config_path(name, explicit)
    raw = read_yaml(path)
    from_file = copy.deepcopy(raw)
    overrides = (env_overrides(name=name) if env else []) + list(flags)
    _apply_overrides(raw, overrides)
    origins: dict[tuple[str, ...], str] = {}
    for var, parts, _ in overrides:  # a later override of the same key wins, as in _apply_overrides
        origins.pop(tuple(parts), None)
        origins[tuple(parts)] = var
    for key, var in origins.items():  # a NUL from the environment names the variable
        try:
            _nul_free(_dig(raw, key), ".".join(key))
        except ConfigError as exc:
            raise ConfigError(f"{_who(var)}: {exc}") from None
    try:
        _nul_free(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return path, from_file, raw, origins


def load_config(model: type[M], name: str, explicit: str | Path | None = None, *, env: bool = True) -> M:
    """Resolve, read, apply environment overrides and validate one config file."""
    path, _, raw, origins = _load_raw(name, explicit, env, [])
    return build_model(model, raw, path, origins)


def explain_config(
    name: str, explicit: str | Path | None = None, *, sets: list[str] | None = None,
) -> dict[str, Any]:
    """The effective configuration of file ``name`` and where each value came from.

    Returns ``{"file", "packaged", "config", "values"}``; ``values`` maps each dotted key (list items
    by index, ``ml_trading.models[0].weight``) to ``{"value", "source"}``, the source being
    ``default`` (the schema's, the file does not set it), ``file``, ``environment AITRADER__...`` or
    ``flag --set KEY=VALUE``. Validation is the same as :func:`load_config` (same errors)."""
    models: dict[str, type[BaseModel]] = {TRAIN_CONFIG: TrainConfig, TRADING_CONFIG: TradingConfig}
    model = models[name]
    flags = [parse_set(item) for item in sets or []]
    path, from_file, raw, origins = _load_raw(name, explicit, True, flags)
    cfg = build_model(model, raw, path, origins)
    values: dict[str, dict[str, Any]] = {}
    for key, value in _leaves(cfg.model_dump(mode="json")):
        owner = [var for k, var in origins.items() if key[: len(k)] == k]
        if owner:
            source = f"flag {owner[-1]}" if owner[-1].startswith("--") else f"environment {owner[-1]}"
        elif _present(from_file, key):
            source = "file"
        else:
            source = "default"
        values[_loc(tuple(int(p) if p.isdigit() else p for p in key))] = {"value": value, "source": source}
    packaged = Path(str(resources.files("aitrader") / "defaults" / name))
    return {"file": str(path), "packaged": path == packaged, "config": cfg.model_dump(mode="json"), "values": values}


def _leaves(node: Any, key: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(node, dict) and node:
        return [leaf for k, v in node.items() for leaf in _leaves(v, (*key, str(k)))]
    if isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
        return [leaf for i, v in enumerate(node) for leaf in _leaves(v, (*key, str(i)))]
    return [(key, node)]


def _present(raw: Any, key: tuple[str, ...]) -> bool:
    for part in key:
        if isinstance(raw, dict) and part in raw:
            raw = raw[part]
        elif isinstance(raw, list) and part.isdigit() and int(part) < len(raw):
            raw = raw[int(part)]
        else:
            return False
    return True


def _dig(raw: Any, key: tuple[str, ...]) -> Any:
    for part in key:
        if isinstance(raw, dict):
            raw = raw.get(part)
        elif isinstance(raw, list) and part.isdigit() and int(part) < len(raw):
            raw = raw[int(part)]
        else:
            return None
    return raw


def load_train_config(explicit: str | Path | None = None) -> TrainConfig:
    return load_config(TrainConfig, TRAIN_CONFIG, explicit)


def load_trading_config(explicit: str | Path | None = None) -> TradingConfig:
    return load_config(TradingConfig, TRADING_CONFIG, explicit)


CONFIG_MODELS.update({"TRAIN": TrainConfig, "TRADING": TradingConfig})
