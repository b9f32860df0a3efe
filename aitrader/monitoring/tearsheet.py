"""The tearsheet: one self-contained HTML report of a run (backtest or paper trade), for people.

``write_tearsheet(out, run_dir=...)`` reads a run folder's ``ledger.db`` (read-only) and writes one
HTML file whose charts are PNGs embedded as base64 data URIs: it opens offline, can be mailed or
archived, and loads nothing from the network. ``monitor --report`` and ``backtest --report`` both
write it.

Sections, top to bottom: a performance table (the run beside buy-and-hold of the same bars with
the same initial cash), the monitor's health, operations and accuracy (when a monitor summary is
given), then the charts listed in :data:`CHARTS`: equity against buy-and-hold, drawdown
(underwater), monthly returns heat map, trade markers on price, rolling IC and hit rate with dates,
prediction vs outcome, feature importance (the manifest's ``importance`` section), drift (table and
PSI chart). A chart whose data is missing (no bars, no manifest, no outcomes yet) is replaced by a
one-line note saying what it needs.

The traded period starts at the run's first prediction (the bars before it only warm the features
up and hold the initial cash); buy-and-hold puts the initial cash, split equally between the
traded symbols, into each symbol's close at that bar (no costs). Every figure goes through
:mod:`aitrader.training.metrics` (docs/metrics.md); the few it lacks are the private helpers
below: CAGR, the longest drawdown, time in market, average gross exposure, round trips, and the
rolling hit rate (the same rule as ``metrics.hit_rate``, vectorised over trailing windows).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
import sqlite3
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aitrader.errors import AitraderError
from aitrader.monitoring.files import write_text_atomic
from aitrader.trading.ledger import PREDICTION_COLUMNS, equity_rows, prediction_rows
from aitrader.training import metrics as M

CHARTS = ("equity", "drawdown", "monthly", "trades", "rolling", "scatter", "importance", "drift")
"""The chart names, in page order (each ``<img alt=NAME>``; a missing one has a ``<p class=note>``)."""

MAX_PRICE_PANELS = 4  # symbols drawn in the trade-markers chart
MAX_MARKED_FILLS = 300  # per panel; more zooms the panel onto the last ones
MAX_LINE_POINTS = 4000  # a longer curve is drawn from buckets (last value; min for the drawdown)
MAX_SCATTER_POINTS = 5000
TOP_FEATURES = 20
DEFAULT_WINDOW = 100

_BLUE, _GREY, _GREEN, _RED, _ORANGE = "#1f5fa8", "#8c8c8c", "#1a7f37", "#b42318", "#d97706"
_PALETTE = ("#1f5fa8", "#d97706", "#1a7f37", "#7c3aed")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em;margin-bottom:0.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd;
padding-bottom:0.2em}
.sub{color:#555;margin-top:0}
table{border-collapse:collapse;margin:0.5em 0 1em;font-variant-numeric:tabular-nums}
td,th{border:1px solid #d0d0d0;padding:3px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
table.perf td:nth-child(2){font-weight:600}
.ok{color:#1a7f37;font-weight:bold}.alert{color:#b42318;font-weight:bold}
.note{color:#666;font-style:italic}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0;display:block}
.small{font-size:0.9em;color:#555}
"""


# ---------------------------------------------------------------------------------------- data
@dataclass
class RunData:
    """What the tearsheet reads from one run's ledger, decoded (stamps as UTC-naive datetimes)."""

    run_dir: Path
    meta: dict[str, Any]
    equity: pd.Series  # equity per bar, index: UTC-naive stamps (one value per stamp, the last)
    fills: pd.DataFrame  # ts, symbol, side, quantity, price, commission, slippage
    predictions: pd.DataFrame  # ts, symbol, model_id, prediction, outcome (scored rows only)
    initial: float
    periods_per_year: float
    start: int  # position in ``equity`` of the first traded bar
    notes: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id") or self.run_dir.name)

    @property
    def symbols(self) -> list[str]:
        syms = {str(m.get("symbol")) for m in self.meta.get("models") or [] if isinstance(m, dict) and m.get("symbol")}
        syms |= set(self.fills["symbol"].astype(str)) if len(self.fills) else set()
        if not syms and isinstance(self.meta.get("data"), dict):
            syms = {str(s) for s in self.meta["data"]}
        return sorted(syms)

    @property
    def traded(self) -> pd.Series:
        return self.equity.iloc[self.start:]


