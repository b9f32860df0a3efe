"""Issue 10: a model trained on one symbol configured to trade another must not trade it silently.

paper-trade and backtest refuse with one error line naming both symbols and --allow-symbol-mismatch,
whether the symbol comes from a config file or from --data SYMBOL=PATH; the flag lets it trade.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from aitrader.config import TrainConfig
    from aitrader.data.synthetic import generate_bars
    from aitrader.registry import Registry
    from aitrader.training.trainer import train

    base = tmp_path_factory.mktemp("mismatch")
    bars = generate_bars(900, seed=5, signal=0.3)
    bars.attrs["symbol"] = "AAPL"
    cfg = TrainConfig.model_validate({
        "data": {"symbol": "AAPL"},
        "model": {"kind": "lightgbm", "params": {"n_estimators": 5, "num_threads": 1}},
        "split": {"n_folds": 2, "min_train": 300, "holdout": 0.2},
    })
    train(cfg, bars=bars.iloc[:700], out_dir=base / "art")
    reg = Registry(base / "models")
    reg.register(base / "art", "aapl_model")
    reg.deploy("aapl_model", reason="test")
    data = base / "other.csv"
    bars.iloc[650:].rename_axis("timestamp").to_csv(data)
    config = base / "msft.yaml"
    config.write_text("ml_trading:\n  models:\n    - {model_id: aapl_model, symbol: MSFT}\n")
    return {"registry": base / "models", "data": data, "config": config}


def _one_error_line(result) -> str:
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("command", ["paper-trade", "backtest"])
def test_data_symbol_other_than_the_trained_one_is_refused(in_tmp: Path, world, command: str) -> None:
    args = [command, "--model", "aapl_model", "--data", f"MSFT={world['data']}", "--registry",
            str(world["registry"]), "--json"]
    line = _one_error_line(runner.invoke(app, args))
    assert "trained on AAPL" in line and "trade MSFT" in line and "--allow-symbol-mismatch" in line
    assert not (in_tmp / "runs").exists() or not any((in_tmp / "runs").iterdir())
    allowed = runner.invoke(app, [*args, "--allow-symbol-mismatch", "--max-bars", "20"] if command == "paper-trade"
                            else [*args, "--allow-symbol-mismatch"])
    assert allowed.exit_code == 0, allowed.stderr
    doc = json.loads(allowed.stdout)
    run = doc if command == "paper-trade" else doc["run"]
    assert "MSFT" in run["cursor"]


def test_config_file_symbol_other_than_the_trained_one_is_refused(in_tmp: Path, world) -> None:
    args = ["paper-trade", "--config", str(world["config"]), "--data", f"MSFT={world['data']}", "--registry",
            str(world["registry"])]
    line = _one_error_line(runner.invoke(app, args))
    assert "trained on AAPL" in line and "trade MSFT" in line and "msft.yaml" in line
    assert "--allow-symbol-mismatch" in line


def test_the_trained_symbol_trades_without_the_flag(in_tmp: Path, world) -> None:
    args = ["paper-trade", "--model", "aapl_model", "--data", f"AAPL={world['data']}", "--registry",
            str(world["registry"]), "--json", "--max-bars", "20"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert "AAPL" in json.loads(result.stdout)["cursor"]
