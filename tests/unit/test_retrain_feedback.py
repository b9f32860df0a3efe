"""``retrain``'s live feedback streamed from the ledgers (issue 11): the same result as before.

The oracle is :func:`whole_ledger_feedback`, the implementation ``retrain`` had before the streamed
one (``read_ledger`` of every run, one feature matrix, one challenger call), kept here verbatim.
Both run on the same runs folder: a block-format ledger written by paper-trade, the same run in the
old one-row-per-prediction format, a run resumed across the two formats, the golden ledger written
by the code before the blocks (``data/ledger_v1.db.gz``) and the same session written today (two
models in every block), a hand-written old-format run of another digest with a damaged feature row,
fallbacks and another model's rows, a run of another model only, and four ledgers
that cannot be read (garbage bytes, an empty file, an SQLite file that is no ledger, a block ledger
whose last prediction block is corrupt: skipped with a warning, none of their rows counted).
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from trading_helpers import FirstFeature, bars, to_old_format  # noqa: E402

from aitrader.monitoring import feedback as feedback_mod  # noqa: E402
from aitrader.monitoring import stream as stream_mod  # noqa: E402
from aitrader.monitoring.feedback import live_feedback  # noqa: E402
from aitrader.trading.session import RunOptions  # noqa: E402
from tests.unit.feedback_oracle import whole_ledger_feedback  # noqa: E402
from tests.unit.test_monitoring_support import write_ledger  # noqa: E402
from tests.unit.test_trading_batch import NAMES, replay  # noqa: E402

DATA = Path(__file__).parent / "data"
CHAMPION = "d" * 8  # the digest trading_helpers' specs (and the golden ledger) record
M = "m:v1"  # the name those runs record for their model (a spec's model id; no registry)


class Challenger:
    """A row-wise model (elementwise numpy only: a row predicts the same in any batch); records its
    batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(len(x))
        return np.tanh(50.0 * x[:, 0]) * 0.01 + 0.1 * x[:, 1]


def _written_run(runs: Path) -> None:
    """An old-format run of ``m:v1`` deployed with another digest (4 features, some missing), 12
    fallback rows, one damaged feature row, the last 5 outcomes unknown; plus another model's rows."""
    rng = np.random.default_rng(7)
    n = 300
    x = rng.normal(0, 0.01, (n, len(NAMES)))
    x[[4, 40, 41], 2] = np.nan
    out = 0.5 * x[:, 0] + rng.normal(0, 0.005, n)
    sources = ["fallback" if i % 25 == 3 else "model" for i in range(n)]
    entry = {"model_id": M, "name": M, "version": 1, "digest": "e" * 64}
    other = {"model_id": "other:v1", "name": "other", "version": 1, "digest": "f" * 64}
    write_ledger(runs / "e_written", {"x": x, "pred": x[:, 0] * 0.3, "outcome": out}, sources=sources,
                 models=[entry, other], model=entry)
    with sqlite3.connect(runs / "e_written" / "ledger.db") as conn:
        conn.execute("UPDATE predictions SET features = '[0.1, 0.2' WHERE id = 17")  # damaged JSON
        conn.execute("INSERT INTO predictions (ts, bar_index, symbol, model_id, digest, prediction, source, "
                     "features, outcome) SELECT ts, bar_index, symbol, 'other:v1', 'fff', -prediction, 'model', "
                     "features, outcome FROM predictions WHERE id <= 30")
    conn.close()


def _runs(tmp: Path) -> Path:
    runs = tmp / "runs"
    runs.mkdir()
    df = bars(420, seed=4, freq="1h")
    replay(runs, "a_blocks", df, "batch", FirstFeature(nan_below=-0.03))
    shutil.copytree(runs / "a_blocks", runs / "b_old")
    to_old_format(runs / "b_old" / "ledger.db")
    # Resumed across the change of format: old-format rows up to bar 150, then blocks.
    replay(runs, "c_resumed", df, "batch", FirstFeature(nan_below=-0.03),
           opts=RunOptions(commit_every=50, max_bars=150, handle_signals=False))
    to_old_format(runs / "c_resumed" / "ledger.db")
    replay(runs, "c_resumed", df, "batch", FirstFeature(nan_below=-0.03), resume=True)
    (runs / "d_golden").mkdir()
    (runs / "d_golden" / "ledger.db").write_bytes(gzip.decompress((DATA / "ledger_v1.db.gz").read_bytes()))
    _written_run(runs)
    write_ledger(runs / "f_other", {"x": np.zeros((20, 4)), "pred": np.zeros(20), "outcome": np.ones(20)},
                 model={"model_id": "other:v3", "name": "other", "version": 3, "digest": "a" * 64})
    (runs / "g_garbage").mkdir()
    (runs / "g_garbage" / "ledger.db").write_bytes(b"not a database, just bytes\x00" * 100)
    (runs / "h_empty").mkdir()
    (runs / "h_empty" / "ledger.db").write_bytes(b"")
    (runs / "i_not_ledger").mkdir()
    with sqlite3.connect(runs / "i_not_ledger" / "ledger.db") as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    conn.close()
    shutil.copytree(runs / "a_blocks", runs / "j_broken_block")
    with sqlite3.connect(runs / "j_broken_block" / "ledger.db") as conn:
        conn.execute("UPDATE prediction_blocks SET prediction = x'00ff' WHERE first_id = "
                     "(SELECT MAX(first_id) FROM prediction_blocks)")
    conn.close()
    # Today's block format with two models in every block (AAA m:v1, BBB n:v1), as the golden run.
    from tests.unit.test_trading_ledger_format import _session

    _session(runs / "k_two_models")
    return runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _runs(tmp_path_factory.mktemp("feedback"))


