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


@pytest.fixture(scope="module")
def runs(world: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The 10-symbol run (Registry.load calls counted) and two of its symbols each traded alone."""
    tmp = tmp_path_factory.mktemp("multisym_runs")
    calls: list[str] = []
    load = Registry.load

    def counted(self: Registry, model_id: str, **kw: Any) -> Any:
        calls.append(model_id)
        return load(self, model_id, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Registry, "load", counted)
        many = _run(world, tmp, SYMBOLS, "all")
    alone = {sym: _run(world, tmp, [sym], f"one_{sym}") for sym in (SYMBOLS[0], SYMBOLS[7])}
    return {"calls": calls, "many": many, "alone": alone}


def test_ten_entries_of_one_model_load_it_once(runs: dict[str, Any]) -> None:
    assert runs["calls"] == ["syn_lgbm:v1"]
    for sym, alone in runs["alone"].items():
        expected = _predictions(alone, sym)
        assert len(expected) > 100
        assert _predictions(runs["many"], sym) == expected


def test_each_symbols_trades_are_its_own_runs_when_no_limit_binds(runs: dict[str, Any]) -> None:
    # Orders are sized on the whole account's equity, which the other symbols move, so the quantities
    # differ; when and which way each symbol trades depends on its own bars only.
    def trades(content: dict[str, list[tuple[Any, ...]]], sym: str) -> list[tuple[Any, ...]]:
        return [(r[2], r[3], r[4]) for r in content["fills"] if r[3] == sym]  # (ts, symbol, side)

    for sym, alone in runs["alone"].items():
        expected = trades(alone, sym)
        assert len(expected) >= 4
        assert trades(runs["many"], sym) == expected
    rejected = [r for r in runs["many"]["events"] if "REJECT" in str(r[2]).upper()]
    assert rejected == []  # no risk limit bound in the 10-symbol run


def test_the_loop_hands_the_frozen_heap_back(runs: dict[str, Any]) -> None:
    import gc

    from aitrader.trading.heap import frozen_depth, frozen_heap

    assert frozen_depth() == 0 and gc.get_freeze_count() == 0  # after the runs above
    with frozen_heap():
        inner = object.__new__(type("Probe", (), {}))  # made after the freeze: not frozen
        assert gc.get_freeze_count() > 0
        with frozen_heap():  # a nested loop keeps the outer one's freeze
            pass
        assert frozen_depth() == 1 and gc.get_freeze_count() > 0
    assert frozen_depth() == 0 and gc.get_freeze_count() == 0 and gc.is_tracked(inner)
