"""backtest's report from the prices the replay read (``BarTap``) == the frozen whole-frame report, with no
second pass over the bar files; and when the tap did not see every bar, the report reads them again and is
still the same.

Oracle: the frozen whole-frame report of tests/cli/test_backtest_blocks.py (main's implementation before
the blocks), on synthetic bars replayed in many small blocks, and hand-made blocks for the tap itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import aitrader.trading.backtest as B
import aitrader.trading.service as service
import aitrader.trading.sources as sources
from tests.cli.test_backtest_blocks import backtest_and_oracle, same_json
from tests.model_world import synthetic_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("backtest_tap")
    registry, data, bars = synthetic_world(base, n=1500, seed=11, traded_from=700)
    return {"registry": registry, "data": data}


def passes_after_the_replay(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the first row of every pass over a series' file that starts after the replay ended."""
    after: list[int] = []
    done = {"replay": False}
    real_paper, real_own = service.paper_trade, sources.BarSeries.own_blocks

    def paper(**kw: Any) -> dict[str, Any]:
        out = real_paper(**kw)
        done["replay"] = True
        return out

    def own_blocks(self: sources.BarSeries, a: int = 0, *, size: int = sources.REPLAY_CHUNK) -> Any:
        if done["replay"]:
            after.append(a)
        return real_own(self, a, size=size)

    monkeypatch.setattr(service, "paper_trade", paper)
    monkeypatch.setattr(sources.BarSeries, "own_blocks", own_blocks)
    return after


@pytest.mark.parametrize("drop", [None, 2])
def test_report_from_the_tapped_blocks_equals_the_whole_frame_report(world: dict[str, Path], tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      drop: int | None) -> None:
    """The replay read in blocks of 50 bars (16 blocks of the 788 replayed); ``drop``: the tap misses its
    3rd block, so the report must read the file again (the fallback) and still give the same figures."""
    real_init = sources.SharedPass.__init__
    monkeypatch.setattr(sources.SharedPass, "__init__", lambda self, series, size: real_init(self, series, 50))
    monkeypatch.setattr(B, "SCAN_ROWS", 7)  # the report's pieces cut across the replay's blocks
    seen: list[int] = []
    real_call = B.BarTap.__call__

    def call(self: B.BarTap, series: sources.BarSeries, block: tuple[int, np.ndarray, np.ndarray]) -> None:
        seen.append(block[0])
        if len(seen) - 1 != drop:
            real_call(self, series, block)

    monkeypatch.setattr(B.BarTap, "__call__", call)
    after = passes_after_the_replay(monkeypatch)
    got, oracle = backtest_and_oracle(monkeypatch, tmp_path, None, models=["syn_lgbm"],
                                      data=[f"SYN={world['data']}"], registry_root=str(world["registry"]))
    assert seen == list(range(0, 788, 50))  # every block once, in order
    assert len(got["trades"]) > 5 and any(t["bars"] > 7 for t in got["trades"])
    assert same_json(got["performance"], oracle["performance"])
    assert same_json(got["trades"], oracle["trades"])
    if drop is None:
        assert after == []  # the report read no bar file
    else:
        assert len(after) == 1 and 0 < after[0] < 150  # one pass again, from the first traded row (after warm-up)


def test_tap_pieces_by_hand() -> None:
    idx = pd.date_range("2024-01-01", periods=10, freq="1h")
    df = pd.DataFrame({"open": np.arange(10.0), "high": np.arange(10.0) + 100, "low": np.arange(10.0) + 200,
                       "close": np.arange(10.0) + 300, "volume": 1.0}, index=idx)
    series = sources.BarSeries.from_frame("X", df)
    values = df[["open", "high", "low", "close", "volume"]].to_numpy().T
    tap = B.BarTap()
    tap(series, (0, np.arange(4), values[:, :4]))
    assert tap.blocks(series, 0, 3) is None  # rows 4..9 not seen
    tap(series, (4, np.arange(6), values[:, 4:]))
    pieces = list(tap.blocks(series, 5, 3) or [])
    assert [(k, v[3].tolist()) for k, _, v in pieces] == [(5, [305.0, 306.0, 307.0]), (8, [308.0, 309.0])]
    assert all(v.shape[0] == 4 for _, _, v in pieces)  # open, high, low, close: no volume kept
    gap = B.BarTap()
    gap(series, (0, np.arange(4), values[:, :4]))
    gap(series, (5, np.arange(5), values[:, 5:]))  # row 4 missing
    assert gap.blocks(series, 0, 3) is None
    twice = B.BarTap()
    for block in ((0, None, values[:, :4]), (0, None, values[:, :4]), (4, None, values[:, 4:])):
        twice(series, block)  # type: ignore[arg-type]
    assert twice.blocks(series, 0, 3) is None


def test_fills_recorded_from_the_bus_equal_the_ledgers_fills_table(world: dict[str, Path], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The fills the report matches are the ledger's table (read back after the run: the oracle), and the
    report does not read that table."""
    from aitrader.trading.ledger import LEDGER_NAME
    from aitrader.trading.trips import FillColumns, FillRecorder

    recorders: list[FillRecorder] = []
    reads: list[Path] = []
    real_columns, real_read = FillRecorder.columns, FillColumns.read

    def columns(self: FillRecorder) -> FillColumns:
        recorders.append(self)
        return real_columns(self)

    def read(ledger: Path) -> FillColumns:
        reads.append(ledger)
        return real_read(ledger)

    monkeypatch.setattr(FillRecorder, "columns", columns)
    monkeypatch.setattr(FillColumns, "read", staticmethod(read))
    got = B.run_backtest(models=["syn_lgbm"], data=[f"SYN={world['data']}"], registry_root=str(world["registry"]),
                         out_run="kept", runs_dir=str(tmp_path / "runs"))
    assert reads == [] and len(recorders) == 1
    mine, table = real_columns(recorders[0]), real_read(tmp_path / "runs" / "kept" / LEDGER_NAME)
    assert len(table) == got["run"]["fills"] > 10
    assert mine.ts == table.ts and mine.symbol == table.symbol and mine.buy.tolist() == table.buy.tolist()
    for name in ("quantity", "price", "commission"):
        assert repr(getattr(mine, name).tolist()) == repr(getattr(table, name).tolist())


def test_temporary_scratch_ledger_gives_the_kept_ledgers_report(world: dict[str, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --out-run/--report the ledger is a scratch one (no feature rows, no outcome rows, no journal,
    no sync): the run summary, the performance and the trades are those of the kept, durable ledger."""
    from aitrader.trading.ledger import Ledger

    made: list[tuple[bool, bool]] = []
    real_init = Ledger.__init__

    def init(self: Ledger, path: Path, **kw: Any) -> None:
        real_init(self, path, **kw)
        if not path.name.endswith(".tmp"):  # not the one that creates the file
            made.append((self.features, self.scratch))

    monkeypatch.setattr(Ledger, "__init__", init)
    args = {"models": ["syn_lgbm"], "data": [f"SYN={world['data']}"], "registry_root": str(world["registry"]),
            "runs_dir": str(tmp_path / "runs")}
    kept = B.run_backtest(out_run="kept", **args)
    temp = B.run_backtest(**args)
    assert made == [(True, False), (False, True)]
    assert temp["run"]["state_dir"] is None and not temp["kept"]
    assert {k: v for k, v in temp["run"].items() if k not in ("run_id", "state_dir")} == \
        {k: v for k, v in kept["run"].items() if k not in ("run_id", "state_dir")}
    assert same_json(temp["performance"], kept["performance"]) and same_json(temp["trades"], kept["trades"])
    assert len(temp["trades"]) > 5