def _utc_naive(values: Any) -> pd.DatetimeIndex:
    """ISO strings or datetimes -> a UTC DatetimeIndex without tz (naive stamps are taken as UTC)."""
    idx = pd.DatetimeIndex(pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601"))
    return idx.tz_localize(None)


def _index_utc_naive(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(index)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index


def _decode(value: Any) -> Any:
    try:
        return json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return value


def _rows(conn: sqlite3.Connection, tables: set[str], name: str, columns: list[str]) -> pd.DataFrame:
    if name not in tables:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    have = [r[1] for r in conn.execute(f"PRAGMA table_info({name})")]
    cols = [c for c in columns if c in have]
    frame = pd.DataFrame(conn.execute(f"SELECT {', '.join(cols)} FROM {name} ORDER BY rowid").fetchall(),
                         columns=cols, dtype=object)
    for c in columns:
        if c not in frame:
            frame[c] = None
    return frame


def read_run(run_dir: str | Path) -> RunData:
    """Read the run folder's ledger (read-only); a missing or foreign file is a TradingError."""
    from aitrader.errors import TradingError

    run = Path(run_dir)
    path = run / "ledger.db"
    if not path.is_file():
        raise TradingError(f"no ledger at {path}; pass the folder of a backtest or paper-trade run")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        raise TradingError(f"cannot open ledger {path}: {exc}; check the file's permissions") from exc
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables or not tables & {"equity", "equity_blocks"}:
            raise TradingError(f"{path} is not an aitrader ledger (tables found: {sorted(tables) or 'none'}); "
                               "pass the folder of a backtest or paper-trade run")
        meta = {k: _decode(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        # The equity curve and the predictions through the ledger's readers: old row tables and the
        # per-checkpoint blocks alike (docs/trading.md, *Blocks*).
        eq = pd.DataFrame([(ts, e) for _, ts, _, e in equity_rows(conn)], columns=["ts", "equity"], dtype=object)
        fills = _rows(conn, tables, "fills", ["ts", "symbol", "side", "quantity", "price", "commission", "slippage"])
        wanted = ["ts", "symbol", "model_id", "prediction", "outcome", "source", "in_sample"]
        at = [PREDICTION_COLUMNS.index(c) for c in wanted]
        preds = pd.DataFrame([[r[i] for i in at] for r in prediction_rows(conn, features="none")],
                             columns=wanted, dtype=object)
    except (sqlite3.DatabaseError, zlib.error, ValueError) as exc:
        raise TradingError(f"cannot read ledger {path}: {exc}; the file is damaged or not SQLite") from exc
    finally:
        conn.close()

    equity = pd.Series(pd.to_numeric(eq["equity"], errors="coerce").to_numpy(float), index=_utc_naive(eq["ts"]))
    equity = equity[~equity.index.duplicated(keep="last")].sort_index().dropna()
    for col in ("quantity", "price", "commission", "slippage"):
        fills[col] = pd.to_numeric(fills[col], errors="coerce").fillna(0.0).astype(float)
    fills["ts"] = _utc_naive(fills["ts"]) if len(fills) else pd.DatetimeIndex([])
    fills["signed"] = np.where(fills["side"].astype(str).str.lower() == "sell", -1.0, 1.0) * fills["quantity"]

    for col in ("prediction", "outcome"):
        preds[col] = pd.to_numeric(preds[col], errors="coerce").astype(float)
    first_pred = _utc_naive(preds["ts"]).min() if len(preds) else None
    scored = pd.Series(True, index=preds.index)
    scored &= preds["source"].fillna("model").astype(str).eq("model")
    scored &= ~pd.to_numeric(preds["in_sample"], errors="coerce").eq(1)
    preds = preds[scored].copy()
    preds["ts"] = _utc_naive(preds["ts"]) if len(preds) else pd.DatetimeIndex([])

    cfg: Any = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    try:
        initial = float(cfg["ml_trading"]["execution"]["initial_cash"])
    except (KeyError, TypeError, ValueError):
        initial = float(equity.iloc[0]) if len(equity) else 1.0
    cal: Any = meta.get("calendar") if isinstance(meta.get("calendar"), dict) else {}
    try:
        per_year = float(cal["periods_per_year"])
    except (KeyError, TypeError, ValueError):
        per_year = M.periods_per_year(pd.DatetimeIndex(equity.index)) if len(equity) else 252.0
    start = 0
    if first_pred is not None and not pd.isna(first_pred) and len(equity):
        start = min(int(equity.index.searchsorted(first_pred, side="left")), len(equity) - 1)
    return RunData(run_dir=run, meta=meta, equity=equity, fills=fills, predictions=preds, initial=initial,
                   periods_per_year=per_year, start=start)


def bars_from_run(data: RunData) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The bars a run traded, loaded again from its recorded ``--data`` (or the built-in sample).

    Best effort: a file that moved or changed gives a note instead of an error (the report still
    shows everything that does not need prices).
    """
    from aitrader.data import load_bars, load_sample, load_universe

    request = data.meta.get("request") if isinstance(data.meta.get("request"), dict) else {}
    items = request.get("data") if isinstance(request, dict) else None
    symbols = data.symbols
    frames: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    try:
        if not items:
            for sym in symbols:
                frames[sym] = load_sample(sym)
        else:
            for item in items:
                sym, sep, path = str(item).partition("=")
                if sep and not Path(str(item)).exists():
                    frames[sym] = load_bars(path, symbol=sym)
                else:
                    frames.update(load_universe(str(item)))
            if len(frames) == 1 and len(symbols) == 1 and symbols[0] not in frames:
                frames = {symbols[0]: next(iter(frames.values()))}
    except (AitraderError, OSError, ValueError, ImportError) as exc:
        notes.append(f"the run's bars could not be loaded again ({exc}); buy-and-hold and the price chart "
                     "need them")
        return {}, notes
    return {s: frames[s] for s in symbols if s in frames}, notes


def _closes(bars: Mapping[str, pd.DataFrame], index: pd.DatetimeIndex) -> dict[str, pd.Series]:
    """Each symbol's close on UTC-naive stamps, cut to ``index``'s span (plus the bar before)."""
    out: dict[str, pd.Series] = {}
    for sym, df in bars.items():
        if df is None or "close" not in df or not len(df):
            continue
        close = pd.Series(pd.to_numeric(df["close"], errors="coerce").to_numpy(float),
                          index=_index_utc_naive(pd.DatetimeIndex(df.index)))
        close = close[~close.index.duplicated(keep="last")].sort_index().dropna()
        if len(index):
            lo = max(int(close.index.searchsorted(index[0], side="right")) - 1, 0)
            hi = int(close.index.searchsorted(index[-1], side="right"))
            close = close.iloc[lo:hi]
        if len(close):
            out[sym] = close
    return out


def buy_and_hold(closes: Mapping[str, pd.Series], index: pd.DatetimeIndex, initial: float) -> pd.Series | None:
    """Equity of ``initial`` split equally between the symbols, each bought at its close at ``index[0]``."""
    if not closes or not len(index):
        return None
    share = initial / len(closes)
    total = pd.Series(0.0, index=index)
    for close in closes.values():
        on = close.reindex(close.index.union(index)).ffill().reindex(index)
        valid = on.dropna()
        if valid.empty or not valid.iloc[0] > 0:
            total += share
            continue
        total += (share * on / valid.iloc[0]).fillna(share)
    return total


# ------------------------------------------------------------------------------ private figures
def _years(index: pd.DatetimeIndex) -> float:
    return float((index[-1] - index[0]) / pd.Timedelta(days=365.25)) if len(index) > 1 else 0.0


def _cagr(final: float, initial: float, years: float) -> float | None:
    """Compound annual growth rate ``(final / initial) ** (1 / years) - 1``; None under 3 months."""
    if years < 0.25 or initial <= 0 or final <= 0:
        return None
    return float((final / initial) ** (1.0 / years) - 1.0)


def _drawdown(equity: pd.Series, initial: float) -> pd.Series:
    """``e[t] / max(initial, e[0..t]) - 1`` (negative below the running peak; as metrics.max_drawdown)."""
    peak = np.maximum.accumulate(np.concatenate(([initial], equity.to_numpy(float))))[1:]
    return pd.Series(equity.to_numpy(float) / peak - 1.0, index=equity.index)


def _longest_drawdown(dd: pd.Series) -> pd.Timedelta | None:
    """The longest stretch below a running peak, from the peak to the recovery (or the end)."""
    if dd.empty:
        return None
    under = dd.to_numpy(float) < -1e-12
    stamps = pd.DatetimeIndex(dd.index).as_unit("ns").asi8
    pos = np.arange(len(under))
    # the last bar at a peak, up to each bar (the first bar counts as one: the initial cash is a peak)
    last_peak = np.maximum.accumulate(np.where(under, 0, pos))
    spans = np.where(under, stamps - stamps[last_peak], 0)
    recovered = np.flatnonzero(~under[1:] & under[:-1]) + 1  # a bar back at a peak after being under
    if recovered.size:
        spans[recovered] = stamps[recovered] - stamps[last_peak[recovered - 1]]
    return pd.Timedelta(int(spans.max()), unit="ns")


def positions_at(fills: pd.DataFrame, index: pd.DatetimeIndex, symbol: str | None = None) -> pd.DataFrame:
    """Net quantity per symbol held at each stamp of ``index`` (after that bar's fills)."""
    f = fills if symbol is None else fills[fills["symbol"] == symbol]
    out = pd.DataFrame(index=index)
    for sym, grp in f.groupby("symbol"):
        qty = grp.groupby("ts")["signed"].sum().cumsum()
        held = qty.reindex(qty.index.union(index)).ffill().reindex(index).fillna(0.0)
        out[str(sym)] = held.to_numpy()
    return out


def _time_in_market(fills: pd.DataFrame, index: pd.DatetimeIndex) -> float:
    """Share of bars that end with a position open in any symbol."""
    if not len(index):
        return 0.0
    if not len(fills):
        return 0.0
    pos = positions_at(fills, index)
    return float((pos.abs() > 1e-12).any(axis=1).mean())


def _gross_exposure(fills: pd.DataFrame, closes: Mapping[str, pd.Series], equity: pd.Series) -> float | None:
    """Mean of ``sum(|quantity| x close) / equity`` over the bars (None without the closes)."""
    if not len(equity) or not closes:
        return None
    if not len(fills):
        return 0.0
    index = pd.DatetimeIndex(equity.index)
    pos = positions_at(fills, index)
    gross = pd.Series(0.0, index=index)
    for sym in pos.columns:
        if sym not in closes:
            return None
        c = closes[sym]
        on = c.reindex(c.index.union(index)).ffill().reindex(index).fillna(0.0)
        gross += pos[sym].abs() * on
    return float((gross / equity.replace(0.0, np.nan)).mean())


def _round_trips(fills: pd.DataFrame) -> int:
    """Closed round trips: a symbol's position returning to flat or flipping side."""
    n = 0
    for _, grp in fills.groupby("symbol"):
        pos = 0.0
        for q in grp["signed"].to_numpy(float):
            new = pos + q
            if abs(pos) > 1e-12 and (abs(new) <= 1e-12 or np.sign(new) != np.sign(pos)):
                n += 1
            pos = 0.0 if abs(new) <= 1e-12 else new
    return n


def _rolling_hit_rate(pred: np.ndarray, y: np.ndarray, window: int) -> np.ndarray:
    """Trailing-window ``metrics.hit_rate``: rows with ``y == 0`` are left out, NaN when all are."""
    valid = (y != 0).astype(float)
    hits = ((np.sign(pred) == np.sign(y)) & (y != 0)).astype(float)
    w = min(window, len(y))
    if w == 0:
        return np.empty(0)

    def trailing(v: np.ndarray) -> np.ndarray:
        c = np.concatenate(([0.0], np.cumsum(v)))
        return c[w:] - c[:-w]

    n = trailing(valid)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, trailing(hits) / np.where(n > 0, n, 1.0), np.nan)


def performance(equity: pd.Series, initial: float, periods_per_year: float, *,
                fills: pd.DataFrame | None = None, closes: Mapping[str, pd.Series] | None = None,
                always_in: bool = False) -> dict[str, Any]:
    """The performance table's figures for one equity curve (the run's or buy-and-hold's)."""
    values = equity.to_numpy(float)
    index = pd.DatetimeIndex(equity.index)
    if not len(values):
        return {}
    rets = M.simple_returns(values, initial=initial)
    dd = _drawdown(equity, initial)
    longest = _longest_drawdown(dd)
    out: dict[str, Any] = {
        "total_return": float(values[-1] / initial - 1.0),
        "cagr": _cagr(float(values[-1]), initial, _years(index)),
        "sharpe": M.sharpe_ratio(rets, periods_per_year),
        "sortino": M.sortino_ratio(rets, periods_per_year),
        "max_drawdown": M.max_drawdown(values, initial=initial),
        "longest_drawdown": longest,
        "final_equity": float(values[-1]),
    }
    if always_in:
        out |= {"time_in_market": 1.0, "gross_exposure": 1.0, "turnover": None, "fees": 0.0, "slippage": 0.0,
                "fills": None, "round_trips": None}
        return out
    f = fills if fills is not None else pd.DataFrame(columns=["ts", "symbol", "signed", "quantity", "price",
                                                              "commission", "slippage"])
    f = f[(f["ts"] >= index[0]) & (f["ts"] <= index[-1])] if len(f) else f
    before = np.concatenate(([initial], values[:-1]))
    traded = (f["quantity"].abs() * f["price"]).to_numpy(float) if len(f) else np.zeros(0)
    out |= {
        "time_in_market": _time_in_market(f, index),
        "gross_exposure": _gross_exposure(f, closes or {}, equity),
        "turnover": M.turnover(traded, before),
        "fees": float(f["commission"].sum()) if len(f) else 0.0,
        "slippage": float(f["slippage"].sum()) if len(f) else 0.0,
        "fills": int(len(f)),
        "round_trips": _round_trips(f) if len(f) else 0,
    }
    return out


# ---------------------------------------------------------------------------------- formatting
def _pct(v: Any, digits: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * v:.{digits}f}%"


def _num(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return html.escape(str(v))


def _duration(v: pd.Timedelta | None) -> str:
    if v is None:
        return "-"
    days = v / pd.Timedelta(days=1)
    if days >= 2:
        return f"{days:,.0f} days"
    hours = v / pd.Timedelta(hours=1)
    return f"{hours:,.1f} hours" if hours >= 1 else f"{v / pd.Timedelta(minutes=1):,.0f} min"


def _table(headers: list[str] | None, rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers or [])
    head = f"<tr>{head}</tr>" if head else ""
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else _num(c, 4)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f'<table class="{cls}">{head}{body}</table>'


class _Raw(str):
    """A cell already formatted (and escaped)."""


def _perf_rows(run: Mapping[str, Any], bh: Mapping[str, Any] | None) -> list[list[Any]]:
    b: Mapping[str, Any] = bh or {}

    def row(label: str, key: str, fmt: Any) -> list[Any]:
        return [label, _Raw(fmt(run.get(key))), _Raw(fmt(b.get(key)) if bh else "-")]

    money = lambda v: _num(v, 2)  # noqa: E731
    ratio = lambda v: _num(v, 2)  # noqa: E731
    count = lambda v: _num(v)  # noqa: E731
    return [
        row("total return", "total_return", _pct),
        row("CAGR", "cagr", _pct),
        row("Sharpe (annualised)", "sharpe", ratio),
        row("Sortino (annualised)", "sortino", ratio),
        row("max drawdown", "max_drawdown", _pct),
        row("longest drawdown", "longest_drawdown", _duration),
        row("time in market", "time_in_market", lambda v: _pct(v, 1)),
        row("average gross exposure", "gross_exposure", lambda v: _pct(v, 1)),
        row("turnover (per bar)", "turnover", lambda v: _num(v, 4)),
        row("fees", "fees", money),
        row("slippage cost", "slippage", money),
        row("fills", "fills", count),
        row("round trips", "round_trips", count),
        row("final equity", "final_equity", money),
    ]


# -------------------------------------------------------------------------------------- charts
def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas: no display, no pyplot state shared with the caller
    return fig


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _date_axis(ax: Any, label: str) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel(label)
    ax.grid(True, alpha=0.3)


def _thin(series: pd.Series, how: str = "last") -> pd.Series:
    """At most :data:`MAX_LINE_POINTS` points: the bucket's last value (or min, for a drawdown)."""
    n = len(series)
    if n <= MAX_LINE_POINTS:
        return series
    size = math.ceil(n / MAX_LINE_POINTS)
    groups = np.arange(n) // size
    vals = series.to_numpy(float)
    frame = pd.DataFrame({"v": vals, "g": groups})
    if how == "min":
        pos = frame.groupby("g")["v"].idxmin().to_numpy()
    else:
        pos = frame.groupby("g").tail(1).index.to_numpy()
    return series.iloc[np.sort(pos)]


def _percent_axis(ax: Any, axis: str = "y", decimals: int | None = None) -> None:
    from matplotlib.ticker import PercentFormatter

    fmt = PercentFormatter(1.0, decimals=decimals)
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)


def _dwarfed(ours: pd.Series, theirs: pd.Series | None) -> bool:
    """The strategy's moves are under a fifth of buy-and-hold's: it gets a panel of its own scale."""
    if theirs is None or not len(theirs) or not len(ours):
        return False
    span = float(np.ptp(ours.to_numpy(float)))
    return span * 5 < float(np.ptp(theirs.to_numpy(float)))


def chart_equity(equity: pd.Series, bh: pd.Series | None, xlabel: str) -> str:
    from matplotlib.ticker import FuncFormatter

    own = _dwarfed(equity, bh)
    fig = _figure(10, 6.4 if own else 4.2)
    axes = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2]) if own else [fig.add_subplot()]
    e = _thin(equity)
    initial = float(equity.iloc[0])
    money = FuncFormatter(lambda v, _: f"{v:,.0f}")
    label = f"strategy ({_pct(float(equity.iloc[-1]) / initial - 1)})"
    ax = axes[0]
    ax.plot(e.index, e.to_numpy(), color=_BLUE, linewidth=1.6, label=label)
    if bh is not None and len(bh):
        b = _thin(bh)
        ax.plot(b.index, b.to_numpy(), color=_GREY, linewidth=1.2,
                label=f"buy and hold ({_pct(float(bh.iloc[-1]) / float(bh.iloc[0]) - 1)})")
    ax.axhline(initial, color="black", linewidth=0.6, linestyle=":")
    ax.yaxis.set_major_formatter(money)
    ax.set_ylabel("equity")
    ax.set_title("Equity: strategy vs buy and hold of the same bars (same initial cash)")
    ax.legend(loc="best", frameon=False)
    ax.grid(True, alpha=0.3)
    if own:
        ax2 = axes[1]
        ax2.plot(e.index, e.to_numpy(), color=_BLUE, linewidth=1.3, label=label)
        ax2.axhline(initial, color="black", linewidth=0.6, linestyle=":", label="initial cash")
        ax2.yaxis.set_major_formatter(money)
        ax2.set_ylabel("equity")
        ax2.set_title("Strategy alone, on its own scale", fontsize=10)
        ax2.legend(loc="best", frameon=False, fontsize=8)
    _date_axis(axes[-1], xlabel)
    return _png(fig)


def chart_drawdown(dd: pd.Series, bh_dd: pd.Series | None, xlabel: str) -> str:
    own = _dwarfed(dd, bh_dd)
    fig = _figure(10, 5.0 if own else 3.2)
    axes = fig.subplots(2, 1, sharex=True) if own else [fig.add_subplot()]
    d = _thin(dd, "min")
    ax = axes[0]
    ax.fill_between(d.index, d.to_numpy(), 0.0, color=_RED, alpha=0.35, linewidth=0,
                    label=f"strategy (max {_pct(float(dd.min()))})")
    ax.plot(d.index, d.to_numpy(), color=_RED, linewidth=0.8)
    other = axes[1] if own else ax
    if bh_dd is not None and len(bh_dd):
        b = _thin(bh_dd, "min")
        other.plot(b.index, b.to_numpy(), color=_GREY, linewidth=1.0,
                   label=f"buy and hold (max {_pct(float(bh_dd.min()))})")
        if own:
            other.fill_between(b.index, b.to_numpy(), 0.0, color=_GREY, alpha=0.25, linewidth=0)
    for a in axes:
        lines = a.get_lines() + list(a.collections)
        lo = min((float(np.nanmin(ln.get_ydata())) for ln in a.get_lines() if len(ln.get_ydata())), default=0.0)
        a.set_ylim(min(lo * 1.1, -1e-4), abs(lo) * 0.03 + 1e-6)
        _percent_axis(a)
        a.set_ylabel("below peak")
        a.grid(True, alpha=0.3)
        if lines:
            a.legend(loc="lower left", frameon=False)
    ax.set_title("Drawdown (underwater)" + (": strategy (top) and buy and hold (bottom), each on its own scale"
                                              if own else ""))
    _date_axis(axes[-1], xlabel)
    return _png(fig)


def monthly_returns(equity: pd.Series, initial: float) -> pd.DataFrame:
    """Year x month table of monthly returns (the first month against ``initial``), plus ``year``."""
    index = pd.DatetimeIndex(equity.index)
    month_end = equity.groupby([index.year, index.month]).last()
    prev = np.concatenate(([initial], month_end.to_numpy(float)[:-1]))
    rets = pd.Series(month_end.to_numpy(float) / prev - 1.0, index=month_end.index)
    table = rets.unstack(level=1).reindex(columns=range(1, 13))
    year_end = equity.groupby(index.year).last()
    year_prev = np.concatenate(([initial], year_end.to_numpy(float)[:-1]))
    table["year"] = year_end.to_numpy(float) / year_prev - 1.0
    return table


def chart_monthly(table: pd.DataFrame) -> str:
    import matplotlib.colors as mcolors

    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec", "Year"]
    values = table.to_numpy(float)
    fig = _figure(10, 1.2 + 0.42 * len(table))
    ax = fig.add_subplot()
    finite = np.abs(values[np.isfinite(values)])
    limit = float(np.quantile(finite, 0.95)) if finite.size else 0.01
    limit = max(limit, 1e-4)
    norm = mcolors.TwoSlopeNorm(vmin=-limit, vcenter=0.0, vmax=limit)
    ax.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", norm=norm, aspect="auto")
    digits = 1 if finite.size and float(np.nanmax(finite)) >= 0.01 else 2
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            if np.isfinite(v):
                weight = "bold" if j == 12 else "normal"
                ax.text(j, i, f"{100 * v:.{digits}f}%", ha="center", va="center", fontsize=8, fontweight=weight,
                        color="black")
    ax.axvline(11.5, color="white", linewidth=3)
    ax.set_xticks(range(13), months)
    ax.set_yticks(range(len(table)), [str(y) for y in table.index])
    ax.set_xlabel("month")
    ax.set_ylabel("year")
    ax.set_title("Monthly returns (% of the equity at the month's start; Year: the calendar year's return)")
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    return _png(fig)


def chart_trades(closes: Mapping[str, pd.Series], fills: pd.DataFrame, xlabel: str) -> str:
    syms = [s for s in closes if s in set(fills["symbol"])] or list(closes)
    syms = syms[:MAX_PRICE_PANELS]
    fig = _figure(10, 0.4 + 2.9 * len(syms))
    axes = fig.subplots(len(syms), 1, squeeze=False)[:, 0]
    for ax, sym in zip(axes, syms, strict=True):
        close = closes[sym]
        mine = fills[fills["symbol"] == sym]
        note = ""
        if len(mine) > MAX_MARKED_FILLS:
            mine = mine.iloc[-MAX_MARKED_FILLS:]
            first = mine["ts"].iloc[0]
            close = close[close.index >= first - (close.index[-1] - first) * 0.02]
            note = f"; last {MAX_MARKED_FILLS} of {int((fills['symbol'] == sym).sum()):,} fills"
        c = _thin(close)
        ax.plot(c.index, c.to_numpy(), color=_GREY, linewidth=1.0, label="close")
        buys, sells = mine[mine["signed"] > 0], mine[mine["signed"] < 0]
        ax.scatter(buys["ts"], buys["price"], marker="^", color=_GREEN, s=36, zorder=3, edgecolors="white",
                   linewidths=0.4, label=f"buy ({len(buys)})")
        ax.scatter(sells["ts"], sells["price"], marker="v", color=_RED, s=36, zorder=3, edgecolors="white",
                   linewidths=0.4, label=f"sell ({len(sells)})")
        ax.set_title(f"{sym}: close, with buy and sell fills at their fill price{note}")
        ax.set_ylabel("price")
        ax.legend(loc="upper left", frameon=False, ncols=3)
        _date_axis(ax, xlabel)
    return _png(fig)


def _groups(preds: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Predictions with a known outcome per (symbol, model), largest first, at most one per colour."""
    known = preds.dropna(subset=["prediction", "outcome"])
    if not len(known):
        return []
    keys = known["symbol"].astype(str) + " " + known["model_id"].astype(str)
    out = [(str(k), g.sort_values("ts", kind="stable")) for k, g in known.groupby(keys, sort=True)]
    out.sort(key=lambda kg: -len(kg[1]))
    return out[: len(_PALETTE)]


def chart_rolling(preds: pd.DataFrame, window: int, holdout: Mapping[str, Any], xlabel: str) -> str | None:
    from aitrader.monitoring.accuracy import rolling_metrics

    groups = _groups(preds)
    if not groups:
        return None
    fig = _figure(10, 5.2)
    ax_ic, ax_hit = fig.subplots(2, 1, sharex=True)
    for (key, g), color in zip(groups, _PALETTE, strict=False):
        p, y = g["prediction"].to_numpy(float), g["outcome"].to_numpy(float)
        w = min(window, len(p))
        ts = pd.DatetimeIndex(g["ts"]).tolist()[w - 1:]
        ic = np.array([np.nan if v is None else v for v in rolling_metrics(p, y, w)["ic"]], dtype=float)
        hit = _rolling_hit_rate(p, y, w)
        label = key if len(groups) > 1 else f"rolling {w} outcomes"
        ic_s, hit_s = _thin(pd.Series(ic, index=ts)), _thin(pd.Series(hit, index=ts))
        ax_ic.plot(ic_s.index, ic_s.to_numpy(), color=color, linewidth=1.3, label=label)
        ax_hit.plot(hit_s.index, hit_s.to_numpy(), color=color, linewidth=1.3, label=label)
    ax_ic.axhline(0.0, color="black", linewidth=0.6)
    ax_hit.axhline(0.5, color="black", linewidth=0.6)
    if holdout.get("ic") is not None:
        ax_ic.axhline(float(holdout["ic"]), color=_ORANGE, linestyle="--", linewidth=1.1,
                      label=f"training holdout IC {float(holdout['ic']):.3f}")
    if holdout.get("hit_rate") is not None:
        ax_hit.axhline(float(holdout["hit_rate"]), color=_ORANGE, linestyle="--", linewidth=1.1,
                       label=f"training holdout {_pct(float(holdout['hit_rate']), 1)}")
    ax_ic.set_ylabel("IC (Pearson)")
    ax_ic.set_title(f"Rolling IC and hit rate of the predictions (trailing {window} outcomes, at the prediction bar)")
    ax_hit.set_ylabel("hit rate")
    _percent_axis(ax_hit, decimals=0)
    ax_ic.legend(loc="best", fontsize=8, ncols=3, framealpha=0.8)
    ax_hit.legend(loc="best", fontsize=8, ncols=3, framealpha=0.8)
    ax_ic.grid(True, alpha=0.3)
    _date_axis(ax_hit, xlabel)
    return _png(fig)


def chart_scatter(preds: pd.DataFrame, task: str) -> str | None:
    groups = _groups(preds)
    if not groups:
        return None
    fig = _figure(6.5, 5.2)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    allp, ally = [], []
    for (key, g), color in zip(groups, _PALETTE, strict=False):
        p, y = g["prediction"].to_numpy(float), g["outcome"].to_numpy(float)
        allp.append(p)
        ally.append(y)
        if len(p) > MAX_SCATTER_POINTS:
            keep = np.sort(rng.choice(len(p), MAX_SCATTER_POINTS, replace=False))
            p, y = p[keep], y[keep]
        ax.scatter(p, y, s=9, alpha=0.45, color=color, edgecolors="none", label=key if len(groups) > 1 else None)
    p, y = np.concatenate(allp), np.concatenate(ally)
    ic = M.ic(p, y)
    if len(p) >= 3 and np.ptp(p) > 0:
        slope, intercept = np.polyfit(p, y, 1)
        xs = np.linspace(float(p.min()), float(p.max()), 50)
        ax.plot(xs, slope * xs + intercept, color="black", linewidth=1.2, label="least-squares fit")
    ax.axhline(0.0, color=_GREY, linewidth=0.6)
    ax.axvline(0.5 if task == "classification" else 0.0, color=_GREY, linewidth=0.6)
    ax.set_xlabel("predicted P(up)" if task == "classification" else "predicted forward return")
    ax.set_ylabel("realised forward return")
    if task != "classification":
        _percent_axis(ax, "x")
    _percent_axis(ax, "y")
    ic_text = "-" if ic is None else f"{ic:.3f}"
    ax.set_title(f"Prediction vs outcome (n={len(p):,}, IC {ic_text})")
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    ax.grid(True, alpha=0.3)
    return _png(fig)


def chart_importance(importance: Mapping[str, Any]) -> str | None:
    feats = importance.get("features") if isinstance(importance, Mapping) else None
    if not isinstance(feats, Mapping) or not feats:
        return None
    items = sorted(((str(k), float(v)) for k, v in feats.items()), key=lambda kv: -kv[1])[:TOP_FEATURES]
    fig = _figure(8, 0.8 + 0.3 * len(items))
    ax = fig.add_subplot()
    names = [k for k, _ in reversed(items)]
    vals = [v for _, v in reversed(items)]
    bars = ax.barh(names, vals, color=_BLUE)
    ax.bar_label(bars, labels=[f"{100 * v:.1f}%" for v in vals], padding=3, fontsize=8)
    ax.set_xlim(0, max(vals) * 1.15 if max(vals) > 0 else 1)
    _percent_axis(ax, "x", decimals=0)
    ax.set_xlabel(f"share of the model's total importance ({importance.get('method', 'native')})")
    ax.set_ylabel("feature")
    shown = f"top {len(items)} of {len(feats)}" if len(feats) > len(items) else f"all {len(feats)}"
    ax.set_title(f"Feature importance ({shown} features)")
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)


def chart_drift(drift: Mapping[str, Any], psi_max: float | None) -> str | None:
    feats = [r for r in drift.get("features") or [] if r.get("psi") is not None]
    if not feats:
        return None
    feats = feats[:TOP_FEATURES]
    fig = _figure(8, 1.0 + 0.3 * len(feats))
    ax = fig.add_subplot()
    names = [str(r["name"]) for r in reversed(feats)]
    vals = [float(r["psi"]) for r in reversed(feats)]
    colors = [_RED if r.get("significant") else _BLUE for r in reversed(feats)]
    ax.barh(names, vals, color=colors)
    limits = [r.get("threshold") for r in reversed(feats)]
    if any(v is not None for v in limits):
        ys = [i for i, v in enumerate(limits) if v is not None]
        ax.scatter([float(limits[i]) for i in ys], ys, marker="|", s=220, color="black", zorder=3,
                   label="limit: max(psi_max, chance level at n_eff)")
    if psi_max is not None:
        ax.axvline(float(psi_max), color=_GREY, linestyle="--", label=f"psi_max {psi_max}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    ax.set_xlabel("population stability index (PSI) vs the training baseline; red: drifted")
    ax.set_ylabel("feature")
    ax.set_title(f"Feature drift (top {len(feats)}, ranked by importance-weighted PSI)")
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)


# ---------------------------------------------------------------------------------------- page
def _drift_summary(data: RunData, manifest: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, str]:
    """The drift part of a monitor check run on this ledger (default thresholds), for a backtest."""
    if not manifest or not (manifest.get("baseline") or {}).get("features"):
        return None, "needs the model's manifest with its training baseline"
    models = [m for m in data.meta.get("models") or [] if isinstance(m, dict)]
    if len(models) != 1:
        return None, "run `aitrader monitor --model-id NAME --report` for each model of a multi-model run"
    from aitrader.config import Monitoring
    from aitrader.monitoring.ledger import read_ledger
    from aitrader.monitoring.monitor import monitor_ledger

    try:
        summary = monitor_ledger(read_ledger(data.run_dir), manifest, Monitoring()).summary
    except AitraderError as exc:
        return None, str(exc)
    return summary, ""


def _section(name: str, heading: str, png: str | None, why: str, intro: str = "") -> str:
    body = (f'<img alt="{name}" src="data:image/png;base64,{png}">' if png
            else f'<p class="note" id="missing-{name}">Not drawn: {html.escape(why)}.</p>')
    return f'<h2 id="{name}">{html.escape(heading)}</h2>{intro}{body}'


def _monitor_html(s: Mapping[str, Any]) -> str:
    ops, acc = s.get("operational") or {}, s.get("accuracy") or {}
    health = '<span class="ok">healthy</span>' if not s.get("alerts") else \
        f'<span class="alert">{len(s["alerts"])} alert(s)</span>'
    alerts = "".join(f"<li>{html.escape(str(a.get('message')))}</li>" for a in s.get("alerts") or []) or "<li>none</li>"
    warnings = "".join(f"<li>{html.escape(str(w.get('message')))}</li>" for w in s.get("warnings") or [])
    warn_html = f"<h3>Warnings (no alert)</h3><ul>{warnings}</ul>" if warnings else ""
    ops_rows = [[k, ops.get(k)] for k in ("predictions", "in_sample_predictions", "fallbacks", "latency_ms_p50",
                                          "latency_ms_p99", "errors_total", "error_rate", "feature_availability",
                                          "disabled", "worst_daily_loss") if k in ops]
    ops_rows += [[f"errors: {k}", v] for k, v in (ops.get("errors_by_type") or {}).items()]
    ops_rows += [[f"risk rejections: {k}", v] for k, v in (ops.get("risk_rejections") or {}).items()]
    parts = [f"<h2 id=\"health\">Monitor: {health}</h2><ul>{alerts}</ul>{warn_html}",
             "<h3>Operations</h3>" + _table(["metric", "value"], ops_rows)]
    if acc.get("run") is not None:
        rows = [[k, (acc.get("run") or {}).get(k), (acc.get("window") or {}).get(k), (acc.get("holdout") or {}).get(k)]
                for k in ("mae", "rmse", "hit_rate", "ic", "rank_ic")]
        parts.append("<h3>Accuracy</h3>" + _table(
            ["metric", f"whole run (n={acc['run'].get('n')})",
             f"last {acc.get('window_size')} (n={(acc.get('window') or {}).get('n')})", "training holdout"], rows))
    return "".join(parts)


def _health_line(s: Mapping[str, Any]) -> str:
    alerts = s.get("alerts") or []
    if not alerts:
        return '<p>Monitor: <span class="ok">healthy</span> (details <a href="#health">below</a>).</p>'
    codes = ", ".join(sorted({html.escape(str(a.get("code"))) for a in alerts}))
    return (f'<p>Monitor: <span class="alert">{len(alerts)} alert(s)</span>: {codes} '
            '(details <a href="#health">below</a>).</p>')


def _drift_table(drift: Mapping[str, Any]) -> str:
    def row(rank: Any, r: Mapping[str, Any]) -> list[Any]:
        weight = r.get("weight")
        return [rank, r.get("name"), _Raw(_pct(weight, 1) if weight is not None else "-"),
                _Raw(_num(r.get("psi"), 3)), _Raw(_num(r.get("threshold"), 3)), r.get("significant"),
                _Raw(_num(r.get("n_eff"), 0)), _Raw(_num(r.get("ks"), 3)), r.get("n")]

    rows = [row(r.get("rank"), r) for r in drift.get("features") or []]
    rows.append(row("-", {"name": "prediction", **(drift.get("prediction") or {})}))
    return _table(["rank", "name", "importance", "PSI", "limit", "drifted", "n_eff", "KS", "n"], rows)


def render_tearsheet(
    *,
    run_dir: Path,
    manifest: Mapping[str, Any] | None = None,
    bars: Mapping[str, pd.DataFrame] | None = None,
    monitor_summary: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> tuple[str, list[str]]:
    """The page as a string, and the names of the charts drawn (a subset of :data:`CHARTS`)."""
    data = read_run(run_dir)
    notes = list(data.notes)
    if bars is None:
        loaded, more = bars_from_run(data)
        bars, notes = loaded, notes + more
    traded = data.traded
    closes = _closes(bars or {}, pd.DatetimeIndex(traded.index))
    bh = buy_and_hold(closes, pd.DatetimeIndex(traded.index), data.initial) if len(traded) else None
    tz_note = any(getattr(df.index, "tz", None) is not None for df in (bars or {}).values())
    xlabel = "date (UTC)" if tz_note else "date"
    man: Mapping[str, Any] = manifest or {}
    task = str((man.get("target") or {}).get("task") or "regression")

    perf = performance(traded, data.initial, data.periods_per_year, fills=data.fills, closes=closes) \
        if len(traded) else {}
    bh_perf = performance(bh, data.initial, data.periods_per_year, always_in=True) if bh is not None else None

    charts: dict[str, str | None] = {}
    why: dict[str, str] = {}
    if len(traded):
        charts["equity"] = chart_equity(traded, bh, xlabel)
        charts["drawdown"] = chart_drawdown(_drawdown(traded, data.initial),
                                            _drawdown(bh, data.initial) if bh is not None else None, xlabel)
        charts["monthly"] = chart_monthly(monthly_returns(traded, data.initial))
    else:
        for k in ("equity", "drawdown", "monthly"):
            why[k] = "the run has recorded no equity yet"
    if closes:
        charts["trades"] = chart_trades(closes, data.fills, xlabel)
    else:
        why["trades"] = "needs the run's bars (" + ("; ".join(notes) or "none given") + ")"
    window = int((monitor_summary or {}).get("accuracy", {}).get("window_size") or DEFAULT_WINDOW)
    holdout = ((monitor_summary or {}).get("accuracy") or {}).get("holdout") or \
        (man.get("metrics") or {}).get("holdout") or {}
    charts["rolling"] = chart_rolling(data.predictions, window, holdout, xlabel)
    charts["scatter"] = chart_scatter(data.predictions, task)
    why["rolling"] = why["scatter"] = "no prediction has a known outcome yet (an outcome is known a horizon later)"
    charts["importance"] = chart_importance(man.get("importance") or {})
    why["importance"] = ("the model's manifest has no importance section (trained before it existed: retrain it)"
                         if manifest else "needs the model's manifest")
    summary = monitor_summary
    if summary is None:
        summary_drift, why_drift = _drift_summary(data, manifest)
        drift = (summary_drift or {}).get("drift")
        psi_max = ((summary_drift or {}).get("thresholds") or {}).get("psi_max")
    else:
        drift, why_drift = summary.get("drift"), ""
        psi_max = (summary.get("thresholds") or {}).get("psi_max")
    charts["drift"] = chart_drift(drift, psi_max) if drift else None
    why["drift"] = why_drift or "no live feature values recorded"

    models = [m for m in data.meta.get("models") or [] if isinstance(m, dict)]
    model_text = ", ".join(str(m.get("model_id")) + (f" on {m['symbol']}" if m.get("symbol") else "")
                           for m in models) or "-"
    span = f"{traded.index[0]:%Y-%m-%d %H:%M} to {traded.index[-1]:%Y-%m-%d %H:%M}" if len(traded) else "-"
    head = html.escape(title or f"aitrader tearsheet: run {data.run_id}")
    costs = data.meta.get("costs") if isinstance(data.meta.get("costs"), dict) else {}
    cost_text = (f"commission {costs.get('commission_bps')} bps, slippage {costs.get('slippage_bps')} bps "
                 f"({html.escape(str(costs.get('asset_class')))})") if costs else "-"
    info = _table(None, [
        ["run", data.run_id], ["status", data.meta.get("status")], ["model(s)", model_text],
        ["traded period", span], ["bars traded", len(traded)],
        ["calendar", f"{(data.meta.get('calendar') or {}).get('kind', 'inferred')}, "
                     f"{data.periods_per_year:,.0f} bars a year"],
        ["initial cash", _Raw(_num(data.initial, 2))], ["costs", _Raw(cost_text)],
    ])
    bh_text = ("Buy and hold: the initial cash split equally between "
               f"{', '.join(html.escape(s) for s in closes)}, bought at the close of the first traded bar, no costs"
               if closes else "Buy and hold: not available (" + html.escape("; ".join(notes) or "no bars given") + ")")
    perf_html = _table(["", "strategy", "buy and hold"], _perf_rows(perf, bh_perf), cls="perf") if perf else \
        '<p class="note">No equity recorded yet.</p>'
    imp_intro = ('<p class="small">Each feature\'s share of the final model\'s total importance, recorded in its '
                 "manifest at train time (also shown by <code>aitrader list --detail NAME</code>).</p>"
                 if charts.get("importance") else "")
    drift_intro = ""
    if drift:
        drift_intro = (f"<p class=\"small\">Live n={drift.get('n')}; importance-weighted feature drift "
                       f"{_num(drift.get('feature_score'), 4)}. A PSI counts as drift past its limit: the larger of "
                       "psi_max and the PSI that chance reaches 1 time in 100 at the series' effective sample size "
                       f"(n_eff).{'' if monitor_summary else ' Computed with the default monitoring thresholds.'}"
                       f"</p>{_drift_table(drift)}")
    sections = [
        _section("equity", "Equity curve", charts.get("equity"), why.get("equity", "")),
        _section("drawdown", "Drawdown", charts.get("drawdown"), why.get("drawdown", "")),
        _section("monthly", "Monthly returns", charts.get("monthly"), why.get("monthly", "")),
        _section("trades", "Trades on price", charts.get("trades"), why.get("trades", "")),
        _section("rolling", "Rolling IC and hit rate", charts.get("rolling"), why["rolling"]),
        _section("scatter", "Prediction vs outcome", charts.get("scatter"), why["scatter"]),
        _section("importance", "Feature importance", charts.get("importance"), why["importance"], imp_intro),
        _section("drift", "Drift", charts.get("drift"), why["drift"], drift_intro),
    ]
    created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{head}</title><style>{_CSS}</style></head><body>
<h1>{head}</h1>
<p class="sub">Written {created} from {html.escape(str(data.run_dir))}.</p>
{_health_line(monitor_summary) if monitor_summary else ''}
{info}
<h2 id="performance">Performance</h2>
{perf_html}
<p class="small">Figures over the traded period (from the first prediction; earlier bars only warm the
features up). Max drawdown is negative (-0.23 = 23% below the running peak); Sharpe and Sortino are
annualised with {data.periods_per_year:,.0f} bars a year, no risk-free rate; turnover is the traded notional
per bar over the mean equity; time in market is the share of bars ending with a position; CAGR needs 3 months
or more. {bh_text}.</p>
{_monitor_html(monitor_summary) if monitor_summary else ''}
{''.join(sections)}
</body></html>
"""
    return page, [k for k in CHARTS if charts.get(k)]


def write_tearsheet(
    out: Path,
    *,
    run_dir: Path,
    manifest: dict[str, Any] | None = None,
    bars: dict[str, pd.DataFrame] | None = None,
    monitor_summary: dict[str, Any] | None = None,
    title: str | None = None,
) -> Path:
    """Write the run's tearsheet to ``out`` atomically (temporary file, then rename); return ``out``.

    ``bars``: the traded bars per symbol (for buy-and-hold and the price chart); None reloads them
    from the run's recorded ``--data`` (or the sample). ``manifest``: the model's (importance,
    holdout references, drift baseline). ``monitor_summary``: a ``monitor`` result's summary (health,
    operations, accuracy and its drift table); without it the drift is computed with the default
    thresholds when the manifest has a baseline.
    """
    target = Path(out)
    page, _ = render_tearsheet(run_dir=Path(run_dir), manifest=manifest, bars=bars,
                               monitor_summary=monitor_summary, title=title)
    try:
        write_text_atomic(target, page)
    except OSError as exc:
        raise AitraderError(f"cannot write report {target}: {exc.strerror}; pass a writable report path") from exc
    return target
