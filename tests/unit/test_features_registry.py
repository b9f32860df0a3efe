"""The feature registry: features.yaml, aliases, validation errors, contracts and the spec hash."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aitrader.errors import FeatureError, FeatureMismatchError
from aitrader.features import FeaturePipeline, FeatureRegistry
from aitrader.features.kinds import KINDS

REPO = Path(__file__).resolve().parents[2]
NAMED = ["current_price", "ret_1", "ret_5", "ret_15", "ret_60", "sma_ratio_10", "sma_ratio_20", "sma_ratio_50",
         "ema_ratio_12", "ema_ratio_26", "rsi_14", "macd", "macd_signal", "macd_hist", "bb_pctb_20", "atr_14",
         "volatility_20", "volume_zscore_20", "volume_ratio_5", "hl_range", "close_location"]


@pytest.fixture(scope="module")
def registry() -> FeatureRegistry:
    return FeatureRegistry.load(REPO / "config" / "features.yaml")


def _write(tmp_path: Path, entries: list[dict]) -> Path:
    path = tmp_path / "features.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "features": entries}), encoding="utf-8")
    return path


def _entry(**over) -> dict:
    base = {"name": "ret_3", "description": "3-bar return", "group": "price", "kind": "return",
            "aliases": ["r3"], "params": {"window": 3}, "warmup": 3,
            "metadata": {"unit": "fraction", "dtype": "float64"}}
    base.update(over)
    return base


def test_packaged_copy_is_identical_to_config() -> None:
    assert (REPO / "config" / "features.yaml").read_bytes() == (REPO / "aitrader/defaults/features.yaml").read_bytes()


def test_default_set_has_the_named_features(registry: FeatureRegistry) -> None:
    assert set(NAMED) <= set(registry.names())
    default = registry.default_names()
    assert len(default) >= 20
    assert "current_price" not in default  # a raw price level is not stationary
    assert set(NAMED) - {"current_price"} <= set(default)


def test_every_kind_has_both_evaluators() -> None:
    from aitrader.features.batch import BATCH
    from aitrader.features.fitted import _EVALUATORS
    from aitrader.features.kinds import BOOK_KINDS
    from aitrader.features.streaming import _EMIT

    # order-book kinds have their own two evaluators (tests/unit/test_features_book.py runs each)
    plain = {k for k, kind in KINDS.items() if not kind.fitted} - set(BOOK_KINDS)
    assert set(BATCH) == plain == set(_EMIT)
    assert {k for k, kind in KINDS.items() if kind.fitted} == set(_EVALUATORS)


def test_alias_resolves_to_canonical(registry: FeatureRegistry) -> None:
    assert registry.resolve("price") == "current_price"
    assert registry.resolve("RSI") == "rsi_14"
    assert registry.spec("clv").name == "close_location"
    assert registry.resolve("macd") == "macd"


def test_unknown_name_suggests_closest(registry: FeatureRegistry) -> None:
    with pytest.raises(FeatureError, match=r"unknown feature 'rsi_41'; did you mean .*rsi_14"):
        registry.resolve("rsi_41")
    with pytest.raises(FeatureError, match="see `aitrader features list`"):
        registry.resolve("zzzzzz")


def test_groups(registry: FeatureRegistry) -> None:
    assert registry.names("volume") == ["volume_zscore_20", "volume_ratio_5"]
    with pytest.raises(FeatureError, match="unknown feature group 'foo'; expected one of price, volume"):
        registry.names("foo")


def test_custom_file_adds_features(tmp_path: Path) -> None:
    reg = FeatureRegistry.load(_write(tmp_path, [_entry()]))
    assert reg.names() == ["ret_3"] and reg.resolve("r3") == "ret_3"
    assert reg.default_names() == []


@pytest.mark.parametrize(("change", "message"), [
    ({"group": "magic"}, r"features\[0\] \(ret_3\)\.group: must be one of price, volume, indicator, signal, ml, book, "
                         r"got 'magic'"),
    ({"kind": "nope"}, r"features\[0\] \(ret_3\)\.kind: must be one of"),
    ({"params": {"window": 0}}, r"\.params\.window: must be >= 1, got 0"),
    ({"params": {"window": 3, "extra": 1}}, r"\.params\.extra: unknown parameter for kind return"),
    ({"params": {}}, r"\.params\.window: is required for kind return"),
    ({"warmup": 1}, r"\.warmup: must be >= 3 for kind return"),
    ({"warmup": -1}, r"\.warmup: must be an integer >= 0, got -1"),
    ({"name": "Ret 3"}, r"\.name: must be lower_snake_case"),
    ({"metadata": {"dtype": "int8"}}, r"\.metadata: expected"),
    ({"colour": "red"}, r"\.colour: unknown key"),
])
def test_invalid_entries_name_the_path(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(FeatureError, match=message):
        FeatureRegistry.load(_write(tmp_path, [_entry(**change)]))


def test_missing_field_is_named(tmp_path: Path) -> None:
    entry = _entry()
    del entry["description"]
    with pytest.raises(FeatureError, match=r"features\[0\] \(ret_3\)\.description: is required"):
        FeatureRegistry.load(_write(tmp_path, [entry]))


def test_duplicate_alias_and_name(tmp_path: Path) -> None:
    other = _entry(name="ret_4", params={"window": 4}, warmup=4)
    with pytest.raises(FeatureError, match=r"features\[1\] \(ret_4\)\.aliases: 'r3' is already used by ret_3"):
        FeatureRegistry.load(_write(tmp_path, [_entry(), other]))
    with pytest.raises(FeatureError, match=r"'ret_3' is already defined"):
        FeatureRegistry.load(_write(tmp_path, [_entry(), _entry(aliases=[])]))


def test_macd_fast_must_be_below_slow(tmp_path: Path) -> None:
    entry = _entry(name="m", kind="macd", params={"fast": 26, "slow": 12, "signal": 9, "output": "line"}, warmup=30)
    with pytest.raises(FeatureError, match=r"params\.fast: must be < slow \(12\), got 26"):
        FeatureRegistry.load(_write(tmp_path, [entry]))


def test_bad_yaml_and_missing_list(tmp_path: Path) -> None:
    path = tmp_path / "features.yaml"
    path.write_text("features: [unclosed", encoding="utf-8")
    with pytest.raises(FeatureError, match="invalid YAML"):
        FeatureRegistry.load(path)
    path.write_text("version: 1\n", encoding="utf-8")
    with pytest.raises(FeatureError, match="features: expected a non-empty list"):
        FeatureRegistry.load(path)
    with pytest.raises(FeatureError, match="config file not found"):
        FeatureRegistry.load(tmp_path / "absent.yaml")


def test_loads_packaged_default_outside_a_project(in_tmp: Path) -> None:
    reg = FeatureRegistry.load()
    assert reg.source.endswith("defaults/features.yaml")


def test_pipeline_names_warmup_and_aliases(registry: FeatureRegistry) -> None:
    pipe = FeaturePipeline(["price", "rsi", "rsi_14", "ret_5"], registry)
    assert pipe.names == ["current_price", "rsi_14", "ret_5"]
    assert pipe.warmup == 42
    assert FeaturePipeline(None, registry).names == registry.default_names()


def test_contract_round_trip(registry: FeatureRegistry) -> None:
    pipe = FeaturePipeline(["rsi_14", "ret_5"], registry)
    contract = pipe.contract()
    assert contract["names"] == ["rsi_14", "ret_5"]
    assert contract["params"]["rsi_14"] == {"window": 14}
    assert contract["warmup"] == 42 and len(contract["spec_hash"]) == 64
    again = FeaturePipeline.from_contract(contract, registry)
    assert again.names == pipe.names and again.spec_hash == pipe.spec_hash
    pipe.check_contract(contract)


def _registry_with(tmp_path: Path, **rsi_change) -> FeatureRegistry:
    raw = yaml.safe_load((REPO / "config" / "features.yaml").read_text(encoding="utf-8"))
    for entry in raw["features"]:
        if entry["name"] == "rsi_14":
            entry.update(rsi_change)
    path = tmp_path / "features.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return FeatureRegistry.load(path)


def test_changed_params_are_refused(registry: FeatureRegistry, tmp_path: Path) -> None:
    contract = FeaturePipeline(["rsi_14", "ret_5"], registry).contract()
    changed = _registry_with(tmp_path, params={"window": 21})
    with pytest.raises(FeatureMismatchError,
                       match=r'feature rsi_14: model expects params \{"window": 14\}, pipeline has \{"window": 21\}'):
        FeaturePipeline.from_contract(contract, changed)


def test_changed_warmup_changes_the_hash(registry: FeatureRegistry, tmp_path: Path) -> None:
    contract = FeaturePipeline(["rsi_14"], registry).contract()
    changed = _registry_with(tmp_path, warmup=60)
    assert FeaturePipeline(["rsi_14"], changed).spec_hash != contract["spec_hash"]
    with pytest.raises(FeatureMismatchError, match="feature spec hash: model expects"):
        FeaturePipeline.from_contract(contract, changed)


def test_unknown_and_reordered_features_are_refused(registry: FeatureRegistry) -> None:
    contract = FeaturePipeline(["rsi_14", "ret_5"], registry).contract()
    bad = dict(contract, names=["rsi_14", "ret_7"])
    with pytest.raises(FeatureMismatchError, match="does not define under those names: ret_7"):
        FeaturePipeline.from_contract(bad, registry)
    with pytest.raises(FeatureMismatchError, match="different order"):
        FeaturePipeline(["ret_5", "rsi_14"], registry).check_contract(contract)
    with pytest.raises(FeatureMismatchError, match=r"missing \['ret_5'\]"):
        FeaturePipeline(["rsi_14"], registry).check_contract(contract)
