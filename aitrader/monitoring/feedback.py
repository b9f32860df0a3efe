"""``retrain``'s live feedback read from the run ledgers a block at a time (issue 11).

:func:`live_feedback` scores champion and challenger on the outcomes that paper-trade runs of a
model recorded. It reads each ledger's predictions one chunk at a time with the streamed monitor's
readers (:mod:`aitrader.monitoring.stream`: the old one-row-per-prediction table :data:`CHUNK
<aitrader.monitoring.stream.CHUNK>` rows at a time, then one checkpoint block at a time), keeps the
rows of the model (its model ids, an outcome known, ``source`` model or unset), re-predicts the
challenger on their feature vectors :data:`PREDICT_CHUNK` rows at a time and keeps only four arrays
per kept row: the logged prediction, the outcome, the challenger's prediction and whether the row is
the champion's (its digest): 25 bytes a row, where the whole-ledger read (``read_ledger`` then one
feature matrix) held every prediction of every run with its feature row as Python floats (~3.3 KB a
bar). The outcomes of the block format (``outcome_blocks``) are joined through sorted per-(symbol,
model) arrays of the model's outcomes (16 bytes an outcome), a later outcome of the same bar
replacing an earlier one as the whole-ledger reader's dict did.

The result is the one the whole-ledger read gave on the same ledgers (``tests/unit/test_retrain_feedback.py``
keeps that implementation as the oracle): the same rows in the same order, the same floats, so the
same metrics, provided the challenger predicts a row the same whether it comes alone or in a batch
(the deployed LightGBM through ONNX does: ``scripts/bench/scale.py --only retrain`` compares both
paths on its runs). A ledger that cannot be read (not SQLite, not a ledger, a damaged
block) is skipped with a warning, with nothing of it counted; only the tables feedback reads (meta,
predictions, prediction and outcome blocks) are read, so a ledger damaged only in its equity curve
or events now gives its predictions.
"""

from __future__ import annotations

import logging
import sqlite3
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aitrader.errors import AitraderError, TradingError

log = logging.getLogger("aitrader.retrain")  # the retrain logger: its warnings reach retrain.log

#: Rows of feature vectors handed to the challenger at a time (25 features: ~3.3 MB of float64; the
#: runner's own buffers and the copies scale with it, so a larger chunk only raises the peak).
PREDICT_CHUNK = 16_384


@dataclass
class _Rows:
    """One chunk's rows of the model with a known outcome."""

    prediction: np.ndarray
    outcome: np.ndarray
    champion: np.ndarray  # bool: the row's digest is the champion's
    features: np.ndarray  # rows x n_features, NaN where a value (or the whole vector) is missing


@dataclass
class _RunFeedback:
    """What one run contributes; dropped whole if the ledger turns out damaged midway."""

    prediction: list[np.ndarray] = field(default_factory=list)
    outcome: list[np.ndarray] = field(default_factory=list)
    champion: list[np.ndarray] = field(default_factory=list)
    challenger: list[np.ndarray] = field(default_factory=list)
    pending: list[np.ndarray] = field(default_factory=list)  # feature rows not yet predicted
    pending_rows: int = 0

    @property
    def rows(self) -> int:
        return sum(a.size for a in self.outcome)


