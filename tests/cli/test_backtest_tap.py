"""backtest's report from the bars the replay's scan spilled == the frozen whole-frame report, with no second
parse of the bar files; the fills recorded from the bus == the ledger's fills table.

Oracles: the frozen whole-frame report of tests/cli/test_backtest_blocks.py (main's implementation before
the blocks), on synthetic bars replayed in many small blocks; the ledger's own fills table
(``FillColumns.read``) for the recorded fills.
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
    aware = base / "SYN_ny.csv"  # the same bars with New York offsets (the ledger's stamps are UTC)
    bars.iloc[700:].tz_localize("UTC").tz_convert("America/New_York").rename_axis("timestamp").to_csv(aware)
    fine = base / "SYN_fine.csv"  # the same bars half a second later: stamps that are not whole seconds
    shifted = bars.iloc[700:].copy()
    shifted.index = shifted.index + pd.Timedelta("500ms")
    shifted.rename_axis("timestamp").to_csv(fine)
    return {"registry": registry, "data": data, "aware": aware, "fine": fine}


def reads_after_the_replay(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count, once the replay has ended, the parses of a bar file and the reads of the scan's spill."""
    import aitrader.data.stream as stream

    counts = {"parses": 0, "spill_reads": 0}
    done = {"replay": False}
    real_paper, real_raw, real_read = service.paper_trade, stream._raw_blocks, stream._Spill.read

    def paper(**kw: Any) -> dict[str, Any]:
        out = real_paper(**kw)
        done["replay"] = True
        return out

    def raw_blocks(path: Path, rows: int) -> Any:
        counts["parses"] += done["replay"]
        return real_raw(path, rows)

    def read(self: Any, at: int, n: int) -> np.ndarray:
        counts["spill_reads"] += done["replay"]
        return real_read(self, at, n)

    monkeypatch.setattr(service, "paper_trade", paper)
    monkeypatch.setattr(stream, "_raw_blocks", raw_blocks)
    monkeypatch.setattr(stream._Spill, "read", read)
    return counts


def test_report_from_the_spilled_bars_equals_the_whole_frame_report(world: dict[str, Path], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay read in blocks of 50 bars, the report's pieces of 7 bars and of 5 steps (a trade, a piece of
    the buy-and-hold curve and a block cut across each other): the report reads the scan's spill again,
    never the file, and gives the whole-frame report's figures."""
    real_init = sources.SharedPass.__init__
    monkeypatch.setattr(sources.SharedPass, "__init__", lambda self, series, size: real_init(self, series, 50))
    monkeypatch.setattr(B, "SCAN_ROWS", 7)
    monkeypatch.setattr(B, "STEP_PIECE", 5)
    counts = reads_after_the_replay(monkeypatch)
    got, oracle = backtest_and_oracle(monkeypatch, tmp_path, None, models=["syn_lgbm"],
                                      data=[f"SYN={world['data']}"], registry_root=str(world["registry"]))
    assert len(got["trades"]) > 5 and any(t["bars"] > 7 for t in got["trades"])
    assert same_json(got["performance"], oracle["performance"])
    assert same_json(got["trades"], oracle["trades"])
    assert counts["parses"] == 0 and counts["spill_reads"] > 0  # the report (and the oracle) read the spill only


def test_steps_parsed_from_the_ledger_when_not_whole_seconds(world: dict[str, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Stamps that are not whole seconds: the steps' epochs are parsed from the ledger's stamps (step_ns
    gives None), the curves still computed a piece of 5 steps at a time: the whole-frame report's figures."""
    monkeypatch.setattr(B, "STEP_PIECE", 5)
    seen: list[bool] = []
    real = B.step_ns

    def step_ns(series: Any, blobs: Any) -> Any:
        out = real(series, blobs)
        seen.append(out is None)
        return out

    monkeypatch.setattr(B, "step_ns", step_ns)
    got, oracle = backtest_and_oracle(monkeypatch, tmp_path, None, models=["syn_lgbm"],
                                      data=[f"SYN={world['fine']}"], registry_root=str(world["registry"]))
    assert seen == [True] and got["performance"]["window"]["first_bar"].endswith(".500000")
    assert len(got["trades"]) > 5
    assert same_json(got["performance"], oracle["performance"])
    assert same_json(got["trades"], oracle["trades"])


@pytest.mark.parametrize(("bars", "piece"), [("data", None), ("data", 7), ("aware", 7), ("fine", 7)])
def test_fills_recorded_from_the_bus_equal_the_ledgers_fills_table(world: dict[str, Path], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch, bars: str,
                                                                    piece: int | None) -> None:
    """The fills the report matches are the ledger's table (read back after the run: the oracle), and the
    report does not read that table. ``piece``: the recorder's stamps held as numbers 7 fills at a time."""
    import aitrader.trading.trips as trips
    from aitrader.trading.ledger import LEDGER_NAME
    from aitrader.trading.trips import FillColumns, FillRecorder

    if piece is not None:
        monkeypatch.setattr(trips, "STAMP_PIECE", piece)

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
    got = B.run_backtest(models=["syn_lgbm"], data=[f"SYN={world[bars]}"], registry_root=str(world["registry"]),
                         out_run="kept", runs_dir=str(tmp_path / "runs"))
    assert reads == [] and len(recorders) == 1
    mine, table = real_columns(recorders[0]), real_read(tmp_path / "runs" / "kept" / LEDGER_NAME)
    assert len(table) == got["run"]["fills"] > 10
    assert mine.ts == table.ts and list(mine.ts) == table.ts and mine.symbol == table.symbol
    assert mine.buy.tolist() == table.buy.tolist()
    for name in ("quantity", "price", "commission"):
        assert repr(getattr(mine, name).tolist()) == repr(getattr(table, name).tolist())
    assert isinstance(mine.ts, trips.StampColumn) and mine.ts.ns() is not None  # held as numbers, not strings
    assert all(t.endswith("+00:00") for t in table.ts) == (bars == "aware")
    assert all(t.endswith(".500000") for t in table.ts) == (bars == "fine")
    ours, theirs = mine.stamp_ns(), table.stamp_ns()  # the recorder's numbers, the table's parse
    assert ours is not None and theirs is not None and ours[1] == theirs[1] == (bars == "aware")
    assert ours[0].tolist() == theirs[0].tolist()
    assert [c.tolist() if hasattr(c, "tolist") else c for c in mine.symbol_codes()] == \
        [c.tolist() if hasattr(c, "tolist") else c for c in table.symbol_codes()]


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
