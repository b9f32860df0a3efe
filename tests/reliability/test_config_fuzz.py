"""Config fuzzer (issue 10): random types and values at every key of the shipped train.yaml and
ml_trading_config.yaml, written as YAML and loaded by the real loaders (and, for a subset, by the
CLI commands that load them first).

Asserted: loading either succeeds or raises ConfigError (no other exception, no traceback), and a
config that loads holds only finite numbers. Derandomized, so CI sees the same examples each run.
"""

from __future__ import annotations

import atexit
import math
import shutil
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.config import load_trading_config, load_train_config
from aitrader.errors import AitraderError, ConfigError

DEFAULTS = {name: yaml.safe_load((resources.files("aitrader") / "defaults" / name).read_text(encoding="utf-8"))
            for name in ("train.yaml", "ml_trading_config.yaml")}
LOADERS = {"train.yaml": load_train_config, "ml_trading_config.yaml": load_trading_config}
WORK = Path(tempfile.mkdtemp(prefix="aitrader-config-fuzz-"))  # hypothesis examples share it
atexit.register(shutil.rmtree, WORK, True)
FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def key_paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into the default mapping: sections, keys and list items (the root excluded)."""
    if prefix:
        yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from key_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from key_paths(value, (*prefix, i))


PATHS = {name: list(key_paths(raw)) for name, raw in DEFAULTS.items()}

TRICKY_STRINGS = ["", " ", ".inf", "-.inf", ".nan", "nan", "1e400", "-1", "0", "true", "null", "{symbol!r}",
                  "{symbol.__class__.__mro__}", "{symbol[0]}", "{model:>{symbol}}", "../../x", "/", "a\0b",
                  "\u00e9\u6f22\U0001f600", "x" * 5000, "\t\n", "lightgbm", "regression", "previous"]

special_numbers = st.sampled_from([math.inf, -math.inf, math.nan, 1e308, -1e308, 5e-324, 0.0, -0.0, 0.5, 1.0,
                                   1e4, 1e16, 0, -1, 1, 2, 10**6, 10**9 + 1, 2**31, 2**63, -(2**63) - 1, 10**30,
                                   10**400])
# Special numbers are listed three times: numeric settings are most of the file, and the bounds are
# what the fuzzer is here to test.
scalars = st.one_of(
    special_numbers,
    special_numbers,
    special_numbers,
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(TRICKY_STRINGS),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=8)


class _NoAliasDumper(yaml.SafeDumper):
    """Write every value out (a shared object would otherwise become an anchor and an alias)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def mutate(raw: Any, path: tuple[Any, ...], value: Any, action: str) -> None:
    node = raw
    for part in path[:-1]:
        node = node[part]
    last = path[-1]
    if action == "delete" and isinstance(node, dict):
        node.pop(last, None)
    elif action == "unknown" and isinstance(node, dict):
        node[f"{last}_typo"] = value
    else:
        node[last] = value


def default_at(name: str, path: tuple[Any, ...]) -> Any:
    node = DEFAULTS[name]
    for part in path:
        node = node[part]
    return node


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


near_numbers = st.one_of(special_numbers, special_numbers, st.floats(), st.integers(), values)


@st.composite
def mutated(draw: st.DrawFn, name: str) -> Any:
    """The defaults with one or two keys replaced, deleted or misspelt; a numeric key mostly gets
    a number (special ones often), so that many examples still load and their numbers are checked."""
    import copy

    raw = copy.deepcopy(DEFAULTS[name])
    for _ in range(draw(st.integers(1, 2))):
        path = draw(st.sampled_from(PATHS[name]))
        value = draw(near_numbers if is_number(default_at(name, path)) else values)
        try:
            mutate(raw, path, value, draw(st.sampled_from(["replace"] * 6 + ["delete", "unknown"])))
        except (KeyError, IndexError, TypeError):  # an earlier mutation removed or replaced the parent
            continue
    return raw


