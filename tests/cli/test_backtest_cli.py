"""backtest and paper-trade --model through the CLI, with a real 20-tree LightGBM deployed in a temp registry."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.trading.trades import TRADE_COLUMNS
from tests.model_world import synthetic_world

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("backtest_cli")
    registry, data, bars = synthetic_world(base, n=1400, seed=3, traded_from=900)
    return {"registry": registry, "data": data}


def cli(world: dict[str, Path], *args: str, json_out: bool = True):
    extra = ["--json"] if json_out else []
    return runner.invoke(app, [*args, "--registry", str(world["registry"]), *extra], env={"COLUMNS": "100"})


def test_backtest_equals_paper_trade_to_the_cent(in_tmp: Path, world) -> None:
    data = f"SYN={world['data']}"
    paper = cli(world, "paper-trade", "--model", "syn_lgbm", "--data", data, "--run-id", "p")
    assert paper.exit_code == 0, paper.stderr
    kept = cli(world, "backtest", "--model", "syn_lgbm", "--data", data, "--out-run", "b")
    assert kept.exit_code == 0, kept.stderr
    report = json.loads(kept.stdout)
    p_doc = json.loads(paper.stdout)
    assert report["run"]["final_equity"] == p_doc["final_equity"]
    assert report["performance"]["strategy"]["final_equity"] == p_doc["final_equity"]
    assert report["run"]["fills"] == p_doc["fills"] > 0
    fills_p = runner.invoke(app, ["export", "p", "fills"]).stdout
    fills_b = runner.invoke(app, ["export", "b", "fills"]).stdout
    assert fills_p == fills_b and len(fills_p.splitlines()) > 2
    # without --out-run no ledger is kept, and the figures are the same
    temp = cli(world, "backtest", "--model", "syn_lgbm", "--data", data)
    assert temp.exit_code == 0, temp.stderr
    doc = json.loads(temp.stdout)
    assert doc["run"]["final_equity"] == p_doc["final_equity"] and doc["run"]["state_dir"] is None
    # the temporary ledger skips the feature rows (nothing reads them): the same report to the digit
    assert doc["performance"] == report["performance"] and doc["trades"] == report["trades"]
    from aitrader.trading.ledger import PREDICTION_COLUMNS, ledger_content

    at = PREDICTION_COLUMNS.index("features") - 1  # ledger_content drops the id column
    kept_rows = ledger_content(in_tmp / "runs" / "b" / "ledger.db")["predictions"]
    assert kept_rows and all(r[at] is not None for r in kept_rows if r[7] == "model")  # --out-run keeps them
    assert sorted(p.name for p in (in_tmp / "runs").iterdir()) == ["b", "p"]
    # export RUN trades: the same round trips as the report
    trades = runner.invoke(app, ["export", "b", "trades"])
    assert trades.exit_code == 0, trades.stderr
    table = pd.read_csv(io.StringIO(trades.stdout))
    assert tuple(table.columns) == TRADE_COLUMNS
    assert len(table) == len(report["trades"]) == report["performance"]["strategy"]["trades"] > 0
    assert table["pnl"].tolist() == pytest.approx([t["pnl"] for t in report["trades"]])
    assert (table["mae"] <= 0).all() and (table["mfe"] >= 0).all()


def test_report_figures_against_a_second_computation(in_tmp: Path, world) -> None:
    result = cli(world, "backtest", "--model", "syn_lgbm", "--data", f"SYN={world['data']}")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    perf = report["performance"]
    bars = pd.read_csv(world["data"], index_col=0)
    costs = perf["window"]["costs"]
    assert perf["window"]["bars"] == len(bars)  # the file starts after the training period: all traded
    # buy-and-hold: one buy at the second bar's open (the first fill any order can get), same costs
    price = bars["open"].iloc[1] * (1 + costs["slippage_bps"] / 1e4)
    fee = costs["commission_bps"] / 1e4
    qty = math.floor(100_000 / (price * (1 + fee)) * 1e8) / 1e8
    final = 100_000 - qty * price * (1 + fee) + qty * bars["close"].iloc[-1]
    hold = perf["buy_and_hold"]
    assert hold["final_equity"] == pytest.approx(final, rel=1e-12)
    assert hold["fees"] == pytest.approx(qty * price * fee)
    assert hold["exposure"] == pytest.approx((len(bars) - 1) / len(bars))
    # strategy: the trade figures from the trades list
    trades = report["trades"]
    wins = [t["pnl"] for t in trades if t["pnl"] > 0]
    losses = [t["pnl"] for t in trades if t["pnl"] < 0]
    strat = perf["strategy"]
    assert strat["win_rate"] == pytest.approx(len(wins) / len(trades))
    assert strat["profit_factor"] == pytest.approx(sum(wins) / -sum(losses))
    assert strat["total_return"] == pytest.approx(strat["final_equity"] / 100_000 - 1)
    assert 0 < strat["exposure"] < 1 and strat["fees"] > 0


def test_readable_table_at_100_columns(in_tmp: Path, world) -> None:
    result = cli(world, "backtest", "--model", "syn_lgbm", "--data", f"SYN={world['data']}", json_out=False)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for label in ("buy & hold", "Total return", "CAGR", "Max drawdown duration", "Exposure", "Win rate",
                  "Profit factor", "trades (", "MAE", "costs:"):
        assert label in out
    assert max(len(line) for line in out.splitlines()) <= 100
    from aitrader.cli.backtest import MAX_TRADE_ROWS

    doc = json.loads(cli(world, "backtest", "--model", "syn_lgbm", "--data", f"SYN={world['data']}").stdout)
    n = len(doc["trades"])  # the table's count and tail come from the columns, not from the JSON's records
    assert n > MAX_TRADE_ROWS and f"trades ({n}, last {MAX_TRADE_ROWS})" in out


def test_paper_trade_model_without_yaml_takes_the_trained_symbol(in_tmp: Path, world) -> None:
    assert not (in_tmp / "config").exists()  # the packaged defaults, which name the demo model aapl_lgbm
    result = cli(world, "paper-trade", "--model", "syn_lgbm@production", "--data", str(world["data"]),
                 "--run-id", "r", "--max-bars", "50")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["bars"] == 50 and "SYN" in doc["cursor"]
    from aitrader.trading.ledger import connect

    conn = connect(in_tmp / "runs" / "r" / "ledger.db", readonly=True)
    try:
        config = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
    finally:
        conn.close()
    assert [(m["model_id"], m["symbol"]) for m in config["ml_trading"]["models"]] == [("syn_lgbm@production", "SYN")]
    resumed = cli(world, "paper-trade", "--resume", "r", "--max-bars", "10")
    assert resumed.exit_code == 0, resumed.stderr
    again = cli(world, "paper-trade", "--resume", "r", "--model", "syn_lgbm")
    assert again.exit_code == 1 and "--model cannot change a resumed run" in again.stderr


def test_errors_name_the_config_and_the_deployed_models(in_tmp: Path, world) -> None:
    default = cli(world, "paper-trade", "--data", str(world["data"]))
    assert default.exit_code == 1 and default.stdout == ""
    err = default.stderr
    assert err.startswith("error: model aapl_lgbm (from ") and "ml_trading_config.yaml) has no production" in err
    assert "deployed models: syn_lgbm@production; pass --model syn_lgbm" in err
    unknown = cli(world, "backtest", "--model", "spy_lgbm", "--data", str(world["data"]))
    assert unknown.exit_code == 1 and "spy_lgbm" in unknown.stderr and "pass --model syn_lgbm" in unknown.stderr
    no_data = cli(world, "backtest", "--model", "syn_lgbm")
    assert no_data.exit_code == 1 and "pass --data SYN=PATH" in no_data.stderr
    assert len(no_data.stderr.strip().splitlines()) == 1


def test_backtest_report_writes_the_tearsheet_with_every_chart(in_tmp: Path, world) -> None:
    from aitrader.monitoring.tearsheet import CHARTS
    from tests.unit.test_tearsheet import check_png, images

    result = cli(world, "backtest", "--model", "syn_lgbm", "--data", f"SYN={world['data']}",
                 "--report", "out/bt.html")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["report"] == "out/bt.html"
    page = (in_tmp / "out" / "bt.html").read_text(encoding="utf-8")
    pngs = images(page)
    assert set(pngs) == set(CHARTS), sorted(pngs)
    for name, data in pngs.items():
        check_png(name, data)
    assert not (in_tmp / "runs").exists()  # the temporary ledger is gone, the report stays


def test_backtest_workers_give_the_same_document_and_a_bad_value_is_one_error_line(in_tmp: Path, world) -> None:
    data = f"SYN={world['data']}"
    docs = []
    for workers in ("1", "2", "auto"):
        res = cli(world, "backtest", "--model", "syn_lgbm", "--data", data, "--workers", workers)
        assert res.exit_code == 0, res.stderr
        docs.append(json.loads(res.stdout))
    assert docs[0] == docs[1] == docs[2]
    assert docs[0]["run"]["fills"] > 0
    bad = cli(world, "backtest", "--model", "syn_lgbm", "--data", data, "--workers", "0")
    assert bad.exit_code == 1
    assert bad.stderr.strip().splitlines() == [
        "error: --workers must be auto or a whole number >= 1 (1: no worker threads), got 0"]
    assert bad.stdout == ""
