"""One execution model: train's holdout backtest equals a paper-trade of the same holdout, to the cent.

Train on synthetic bars with a trading config (position_size, confidence gate, risk limits, costs
by asset class), register and deploy the artifact into a temporary registry, paper-trade the same
bars (the holdout led by the feature warm-up, as paper-trade's default replay cuts them) with the
same trading config through the CLI, export its fills and equity, and compare. The paper-trade
side is the oracle: a registry-loaded runner, the ledger and the exported tables; the final equity
is also rebuilt by hand from the exported fills and the last close.
"""

from __future__ import annotations

import io
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.config import TrainConfig, build_model, load_trading_config
from aitrader.data import load_bars, write_bars
from aitrader.data.synthetic import generate_bars
from aitrader.training import metrics as M
from aitrader.training.backtest import replay_frame
from aitrader.training.trainer import train

CENT = 0.005

TRADING = """\
ml_trading:
  models:
    - model_id: syn
      symbol: SYN
      min_confidence: {min_confidence}
      position_size: 0.05
  risk_limits: {{max_ml_position_size: 0.05, max_ml_positions: 5, daily_ml_loss_limit: 0.02}}
  execution: {{initial_cash: 250000, asset_class: auto, commission_bps: null, slippage_bps: null}}
  errors: {{prediction_timeout_ms: 1000000}}
"""


def cli(*args: str, env: dict[str, str]) -> str:
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, f"aitrader {' '.join(args)} -> {result.exit_code}\n{result.output}"
    return result.stdout


# Classification confidence is |2 P(up) - 1|: a weak classifier needs a low gate to trade.
@pytest.mark.parametrize(("task", "min_confidence"), [("regression", 0.5), ("classification", 0.05)])
def test_train_backtest_equals_paper_trade_to_the_cent(tmp_path: Path, task: str, min_confidence: float) -> None:
    bars_path = tmp_path / "SYN.csv"
    write_bars(generate_bars(900, seed=11, signal=0.3), bars_path)
    bars = load_bars(bars_path)
    assert bars.attrs["symbol"] == "SYN"
    (tmp_path / "trading.yaml").write_text(TRADING.format(min_confidence=min_confidence))
    trading = load_trading_config(tmp_path / "trading.yaml")
    cfg = build_model(TrainConfig, {"target": {"task": task, "horizon": 5},
                                    "model": {"kind": "lightgbm", "params": {"n_estimators": 40}},
                                    "split": {"n_folds": 3, "min_train": 250}})
    result = train(cfg, bars=bars, out_dir=tmp_path / "art", trading=trading)
    executed = result.manifest["metrics"]["holdout_backtest"]
    run = result.backtest["model"]
    assert run.metrics["fills"] >= 4, "the test needs a model that trades"

    # The bars paper-trade replays by default: the holdout led by the feature warm-up bars.
    frame = replay_frame(bars, pd.Timestamp(result.manifest["split"]["holdout_first"]),
                         result.manifest["features"]["warmup"])
    write_bars(frame, tmp_path / "holdout.csv")
    env = {"AITRADER_REGISTRY": str(tmp_path / "reg"), "NO_COLOR": "1"}
    cli("register", str(tmp_path / "art"), "--name", "syn", env=env)
    cli("deploy", "--model-id", "syn", env=env)
    summary = json.loads(cli("paper-trade", "--config", str(tmp_path / "trading.yaml"), "--data",
                             f"SYN={tmp_path / 'holdout.csv'}", "--runs-dir", str(tmp_path / "runs"),
                             "--run-id", "same", "--speed", "0", "--json", env=env))
    fills = pd.read_csv(io.StringIO(cli("export", "same", "fills", "--runs-dir", str(tmp_path / "runs"), env=env)))
    equity = pd.read_csv(io.StringIO(cli("export", "same", "equity", "--runs-dir", str(tmp_path / "runs"), env=env)))

    # Same costs, resolved the same way (synthetic daily bars trade 7 days a week: crypto).
    assert executed["costs"]["asset_class"] == "crypto"
    assert summary["costs"] == executed["costs"]
    with closing(sqlite3.connect(tmp_path / "runs" / "same" / "ledger.db")) as con:
        (recorded,) = con.execute("SELECT value FROM meta WHERE key = 'costs'").fetchone()
    assert json.loads(recorded) == executed["costs"]
    # Final equity and total return, to the cent.
    assert summary["final_equity"] == pytest.approx(run.metrics["final_equity"], abs=CENT)
    assert summary["final_equity"] == pytest.approx(executed["model"]["final_equity"], abs=CENT)
    initial = summary["initial_cash"]
    assert initial == 250_000
    assert summary["total_return"] * initial == pytest.approx(executed["model"]["total_return"] * initial, abs=CENT)
    assert result.manifest["metrics"]["holdout"]["total_return"] == executed["model"]["total_return"]
    if hasattr(M, "sharpe_ratio"):  # the one metrics module: the summary's figures are the same formulas
        for key in ("sharpe", "max_drawdown", "turnover"):
            assert summary[key] == pytest.approx(executed["model"][key], rel=1e-9, abs=1e-12), key
    # Every fill: time, side, quantity, price and commission.
    assert len(fills) == len(run.fills) == executed["model"]["fills"]
    for (_, paper), ours in zip(fills.iterrows(), run.fills, strict=True):
        assert (paper["ts"], paper["side"]) == (ours["ts"], ours["side"])
        assert paper["quantity"] == pytest.approx(ours["quantity"], abs=1e-8)
        assert paper["price"] * paper["quantity"] == pytest.approx(ours["price"] * ours["quantity"], abs=CENT)
        assert paper["commission"] == pytest.approx(ours["commission"], abs=CENT)
    # Every equity mark.
    assert len(equity) == len(run.equity) == len(frame)
    assert np.max(np.abs(equity.sort_values("bar_index")["equity"].to_numpy() - run.equity)) < CENT
    # The final equity by hand from the exported fills and the last close.
    sign = np.where(fills["side"] == "buy", 1.0, -1.0)
    cash = initial - float(np.sum(sign * fills["quantity"] * fills["price"] + fills["commission"]))
    by_hand = cash + float(np.sum(sign * fills["quantity"])) * float(frame["close"].iloc[-1])
    assert run.metrics["final_equity"] == pytest.approx(by_hand, abs=CENT)