def numbers(node: Any) -> Iterator[float]:
    if isinstance(node, bool):
        return
    if isinstance(node, int | float):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from numbers(v)
    elif isinstance(node, list | tuple):
        for v in node:
            yield from numbers(v)


def write(name: str, raw: Any) -> Path:
    path = WORK / name
    path.write_text(yaml.dump(raw, Dumper=_NoAliasDumper, allow_unicode=True), encoding="utf-8")
    return path


def check_loads_cleanly(name: str, raw: Any) -> None:
    path = write(name, raw)
    try:
        cfg = LOADERS[name](path)
    except ConfigError as exc:
        assert str(exc).strip(), "an empty error message"
        return
    dumped = cfg.model_dump()
    # model.params go to the library as they are: finite here, their ranges are the library's.
    params = dumped.get("model", {}).pop("params", {})
    for number in numbers(params):
        assert math.isfinite(number), f"{name} accepted model.params value {number!r}"
    for number in numbers(dumped):
        assert math.isfinite(number) and abs(number) <= 1e15, f"{name} accepted {number!r}"


@settings(FUZZ, max_examples=260)
@given(mutated("train.yaml"))
def test_random_train_configs_load_or_fail_cleanly(raw):
    check_loads_cleanly("train.yaml", raw)


@settings(FUZZ, max_examples=260)
@given(mutated("ml_trading_config.yaml"))
def test_random_trading_configs_load_or_fail_cleanly(raw):
    check_loads_cleanly("ml_trading_config.yaml", raw)


runner = CliRunner()
EMPTY_RUNS = WORK / "runs"


@settings(FUZZ, max_examples=40)
@given(st.sampled_from(["train.yaml", "ml_trading_config.yaml"]).flatmap(
    lambda name: st.tuples(st.just(name), mutated(name))))
def test_the_cli_loading_random_configs_never_shows_a_traceback(case):
    """`train` and `monitor` validate their config first; with no data / no runs they stop right
    after, so each example costs one config load. Exit 1 with one `error:` line, never a crash."""
    name, raw = case
    path = write(name, raw)
    EMPTY_RUNS.mkdir(exist_ok=True)
    if name == "train.yaml":
        args = ["train", "-c", str(path), "--data", str(WORK / "missing.csv"), "--out", str(WORK / "art")]
    else:
        args = ["monitor", "--config", str(path), "--runs-dir", str(EMPTY_RUNS)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output


NON_FINITE_OR_HUGE = [math.inf, -math.inf, math.nan, 1e308, -1e308, 10**30, -(10**30)]


def test_every_numeric_key_refuses_non_finite_and_huge_values():
    """Exhaustively, beside the random search: each numeric key of each file, each bad number."""
    import copy

    checked = 0
    for name, paths in PATHS.items():
        for path in paths:
            if not is_number(default_at(name, path)):
                continue
            for bad in NON_FINITE_OR_HUGE:
                raw = copy.deepcopy(DEFAULTS[name])
                mutate(raw, path, bad, "replace")
                try:
                    LOADERS[name](write(name, raw))
                except ConfigError as exc:
                    assert ".".join(str(p) for p in path if not isinstance(p, int)).split(".")[-1] in str(exc)
                    checked += 1
                    continue
                raise AssertionError(f"{name}: {path} = {bad!r} was accepted")
    assert checked >= 25 * len(NON_FINITE_OR_HUGE)  # 29 numeric keys today


def test_the_fuzzer_reaches_every_key():
    # Each key of the defaults is a mutation site (the list of models included).
    assert ("split", "holdout") in PATHS["train.yaml"] and ("out",) in PATHS["train.yaml"]
    assert ("ml_trading", "models", 0, "weight") in PATHS["ml_trading_config.yaml"]
    assert ("monitoring", "psi_max") in PATHS["ml_trading_config.yaml"]
    assert len(PATHS["train.yaml"]) >= 25 and len(PATHS["ml_trading_config.yaml"]) >= 30
    assert issubclass(ConfigError, AitraderError)
