"""Durable feedback: outcome records a trading client sends in batches, kept as a run ledger.

The store is an ordinary run folder, ``RUNS_DIR/serve-NAME/ledger.db`` (the paper-trade ledger
schema), so ``aitrader monitor --run-id serve-NAME`` and ``aitrader retrain`` (whose
``--runs-dir`` reads the outcomes of every run of the model) use the feedback exactly as they use
paper-trade outcomes: each record becomes a prediction row (``source`` model, the market snapshot
as its feature vector) and, when its outcome is known, an outcome row. The raw records (with
``executed``) are kept in ``serve_feedback``, keyed by (client run, model id, symbol, bar index).
One batch is one SQLite transaction; a record whose key is stored already is acknowledged without
being stored twice, so a client may resend a batch whose reply it never got, or resend a whole run
from its ledger (:func:`aitrader.serve.client.resend_feedback`).

A record: ``symbol`` (str), ``ts`` (ISO stamp of the predicted bar), ``bar_index`` (int),
``prediction`` (float), ``confidence`` (float in [0, 1], default 0), ``executed`` (bool, default
false), ``outcome`` (float or null: the realised forward return), ``outcome_ts`` (str, optional),
``snapshot`` (list of floats, optional: the model's feature row), ``model_id``/``digest``
(optional: default the served model's).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from pathlib import Path
from typing import Any

from aitrader.serve.protocol import ProtocolError

MAX_RECORDS = 100_000

FEEDBACK_SCHEMA = """
CREATE TABLE IF NOT EXISTS serve_feedback (run TEXT, model_id TEXT, symbol TEXT, bar_index INTEGER, batch TEXT,
    received_at TEXT, record TEXT, PRIMARY KEY (run, model_id, symbol, bar_index));
