"""aitrader.plugins: discovery from distribution metadata, lazy import, broken plug-ins, the versions rule.

Each test builds a small distribution (a ``*.dist-info`` folder with ``entry_points.txt`` beside its
module) in a temp folder and puts it on ``sys.path``, which is what ``pip install --target`` gives.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from aitrader import plugins
from aitrader.config import TrainConfig, build_model
from aitrader.errors import ConfigError, FeatureError

GOOD_KIND = '''
import math
from collections import deque
import numpy as np
from aitrader.features.kinds import FeatureKind, Param

def batch(o, h, low, c, v, params):
    n = params["window"]
    out = np.full(len(c), np.nan)
    out[n:] = (c[n:] - c[:-n]) / c[:-n] * 100.0
    return out

def stream(params):
    n = params["window"]
    closes = deque(maxlen=n + 1)
    def update(o, h, low, c, v):
        closes.append(c)
        return (c - closes[0]) / closes[0] * 100.0 if len(closes) > n else math.nan
    return update

KIND = FeatureKind(name="roc_pct", summary="rate of change in percent", params={"window": Param(int, 1)},
                   min_warmup=lambda p: p["window"], history=lambda p: p["window"], batch=batch, stream=stream,
                   features=({"name": "roc_pct_5", "description": "5-bar rate of change (%)", "group": "price",
                              "params": {"window": 5}, "warmup": 5, "metadata": {"unit": "percent"}},
                             {"name": "rsi_14", "description": "clashes with the built-in", "group": "price",
                              "params": {"window": 3}, "warmup": 3, "metadata": {}}))
'''


def make_dist(root: Path, name: str, version: str, entry_points: dict[str, dict[str, str]],
              modules: dict[str, str]) -> Path:
    """A distribution as ``pip install --target root`` lays it out."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n" for group, eps in entry_points.items()))
    for filename, source in modules.items():
        (root / filename).write_text(textwrap.dedent(source))
    return root


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temp 'site' folder on sys.path; plug-in caches reset before and after."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    plugins.reset()
    yield root
    plugins.reset()
    for mod in [m for m in sys.modules if m.startswith("fake_")]:
        del sys.modules[mod]


def test_discovery_reads_metadata_and_imports_nothing(site: Path) -> None:
    make_dist(site, "fake-good", "1.2.0", {"aitrader.features": {"roc_pct": "fake_good:KIND"}},
              {"fake_good.py": GOOD_KIND})
    found = plugins.discover("features")
    assert found["roc_pct"].to_dict() == {"group": "features", "name": "roc_pct", "distribution": "fake-good",
                                          "version": "1.2.0", "entry_point": "fake_good:KIND"}
    assert "fake_good" not in sys.modules
    from aitrader.features.registry import FeatureRegistry

    registry = FeatureRegistry.load()
    assert "roc_pct_5" in registry.names()
    assert registry.spec("rsi_14").kind == "rsi"  # the file's definition wins over the plug-in's clash
    assert "fake_good" in sys.modules


