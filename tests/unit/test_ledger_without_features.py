"""A ledger written without feature rows (``RunOptions.ledger_features=False``: backtest's temporary
ledger) holds every other row exactly as the full one; backtest keeps the rows when the ledger is
kept (``--out-run``) or reported on (``--report``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_trading_batch import NAMES, replay  # noqa: E402
from trading_helpers import FirstFeature, bars  # noqa: E402

from aitrader.trading.ledger import PREDICTION_COLUMNS, connect, ledger_content  # noqa: E402
from aitrader.trading.session import RunOptions  # noqa: E402

FEATURES = PREDICTION_COLUMNS.index("features") - 1  # ledger_content drops the id column


def test_without_features_every_other_row_is_the_same(tmp_path: Path) -> None:
    df = bars(400)
    for route in ("batch", "streaming"):
        full = replay(tmp_path, f"full_{route}", df, route, FirstFeature(len(NAMES)),
                      opts=RunOptions(commit_every=50, handle_signals=False))
        lean = replay(tmp_path, f"lean_{route}", df, route, FirstFeature(len(NAMES)),
                      opts=RunOptions(commit_every=50, handle_signals=False, ledger_features=False))
        assert full["fills"] > 0 and full["predictions"] > 300
        a = ledger_content(tmp_path / f"full_{route}" / "ledger.db")
        b = ledger_content(tmp_path / f"lean_{route}" / "ledger.db")
        a.pop("meta"), b.pop("meta")
        pa, pb = a.pop("predictions"), b.pop("predictions")
        assert a == b  # orders, fills, equity, events, positions, cursors
        assert len(pa) == len(pb) == full["predictions"]
        # the full ledger holds 4 features a prediction, the lean one none: only that column differs
        assert all(r[FEATURES] is not None and len(json.loads(r[FEATURES])) == 4 for r in pa if r[7] == "model")
        assert all(r[FEATURES] is None for r in pb)
        assert [r[:FEATURES] + r[FEATURES + 1:] for r in pa] == [r[:FEATURES] + r[FEATURES + 1:] for r in pb]
        conn = connect(tmp_path / f"lean_{route}" / "ledger.db", readonly=True)
        try:  # stored as a fallback's: no feature bytes at all
            assert conn.execute("SELECT SUM(length(features)) FROM prediction_blocks").fetchone()[0] < 50 * \
                conn.execute("SELECT COUNT(*) FROM prediction_blocks").fetchone()[0]
        finally:
            conn.close()
        assert lean["fills"] == full["fills"] and lean["final_equity"] == full["final_equity"]
