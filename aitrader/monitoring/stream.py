"""``aitrader monitor`` in bounded memory: one pass over the ledger, chunk by chunk.

:func:`monitor_run` gives the summary of :func:`aitrader.monitoring.monitor.monitor_ledger` without
holding the run in memory. Nothing per prediction is kept in Python: the predictions (old table rows
and the checkpoint blocks) are read :data:`CHUNK` rows at a time, and every figure is either
accumulated exactly or handed to a scratch SQLite file that sorts on disk:

* counts, sums and extremes (predictions by source, MAE, RMSE, hit rate, IC, feature availability)
  and the PSI histograms: exact accumulators (the IC from shifted sums: equal to ``np.corrcoef`` to
  rounding);
* the trailing accuracy window and its noise: the last ``window`` pairs, kept in a ring;
* outcomes are joined to their predictions through the scratch file (an integer key per
  ``(symbol, model, bar)``), the rank IC is the Pearson correlation of average ranks computed by
  SQLite window functions, and the latency percentiles are read off an index: both exact;
* lag-1 autocorrelation and the integrated autocorrelation time (``rho``, ``tau`` of each series,
  which set its effective sample size) from lag sums up to :data:`MAX_LAG` accumulated with one FFT
  per chunk: exact (to rounding) whenever Sokal's window ends within :data:`MAX_LAG` lags or the
  run has at most ``2 * MAX_LAG`` values; otherwise ``tau`` is the sum up to :data:`MAX_LAG` (an
  autocorrelation time above ~400 bars, where ``n_eff`` is tiny either way);
* KS: the live CDF is counted at :data:`KS_GRID` points per baseline percentile interval (both
  one-sided limits) instead of at every live value. Between two grid points the reconstructed
  baseline CDF is linear and rises by at most ``1 / (100 * KS_GRID)``, so the streamed statistic
  ``ks_binned`` satisfies ``ks_binned <= ks_exact <= ks_binned + 0.001`` (the exact one is
  :func:`aitrader.monitoring.drift.ks_statistic`, itself within 0.01 of the KS against the
  unreconstructed training sample). KS is reported, never alerted on.

Memory: one chunk of decoded rows (a few MB), the window ring, ``MAX_LAG`` values per series and the
scratch file's page cache (:data:`SCRATCH_CACHE_KB`); none of it grows with the run. The equity
curve is streamed for the worst daily loss too (a ledger whose stamps go backwards, which paper-trade
never writes, is read whole as before). The HTML report (``--report``) draws every prediction and
still uses the in-memory path.
"""

from __future__ import annotations

import sqlite3
import tempfile
import zlib
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aitrader.config import Monitoring
from aitrader.errors import TradingError
from aitrader.features.fitted import regime_labels
from aitrader.monitoring.accuracy import accuracy_metrics
from aitrader.monitoring.drift import (
    _finite,
    _interior_edges,
    baseline_cdf,
    drift_verdict,
    importance_weights,
    psi_from_counts,
    rank_drift_rows,
)
from aitrader.monitoring.ledger import (
    LEDGER_NAME,
    _decode,
    _decode_rows,
    _table_columns,
    ledger_tables,
    open_ledger,
    open_run_ledger,
)
from aitrader.monitoring.monitor import (
    MonitorResult,
    _check_manifest,
    _daily_losses,
    _holdout_reference,
    assemble_summary,
    event_metrics,
    model_events,
    model_ids,
    select_model,
    window_noise,
)
from aitrader.monitoring.regime import regime_features, regime_row

if TYPE_CHECKING:  # only a ledger outside what paper-trade writes is read through pandas (imported there)
    import pandas as pd

#: Prediction rows decoded at a time from the old table (the blocks come one checkpoint at a time).
CHUNK = 16_384
#: Lags of the autocorrelation sums kept per series (see the module docstring).
MAX_LAG = 2048
#: KS evaluation points per baseline percentile interval: the streamed KS is within 1 / (100 x KS_GRID).
KS_GRID = 10
#: Page cache of the scratch SQLite file (KiB): its sorts spill to disk beyond this.
SCRATCH_CACHE_KB = 2048


@dataclass
class _Meta:
    run_dir: Path
    meta: dict[str, Any]
    events: list[dict[str, Any]]  # the events table's rows (column -> value), payload decoded

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id") or self.run_dir.name)

    @property
    def models(self) -> list[dict[str, Any]]:
        return [m for m in (self.meta.get("models") or []) if isinstance(m, dict)]


# ---------------------------------------------------------------------------- accumulators


