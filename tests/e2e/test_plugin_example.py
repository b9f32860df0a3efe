"""examples/plugin, installed the way a user installs it, through the whole lifecycle.

Once per session the package is installed with ``pip install --no-deps --target SITE`` (a copy of
the folder, so the in-tree build files stay out of the repository; the venv is not touched), and
SITE goes on PYTHONPATH for the subprocess CLI runs. Without SITE on the path, deploying its model
is refused with one line naming the missing plug-in.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aitrader import plugins

REPO = Path(__file__).resolve().parents[2]

TRAIN = """\
data: {path: null, symbol: AAPL}
target: {horizon: 5, task: regression}
features: {names: [efficiency_ratio_10, rsi_14, volatility_20, sma_ratio_20, volume_zscore_20]}
model: {kind: hist_gbr, params: {max_iter: 40}, random_state: 7}
split: {n_folds: 3, embargo: 5, holdout: 0.2, min_train: 250}
"""

TRADING = """\
ml_trading:
  models:
    - {model_id: aapl_hgb, symbol: AAPL, strategy: long_scaled, min_confidence: 0.3, position_size: 0.05}
"""


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("plugin-src") / "plugin"
    shutil.copytree(REPO / "examples" / "plugin", source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = tmp_path_factory.mktemp("plugin-site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                           str(source)], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    return site


@pytest.fixture
def installed(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example plug-in importable in this process (caches reset before and after)."""
    monkeypatch.syspath_prepend(str(plugin_site))
    plugins.reset()
    yield plugin_site
    plugins.reset()


def test_the_example_passes_the_contract_kit(installed: Path) -> None:
    from aitrader.features.kinds import get_kind
    from aitrader.models import model_class
    from aitrader.testing import check_feature_kind, check_model_adapter, check_strategy
    from aitrader.trading.strategy import strategy_class

    found = {g: plugins.discover(g) for g in ("features", "models", "strategies")}
    assert {g: sorted(f) for g, f in found.items()} == {"features": ["efficiency_ratio"], "models": ["hist_gbr"],
                                                        "strategies": ["long_scaled"]}
    assert {f.distribution for g in found.values() for f in g.values()} == {"aitrader-example-plugin"}
    assert check_feature_kind(get_kind("efficiency_ratio"))["max_parity_diff"] <= 1e-7
    check_model_adapter(model_class("hist_gbr"), params={"max_iter": 30})
    check_strategy(strategy_class("long_scaled"))


def test_the_example_feature_against_a_hand_computed_value(installed: Path) -> None:
    from aitrader.features import FeaturePipeline

    closes = [10.0, 11.0, 10.0, 12.0, 12.0, 12.0, 12.0, 12.0, 12.0, 12.0, 12.0, 13.0, 11.0]
    bars = pd.DataFrame({"open": closes, "high": closes, "low": closes, "close": closes, "volume": 1.0},
                        index=pd.date_range("2024-01-01", periods=len(closes), freq="D", name="timestamp"))
    pipeline = FeaturePipeline(["er_10"])  # the plug-in's alias
    assert pipeline.names == ["efficiency_ratio_10"]
    batch = pipeline.transform(bars)["efficiency_ratio_10"].to_numpy()
    stream = pipeline.transform_streaming(bars)["efficiency_ratio_10"].to_numpy()
    # bar 10: |12 - 10| / (1 + 1 + 2) = 0.5; bar 11: |13 - 11| / (1 + 2 + 1) = 0.5; bar 12: |11 - 10| / (2 + 1 + 2)
    expected = [0.5, 0.5, 0.2]
    np.testing.assert_allclose(batch[10:], expected, rtol=1e-15)
    np.testing.assert_allclose(stream[10:], expected, rtol=1e-15)
    assert np.isnan(batch[:10]).all() and np.isnan(stream[:10]).all()


def _cli(args: list[str], cwd: Path, site: Path | None, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    path = [str(site)] if site is not None else []
    env = {**os.environ, "AITRADER_REGISTRY": str(cwd / "models"), "NO_COLOR": "1",
           "PYTHONPATH": os.pathsep.join([*path, str(REPO)])}
    proc = subprocess.run([sys.executable, "-m", "aitrader", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode in ok, f"aitrader {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_lifecycle_with_the_example_plugin_and_refusal_without_it(plugin_site: Path, tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "train.yaml").write_text(TRAIN)
    (tmp_path / "config" / "ml_trading_config.yaml").write_text(TRADING)

    _cli(["train", "--out", "art", "--json"], tmp_path, plugin_site)
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["model"]["kind"] == "hist_gbr"
    record = {"distribution": "aitrader-example-plugin", "version": "0.1.0"}
    module = "aitrader_example_plugin"
    assert manifest["plugins"] == {
        "features": {"efficiency_ratio": {**record, "entry_point": f"{module}.features:EFFICIENCY_RATIO"}},
        "models": {"hist_gbr": {**record, "entry_point": f"{module}.model:HistGBRModel"}}}
    _cli(["register", "art", "--name", "aapl_hgb", "--trust-pickle", "--json"], tmp_path, plugin_site)

    # Without the plug-in on the path: one line naming it and how to install it; nothing promoted.
    refused = _cli(["deploy", "--model-id", "aapl_hgb"], tmp_path, None, ok=(1,))
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith("error: deploy check loads failed for aapl_hgb:v1: aapl_hgb:v1 needs the feature kind "
                               "plug-in 'efficiency_ratio' from aitrader-example-plugin 0.1.0, which is not installed; "
                               "install it (pip install 'aitrader-example-plugin==0.1.0')")
    listed = json.loads(_cli(["list", "--json"], tmp_path, None).stdout)
    assert "production" not in json.dumps(listed)

    deployed = json.loads(_cli(["deploy", "--model-id", "aapl_hgb", "--json"], tmp_path, plugin_site).stdout)
    assert {c["name"]: c["status"] for c in deployed["checks"]}["loads"] == "passed"
    summary = json.loads(_cli(["paper-trade", "--run-id", "r1", "--speed", "0", "--json"], tmp_path,
                              plugin_site).stdout)
    assert summary["status"] == "finished" and summary["predictions"] > 100 and summary["fills"] > 0
    # long_scaled, not ml_regression, made the votes: the position never goes short.
    fills = list(csv.DictReader(io.StringIO(_cli(["export", "r1", "fills"], tmp_path, plugin_site).stdout)))
    position, lowest = 0.0, 0.0
    for fill in fills:
        position += float(fill["quantity"]) * (1 if fill["side"].lower() == "buy" else -1)
        lowest = min(lowest, position)
    assert fills and lowest >= -1e-9