def _exact(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True)  # repr of every float: equal text = equal floats


@pytest.mark.parametrize(("old_chunk", "predict_chunk"), [(7, 5), (16_384, 65_536)])
def test_streamed_feedback_equals_the_whole_ledger_read(runs: Path, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture, old_chunk: int,
                                                        predict_chunk: int) -> None:
    monkeypatch.setattr(stream_mod, "CHUNK", old_chunk)
    monkeypatch.setattr(feedback_mod, "PREDICT_CHUNK", predict_chunk)
    cases = [(M, CHAMPION, NAMES, "regression"), (M, None, NAMES, "regression"),
             (M, "e" * 64, NAMES, "classification"), ("n:v1", CHAMPION, ["a", "b"], "regression"),
             ("other", None, NAMES, "regression"), ("nobody", CHAMPION, NAMES, "regression")]
    wants = [whole_ledger_feedback(name, runs, digest, Challenger(), names, task)
             for name, digest, names, task in cases]

    # The streamed path never reads a whole ledger: the whole-table readers are out of reach.
    def forbidden(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a whole-ledger reader was called")

    import aitrader.monitoring.ledger as mon_ledger
    import aitrader.trading.ledger as trading_ledger

    for mod, attr in ((mon_ledger, "read_ledger"), (mon_ledger, "feature_matrix"),
                      (trading_ledger, "prediction_rows"), (trading_ledger, "outcome_map")):
        monkeypatch.setattr(mod, attr, forbidden)
    for (name, digest, names, task), want in zip(cases, wants, strict=True):
        caplog.clear()
        model = Challenger()
        with caplog.at_level(logging.WARNING, logger="aitrader.retrain"):
            got = live_feedback(name, runs, digest, model, names, task)
        assert _exact(got) == _exact(want), (name, digest)
        assert max(model.batches, default=0) <= predict_chunk
        if name == M:  # only the unreadable ledgers of the model's runs are read and skipped
            skipped = sorted(Path(r.args[0]).name for r in caplog.records)
            assert skipped == ["g_garbage", "h_empty", "i_not_ledger", "j_broken_block"]
    # Independent counts: six runs of m:v1 (a_blocks, b_old, c_resumed, d_golden, e_written, k_two_models); e_written's
    # kept rows counted by hand: 300 bars - 5 without outcome - the 12 fallbacks among them.
    m_all, m_v2 = wants[0], wants[2]
    assert m_all["runs"] == 6 and m_all["challenger"]["n"] < m_all["outcomes"]  # golden/k rows: 2 features
    assert m_v2["champion"]["n"] == 300 - 5 - sum(1 for i in range(295) if i % 25 == 3)
    assert wants[4]["runs"] == 2 and wants[5] == {"runs": 0, "outcomes": 0, "champion": None, "challenger": None}
    assert wants[3]["runs"] == 2 and wants[3]["challenger"]["n"] > 80  # n:v1 (2 features): golden and k


def test_a_run_damaged_after_its_first_blocks_counts_nothing(runs: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The corrupt block is the last one: rows of the blocks before it were read, then dropped."""
    monkeypatch.setattr(feedback_mod, "PREDICT_CHUNK", 5)  # predicted as they come
    only = tmp_path / "runs"
    only.mkdir()
    shutil.copytree(runs / "j_broken_block", only / "j_broken_block")
    model = Challenger()
    got = live_feedback(M, only, CHAMPION, model, NAMES, "regression")
    assert got == {"runs": 0, "outcomes": 0, "champion": None, "challenger": None}
    assert sum(model.batches) > 0  # it did get rows before the damage: they are not counted


def test_outcomes_stored_twice_the_last_one_wins(tmp_path: Path) -> None:
    """An outcome block that repeats a key (as a resumed run may): the later value is the outcome,
    as in ``trading.ledger.outcome_map``; the oracle is the whole-ledger read and a hand count."""
    from aitrader.trading.ledger import encode_outcomes

    runs = tmp_path / "runs"
    runs.mkdir()
    replay(runs, "r", bars(200, seed=5, freq="1h"), "batch", FirstFeature())
    db = runs / "r" / "ledger.db"
    with sqlite3.connect(db) as conn:
        sym, mid, bar = conn.execute("SELECT 'AAA', 'm:v1', 60").fetchone()
        blob = encode_outcomes([(0.125, "2021-01-01T00:00:00+00:00", sym, mid, bar),
                                (float("nan"), "2021-01-01T00:00:00+00:00", sym, mid, 61)])
        conn.execute("INSERT INTO outcome_blocks (n, symbol, model_id, bar_index, outcome, outcome_ts) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (blob["n"], blob["symbol"], blob["model_id"], blob["bar_index"],
                                                    blob["outcome"], blob["outcome_ts"]))
    conn.close()
    want = whole_ledger_feedback(M, runs, CHAMPION, Challenger(), NAMES, "regression")
    got = live_feedback(M, runs, CHAMPION, Challenger(), NAMES, "regression")
    assert _exact(got) == _exact(want)
    from aitrader.monitoring.ledger import read_ledger

    p = read_ledger(runs / "r").predictions
    assert p.loc[p["bar_index"] == 60, "outcome"].tolist() == [0.125]
    kept = p["outcome"].notna() & (p["source"] == "model")
    assert got["outcomes"] == int(kept.sum()) and pd.isna(p.loc[p["bar_index"] == 61, "outcome"]).all()
