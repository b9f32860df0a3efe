"""A model with order-book features on the bus: ``predict-worker --book`` computes its features from the
same snapshots as ``paper-trade --book`` in one process, so the multi-process ledger equals that one; a
worker started without the snapshots refuses the model with one error line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from aitrader.cli.main import app
from tests.bus.conftest import RedisServer, bus_config, cli, exports, runner

FEATURES = "ret_1,ret_5,rsi_14,book_imbalance_1,book_imbalance_5,book_spread_bps,book_microprice_bps"
TRAIN = """
data: {symbol: SYN}
model: {kind: lightgbm, params: {n_estimators: 20, num_threads: 1}}
split: {n_folds: 2, min_train: 200, holdout: 0.25}
"""


def book_config(prefix: str) -> str:
    """The bus config trading the book model (no circuit breaker), 16 bars a read."""
    return bus_config(prefix, 16, model="synbook", min_confidence=0.55, breaker=False)


@pytest.fixture(scope="module")
def book_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from aitrader.data import write_bars
    from aitrader.data.book import write_book
    from aitrader.data.synthetic import generate_bars, generate_book

    tmp = tmp_path_factory.mktemp("bus_book")
    bars = generate_bars(700, seed=21, freq="1h", signal=0.3)
    write_bars(bars, tmp / "SYN.csv")
    # the traded bars: after the model's first unseen bar, so both sides record every bar (the bus trader
    # has no replay window to cut)
    write_bars(bars.iloc[560:], tmp / "SYN_new.csv")
    write_book(generate_book(bars, seed=22, levels=5, missing=0.05), tmp / "SYN_book.jsonl")
    (tmp / "train.yaml").write_text(TRAIN)
    reg = tmp / "reg"
    for args in (["train", "--config", str(tmp / "train.yaml"), "--data", str(tmp / "SYN.csv"), "--features",
                  FEATURES, "--book", f"SYN={tmp / 'SYN_book.jsonl'}", "--out", str(tmp / "art")],
                 ["register", str(tmp / "art"), "--name", "synbook", "--registry", str(reg)],
                 ["deploy", "--model-id", "synbook", "--registry", str(reg)]):
        result = runner.invoke(app, args, env={"AITRADER_REGISTRY": str(reg)})
        assert result.exit_code == 0, result.stderr
    config = tmp / "inproc.yaml"
    config.write_text(book_config("unused"))
    result = runner.invoke(app, ["paper-trade", "--config", str(config), "--registry", str(reg), "--data",
                                 f"SYN={tmp / 'SYN_new.csv'}", "--book", f"SYN={tmp / 'SYN_book.jsonl'}", "--run-id",
                                 "ref", "--runs-dir", str(tmp / "runs"), "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["fills"] > 3  # the comparison means something
    return {"tmp": tmp, "registry": reg, "reference": exports(tmp / "runs", "ref")}


def _finish(proc: subprocess.Popen[bytes], code: int = 0) -> tuple[str, str]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err.decode()[-3000:]
    return out.decode(), err.decode()


def test_book_model_over_the_bus_equals_in_process(book_world: dict[str, Any], tmp_path: Path,
                                                   redis_server: RedisServer, prefix: str) -> None:
    tmp = book_world["tmp"]
    config = tmp_path / "trading.yaml"
    config.write_text(book_config(prefix))
    env = {"AITRADER_REGISTRY": str(book_world["registry"])}
    common = ("--config", str(config), "--bus", redis_server.url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # without the snapshots the worker refuses the model before touching the streams
        out, err = _finish(cli("predict-worker", *common, cwd=tmp_path, env=env), code=1)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: order-book features (book_imbalance_1, "), err
        assert "pass --book SYN=PATH" in lines[0]

        procs.append(trader := cli("paper-trade", "--json", "--run-id", "bus", *common, cwd=tmp_path, env=env))
        procs.append(worker := cli("predict-worker", "--json", "--max-idle", "3", "--book",
                                   f"SYN={tmp / 'SYN_book.jsonl'}", *common, cwd=tmp_path, env=env))
        _finish(cli("feed", "--json", "--data", f"SYN={tmp / 'SYN_new.csv'}", *common, cwd=tmp_path, env=env))
        summary = json.loads(_finish(trader)[0])
        assert summary["status"] == "finished" and summary["bus"]["dead_letters"] == 0
        assert exports(tmp_path / "runs", "bus") == book_world["reference"]
        _finish(worker)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