class SeriesStats:
    """Lag-1 autocorrelation and integrated autocorrelation time of a series fed in pieces.

    Keeps the lag sums ``S_k = sum_t y_t y_{t+k}`` (``k <= MAX_LAG``) of ``y = x - shift`` (the
    first value: keeps the sums away from cancellation), the total, and the first and last
    ``MAX_LAG`` values; the centred sums follow exactly from these."""

    def __init__(self, max_lag: int = MAX_LAG) -> None:
        self.L = int(max_lag)
        self.n = 0
        self.shift = 0.0
        self.total = 0.0
        self.S = np.zeros(self.L + 1)
        self.head = np.empty(0)
        self.tail = np.zeros(self.L)  # the previous L values (zeros before the start: no contribution)

    def add(self, values: np.ndarray) -> None:
        x = np.asarray(values, dtype=float)
        if x.size == 0:
            return
        if self.n == 0:
            self.shift = float(x[0])
        u = x - self.shift
        C, L = u.size, self.L
        z = np.concatenate((self.tail, u))
        size = L + C
        # c[m] = sum_j u[j] z[j + m]; pairs (t - k, t) with t in this piece are m = L - k.
        c = np.fft.irfft(np.conj(np.fft.rfft(u, size)) * np.fft.rfft(z, size), size)[: L + 1]
        self.S += c[::-1]
        self.total += float(u.sum())
        if self.head.size < L:
            self.head = np.concatenate((self.head, u[: L - self.head.size]))
        self.tail = z[-L:]
        self.n += C

    def rho(self) -> float:
        """:func:`aitrader.monitoring.drift.lag1_autocorrelation` of the values fed."""
        n = self.n
        if n < 3:
            return 0.0
        first, last = float(self.head[0]), float(self.tail[-1])
        m = n - 1
        sa, sb = self.total - last, self.total - first
        saa, sbb = self.S[0] - last * last, self.S[0] - first * first
        cov = self.S[1] - sa * sb / m
        va, vb = saa - sa * sa / m, sbb - sb * sb / m
        den = float(np.sqrt(max(va, 0.0) * max(vb, 0.0)))
        return float(cov / den) if den > 0 else 0.0

    def tau(self, c: float = 5.0) -> float:
        """:func:`aitrader.monitoring.drift.autocorrelation_time` of the values fed (lags capped at MAX_LAG)."""
        n = self.n
        if n < 3:
            return 1.0
        K = min(self.L, n // 2, n - 1)
        mean = self.total / n
        k = np.arange(K + 1)
        first_k = np.concatenate(([0.0], np.cumsum(self.head[:K])))  # sum of the first k values
        last_k = np.concatenate(([0.0], np.cumsum(self.tail[::-1][:K])))  # sum of the last k values
        cov = self.S[: K + 1] - mean * ((self.total - last_k) + (self.total - first_k)) + (n - k) * mean * mean
        var = float(cov[0])
        if var <= 0:
            return 1.0
        acf = cov / var
        taus = 1.0 + 2.0 * np.cumsum(acf[1:])
        lags = np.arange(1, taus.size + 1)
        ok = lags >= c * taus
        tau = float(taus[np.argmax(ok)]) if ok.any() else float(taus[-1])
        return max(1.0, tau)


class DriftAccumulator:
    """PSI histogram, KS grid counts and :class:`SeriesStats` of one live series against its baseline."""

    def __init__(self, baseline: Mapping[str, Any] | None, name: str) -> None:
        self.baseline = dict(baseline or {})
        self.name = name
        self.n = 0
        self.stats = SeriesStats()
        counts = np.asarray(self.baseline.get("counts") or [], dtype=float)
        self.counts = counts
        self.edges: np.ndarray | None = None
        if counts.size >= 2 and counts.sum() > 0:
            self.edges = _interior_edges(self.baseline.get("bin_edges") or [], counts.size, name)
            self.live_counts = np.zeros(counts.size)
        q = np.sort(_finite(self.baseline.get("quantiles") or []))
        self.q = q
        self.grid = np.empty(0)
        if q.size >= 2:
            steps = np.linspace(0.0, 1.0, KS_GRID + 1)[:-1]
            inner = (q[:-1, None] + (q[1:] - q[:-1])[:, None] * steps[None, :]).ravel()
            self.grid = np.concatenate((inner, q[-1:]))
            self.le = np.zeros(self.grid.size)  # live values <= g
            self.lt = np.zeros(self.grid.size)  # live values < g

    def add(self, column: np.ndarray) -> None:
        x = _finite(column)
        if x.size == 0:
            return
        self.n += x.size
        self.stats.add(x)
        if self.edges is not None:
            idx = np.searchsorted(self.edges, x, side="right")
            self.live_counts += np.bincount(idx, minlength=self.edges.size + 1)
        if self.grid.size:
            s = np.sort(x)
            self.le += np.searchsorted(s, self.grid, side="right")
            self.lt += np.searchsorted(s, self.grid, side="left")

    def psi(self) -> float:
        if self.edges is None:
            return float("nan")
        return psi_from_counts(self.counts, self.live_counts)

    def ks(self) -> float:
        """KS at the grid points (both one-sided limits): within 1 / (100 x KS_GRID) below the exact one."""
        if self.q.size < 2 or self.n == 0:
            return float("nan")
        right = np.abs(self.le / self.n - baseline_cdf(self.q, self.grid))
        left = np.abs(self.lt / self.n - baseline_cdf(self.q, self.grid, left=True))
        return float(max(right.max(), left.max()))

    def verdict(self, psi_max: float) -> dict[str, Any]:
        return drift_verdict(self.baseline, psi_value=self.psi(), ks=self.ks(), n=self.n, rho=self.stats.rho(),
                             tau=self.stats.tau(), psi_max=psi_max)


class _Moments:
    """Exact running sums of prediction/outcome pairs: MAE, RMSE, hit rate, Pearson IC."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.n = 0
        self.abs_err = self.sq_err = 0.0
        self.hits = self.hit_n = 0
        self.shift: tuple[float, float] | None = None
        self.sx = self.sy = self.sxx = self.syy = self.sxy = 0.0
        self.lo = np.array([np.inf, np.inf])
        self.hi = np.array([-np.inf, -np.inf])

    def add(self, p: np.ndarray, y: np.ndarray) -> None:
        if p.size == 0:
            return
        self.n += p.size
        if self.task != "classification":
            err = p - y
            self.abs_err += float(np.abs(err).sum())
            self.sq_err += float((err**2).sum())
        known = y != 0
        side = (p - 0.5) if self.task == "classification" else p
        self.hits += int((np.sign(side[known]) == np.sign(y[known])).sum())
        self.hit_n += int(known.sum())
        if self.shift is None:
            self.shift = (float(p[0]), float(y[0]))
        a, b = p - self.shift[0], y - self.shift[1]
        self.sx += float(a.sum())
        self.sy += float(b.sum())
        self.sxx += float(a @ a)
        self.syy += float(b @ b)
        self.sxy += float(a @ b)
        self.lo = np.minimum(self.lo, [p.min(), y.min()])
        self.hi = np.maximum(self.hi, [p.max(), y.max()])

    def spread(self) -> bool:
        """At least 3 pairs and neither side constant (else no correlation is defined)."""
        return self.n >= 3 and bool(self.hi[0] > self.lo[0]) and bool(self.hi[1] > self.lo[1])

    def ic(self) -> float | None:
        n = self.n
        if not self.spread():
            return None
        cov = self.sxy - self.sx * self.sy / n
        vx, vy = self.sxx - self.sx**2 / n, self.syy - self.sy**2 / n
        with np.errstate(divide="ignore", invalid="ignore"):
            r = cov / np.sqrt(vx * vy) if vx > 0 and vy > 0 else float("nan")
        return float(np.clip(r, -1.0, 1.0)) if np.isfinite(r) else None

    def metrics(self, rank_ic: float | None) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "mae": None, "rmse": None, "hit_rate": None, "ic": None, "rank_ic": None}
        if self.n == 0:
            return out
        if self.task != "classification":
            out["mae"] = self.abs_err / self.n
            out["rmse"] = float(np.sqrt(self.sq_err / self.n))
        out["hit_rate"] = (self.hits / self.hit_n) if self.hit_n else None
        out["ic"] = self.ic()
        out["rank_ic"] = rank_ic
        return out


class _Scratch:
    """A temporary SQLite file: outcomes by key, (prediction, outcome) pairs and latencies, sorted on disk."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="aitrader-monitor-")
        self.conn = sqlite3.connect(Path(self._dir.name) / "scratch.db")
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE",
                       f"cache_size=-{SCRATCH_CACHE_KB}"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.conn.execute("CREATE TABLE outcome (k INTEGER PRIMARY KEY, v REAL, d INTEGER)")
        self.conn.execute("CREATE TABLE pairs (p REAL, y REAL)")
        self.conn.execute("CREATE TABLE lat (v REAL)")
        self.codes: dict[tuple[Any, Any], int] = {}

    def close(self) -> None:
        self.conn.close()
        self._dir.cleanup()

    def code(self, symbol: Any, model: Any, create: bool) -> int | None:
        key = (symbol, model)
        if key not in self.codes and create:
            self.codes[key] = len(self.codes)
        return self.codes.get(key)

    def add_outcomes(self, symbols: list[Any], models: list[Any], bars: np.ndarray, values: np.ndarray) -> None:
        codes = np.array([self.code(s, m, True) for s, m in zip(symbols, models, strict=True)], dtype=np.int64)
        keys = (codes << 40) + bars.astype(np.int64)
        # A later outcome of the same key replaces an earlier one (as the in-memory reader's dict did).
        self.conn.executemany("INSERT OR REPLACE INTO outcome (k, v) VALUES (?, ?)",
                              zip(keys.tolist(), values.tolist(), strict=True))

    def outcomes(self, symbols: list[Any], models: list[Any], bars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, value) per row: the stored outcome of each key."""
        n = len(symbols)
        found = np.zeros(n, dtype=bool)
        value = np.full(n, np.nan)
        if not self.codes or n == 0:
            return found, value
        codes = np.array([-1 if (c := self.code(s, m, False)) is None else c
                          for s, m in zip(symbols, models, strict=True)], dtype=np.int64)
        ok = codes >= 0
        keys = np.where(ok, (codes << 40) + bars.astype(np.int64), -1)
        for c in np.unique(codes[ok]).tolist():
            sel = np.flatnonzero(codes == c)
            lo, hi = int(keys[sel].min()), int(keys[sel].max())
            got = self.conn.execute("SELECT k, v FROM outcome WHERE k BETWEEN ? AND ? ORDER BY k", (lo, hi)).fetchall()
            if not got:
                continue
            k_arr = np.array([g[0] for g in got], dtype=np.int64)
            v_arr = np.array([np.nan if g[1] is None else g[1] for g in got], dtype=float)
            pos = np.searchsorted(k_arr, keys[sel])
            pos = np.minimum(pos, k_arr.size - 1)
            hit = k_arr[pos] == keys[sel]
            found[sel[hit]] = True
            value[sel[hit]] = v_arr[pos[hit]]
        return found, value

    def add_pairs(self, p: np.ndarray, y: np.ndarray) -> None:
        self.conn.executemany("INSERT INTO pairs VALUES (?, ?)", zip(p.tolist(), y.tolist(), strict=True))

    def add_latency(self, values: np.ndarray) -> None:
        self.conn.executemany("INSERT INTO lat VALUES (?)", ((v,) for v in values.tolist()))

    def rank_ic(self, n: int) -> float | None:
        """Spearman correlation (average ranks for ties) of the stored pairs."""
        if n < 3:
            return None
        centre = (n + 1) / 2.0
        row = self.conn.execute(
            "SELECT SUM((rp - ?1) * (ry - ?1)), SUM((rp - ?1) * (rp - ?1)), SUM((ry - ?1) * (ry - ?1)) FROM ("
            " SELECT RANK() OVER (ORDER BY p) + (COUNT(*) OVER (PARTITION BY p) - 1) / 2.0 AS rp,"
            " RANK() OVER (ORDER BY y) + (COUNT(*) OVER (PARTITION BY y) - 1) / 2.0 AS ry FROM pairs)",
            (centre,)).fetchone()
        cov, vx, vy = (float(v or 0.0) for v in row)
        if vx <= 0 or vy <= 0:
            return None
        r = cov / np.sqrt(vx * vy)
        return float(np.clip(r, -1.0, 1.0)) if np.isfinite(r) else None

    def percentiles(self, n: int, qs: tuple[float, ...]) -> list[float | None]:
        """``np.percentile`` (linear) of the stored latencies, read off an index."""
        if n == 0:
            return [None for _ in qs]
        self.conn.execute("CREATE INDEX lat_v ON lat (v)")
        out: list[float | None] = []
        for q in qs:
            pos = q / 100.0 * (n - 1)
            lo = int(np.floor(pos))
            vals = [r[0] for r in self.conn.execute("SELECT v FROM lat ORDER BY v LIMIT 2 OFFSET ?", (lo,))]
            a = float(vals[0])
            b = float(vals[1]) if len(vals) > 1 else a
            frac = pos - lo
            out.append(a + (b - a) * frac if frac else a)
        return out


# ---------------------------------------------------------------------------- reading in chunks


@dataclass
class _Chunk:
    symbol: list[Any]
    model_id: list[Any]
    digest: list[Any]
    source: list[Any]
    bar: np.ndarray
    prediction: np.ndarray
    latency: np.ndarray
    in_sample: np.ndarray  # bool: in_sample == 1
    outcome: np.ndarray  # NaN: none stored in the row (the blocks keep outcomes apart)
    features: np.ndarray | None  # rows x n_features, NaN rows for a missing/other-width vector


#: Integers a float64 holds exactly: numpy and pandas convert them alike.
_EXACT_INT = 2**53


def _numeric(values: list[Any]) -> np.ndarray:
    """``pd.to_numeric(values, errors="coerce")`` as float64. SQLite hands back floats, integers and NULLs,
    which numpy converts to the same floats (NULL: NaN); anything else (text in a numeric column of a
    hand-made ledger, huge integers) is converted by pandas, as before."""
    if all(v is None or type(v) is float or (type(v) is int and -_EXACT_INT <= v <= _EXACT_INT) for v in values):
        return np.array([np.nan if v is None else v for v in values], dtype=float)
    import pandas as pd

    return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float)


def _old_chunks(conn: sqlite3.Connection, n_features: int) -> Iterator[_Chunk]:
    have = set(_table_columns(conn, "predictions"))
    cols = ("symbol", "model_id", "digest", "source", "bar_index", "prediction", "latency_us", "in_sample", "outcome",
            "features")
    select = ", ".join(c if c in have else f"NULL AS {c}" for c in cols)
    cur = conn.execute(f"SELECT {select} FROM predictions ORDER BY id")  # noqa: S608 - fixed names
    while rows := cur.fetchmany(CHUNK):
        c = list(zip(*rows, strict=True))
        yield _Chunk(symbol=list(c[0]), model_id=list(c[1]), digest=list(c[2]), source=list(c[3]),
                     bar=np.nan_to_num(_numeric(list(c[4])), nan=-1).astype(np.int64), prediction=_numeric(list(c[5])),
                     latency=_numeric(list(c[6])), in_sample=_numeric(list(c[7])) == 1, outcome=_numeric(list(c[8])),
                     features=_decode_rows(list(c[9]), n_features) if "features" in have else None)


def _block_chunks(conn: sqlite3.Connection, n_features: int) -> Iterator[_Chunk]:
    from aitrader.trading.ledger import PRED_BLOB_COLUMNS, decode_predictions, unpack_f8, unpack_i8, unpack_text

    cols = ", ".join(PRED_BLOB_COLUMNS)
    for first_id, n, *raw in conn.execute(
        f"SELECT first_id, n, {cols} FROM prediction_blocks ORDER BY first_id"  # noqa: S608 - fixed names
    ):
        b = dict(zip(PRED_BLOB_COLUMNS, raw, strict=True))
        lengths = unpack_i8(b["n_features"], n)
        if n and bool(np.all(lengths == n_features)):  # one model's rows: stored column-major
            flat = unpack_f8(b["features"], n * n_features, int(b.get("feature_bytes") or 8))
            feats = flat.reshape(n_features, n).T if n_features else np.empty((n, 0))
        else:  # rows of other widths or without features: the general decoder
            feats = _decode_rows([r[10] for r in decode_predictions(first_id, n, b)], n_features)
        yield _Chunk(symbol=unpack_text(b["symbol"], n), model_id=unpack_text(b["model_id"], n),
                     digest=unpack_text(b["digest"], n), source=unpack_text(b["source"], n),
                     bar=unpack_i8(b["bar_index"], n), prediction=unpack_f8(b["prediction"], n),
                     latency=unpack_f8(b["latency_us"], n, 4), in_sample=unpack_i8(b["in_sample"], n) == 1,
                     outcome=np.full(n, np.nan), features=feats)


def _any_digest(conn: sqlite3.Connection, tables: set[str]) -> bool:
    from aitrader.trading.ledger import unpack_text

    if "digest" in _table_columns(conn, "predictions") and conn.execute(
            "SELECT 1 FROM predictions WHERE digest IS NOT NULL LIMIT 1").fetchone():
        return True
    if "prediction_blocks" in tables:
        for n, blob in conn.execute("SELECT n, digest FROM prediction_blocks ORDER BY first_id"):
            if any(d is not None for d in unpack_text(blob, n)):
                return True
    return False


def _load_outcomes(conn: sqlite3.Connection, tables: set[str], scratch: _Scratch) -> None:
    from aitrader.trading.ledger import unpack_f8, unpack_i8, unpack_text

    if "outcome_blocks" not in tables:
        return
    for n, sym, mid, bar, val in conn.execute(
            "SELECT n, symbol, model_id, bar_index, outcome FROM outcome_blocks ORDER BY id"):
        scratch.add_outcomes(unpack_text(sym, n), unpack_text(mid, n), unpack_i8(bar, n), unpack_f8(val, n))


#: Microseconds in a day: UTC day numbers of microsecond stamps.
_DAY_US = 86_400_000_000


def _utc_micros(stamps: list[Any]) -> np.ndarray | None:
    """Microseconds since the epoch of ISO 8601 stamps in the forms paper-trade writes
    (``YYYY-MM-DDTHH:MM:SS``, with ``.ffffff``, naive or ``+00:00``: UTC), read by numpy; None when any
    stamp of the piece has another form (pandas reads those).

    A stamp qualifies only when numpy's reading of it, written back, is the stamp itself: the text is
    then exactly one of those forms, which ``pd.to_datetime(utc=True, format="ISO8601")`` reads as the
    same instant (a naive stamp as UTC)."""
    import warnings

    text = np.array(stamps)
    if text.dtype.kind != "U" or text.size == 0:  # NULLs or non-text cells
        return None
    width = text.dtype.itemsize // 4
    suffix = "+00:00" if width in (25, 32) else ""
    if width - len(suffix) not in (19, 26):
        return None
    core = text.astype(f"U{width - len(suffix)}") if suffix else text  # the suffix cut off (checked below)
    unit = "s" if width - len(suffix) == 19 else "us"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns on a zone it would drop
            values = core.astype(f"datetime64[{unit}]")
    except (ValueError, TypeError, OverflowError, Warning):
        return None
    back = np.datetime_as_string(values, unit=unit)  # type: ignore[call-overload]  # unit: "s" or "us"
    if np.isnat(values).any() or not np.array_equal(back, core):
        return None
    if suffix and not np.array_equal(np.char.add(core, suffix), text):
        return None
    return values.astype("datetime64[us]").astype(np.int64)


def _pandas_micros(stamps: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(readable, microseconds) of stamps in any form ``pd.to_datetime(utc=True, format="ISO8601")`` reads:
    NULL is not readable; text it cannot read raises its ValueError (a damaged ledger)."""
    import pandas as pd

    ts = pd.to_datetime(pd.Series(stamps, dtype=object), utc=True, format="ISO8601")
    ok = ts.notna().to_numpy()
    micros = np.zeros(len(stamps), dtype=np.int64)
    micros[ok] = ts[ok].dt.tz_convert(None).to_numpy().astype("datetime64[us]").astype(np.int64)
    return ok, micros


class _DailyLoss:
    """:func:`aitrader.monitoring.monitor._daily_losses` fed in pieces of stamps in order: the worst
    intraday drop below the previous day's close (the first day: below its first mark). Days are UTC
    dates; stamps are compared to the microsecond (paper-trade writes none finer)."""

    def __init__(self) -> None:
        self.worst: float | None = None
        self.worst_day: int | None = None  # UTC day number (days since 1970-01-01)
        self.prev_close: float | None = None
        self.day: int | None = None
        self.first = self.low = self.last = float("nan")
        self.last_us: int | None = None

    def _close_day(self) -> None:
        if self.day is None:
            return
        start = self.prev_close if self.prev_close is not None else self.first
        loss = max(0.0, 1.0 - self.low / start)
        if self.worst is None or loss > self.worst:
            self.worst, self.worst_day = loss, self.day
        self.prev_close = self.last

    def add(self, stamps: list[Any], equity: np.ndarray) -> bool:
        """Feed one piece; False when its stamps go back in time (the caller reads the curve whole)."""
        micros = _utc_micros(stamps)
        if micros is None:
            readable, micros = _pandas_micros(stamps)
        else:
            readable = np.ones(micros.size, dtype=bool)
        ok = np.isfinite(equity) & readable
        if not ok.any():
            return True
        us_ok, eq_ok = micros[ok], equity[ok]
        if (self.last_us is not None and int(us_ok[0]) < self.last_us) or bool((np.diff(us_ok) < 0).any()):
            return False
        self.last_us = int(us_ok[-1])
        days = np.floor_divide(us_ok, _DAY_US)
        cuts = np.flatnonzero(days[1:] != days[:-1]) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, days.size], strict=True):
            d, seg = int(days[lo]), eq_ok[lo:hi]
            if d != self.day:
                self._close_day()
                self.day, self.first, self.low = d, float(seg[0]), float(seg.min())
            else:
                self.low = min(self.low, float(seg.min()))
            self.last = float(seg[-1])
        return True

    def result(self) -> tuple[float | None, str | None]:
        self._close_day()
        self.day = None
        if self.worst is None or self.worst_day is None:
            return None, None
        return self.worst, str(np.datetime64(self.worst_day, "D"))


