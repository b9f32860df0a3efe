"""The ledger's columnar blocks: exact round trips, and every reader giving what it gave before.

``data/ledger_v1.db.gz`` was written by the code before the blocks (commit e139609: one predictions
row per prediction with JSON features and an outcome column filled by UPDATEs, one equity row per
step) running :func:`_session`; ``data/ledger_v1_expected.json.gz`` holds what that code's readers
returned on it (every export table, the summary, monitor's decoded predictions and equity). Those are
the oracle: today's readers must return the same on the old file, and today's writer must produce a
ledger that reads the same (features exactly when stored as float64; to float32 rounding by default).
"""

from __future__ import annotations

import gzip
import json
import math
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from trading_helpers import bars, config, series, spec  # noqa: E402

from aitrader.monitoring.ledger import feature_matrix, read_ledger  # noqa: E402
from aitrader.trading import ledger as ledger_mod  # noqa: E402
from aitrader.trading.ledger import (  # noqa: E402
    EXPORT_TABLES,
    pack_f8,
    pack_i8,
    pack_text,
    read_table,
    unpack_f8,
    unpack_i8,
    unpack_text,
)
from aitrader.trading.session import RunOptions, run_session  # noqa: E402
from aitrader.trading.sources import replay_steps  # noqa: E402
from aitrader.trading.summary import summarise  # noqa: E402

DATA = Path(__file__).parent / "data"


def _session(run_dir: Path) -> None:
    frames = {"AAA": bars(70, seed=3), "BBB": bars(60, seed=4, start="2021-01-06")}
    specs = [spec("AAA"), spec("BBB", model_id="n:v1")]
    run_session(config(), specs, replay_steps(series(frames)), run_dir, run_id="v1",
                opts=RunOptions(commit_every=20, handle_signals=False))


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    return json.loads(gzip.decompress((DATA / "ledger_v1_expected.json.gz").read_bytes()))


def _old_run(tmp: Path) -> Path:
    run = tmp / "old"
    run.mkdir()
    (run / "ledger.db").write_bytes(gzip.decompress((DATA / "ledger_v1.db.gz").read_bytes()))
    return run


def _jsonable(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return json.loads(json.dumps([list(r) for r in rows]))


def _readers(run: Path, n_features: int = 2) -> dict[str, Any]:
    got: dict[str, Any] = {"tables": {}}
    for t in EXPORT_TABLES:
        cols, rows = read_table(run / "ledger.db", t)
        got["tables"][t] = {"columns": cols, "rows": _jsonable(rows)}
    s = summarise(run)
    s.pop("state_dir")
    s.pop("status")
    got["summary"] = json.loads(json.dumps(s))
    led = read_ledger(run)
    p = led.predictions
    got["monitor"] = {"columns": list(p.columns), "n": len(p),
                      "outcome": [None if x != x else x for x in p["outcome"].tolist()],
                      "features": feature_matrix(p["features"], n_features).tolist(),
                      "equity": led.equity["equity"].tolist()}
    return got


def test_an_old_ledger_reads_as_it_did_with_the_old_code(tmp_path: Path, expected: dict[str, Any]) -> None:
    got = _readers(_old_run(tmp_path))
    assert got["tables"] == expected["tables"]
    assert got["summary"] == expected["summary"]
    assert got["monitor"] == expected["monitor"]
    assert expected["summary"]["predictions"] == 124 and sum(o is not None for o in got["monitor"]["outcome"]) == 118


def _without_latency(table: dict[str, Any]) -> list[list[Any]]:
    k = table["columns"].index("latency_us")
    return [r[:k] + r[k + 1 :] for r in table["rows"]]


def _same_readers(a: dict[str, Any], b: dict[str, Any]) -> None:
    for t in EXPORT_TABLES:
        if t == "predictions":
            assert _without_latency(a["tables"][t]) == _without_latency(b["tables"][t])
        else:
            assert a["tables"][t] == b["tables"][t], t
    assert a["summary"] == b["summary"]
    assert a["monitor"] == b["monitor"]


def test_the_same_run_today_reads_the_same_with_float64_features(
    tmp_path: Path, expected: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_mod, "FEATURE_BYTES", 8)
    _session(tmp_path / "new")
    _same_readers(_readers(tmp_path / "new"), expected)


def test_the_same_run_today_reads_the_same_with_default_float32_features(
    tmp_path: Path, expected: dict[str, Any]
) -> None:
    _session(tmp_path / "new")
    got = _readers(tmp_path / "new")
    feats = [c for c in got["tables"]["predictions"]["columns"] if c != "latency_us"].index("features")
    new, old = _without_latency(got["tables"]["predictions"]), _without_latency(expected["tables"]["predictions"])
    assert [r[:feats] + r[feats + 1 :] for r in new] == [r[:feats] + r[feats + 1 :] for r in old]
    for a, b in zip(new, old, strict=True):
        assert (a[feats] is None) == (b[feats] is None)
        if b[feats] is not None:  # the float32 nearest to each float64 value (oracle: numpy's cast)
            assert json.loads(a[feats]) == np.asarray(json.loads(b[feats]), dtype=np.float32).astype(float).tolist()
    assert got["summary"] == expected["summary"]
    assert got["monitor"]["outcome"] == expected["monitor"]["outcome"]
    assert np.allclose(got["monitor"]["features"], expected["monitor"]["features"], rtol=1e-7, equal_nan=True)
    # Written as blocks: no row per prediction or per step (sizes per bar: scripts/bench/paper_trade.py).
    with closing(sqlite3.connect(tmp_path / "new" / "ledger.db")) as conn:
        counts = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                  for t in ("predictions", "equity", "prediction_blocks", "equity_blocks")]
    assert counts[:2] == [0, 0] and counts[2] > 0 and counts[3] > 0