def test_train_cli_labels_the_backtest_with_the_trading_config(tmp_path: Path) -> None:
    write_bars(generate_bars(700, seed=5, signal=0.3), tmp_path / "SYN.csv")
    (tmp_path / "train.yaml").write_text("model: {kind: lightgbm, params: {n_estimators: 20}}\n"
                                         "split: {n_folds: 2, min_train: 200}\n")
    (tmp_path / "trading.yaml").write_text(
        TRADING.format(min_confidence=0.5).replace("asset_class: auto, commission_bps: null, slippage_bps: null",
                                                   "asset_class: equity, commission_bps: 0.5, slippage_bps: null"))
    env = {"NO_COLOR": "1", "COLUMNS": "250"}
    common = ["train", "--config", str(tmp_path / "train.yaml"), "--data", str(tmp_path / "SYN.csv"),
              "--trading-config", str(tmp_path / "trading.yaml"), "--force"]
    text = cli(*common, "--out", str(tmp_path / "a"), env=env)
    assert "signal metrics" in text
    assert ("holdout backtest, next-open fills, costs 2.5 bps (equity: commission 0.5 + slippage 2), "
            "position_size 0.05, min_confidence 0.5") in text
    doc = json.loads(cli(*common, "--out", str(tmp_path / "b"), "--json", env=env))
    executed = doc["metrics"]["holdout_backtest"]
    assert executed["costs"] == {"asset_class": "equity", "commission_bps": 0.5, "slippage_bps": 2.0,
                                 "source": "config + class default", "detected": False}
    assert executed["initial_cash"] == 250_000 and set(executed["baselines"]) == {"zero", "always_long", "prev_sign"}
