"""A scratch ledger (``RunOptions.ledger_scratch``: backtest's temporary one; predictions counted, not
recorded; no outcome rows, no journal, no sync) gives the same run summary, equity curve and every other
table as the durable ledger of the same replay.

Oracle: the durable ledger (WAL, synchronous=NORMAL, every prediction and outcome written) of the same
bars and model, read back table by table; its prediction count and in-sample count by hand from its rows.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from test_trading_batch import NAMES, replay  # noqa: E402
from trading_helpers import FirstFeature, bars  # noqa: E402

from aitrader.trading.ledger import (  # noqa: E402
    PREDICTION_COLUMNS,
    WALL_CLOCK,
    Ledger,
    connect,
    equity_rows,
    prediction_count,
    prediction_rows,
)
from aitrader.trading.session import RunOptions  # noqa: E402

IN_SAMPLE = PREDICTION_COLUMNS.index("in_sample")
OUTCOME = PREDICTION_COLUMNS.index("outcome")


def tables(path: Path) -> dict[str, Any]:
    """Every table but the predictions, as the summary and the report read them."""
    conn = connect(path, readonly=True)
    try:
        out: dict[str, Any] = {"equity": equity_rows(conn)}
        for table in ("cursors", "orders", "fills", "positions", "events", "meta"):
            rows = conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()  # noqa: S608 - fixed names
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            drop = [cols.index(c) for c in WALL_CLOCK.get(table, ()) if c in cols]
            rows = [tuple(v for k, v in enumerate(r) if k not in drop) for r in rows]
            out[table] = [r for r in rows if table != "meta" or r[0] not in WALL_CLOCK["meta"]]
        out["counts"] = (prediction_count(conn), prediction_count(conn, where_in_sample=True))
        return out
    finally:
        conn.close()


def test_scratch_ledger_same_summary_and_tables_predictions_counted(tmp_path: Path) -> None:
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
        a = tables(tmp_path / f"durable_{route}" / "ledger.db")
        b = tables(tmp_path / f"scratch_{route}" / "ledger.db")
        a.pop("meta"), b.pop("meta")  # the run ids differ
        assert a == b  # orders, fills, equity, events, positions, cursors, prediction counts
        conn = connect(tmp_path / f"durable_{route}" / "ledger.db", readonly=True)
        try:
            rows = prediction_rows(conn, features="none")
        finally:
            conn.close()
        assert a["counts"] == (len(rows), sum(r[IN_SAMPLE] == 1 for r in rows)) == \
            (durable["predictions"], durable["in_sample_predictions"])
        assert sum(r[OUTCOME] is not None for r in rows) > 300  # what the durable ledger has and scratch skips


def test_scratch_ledger_connection_has_no_journal_and_no_sync(tmp_path: Path) -> None:
    for scratch, want in ((True, ("off", 0)), (False, ("wal", 1))):  # synchronous: 0 OFF, 1 NORMAL
        ledger = Ledger(tmp_path / f"{scratch}.db", scratch=scratch)
        try:
            got = (ledger.conn.execute("PRAGMA journal_mode").fetchone()[0],
                   ledger.conn.execute("PRAGMA synchronous").fetchone()[0])
        finally:
            ledger.close()
        assert got == want


def test_prediction_counts_keep_the_in_sample_flags_by_hand(tmp_path: Path) -> None:
    from aitrader.trading.ledger import PRED_BLOB_COLUMNS, compress, prediction_counts

    rows = [("2024-01-01T00:00:00", k, "A", "m", "d", 0.1, 0.5, "model", 3.0, flag, None)
            for k, flag in enumerate([True, False, None, True, 1, 0])]
    blobs = compress(prediction_counts(rows))
    ledger = Ledger(tmp_path / "l.db", scratch=True)
    try:
        cols = ", ".join(PRED_BLOB_COLUMNS)
        ledger.conn.execute(f"INSERT INTO prediction_blocks (first_id, n, {cols}) VALUES "  # noqa: S608
                            f"({', '.join('?' * (len(PRED_BLOB_COLUMNS) + 2))})",
                            (1, blobs["n"], *(blobs[k] for k in PRED_BLOB_COLUMNS)))
        assert (prediction_count(ledger.conn), prediction_count(ledger.conn, where_in_sample=True)) == (6, 3)
    finally:
        ledger.close()


def test_scratch_ledger_alone_queues_no_outcomes_and_another_listener_still_gets_them(tmp_path: Path) -> None:
    """The engine queues no outcome for a scratch ledger that is their only listener (it would drop them):
    its saved state has none pending where the durable run's has some; with one more OUTCOME subscriber
    the scratch run delivers them all, as many as the durable ledger recorded (the oracle)."""
    import json

    from aitrader.trading.events import EventType

    df = bars(400)
    seen: list[Any] = []

    def listen(bus: Any) -> None:
        bus.subscribe(EventType.OUTCOME, seen.append)

    pending = {}
    for kind, subscribers in (("durable", []), ("scratch", []), ("scratch_listened", [listen])):
        opts = RunOptions(commit_every=50, handle_signals=False, ledger_features=False,
                          ledger_scratch=kind != "durable", subscribers=subscribers)
        replay(tmp_path, kind, df, "batch", FirstFeature(len(NAMES)), opts=opts)
        conn = connect(tmp_path / kind / "ledger.db", readonly=True)
        try:
            state = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'state'").fetchone()[0])
            if kind == "durable":
                outcomes = sum(r[OUTCOME] is not None for r in prediction_rows(conn, features="none"))
        finally:
            conn.close()
        pending[kind] = sum(len(v) for v in state["outcomes"].values())
    assert pending["durable"] > 0 and pending["scratch"] == 0 and pending["scratch_listened"] == pending["durable"]
    assert len(seen) == outcomes > 300