@pytest.mark.parametrize("size", [8, 4])
def test_float_columns_round_trip_every_bit(size: int) -> None:
    values = [0.0, -0.0, 1.5, -2.25, math.inf, -math.inf, 1e-300 if size == 8 else 1e-30, 123456.75, 0.1]
    values += np.random.default_rng(0).normal(size=200).tolist()
    blob = pack_f8(values, size)
    back = unpack_f8(blob, len(values), size)
    want = np.asarray(values, dtype=f"<f{size}").astype(float)
    assert back.tobytes() == want.tobytes()  # bit for bit, -0.0 included
    nan = unpack_f8(pack_f8([math.nan, 1.0], size), 2, size)
    assert math.isnan(nan[0]) and nan[1] == 1.0


def test_int_and_text_columns_round_trip() -> None:
    ints = [5, 6, 7, 9, -3, 2**40, 0]
    assert unpack_i8(pack_i8(ints), len(ints)).tolist() == ints
    text = ["2021-01-04T00:00:00", None, "", "m:v1", "é"]
    assert unpack_text(pack_text(text), len(text)) == text
    assert unpack_i8(pack_i8([]), 0).tolist() == [] and unpack_text(pack_text([]), 0) == []


def test_the_direct_rows_give_the_ledger_the_events_give(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With the ledger as the only listener the engine appends prediction and outcome rows directly;
    # with another listener (forced here) they go through events: the ledger must be the same.
    from aitrader.trading.events import EventBus
    from aitrader.trading.ledger import ledger_content

    _session(tmp_path / "direct")
    monkeypatch.setattr(EventBus, "only", lambda self, event_type, handler: False)
    _session(tmp_path / "events")
    a, b = ledger_content(tmp_path / "direct" / "ledger.db"), ledger_content(tmp_path / "events" / "ledger.db")
    assert len(a["predictions"]) == 124 and a == b


@pytest.mark.parametrize("widths", [(3, 3, None, 3), (2, 3, None, 0), (None, None), (0, 0)])
def test_prediction_blocks_round_trip_any_feature_widths(widths: tuple[int | None, ...]) -> None:
    from aitrader.trading.ledger import PRED_BLOB_COLUMNS, decode_predictions, encode_predictions

    rng = np.random.default_rng(1)
    rows = [(f"2021-01-0{k + 1}", 10 + k, "AAA", "m:v1", "d", 0.5 * k, 0.9, "model" if w is not None else "rule",
             12.5, [None, 0, 1][k % 3], None if w is None else rng.normal(size=w)) for k, w in enumerate(widths)]
    blobs = encode_predictions(rows, 8)
    back = decode_predictions(7, len(rows), {k: blobs[k] for k in PRED_BLOB_COLUMNS})
    for k, (want, got) in enumerate(zip(rows, back, strict=True)):
        assert got[0] == 7 + k and got[1:6] == list(want[:1]) + [want[1], "AAA", "m:v1", "d"]
        assert (got[6], got[7], got[8], got[9], got[13]) == (want[5], want[6], want[7], want[8], want[9])
        assert got[10] == (None if want[10] is None else want[10].tolist())


# ---------------------------------------------------------------- the blobs' codec: zlib before, zstd now
# data/ledger_v2_zlib.db.gz: :func:`_session` written by main 2455acb (blocks, each blob a zlib stream, level 1);
# data/ledger_v2_zlib_stopped.db.gz: the same run stopped after 50 steps (``max_bars=50``) by that code.


def _fixture_run(tmp: Path, name: str) -> Path:
    run = tmp / name.split(".")[0]
    run.mkdir()
    (run / "ledger.db").write_bytes(gzip.decompress((DATA / name).read_bytes()))
    return run


def _blob_heads(path: Path) -> set[bytes]:
    """The first 4 bytes of every non-empty blob of the block tables."""
    heads = set()
    with closing(sqlite3.connect(path)) as conn:
        for table in ("prediction_blocks", "outcome_blocks", "equity_blocks"):
            for row in conn.execute(f"SELECT * FROM {table}"):
                heads |= {bytes(v[:4]) for v in row if isinstance(v, bytes) and v}
    return heads


def test_a_zlib_block_ledger_of_the_previous_code_reads_as_todays_ledger_of_the_same_run(tmp_path: Path) -> None:
    old = _fixture_run(tmp_path, "ledger_v2_zlib.db.gz")
    _session(tmp_path / "new")
    # the fixture is what it claims (zlib headers 0x78..), today's writer writes zstd frames
    assert {h[:1] for h in _blob_heads(old / "ledger.db")} == {b"\x78"}
    assert _blob_heads(tmp_path / "new" / "ledger.db") == {b"\x28\xb5\x2f\xfd"}
    _same_readers(_readers(old), _readers(tmp_path / "new"))


def test_a_zlib_ledger_stopped_by_the_previous_code_resumes_to_todays_uninterrupted_ledger(tmp_path: Path) -> None:
    from aitrader.trading.ledger import ledger_content

    run = _fixture_run(tmp_path, "ledger_v2_zlib_stopped.db.gz")
    frames = {"AAA": bars(70, seed=3), "BBB": bars(60, seed=4, start="2021-01-06")}
    run_session(config(), [spec("AAA"), spec("BBB", model_id="n:v1")], replay_steps(series(frames)), run,
                run_id="v1", resume=True, opts=RunOptions(commit_every=20, handle_signals=False))
    heads = _blob_heads(run / "ledger.db")
    assert b"\x28\xb5\x2f\xfd" in heads and any(h[:1] == b"\x78" for h in heads)  # both codecs in one ledger
    _session(tmp_path / "new")
    assert ledger_content(run / "ledger.db") == ledger_content(tmp_path / "new" / "ledger.db")
    _same_readers(_readers(run), _readers(tmp_path / "new"))


def test_a_corrupt_zstd_blob_is_a_value_error_the_readers_catch() -> None:
    blob = pack_f8([1.0, 2.0, 3.0])
    assert blob[:4] == b"\x28\xb5\x2f\xfd"
    with pytest.raises(ValueError, match="corrupt compressed block"):
        unpack_f8(blob[:4] + b"\x00" * (len(blob) - 4), 3)
