"""One small deployed model for the tests that trade through the CLI (several modules share it)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def deploy_small_model(base: Path, bars: pd.DataFrame, *, name: str = "syn_lgbm", n_estimators: int = 20,
                       train_rows: int = 1000, symbol: str = "SYN") -> Path:
    """Train a LightGBM on ``bars[:train_rows]`` (2 purged folds, 20% holdout), register it as ``name`` in
    ``base/models`` and deploy it to production; returns the registry root. The artifact is ``base/art``."""
    from aitrader.config import TrainConfig
    from aitrader.registry import Registry
    from aitrader.training.trainer import train

    cfg = TrainConfig.model_validate({
        "data": {"symbol": symbol},
        "model": {"kind": "lightgbm", "params": {"n_estimators": n_estimators, "num_threads": 1}},
        "split": {"n_folds": 2, "min_train": 300, "holdout": 0.2},
    })
    train(cfg, bars=bars.iloc[:train_rows], out_dir=base / "art")
    reg = Registry(base / "models")
    reg.register(base / "art", name)
    reg.deploy(name, reason="test")
    reg.close()
    return base / "models"


def synthetic_world(base: Path, *, n: int, seed: int, traded_from: int, n_estimators: int = 20,
                    name: str = "syn_lgbm", suffix: str = ".csv") -> tuple[Path, Path, pd.DataFrame]:
    """``n`` synthetic bars (``generate_bars(n, seed, signal=0.3)``), a model deployed by
    :func:`deploy_small_model` on them, and ``base/SYN.csv`` (or ``.parquet``) holding ``bars[traded_from:]``
    to trade: (registry root, the bar file, the bars)."""
    from aitrader.data.synthetic import generate_bars

    bars = generate_bars(n, seed=seed, signal=0.3)
    registry = deploy_small_model(base, bars, name=name, n_estimators=n_estimators)
    data = base / f"SYN{suffix}"
    traded = bars.iloc[traded_from:].rename_axis("timestamp")
    traded.to_parquet(data) if suffix == ".parquet" else traded.to_csv(data)
    return registry, data, bars


def traded_world(base: Path, config: str, *, seed: int, suffix: str = ".csv") -> Path:
    """:func:`synthetic_world` (a 10-tree model on 1,200 bars, the last 300 to trade in ``SYN{suffix}``),
    ``config`` as ``trading.yaml`` and run ``r1`` paper-traded on them, finished with fills: ``base``."""
    from aitrader.trading.service import paper_trade

    _, data, _ = synthetic_world(base, n=1200, seed=seed, traded_from=900, n_estimators=10, suffix=suffix)
    (base / "trading.yaml").write_text(config)
    summary = paper_trade(config_path=str(base / "trading.yaml"), data=[str(data)], run_id="r1",
                          runs_dir=str(base / "runs"), registry_root=str(base / "models"))
    assert summary["status"] == "finished" and summary["fills"] > 0
    return base