def test_a_plugin_kind_is_computed_by_both_evaluators(site: Path) -> None:
    import numpy as np

    from aitrader.data.synthetic import generate_bars
    from aitrader.features import FeaturePipeline

    make_dist(site, "fake-good", "1.2.0", {"aitrader.features": {"roc_pct": "fake_good:KIND"}},
              {"fake_good.py": GOOD_KIND})
    bars = generate_bars(2000, seed=4)  # several chunks for compute_chunked below
    pipeline = FeaturePipeline(["roc_pct_5", "rsi_14"])
    batch = pipeline.transform(bars)
    c = bars["close"].to_numpy()
    expected = (c[5:] / c[:-5] - 1.0) * 100.0  # an independent formula of the same definition
    np.testing.assert_allclose(batch["roc_pct_5"].to_numpy()[5:], expected, rtol=1e-12, atol=1e-12)
    assert batch["roc_pct_5"].iloc[:5].isna().all()
    stream = pipeline.transform_streaming(bars)
    np.testing.assert_allclose(stream["roc_pct_5"].to_numpy()[5:], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stream.to_numpy()[15:], batch.to_numpy()[15:], rtol=1e-9)  # rsi_14 beside it
    from aitrader.features.batch import compute_chunked

    columns = (bars[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    chunks = np.vstack([m for _, m in compute_chunked(pipeline.specs, *columns, 1)])
    np.testing.assert_array_equal(chunks, batch.to_numpy())


def test_a_broken_plugin_is_skipped_with_a_warning_and_fails_only_when_needed(
        site: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_dist(site, "fake-broken", "0.3.0", {"aitrader.features": {"bad_kind": "fake_broken:KIND"},
                                             "aitrader.models": {"bad_model": "fake_broken:Model"},
                                             "aitrader.strategies": {"bad_strategy": "fake_broken:S"}},
              {"fake_broken.py": "import not_a_module_anywhere\n"})
    from aitrader.features.registry import FeatureRegistry

    with caplog.at_level(logging.WARNING, logger="aitrader.plugins"):
        registry = FeatureRegistry.load()  # unrelated work goes on
    assert "rsi_14" in registry.names()
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "feature kind plug-in 'bad_kind'" in warned[0]
    assert "fake-broken 0.3.0" in warned[0] and "No module named 'not_a_module_anywhere'" in warned[0]

    from aitrader.features.kinds import get_kind
    from aitrader.models import create_model, model_kinds
    from aitrader.trading.strategy import strategy_class

    with pytest.raises(plugins.PluginError, match=r"^feature kind plug-in 'bad_kind' \(fake_broken:KIND, from "
                       r"fake-broken 0.3.0\) fails to import: ModuleNotFoundError"):
        get_kind("bad_kind")
    assert "bad_model" in model_kinds()  # advertised (metadata), so config names it ...
    with pytest.raises(plugins.PluginError, match="model kind plug-in 'bad_model'.*fails to import"):
        create_model("bad_model")  # ... and only using it fails
    with pytest.raises(plugins.PluginError, match="strategy plug-in 'bad_strategy'.*fails to import"):
        strategy_class("bad_strategy")
    with pytest.raises(FeatureError, match="unknown feature 'bad_kind_1'"):
        registry.spec("bad_kind_1")


def test_a_plugin_of_the_wrong_shape_is_refused(site: Path) -> None:
    make_dist(site, "fake-shape", "1.0", {"aitrader.models": {"shape_model": "fake_shape:NOT_A_CLASS"},
                                          "aitrader.features": {"shape_kind": "fake_shape:NOT_A_CLASS"}},
              {"fake_shape.py": "NOT_A_CLASS = 42\n"})
    from aitrader.features.kinds import get_kind
    from aitrader.models import model_class

    with pytest.raises(plugins.PluginError, match="is 42, not a subclass of aitrader.models.base.Model"):
        model_class("shape_model")
    with pytest.raises(plugins.PluginError, match="is a int, not an aitrader.features.kinds.FeatureKind"):
        get_kind("shape_kind")


def test_config_accepts_installed_plugin_names_and_suggests_on_a_typo(site: Path) -> None:
    make_dist(site, "fake-good", "1.2.0", {"aitrader.models": {"hist_thing": "fake_good:Model"},
                                           "aitrader.strategies": {"long_only": "fake_good:S"}}, {})
    cfg = build_model(TrainConfig, {"model": {"kind": "hist_thing"}})
    assert cfg.model.kind == "hist_thing"
    with pytest.raises(ConfigError, match=r"model\.kind: must be one of 'lightgbm', .*'hist_thing', got "
                       r"'hist_thin'; did you mean 'hist_thing'\?"):
        build_model(TrainConfig, {"model": {"kind": "hist_thin"}})
    from aitrader.config import TradingConfig

    trading = build_model(TradingConfig, {"ml_trading": {"models": [{"model_id": "m", "symbol": "X",
                                                                     "strategy": "long_only"}]}})
    assert trading.ml_trading.models[0].strategy == "long_only"
    with pytest.raises(ConfigError, match="strategy: must be one of 'ml_regression' or 'long_only', got 'short'"):
        build_model(TradingConfig, {"ml_trading": {"models": [{"model_id": "m", "symbol": "X", "strategy": "short"}]}})


def test_the_versions_rule(site: Path) -> None:
    make_dist(site, "fake-good", "1.2.0", {"aitrader.features": {"roc_pct": "fake_good:KIND"}},
              {"fake_good.py": GOOD_KIND})
    section = plugins.section(features=["rsi", "roc_pct", "roc_pct"], models=["lightgbm"])
    assert section == {"features": {"roc_pct": {"distribution": "fake-good", "version": "1.2.0",
                                                "entry_point": "fake_good:KIND"}}}
    plugins.check_recorded(section, "m:v1")  # installed at the recorded version: accepted
    plugins.check_recorded(None, "m:v1")  # a model without plug-ins
    other = {"features": {"roc_pct": {**section["features"]["roc_pct"], "version": "1.1.0"}}}
    with pytest.raises(plugins.PluginError) as exc:
        plugins.check_recorded(other, "m:v1")
    assert str(exc.value) == ("m:v1 was trained with the feature kind plug-in 'roc_pct' from fake-good 1.1.0, but "
                              "fake-good 1.2.0 is installed; install it (pip install 'fake-good==1.1.0') or retrain "
                              "the model")
    missing = {"models": {"gone": {"distribution": "fake-gone", "version": "2.0"}}}
    with pytest.raises(plugins.PluginError) as exc:
        plugins.check_recorded(missing, "m:v1")
    assert str(exc.value) == ("m:v1 needs the model kind plug-in 'gone' from fake-gone 2.0, which is not installed; "
                              "install it (pip install 'fake-gone==2.0')")
    with pytest.raises(plugins.PluginError, match="plugins.nonsense: unknown plug-in group"):
        plugins.check_recorded({"nonsense": {}}, "m:v1")


def test_help_imports_no_plugin(site: Path, tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    make_dist(site, "fake-loud", "1.0", {"aitrader.features": {"loud": "fake_loud:KIND"},
                                         "aitrader.models": {"loud_model": "fake_loud:KIND"}},
              {"fake_loud.py": f"open({str(marker)!r}, 'w').write('x')\nKIND = None\n"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path(__file__).resolve().parents[2])])}
    for args in (["--help"], ["train", "--help"], ["paper-trade", "--help"]):
        proc = subprocess.run([sys.executable, "-m", "aitrader", *args], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    listed = subprocess.run([sys.executable, "-m", "aitrader", "features", "list", "--json"], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert listed.returncode == 0 and marker.exists()  # features list loads plug-in kinds ...
    assert "WARNING aitrader.plugins: skipping feature kind plug-in 'loud'" in listed.stderr  # ... skips a bad one
    assert "is a NoneType, not an aitrader.features.kinds.FeatureKind" in listed.stderr


def test_plugins_command_lists_each_plugin_with_its_status(site: Path) -> None:
    import json

    from typer.testing import CliRunner

    from aitrader.cli.main import app

    make_dist(site, "fake-good", "1.2.0", {"aitrader.features": {"roc_pct": "fake_good:KIND",
                                                                 "misnamed": "fake_good:KIND"}},
              {"fake_good.py": GOOD_KIND})
    make_dist(site, "fake-broken", "0.3.0", {"aitrader.strategies": {"bad_strategy": "fake_broken:S"}},
              {"fake_broken.py": "raise RuntimeError('boom')\n"})
    result = CliRunner().invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)["plugins"]}
    assert rows["roc_pct"]["status"] == "ok" and rows["roc_pct"]["error"] is None
    assert rows["roc_pct"]["distribution"] == "fake-good" and rows["roc_pct"]["version"] == "1.2.0"
    assert rows["misnamed"]["status"] == "broken" and "provides 'roc_pct'" in rows["misnamed"]["error"]
    assert rows["bad_strategy"]["error"].startswith("strategy plug-in 'bad_strategy' (fake_broken:S, from "
                                                    "fake-broken 0.3.0) fails to import: RuntimeError: boom")
    assert CliRunner().invoke(app, ["plugins", "--strict"]).exit_code == 1


def test_paper_trade_with_a_broken_strategy_fails_before_the_run_starts(site: Path, in_tmp: Path) -> None:
    from typer.testing import CliRunner

    from aitrader.cli.main import app

    make_dist(site, "fake-broken", "0.3.0", {"aitrader.strategies": {"bad_strategy": "fake_broken:S"}},
              {"fake_broken.py": "raise RuntimeError('boom')\n"})
    (in_tmp / "config").mkdir()
    (in_tmp / "config" / "ml_trading_config.yaml").write_text(
        "ml_trading:\n  models:\n    - {model_id: m, symbol: AAPL, strategy: bad_strategy}\n")
    result = CliRunner().invoke(app, ["paper-trade", "--run-id", "r1", "--speed", "0"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: strategy plug-in 'bad_strategy' (fake_broken:S, from fake-broken 0.3.0) "
                                    "fails to import: RuntimeError: boom")
    assert not (in_tmp / "runs").exists()
