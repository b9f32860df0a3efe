"""monitor reads the feature vectors in chunks (issue 11): same results as the whole-table read."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from aitrader.config import Monitoring
from aitrader.monitoring import ledger as ledger_mod
from aitrader.monitoring.ledger import feature_rows, iter_feature_chunks, read_ledger
from aitrader.monitoring.monitor import monitor_ledger
from tests.unit.test_monitor_bounded import assert_same_summary
from tests.unit.test_monitoring_support import MODEL, manifest_for, market, write_ledger

OTHER = {"model_id": "other:v1", "name": "other", "version": 1, "digest": "e" * 64}


def _run(tmp_path: Path) -> Path:
    live = market(900, seed=11)
    live["x"][[3, 250, 401], 1] = np.nan  # unavailable features count in availability
    sources = ["model"] * 900
    for i in (10, 11, 500):
        sources[i] = "fallback"
    run = tmp_path / "runs" / "r1"
    write_ledger(run, live, sources=sources, models=[MODEL, OTHER])
    conn = sqlite3.connect(run / "ledger.db")  # a second model's rows after the first's, and a bad row
    rows = conn.execute("SELECT ts, bar_index, symbol, prediction, features, outcome FROM predictions "
                        "ORDER BY rowid LIMIT 40").fetchall()
    conn.executemany("INSERT INTO predictions (ts, bar_index, symbol, model_id, digest, prediction, features, "
                     "outcome, source) VALUES (?,?,?,?,?,?,?,?, 'model')",
                     [(t, b, s, OTHER["model_id"], OTHER["digest"], -p, f, o) for t, b, s, p, f, o in rows])
    conn.execute("UPDATE predictions SET features = '[1, 2' WHERE rowid = 77")  # damaged JSON: an all-NaN row
    conn.commit()
    conn.close()
    return run


@pytest.mark.parametrize("chunk", [7, 50_000])
def test_streamed_monitor_equals_the_whole_table_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      chunk: int) -> None:
    run = _run(tmp_path)
    manifest = manifest_for(market(3000, seed=0))
    cfg = Monitoring()
    whole = read_ledger(run)  # the previous path: every feature row loaded in the frame
    assert "features" in whole.predictions.columns and not whole.features_in_file
    monkeypatch.setattr(ledger_mod, "FEATURE_CHUNK", chunk)
    streamed = read_ledger(run, features=False)
    assert streamed.features_in_file and "features" not in streamed.predictions.columns
    for model_id in (MODEL["model_id"], OTHER["model_id"]):
        for window in (None, 60):
            a = monitor_ledger(whole, manifest, cfg, model_id=model_id, window=window)
            b = monitor_ledger(streamed, manifest, cfg, model_id=model_id, window=window)
            assert json.dumps(b.summary, sort_keys=True, default=str) == json.dumps(a.summary, sort_keys=True,
                                                                                   default=str)
            assert b.series == a.series
    ops = monitor_ledger(streamed, manifest, cfg, model_id=MODEL["model_id"]).summary["operational"]
    assert ops["feature_availability"] == pytest.approx(1 - 4 / 900)  # 3 NaN rows + the damaged one


def test_iter_feature_chunks_decodes_every_row_once_in_order(tmp_path: Path) -> None:
    run = _run(tmp_path)
    conn = sqlite3.connect(run / "ledger.db")
    raw = [r[0] for r in conn.execute("SELECT features FROM predictions ORDER BY rowid")]
    expected = []  # oracle: one json.loads per row, null -> NaN, bad rows all-NaN
    for text in raw:
        try:
            row = json.loads(text)
            expected.append([np.nan if v is None else float(v) for v in row])
        except ValueError:
            expected.append([np.nan] * 3)
    starts, mats = zip(*iter_feature_chunks(conn, 3, chunk=100), strict=True)
    conn.close()
    assert list(starts) == list(range(0, len(raw), 100))
    np.testing.assert_array_equal(np.vstack(mats), np.array(expected))


def test_feature_rows_picks_unsorted_positions(tmp_path: Path) -> None:
    run = _run(tmp_path)
    ledger = read_ledger(run, features=False)
    whole = read_ledger(run)
    pos = np.array([899, 3, 0, 450, 3, 939])
    got = feature_rows(ledger, pos, 3, chunk=64)
    stored = [whole.predictions["features"][p] for p in pos]  # decoded lists (JSON text in an old ledger)
    rows = [v if isinstance(v, list) else json.loads(v) for v in stored]
    expected = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
    np.testing.assert_array_equal(got, expected)


def test_monitor_json_through_the_cli_equals_the_whole_table_result(in_tmp: Path) -> None:
    from typer.testing import CliRunner

    from aitrader.cli.main import app

    run = _run(in_tmp)
    (in_tmp / "art").mkdir()
    manifest = manifest_for(market(3000, seed=0))
    (in_tmp / "art" / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(app, ["monitor", "--run", "r1", "--model-id", MODEL["model_id"], "--manifest", "art",
                                      "--json"])
    assert result.exit_code in (0, 3), result.stderr
    doc = json.loads(result.stdout)
    before = monitor_ledger(read_ledger(Path("runs/r1")), manifest, Monitoring(), model_id=MODEL["model_id"]).summary
    assert run.resolve() == Path("runs/r1").resolve()
    for key in ("report", "state"):
        doc.pop(key, None)
    # The command streams (aitrader.monitoring.stream): equal up to rounding, KS within its grid bound.
    assert_same_summary(doc, json.loads(json.dumps(before, default=str)))