def _daily_loss_streamed(conn: sqlite3.Connection, tables: set[str]) -> tuple[float | None, str | None]:
    """The worst daily loss, one equity block (or :data:`CHUNK` old rows) at a time."""
    from aitrader.trading.ledger import _equity_blocks, equity_rows, unpack_f8, unpack_text

    def parts() -> Iterator[tuple[list[Any], np.ndarray]]:
        if "equity" in tables:  # the old format's rows, in the order trading.ledger.equity_rows reads them
            cur = conn.execute("SELECT ts, equity FROM equity ORDER BY bar_index, ts")
            while rows := cur.fetchmany(CHUNK):
                yield [r[0] for r in rows], _numeric([r[1] for r in rows])
        for _first, n, _bar, ts, _cash, eq in _equity_blocks(conn, tables):
            yield unpack_text(ts, n), unpack_f8(eq, n)

    acc = _DailyLoss()
    for stamps, equity in parts():
        if not acc.add(stamps, equity):  # stamps out of order (paper-trade never writes that): read whole
            return _daily_losses(_equity_frame(equity_rows(conn)))
    return acc.result()


def _equity_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    import pandas as pd

    df = pd.DataFrame(rows, columns=["bar_index", "ts", "cash", "equity"], dtype=object)
    if len(df):
        df["equity"] = pd.to_numeric(df["equity"], errors="coerce").astype(float)
        df["ts"] = pd.to_datetime(df["ts"], utc=True, format="ISO8601")
        df = df.sort_values("ts").reset_index(drop=True)
    return df