class _Outcomes:
    """The model's outcomes of the ``outcome_blocks`` table: per (symbol, model_id), the bars sorted
    and their values (the last one stored for a bar wins, as in ``trading.ledger.outcome_map``)."""

    def __init__(self, conn: sqlite3.Connection, tables: set[str], ids: set[str]) -> None:
        from aitrader.trading.ledger import unpack_f8, unpack_i8, unpack_text

        parts: dict[tuple[Any, Any], list[tuple[np.ndarray, np.ndarray]]] = {}
        if "outcome_blocks" in tables:
            for n, sym, mid, bar, val in conn.execute(
                    "SELECT n, symbol, model_id, bar_index, outcome FROM outcome_blocks ORDER BY id"):
                models = unpack_text(mid, n)
                if not any(str(m) in ids for m in set(models)):
                    continue
                symbols = unpack_text(sym, n)
                bars, values = unpack_i8(bar, n), unpack_f8(val, n)
                pairs = dict.fromkeys(zip(symbols, models, strict=True))
                if len(pairs) == 1:  # the usual block: one symbol and model (one of ours: checked above)
                    parts.setdefault(next(iter(pairs)), []).append((bars, values))
                    continue
                keys = list(zip(symbols, models, strict=True))
                for key in pairs:
                    if str(key[1]) in ids:
                        sel = np.array([k == key for k in keys], dtype=bool)
                        parts.setdefault(key, []).append((bars[sel], values[sel]))
        self.index: dict[tuple[Any, Any], tuple[np.ndarray, np.ndarray]] = {}
        for key, pieces in parts.items():
            bars = np.concatenate([p[0] for p in pieces])
            values = np.concatenate([p[1] for p in pieces])
            pieces.clear()
            # Paper-trade stores a key's outcomes in bar order, each once: then nothing to sort.
            if bars.size > 1 and not bool(np.all(bars[1:] > bars[:-1])):
                order = np.argsort(bars, kind="stable")  # equal bars keep their storage order
                bars, values = bars[order], values[order]
                last = np.append(bars[1:] != bars[:-1], True)  # the last stored of each bar
                bars, values = bars[last], values[last]
            self.index[key] = (bars, values)

    def apply(self, symbols: list[Any], models: list[Any], bars: np.ndarray, outcome: np.ndarray,
              rows: np.ndarray) -> None:
        """Replace ``outcome[rows]`` by the stored outcome of each row's (symbol, model, bar), if any."""
        if not self.index or rows.size == 0:
            return
        keys = [(symbols[i], models[i]) for i in rows.tolist()]
        for key in dict.fromkeys(keys):
            got = self.index.get(key)
            if got is None or got[0].size == 0:
                continue
            sel = rows[np.array([k == key for k in keys], dtype=bool)]
            known, values = got
            pos = np.minimum(np.searchsorted(known, bars[sel]), known.size - 1)
            hit = known[pos] == bars[sel]
            outcome[sel[hit]] = values[pos[hit]]


