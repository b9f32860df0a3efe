"""Several symbols traded by one model (issue 11): the model version is loaded and verified once per run,
and each symbol's predictions are those of the same symbol traded alone (independent per-symbol runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aitrader.registry import Registry
from aitrader.trading.ledger import ledger_content
from aitrader.trading.service import paper_trade
from tests.model_world import deploy_small_model

SYMBOLS = [f"S{k}" for k in range(10)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from aitrader.data.synthetic import generate_bars

    base = tmp_path_factory.mktemp("multisym")
    registry = deploy_small_model(base, generate_bars(1000, seed=3, signal=0.3, freq="1h", start="2020-01-01"),
                                  n_estimators=10)
    data = {}
    for k, sym in enumerate(SYMBOLS):  # bars after the training period, uneven lengths and starts
        frame = generate_bars(300 + 10 * k, seed=40 + k, signal=0.3, freq="1h", start=f"2021-01-0{1 + k % 5}")
        data[sym] = base / f"{sym}.csv"
        frame.rename_axis("timestamp").to_csv(data[sym])
    return {"base": base, "registry": registry, "data": data}


def _config(base: Path, symbols: list[str]) -> Path:
    lines = "\n".join(f"    - {{model_id: syn_lgbm, symbol: {s}, min_confidence: 0.55, position_size: 0.02}}"
                      for s in symbols)
    path = base / f"cfg_{'_'.join(symbols)}.yaml"
    path.write_text(f"ml_trading:\n  models:\n{lines}\n  errors: {{prediction_timeout_ms: 5000}}\n")
    return path


def _run(world: dict[str, Any], tmp: Path, symbols: list[str], run_id: str) -> dict[str, list[tuple[Any, ...]]]:
    paper_trade(config_path=str(_config(world["base"], symbols)), data=[f"{s}={world['data'][s]}" for s in symbols],
                run_id=run_id, registry_root=str(world["registry"]), runs_dir=str(tmp / "runs"),
                allow_symbol_mismatch=True)
    return ledger_content(tmp / "runs" / run_id / "ledger.db")


def _predictions(content: dict[str, list[tuple[Any, ...]]], symbol: str) -> list[tuple[Any, ...]]:
    # (ts, symbol, model_id, digest, prediction, confidence, source, features): the columns that do not
    # depend on the other symbols of the run (ids and bar_index count over all symbols' bars)
    return [(r[1], r[3], r[4], r[5], r[6], r[7], r[8], r[10]) for r in content["predictions"] if r[3] == symbol]


def test_ten_entries_of_one_model_load_it_once(world: dict[str, Any], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    load = Registry.load

    def counted(self: Registry, model_id: str, **kw: Any) -> Any:
        calls.append(model_id)
        return load(self, model_id, **kw)

    monkeypatch.setattr(Registry, "load", counted)
    many = _run(world, tmp_path, SYMBOLS, "all")
    assert calls == ["syn_lgbm:v1"]
    for sym in (SYMBOLS[0], SYMBOLS[7]):
        alone = _run(world, tmp_path, [sym], f"one_{sym}")
        expected = _predictions(alone, sym)
        assert len(expected) > 100
        assert _predictions(many, sym) == expected