def read_meta(run_dir: str | Path) -> _Meta:
    """The run's meta and events (small tables), checking that the file is a ledger."""
    run = Path(run_dir)
    path, conn = open_run_ledger(run)
    try:
        tables = ledger_tables(conn, path)
        meta = {k: _decode(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        events: list[dict[str, Any]] = []
        if "events" in tables:
            cols = _table_columns(conn, "events")
            select = ", ".join(f'"{c}"' for c in cols)
            events = [dict(zip(cols, row, strict=True))
                      for row in conn.execute(f"SELECT {select} FROM events ORDER BY rowid")]  # noqa: S608
    except sqlite3.DatabaseError as exc:
        raise TradingError(f"cannot read ledger {path}: {exc}; the file is damaged or not SQLite") from exc
    finally:
        conn.close()
    for event in events:
        if "payload" in event:
            event["payload"] = _decode(event["payload"])
    return _Meta(run_dir=run, meta=meta, events=events)


# ---------------------------------------------------------------------------- the monitor


class _Pass:
    """Every accumulator of one model's rows, fed chunk by chunk in id order."""

    def __init__(self, names: list[str], baseline: Mapping[str, Any], task: str, win: int, scratch: _Scratch,
                 select: Any) -> None:
        self.scratch, self.win, self.select = scratch, win, select
        self.n_preds = self.n_in_sample = self.n_model = self.n_live = self.n_complete = self.n_pred_values = 0
        self.by_source: dict[str, int] = {}
        self.has_features = False
        self.moments = _Moments(task)
        self.ring: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self.ring_n = 0
        self.feats = [DriftAccumulator((baseline["features"] or {}).get(name), name) for name in names]
        # regime features (issue 16): live values counted per regime, as regime_shares does
        self.regimes = [(name, base, names.index(name), np.zeros(int(base["regimes"])))
                        for name, base in regime_features(baseline, names)]
        self.pred = DriftAccumulator(baseline.get("prediction") or {}, "prediction")

    def add(self, ch: _Chunk) -> None:
        self.has_features |= ch.features is not None
        mine = self.select(ch)
        if not mine.any():
            return
        found, stored = self.scratch.outcomes(ch.symbol, ch.model_id, ch.bar)
        outcome = np.where(found, stored, ch.outcome)
        self.n_preds += int(mine.sum())
        src = np.array(["model" if s is None else str(s) for s in ch.source], dtype=object)
        for s, cnt in zip(*np.unique(src[mine], return_counts=True), strict=True):
            self.by_source[str(s)] = self.by_source.get(str(s), 0) + int(cnt)
        is_model = mine & (src == "model")  # latency and error rate: every model row, in-sample too
        lat = ch.latency[is_model]
        self.scratch.add_latency(lat[~np.isnan(lat)] / 1000.0)
        self.n_model += int(is_model.sum())
        self.n_in_sample += int((mine & ch.in_sample).sum())
        scored = mine & ~ch.in_sample
        if ch.features is not None:  # feature drift and availability: every scored row, any source
            live = ch.features[scored]
            self.n_live += live.shape[0]
            self.n_complete += int(np.all(np.isfinite(live), axis=1).sum())
            for j, acc in enumerate(self.feats):
                acc.add(live[:, j])
            for _name, base, j, counts in self.regimes:
                k = counts.size
                counts += np.bincount(regime_labels(str(base["rule"]), k, live[:, j]), minlength=k)
        model_scored = scored & (src == "model")  # prediction drift and accuracy: the model's own rows
        values = ch.prediction[model_scored]
        self.n_pred_values += int(np.isfinite(values).sum())
        self.pred.add(values)
        y = outcome[model_scored]
        known = ~np.isnan(values) & ~np.isnan(y)
        p_k, y_k = values[known], y[known]
        fin = np.isfinite(p_k) & np.isfinite(y_k)
        self.moments.add(p_k[fin], y_k[fin])
        self.scratch.add_pairs(p_k[fin], y_k[fin])
        if p_k.size:  # the trailing window: the last `win` known pairs
            self.ring.append((p_k, y_k))
            self.ring_n += p_k.size
            while self.ring_n - self.ring[0][0].size >= self.win:
                self.ring_n -= self.ring.popleft()[0].size

    def regime_rows(self, cfg: Monitoring) -> list[dict[str, Any]]:
        rows = []
        for name, base, _j, counts in self.regimes:
            n = int(counts.sum())
            rows.append(regime_row(name, base, (counts / n).tolist() if n else [0.0] * counts.size, n, cfg))
        return rows

    def window(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.ring:
            return np.empty(0), np.empty(0)
        return (np.concatenate([p for p, _ in self.ring])[-self.win:],
                np.concatenate([y for _, y in self.ring])[-self.win:])


def _selector(entry: Mapping[str, Any], by_digest: bool) -> Any:
    """The rows of this model in a chunk, as :func:`aitrader.monitoring.monitor._model_rows` picks them."""
    digest, ids = entry.get("digest"), model_ids(entry)
    if by_digest:
        return lambda ch: np.array([d == digest for d in ch.digest], dtype=bool)
    return lambda ch: np.array([str(m) in ids for m in ch.model_id], dtype=bool)


def monitor_run(
    run_dir: str | Path,
    manifest: Mapping[str, Any],
    cfg: Monitoring,
    *,
    model_id: str | None = None,
    window: int | None = None,
    daily_loss_limit: float = 0.02,
    info: _Meta | None = None,
) -> MonitorResult:
    """:func:`aitrader.monitoring.monitor.monitor_ledger`'s summary (``series=False``) in bounded memory."""
    info = info or read_meta(run_dir)
    entry = select_model(info, model_id)
    names, baseline = _check_manifest(manifest)
    task = str((manifest.get("target") or {}).get("task") or "regression")
    path = Path(run_dir) / LEDGER_NAME
    conn = open_ledger(path)
    scratch = _Scratch()
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        by_digest = bool(entry.get("digest")) and _any_digest(conn, tables)
        _load_outcomes(conn, tables, scratch)
        run = _Pass(names, baseline, task, int(window or cfg.window), scratch, _selector(entry, by_digest))
        for ch in _old_chunks(conn, len(names)):
            run.add(ch)
        if "prediction_blocks" in tables:
            for ch in _block_chunks(conn, len(names)):
                run.add(ch)
        rank = scratch.rank_ic(run.moments.n) if run.moments.spread() else None
        p50, p99 = scratch.percentiles(int(scratch.conn.execute("SELECT COUNT(*) FROM lat").fetchone()[0]),
                                       (50.0, 99.0))
        daily = _daily_loss_streamed(conn, tables)
    except (sqlite3.DatabaseError, zlib.error, ValueError) as exc:
        raise TradingError(f"cannot read ledger {path}: {exc}; the file is damaged or not SQLite") from exc
    finally:
        conn.close()
        scratch.close()

    wp, wy = run.window()
    accuracy = {
        "run": run.moments.metrics(rank),
        "window": accuracy_metrics(wp, wy, task=task),
        "window_size": run.win,
        "holdout": _holdout_reference(manifest),
        "window_noise": window_noise(wp, wy, task=task),
    }
    if baseline.get("prediction"):
        pred_drift = run.pred.verdict(cfg.psi_max)
    else:
        pred_drift = {"psi": None, "ks": None, "n": run.n_pred_values, "significant": False}
    importance = (manifest.get("importance") or {}).get("features")
    weights, weights_from = importance_weights(names, importance if isinstance(importance, Mapping) else None)
    features = rank_drift_rows(baseline["features"], names, lambda j, _name: run.feats[j].verdict(cfg.psi_max),
                               [acc.n for acc in run.feats], weights=weights)
    ops = {
        "predictions": run.n_preds,
        "by_source": dict(sorted(run.by_source.items(), key=lambda kv: -kv[1])),
        "fallbacks": run.n_preds - run.n_model,
        "latency_ms_p50": p50,
        "latency_ms_p99": p99,
        "feature_availability": (run.n_complete / run.n_live) if run.has_features and run.n_live else None,
        **event_metrics(model_events(info.events, entry), run.n_model, daily),
    }
    summary = assemble_summary(info.run_id, info.run_dir, info.meta, entry, manifest, cfg, accuracy=accuracy,
                               features=features, pred_drift=pred_drift, n_live=run.n_live, weights_from=weights_from,
                               ops=ops, n_in_sample=run.n_in_sample, daily_loss_limit=daily_loss_limit,
                               regimes=run.regime_rows(cfg))
    return MonitorResult(summary=summary)