def _model_chunks(run_dir: Path, name: str, champion_digest: str | None,
                  n_features: int) -> Iterator[_Rows]:
    """The rows of ``name`` with a known outcome in one ledger, a chunk at a time, in id order.
    TradingError when the file is not a readable ledger (possibly after some chunks)."""
    from aitrader.monitoring.ledger import _decode, ledger_tables, open_run_ledger
    from aitrader.monitoring.monitor import model_ids, model_name
    from aitrader.monitoring.stream import _block_chunks, _old_chunks

    path, conn = open_run_ledger(run_dir)
    try:
        tables = ledger_tables(conn, path)
        meta = {k: _decode(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        models = [m for m in (meta.get("models") or []) if isinstance(m, dict)]
        entries = [m for m in models if model_name(m) == name]
        if not entries:
            return
        ids: set[str] = set().union(*(model_ids(m) for m in entries))
        outcomes = _Outcomes(conn, tables, ids)
        chunks = [_old_chunks(conn, n_features)]
        if "prediction_blocks" in tables:
            chunks.append(_block_chunks(conn, n_features))
        for reader in chunks:
            for c in reader:
                kinds = {k: str(k[0]) in ids and (k[1] is None or k[1] == "model")
                         for k in set(zip(c.model_id, c.source, strict=True))}
                if len(kinds) == 1:  # one model and source in the chunk (the usual block)
                    mine = np.arange(len(c.model_id)) if next(iter(kinds.values())) else np.empty(0, np.int64)
                else:
                    mine = np.flatnonzero([kinds[k] for k in zip(c.model_id, c.source, strict=True)])
                if mine.size == 0:
                    continue
                outcome = c.outcome.copy()
                outcomes.apply(c.symbol, c.model_id, c.bar, outcome, mine)
                keep = mine[~np.isnan(outcome[mine])]
                if keep.size == 0:
                    continue
                champion = _champion_rows(c.digest, keep, champion_digest)
                feats = c.features[keep] if c.features is not None else np.full((keep.size, n_features), np.nan)
                yield _Rows(prediction=c.prediction[keep], outcome=outcome[keep], champion=champion, features=feats)
    except (sqlite3.DatabaseError, zlib.error, ValueError) as exc:
        raise TradingError(f"cannot read ledger {path}: {exc}; the file is damaged or not SQLite") from exc
    finally:
        conn.close()


def _champion_rows(digests: list[Any], keep: np.ndarray, champion_digest: str | None) -> np.ndarray:
    """Whether each kept row's digest is the champion's (none when there is no champion)."""
    if not champion_digest:
        return np.zeros(keep.size, dtype=bool)
    same = {d: d == champion_digest for d in set(digests)}
    if len(same) == 1:
        return np.full(keep.size, next(iter(same.values())), dtype=bool)
    return np.array([same[digests[i]] for i in keep.tolist()], dtype=bool)


def _predict(challenger: Any, acc: _RunFeedback) -> None:
    """The challenger's predictions of the pending feature rows (NaN where a feature is missing)."""
    if not acc.pending:
        return
    x = np.concatenate(acc.pending) if len(acc.pending) > 1 else acc.pending[0]
    acc.pending, acc.pending_rows = [], 0
    ok = np.isfinite(x).all(axis=1)
    out = np.full(len(x), np.nan)
    if ok.any():
        out[ok] = challenger.predict_batch(x[ok])
    acc.challenger.append(out)


def _run_feedback(run_dir: Path, name: str, champion_digest: str | None, challenger: Any,
                  n_features: int) -> _RunFeedback | None:
    """One run's arrays, or None when the ledger is unreadable (warned) or holds no row of the model."""
    acc = _RunFeedback()
    rows = _model_chunks(run_dir, name, champion_digest, n_features)
    while True:
        try:
            part = next(rows, None)
        except AitraderError as exc:
            log.warning("feedback: skipping %s: %s", run_dir, exc)
            return None
        if part is None:
            break
        acc.prediction.append(part.prediction)
        acc.outcome.append(part.outcome)
        acc.champion.append(part.champion)
        for lo in range(0, len(part.features), PREDICT_CHUNK):
            piece = part.features[lo: lo + PREDICT_CHUNK]
            if acc.pending_rows + len(piece) > PREDICT_CHUNK:
                _predict(challenger, acc)
            acc.pending.append(piece)
            acc.pending_rows += len(piece)
    _predict(challenger, acc)
    return acc if acc.rows else None


def _joined(runs: list[_RunFeedback], name: str) -> np.ndarray:
    """One array of every run's pieces of ``name``, the pieces released as they are joined."""
    out = np.concatenate([a for r in runs for a in getattr(r, name)])
    for r in runs:
        getattr(r, name).clear()
    return out


def live_feedback(name: str, runs_dir: Path, champion_digest: str | None, challenger: Any,
                  challenger_names: list[str], task: str) -> dict[str, Any]:
    """Scores on the outcomes that paper-trade runs of ``name`` under ``runs_dir`` recorded (extra
    evaluation data): ``runs``, ``outcomes``, and the ``champion`` (its logged predictions, rows
    whose digest is ``champion_digest``) and ``challenger`` (re-predicted on the logged feature
    vectors, all rows) accuracy metrics."""
    from aitrader.monitoring.accuracy import accuracy_metrics

    runs: list[_RunFeedback] = []
    for db in sorted(runs_dir.glob("*/ledger.db")) if runs_dir.is_dir() else []:
        got = _run_feedback(db.parent, name, champion_digest, challenger, len(challenger_names))
        if got is not None:
            runs.append(got)
    if not runs:
        return {"runs": 0, "outcomes": 0, "champion": None, "challenger": None}
    p_all, y_all, c_mask, ch_pred = (_joined(runs, k) for k in ("prediction", "outcome", "champion", "challenger"))
    return {
        "runs": len(runs),
        "outcomes": int(y_all.size),
        "champion": accuracy_metrics(p_all[c_mask], y_all[c_mask], task=task) if c_mask.any() else None,
        "challenger": accuracy_metrics(ch_pred, y_all, task=task),
    }