"""


def _num(rec: dict[str, Any], key: str, i: int, *, required: bool = True, default: float = 0.0) -> float | None:
    v = rec.get(key)
    if v is None:
        if required:
            raise ProtocolError("bad_feedback", f"record {i}: {key} is missing")
        return default if default is not None else None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
        raise ProtocolError("bad_feedback", f"record {i}: {key} must be a finite number, got {v!r}")
    return float(v)


def check_records(records: Any) -> list[dict[str, Any]]:
    """The records of a feedback request, each checked, or ProtocolError naming the first bad one."""
    if not isinstance(records, list) or not records:
        raise ProtocolError("bad_feedback", "feedback needs records: a non-empty list of maps")
    if len(records) > MAX_RECORDS:
        raise ProtocolError("bad_feedback", f"at most {MAX_RECORDS} records per batch, got {len(records)}")
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ProtocolError("bad_feedback", f"record {i} is a {type(rec).__name__}, not a map")
        for key in ("symbol", "ts"):
            if not isinstance(rec.get(key), str) or not rec[key]:
                raise ProtocolError("bad_feedback", f"record {i}: {key} must be a non-empty string")
        bar = rec.get("bar_index")
        if isinstance(bar, bool) or not isinstance(bar, int) or not 0 <= bar < 2**62:
            raise ProtocolError("bad_feedback", f"record {i}: bar_index must be a non-negative int, got {bar!r}")
        conf = _num(rec, "confidence", i, required=False)
        outcome = rec.get("outcome")
        if outcome is not None:
            outcome = _num(rec, "outcome", i)
        snap = rec.get("snapshot")
        if snap is not None and (not isinstance(snap, list) or not all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in snap)):
            raise ProtocolError("bad_feedback", f"record {i}: snapshot must be a list of numbers")
        out.append({**rec, "prediction": _num(rec, "prediction", i), "confidence": conf or 0.0,
                    "outcome": outcome, "executed": bool(rec.get("executed", False))})
    return out


class FeedbackStore:
    """Feedback of the models served by one server, one ledger per model name under ``runs_dir``."""

    def __init__(self, runs_dir: str | Path) -> None:
        self.runs_dir = Path(runs_dir)
        # One connection per (thread, name): the server's loop may move to another thread (the watchdog's
        # takeover, aitrader.serve.server), and a SQLite connection belongs to the thread that opened it.
        self._conns: dict[tuple[int, str], sqlite3.Connection] = {}

    def path(self, name: str) -> Path:
        return self.runs_dir / f"serve-{name}" / "ledger.db"

    def _conn(self, name: str) -> sqlite3.Connection:
        key = (threading.get_ident(), name)
        conn = self._conns.get(key)
        if conn is None:
            from aitrader.trading.ledger import Ledger, now_iso

            path = self.path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            ledger = Ledger(path)  # creates the run schema
            conn = ledger.conn
            conn.executescript(FEEDBACK_SCHEMA)
            if "run_id" not in ledger.read_meta():
                ledger.write_meta({"run_id": path.parent.name, "models": [], "status": "running",
                                   "source": "serve-feedback", "started_at": now_iso(), "updated_at": now_iso()})
            self._conns[key] = conn
        return conn

    def store(self, name: str, run: str, batch: str, records: list[dict[str, Any]], model_id: str,
              digest: str) -> dict[str, Any]:
        """Store one checked batch in one transaction; records stored before are skipped (see the module doc)."""
        from aitrader.trading.ledger import (
            PRED_BLOB_COLUMNS,
            encode_outcomes,
            encode_predictions,
            next_prediction_id,
            now_iso,
        )

        conn = self._conn(name)
        conn.execute("BEGIN IMMEDIATE")
        try:
            fresh, keys = [], set()
            for r in records:
                mid = str(r.get("model_id") or model_id)
                key = (run, mid, r["symbol"], r["bar_index"])
                if key in keys or conn.execute("SELECT 1 FROM serve_feedback WHERE run = ? AND model_id = ? AND "
                                               "symbol = ? AND bar_index = ?", key).fetchone():
                    continue
                keys.add(key)
                fresh.append((mid, r))
            preds, outs = [], []
            for mid, r in fresh:
                dig = str(r.get("digest") or digest)
                feats = [float(x) for x in r["snapshot"]] if r.get("snapshot") is not None else None
                preds.append((r["ts"], r["bar_index"], r["symbol"], mid, dig, r["prediction"], r["confidence"],
                              "model", 0.0, None, feats))
                if r["outcome"] is not None:
                    outs.append((r["outcome"], str(r.get("outcome_ts") or r["ts"]), r["symbol"], mid, r["bar_index"]))
            if preds:
                first = next_prediction_id(conn)
                blobs = encode_predictions(preds, 8)
                conn.execute(f"INSERT INTO prediction_blocks (first_id, n, {', '.join(PRED_BLOB_COLUMNS)}) "
                             f"VALUES ({', '.join('?' * (len(PRED_BLOB_COLUMNS) + 2))})",
                             (first, blobs["n"], *(blobs[k] for k in PRED_BLOB_COLUMNS)))
            if outs:
                ob = encode_outcomes(outs)
                conn.execute("INSERT INTO outcome_blocks (n, symbol, model_id, bar_index, outcome, outcome_ts) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             (ob["n"], ob["symbol"], ob["model_id"], ob["bar_index"], ob["outcome"], ob["outcome_ts"]))
            stamp = now_iso()
            conn.executemany("INSERT INTO serve_feedback VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [(run, mid, r["symbol"], r["bar_index"], batch, stamp,
                               json.dumps(r, sort_keys=True, default=str)) for mid, r in fresh])
            self._register_models(conn, name, {(str(p[3]), str(p[2]), str(p[4])) for p in preds})
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return {"stored": len(fresh), "outcomes": len(outs), "duplicates": len(records) - len(fresh), "batch": batch}

    def _register_models(self, conn: sqlite3.Connection, name: str, seen: set[tuple[str, str, str]]) -> None:
        """``meta.models`` lists every (model_id, symbol, digest) fed back, as a paper-trade run lists its models."""
        row = conn.execute("SELECT value FROM meta WHERE key = 'models'").fetchone()
        models = json.loads(row[0]) if row else []
        have = {(m["model_id"], m["symbol"], m["digest"]) for m in models}
        for mid, sym, dig in sorted(seen - have):
            _, _, v = mid.rpartition(":v")
            models.append({"model_id": mid, "name": name, "symbol": sym, "digest": dig,
                           "version": int(v) if v.isdigit() else None})
        from aitrader.trading.ledger import now_iso

        conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         [("models", json.dumps(models, sort_keys=True)), ("updated_at", json.dumps(now_iso()))])

    def close(self) -> None:
        """Close this thread's connections; drop the others (no transaction is open on them between two
        requests; a connection is closed when collected)."""
        me = threading.get_ident()
        for (thread, _), conn in self._conns.items():
            if thread == me:
                conn.close()
        self._conns.clear()
