"""paper-trade/backtest --model: the trading config built in memory (aitrader.trading.service.with_models)."""

from __future__ import annotations

from aitrader.config import TradingConfig
from aitrader.trading.service import SYMBOL_FROM_MANIFEST, with_models

CFG = TradingConfig.model_validate({"ml_trading": {"enabled": False, "models": [
    {"model_id": "aapl_lgbm", "symbol": "AAPL", "min_confidence": 0.7, "position_size": 0.03},
    {"model_id": "spy_lgbm", "symbol": "SPY", "min_confidence": 0.2, "position_size": 0.04, "weight": 2.0},
]}})


def _entries(cfg: TradingConfig) -> list[tuple]:
    return [(m.model_id, m.symbol, m.min_confidence, m.position_size, m.weight) for m in cfg.ml_trading.models]


def test_one_model_one_pair_takes_the_pair_symbol_and_its_namesake_sizing() -> None:
    cfg = with_models(CFG, ["spy_lgbm@staging"], ["QQQ=/x/q.csv"])
    assert cfg.ml_trading.enabled is True
    assert _entries(cfg) == [("spy_lgbm@staging", "QQQ", 0.2, 0.04, 2.0)]


def test_bare_path_leaves_the_symbol_to_the_manifest_and_sizing_to_the_first_entry() -> None:
    cfg = with_models(CFG, ["new_model:v3"], ["/x/file.csv"])
    assert _entries(cfg) == [("new_model:v3", SYMBOL_FROM_MANIFEST, 0.7, 0.03, 1.0)]


def test_pairs_match_models_in_order_else_the_manifest_decides() -> None:
    cfg = with_models(CFG, ["a", "b"], ["X=/x.csv", "Y=/y.csv"])
    assert [m.symbol for m in cfg.ml_trading.models] == ["X", "Y"]
    cfg = with_models(CFG, ["a", "b"], ["X=/x.csv"])
    assert [m.symbol for m in cfg.ml_trading.models] == [SYMBOL_FROM_MANIFEST] * 2
    assert _entries(CFG)[0] == ("aapl_lgbm", "AAPL", 0.7, 0.03, 1.0)  # the original is untouched
