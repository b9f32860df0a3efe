"""Order-book features through the whole lifecycle: train with --book -> register -> deploy -> paper-trade
with --book; the live (streaming) feature rows and predictions equal the batch evaluation of the same bars
and snapshots, a model that needs a book refuses to paper-trade without one, and a resumed run re-reads
the snapshots it started with."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.data import load_bars, write_bars
from aitrader.data.book import load_book, write_book
from aitrader.data.synthetic import generate_bars, generate_book
from aitrader.features import FeaturePipeline
from aitrader.training.backtest import replay_frame

FEATURES = "ret_1,ret_5,rsi_14,book_imbalance_1,book_imbalance_5,book_spread_bps,book_microprice_bps," \
           "book_depth_change_5,book_mid_gap_bps"
TRAIN = """\
model: {kind: lightgbm, params: {n_estimators: 40}}
target: {horizon: 5}
split: {n_folds: 3, min_train: 250}
"""


def cli(*args: str, env: dict[str, str], code: int = 0) -> tuple[str, str]:
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == code, f"aitrader {' '.join(args)} -> {result.exit_code}\n{result.output}"
    return result.stdout, result.stderr


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("book")
    bars = generate_bars(800, seed=21, freq="1h", signal=0.3)
    write_bars(bars, tmp / "SYN.csv")
    write_book(generate_book(bars, seed=22, levels=5, missing=0.05), tmp / "SYN_book.jsonl")
    (tmp / "train.yaml").write_text(TRAIN)
    env = {"AITRADER_REGISTRY": str(tmp / "reg"), "NO_COLOR": "1"}
    out, _ = cli("train", "--config", str(tmp / "train.yaml"), "--data", str(tmp / "SYN.csv"), "--features", FEATURES,
                 "--book", f"SYN={tmp / 'SYN_book.jsonl'}", "--out", str(tmp / "art"), "--json", env=env)
    cli("register", str(tmp / "art"), "--name", "synbook", env=env)
    cli("deploy", "--model-id", "synbook", env=env)
    live, _ = cli("paper-trade", "--model", "synbook", "--data", f"SYN={tmp / 'SYN.csv'}", "--book",
                  f"SYN={tmp / 'SYN_book.jsonl'}", "--runs-dir", str(tmp / "runs"), "--run-id", "live", "--json",
                  env=env)
    return {"tmp": tmp, "env": env, "train": json.loads(out), "live": json.loads(live)}


def test_the_manifest_records_the_book_input_and_snapshots(world: dict) -> None:
    tmp: Path = world["tmp"]  # type: ignore[assignment]
    manifest = json.loads((tmp / "art" / "manifest.json").read_text())
    assert manifest["features"]["inputs"] == ["bars", "book"]
    book = manifest["data"]["book"]
    assert book["source"] == "SYN_book.jsonl" and book["levels"] == 5
    assert book["snapshots"] == len(load_book(tmp / "SYN_book.jsonl"))
    assert manifest["metrics"]["holdout_backtest"]["model"]["fills"] > 0


def test_paper_trade_without_the_book_is_refused(world: dict) -> None:
    tmp: Path = world["tmp"]  # type: ignore[assignment]
    _, err = cli("paper-trade", "--model", "synbook", "--data", f"SYN={tmp / 'SYN.csv'}", "--runs-dir",
                 str(tmp / "runs"), "--run-id", "nobook", env=world["env"], code=1)  # type: ignore[arg-type]
    assert err.startswith("error: order-book features (book_imbalance_1, ") and err.count("\n") == 1
    assert "need depth-of-market snapshots for SYN; pass --book SYN=PATH" in err
    assert not (tmp / "runs" / "nobook").exists()  # nothing half-written
    _, err = cli("paper-trade", "--model", "synbook", "--data", f"SYN={tmp / 'SYN.csv'}", "--book",
                 f"OTHER={tmp / 'SYN_book.jsonl'}", "--runs-dir", str(tmp / "runs"), "--run-id", "other",
                 env=world["env"], code=1)  # type: ignore[arg-type]
    assert "snapshots for SYN, but --book names only OTHER; pass --book SYN=PATH" in err


def test_paper_trade_streams_the_batch_features_and_predictions(world: dict) -> None:
    tmp: Path = world["tmp"]  # type: ignore[assignment]
    env: dict[str, str] = world["env"]  # type: ignore[assignment]
    runs = str(tmp / "runs")
    summary: dict = world["live"]  # type: ignore[assignment]
    assert summary["status"] == "finished" and summary["errors"] == {}
    # the same engine as train's holdout backtest on the same bars: the same result
    executed = world["train"]["metrics"]["holdout_backtest"]["model"]  # type: ignore[index]
    assert summary["fills"] == executed["fills"] > 0
    assert summary["final_equity"] == pytest.approx(executed["final_equity"], abs=0.005)

    preds = pd.read_csv(io.StringIO(cli("export", "live", "predictions", "--runs-dir", runs, env=env)[0]))
    assert len(preds) > 100
    # Oracle: the batch evaluator over the bars paper-trade replays (the holdout led by the warm-up) and the
    # whole snapshot file, then the artifact's runner.
    manifest = json.loads((tmp / "art" / "manifest.json").read_text())
    bars = replay_frame(load_bars(tmp / "SYN.csv"), pd.Timestamp(manifest["split"]["holdout_first"]),
                        manifest["features"]["warmup"])
    pipe = FeaturePipeline.from_contract(manifest["features"]).with_book(load_book(tmp / "SYN_book.jsonl"))
    batch = pipe.transform(bars)
    rows = batch.loc[pd.DatetimeIndex(preds["ts"])].to_numpy()
    live = np.array([json.loads(f) for f in preds["features"]])
    np.testing.assert_allclose(live, rows.astype(np.float32), rtol=0, atol=1e-7 * np.abs(rows).max())  # float32 store
    from aitrader.models.runner import ModelRunner

    runner = ModelRunner.from_artifact(tmp / "art", manifest)
    np.testing.assert_allclose(preds["prediction"].to_numpy(), runner.predict_batch(rows), rtol=1e-6, atol=1e-9)
    # bars whose snapshot was older than max_age have NaN book features: no prediction was made for them
    stale = batch.iloc[manifest["features"]["warmup"]:]
    traded = stale.loc[stale.index >= pd.Timestamp(preds["ts"].iloc[0])]
    assert traded.isna().any(axis=1).sum() == summary["bars"] - manifest["features"]["warmup"] - len(preds) > 0


def test_a_resumed_run_and_backtest_read_the_same_book(world: dict) -> None:
    tmp: Path = world["tmp"]  # type: ignore[assignment]
    env: dict[str, str] = world["env"]  # type: ignore[assignment]
    runs = str(tmp / "runs")
    cli("paper-trade", "--model", "synbook", "--data", f"SYN={tmp / 'SYN.csv'}", "--book",
        f"SYN={tmp / 'SYN_book.jsonl'}", "--runs-dir", runs, "--run-id", "part", "--max-bars", "120", env=env)
    out, _ = cli("paper-trade", "--resume", "part", "--runs-dir", runs, "--json", env=env)
    resumed, uninterrupted = json.loads(out), world["live"]
    assert resumed["status"] == "finished"
    assert resumed["final_equity"] == uninterrupted["final_equity"] and resumed["fills"] == uninterrupted["fills"]
    backtest, _ = cli("backtest", "--model", "synbook", "--data", f"SYN={tmp / 'SYN.csv'}", "--book",
                      f"SYN={tmp / 'SYN_book.jsonl'}", "--json", env=env)
    assert json.loads(backtest)["run"]["final_equity"] == uninterrupted["final_equity"]


def test_train_without_the_book_names_the_option(world: dict) -> None:
    tmp: Path = world["tmp"]  # type: ignore[assignment]
    _, err = cli("train", "--config", str(tmp / "train.yaml"), "--data", str(tmp / "SYN.csv"), "--features",
                 FEATURES, "--out", str(tmp / "art2"), env=world["env"], code=1)  # type: ignore[arg-type]
    assert err.startswith("error: order-book features (book_imbalance_1, ")
    assert "snapshots for SYN; pass --book SYN=PATH or set data.book in the train config" in err
    assert not (tmp / "art2").exists()
    bad = tmp / "bad_book.csv"
    bad.write_text("timestamp,bid_px_1,bid_sz_1,ask_px_1,ask_sz_1\n2020-01-01T00:00:00,101,1,100,1\n")
    _, err = cli("train", "--config", str(tmp / "train.yaml"), "--data", str(tmp / "SYN.csv"), "--features",
                 FEATURES, "--book", str(bad), "--out", str(tmp / "art3"), env=world["env"], code=1)  # type: ignore[arg-type]
    assert err == ("error: bad_book.csv: row 1 (2020-01-01): crossed book: best bid 101.0 > best ask 100.0; drop the "
                   "snapshot or fix its levels (a book with bid > ask cannot be traded)\n")
    assert not (tmp / "art3").exists()


def test_retrain_scores_a_book_champion_on_the_configured_snapshots(world: dict) -> None:
    """retrain's champion is evaluated through its own feature contract; with book features that needs
    the snapshots the retrain config names (data.book), or the comparison would have no champion."""
    tmp: Path = world["tmp"]  # type: ignore[assignment]
    names = FEATURES.split(",")
    (tmp / "retrain.yaml").write_text(
        TRAIN.replace("n_estimators: 40", "n_estimators: 41")  # another config: not the 'unchanged' shortcut
        + f"features: {{names: [{', '.join(names)}]}}\n"
        + f"data: {{path: {tmp / 'SYN.csv'}, book: {{SYN: {tmp / 'SYN_book.jsonl'}}}}}\n")
    out, _ = cli("retrain", "--name", "synbook", "--config", str(tmp / "retrain.yaml"), "--runs-dir",
                 str(tmp / "runs"), "--json", env=world["env"])  # type: ignore[arg-type]
    result = json.loads(out)
    assert result["status"] != "skipped", result
    # the champion (synbook:v1, 40 trees) and the challenger (41 trees) are both scored on the holdout
    champion, challenger = result["champion"]["scores"]["ic"], result["challenger"]["scores"]["ic"]
    assert np.isfinite(champion) and np.isfinite(challenger) and champion != challenger, result
    assert result["holdout_rows"] > 100 and result["decision"].startswith(("keep champion", "promote")), result
