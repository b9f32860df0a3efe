"""A scratch ledger (``RunOptions.ledger_scratch``: backtest's temporary one; no outcome rows, no journal, no
sync) gives the same run summary and every other row as the durable ledger of the same replay.

Oracle: the durable ledger (WAL, synchronous=NORMAL, outcomes written) of the same bars and model, read
back with ``ledger_content``; its outcomes are checked to be there, so the comparison is not vacuous.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_trading_batch import NAMES, replay  # noqa: E402
from trading_helpers import FirstFeature, bars  # noqa: E402

from aitrader.trading.ledger import PREDICTION_COLUMNS, Ledger, ledger_content  # noqa: E402
from aitrader.trading.session import RunOptions  # noqa: E402

OUTCOME = PREDICTION_COLUMNS.index("outcome") - 1  # ledger_content drops the id column
OUTCOME_TS = PREDICTION_COLUMNS.index("outcome_ts") - 1


def test_scratch_ledger_same_summary_and_rows_but_outcomes(tmp_path: Path) -> None:
    df = bars(400)
    for route in ("batch", "streaming"):
        runs = {}
        for kind in ("durable", "scratch"):
            opts = RunOptions(commit_every=50, handle_signals=False, ledger_features=False,
                              ledger_scratch=kind == "scratch")
            runs[kind] = replay(tmp_path, f"{kind}_{route}", df, route, FirstFeature(len(NAMES)), opts=opts)
        durable, scratch = ({k: v for k, v in runs[kind].items() if k not in ("run_id", "state_dir")}
                            for kind in ("durable", "scratch"))
        assert durable == scratch and durable["fills"] > 0 and durable["predictions"] > 300
        a = ledger_content(tmp_path / f"durable_{route}" / "ledger.db")
        b = ledger_content(tmp_path / f"scratch_{route}" / "ledger.db")
        a.pop("meta"), b.pop("meta")
        pa, pb = a.pop("predictions"), b.pop("predictions")
        assert a == b  # orders, fills, equity, events, positions, cursors
        assert sum(r[OUTCOME] is not None for r in pa) > 300  # the durable ledger has the outcomes
        assert all(r[OUTCOME] is None and r[OUTCOME_TS] is None for r in pb)  # the scratch one none
        drop = {OUTCOME, OUTCOME_TS}
        assert [[v for k, v in enumerate(r) if k not in drop] for r in pa] == \
            [[v for k, v in enumerate(r) if k not in drop] for r in pb]


def test_scratch_ledger_connection_has_no_journal_and_no_sync(tmp_path: Path) -> None:
    for scratch, want in ((True, ("off", 0)), (False, ("wal", 1))):  # synchronous: 0 OFF, 1 NORMAL
        ledger = Ledger(tmp_path / f"{scratch}.db", scratch=scratch)
        try:
            got = (ledger.conn.execute("PRAGMA journal_mode").fetchone()[0],
                   ledger.conn.execute("PRAGMA synchronous").fetchone()[0])
        finally:
            ledger.close()
        assert got == want
