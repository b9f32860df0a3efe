"""``aitrader backtest``: a paper-trade replay of a model's unseen bars, with a performance report.

The replay IS :func:`aitrader.trading.service.paper_trade` (same engine, execution model, costs and
window rules), run into a temporary ledger that is deleted afterwards, or into ``--out-run RUN_ID``
to keep it. So a backtest and a paper-trade of the same window agree to the cent.

The report covers the traded bars only (from the first bar the models may trade, i.e. after the
feature warm-up): the strategy beside buy-and-hold of the same bars. Buy-and-hold starts with the
same initial cash (split evenly over the traded symbols) and buys once, at the open of the bar after
the first traded bar (the earliest fill an order of the strategy can get), with the same slippage
and commission, then holds to the end (marked at each close). Formulas: docs/metrics.md.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import pandas as pd

from aitrader.trading.ledger import LEDGER_NAME, connect, equity_column, unpack_text
from aitrader.trading.trades import aligned
from aitrader.trading.trips import FillColumns, FillRecorder, TradeColumns, match_fills, records, trade_columns

if TYPE_CHECKING:
    from aitrader.trading.sources import BarSeries

QTY_DECIMALS = 8  # as the paper broker
SCAN_ROWS = 65_536  # bars per block of the report's pass over a symbol's bars (scan_bars)
FILL_COLUMNS = ["id", "order_id", "ts", "symbol", "side", "quantity", "price", "commission", "slippage"]


def run_backtest(*, models: list[str] | None, data: list[str] | None, config_path: str | None = None,
                 registry_root: str | None = None, start: str | None = None, end: str | None = None,
                 allow_in_sample: bool = False, allow_symbol_mismatch: bool = False,
                 out_run: str | None = None, runs_dir: str = "runs", view: str = "none",
                 report: str | None = None, books: str | dict[str, str] | None = None) -> dict[str, Any]:
    """Replay, then report: ``{"run": paper-trade summary, "performance": {...}, "trades": [...]}``.

    ``report``: also write the HTML tearsheet there (:func:`aitrader.monitoring.tearsheet.write_tearsheet`,
    the same report as ``monitor --report``), from the replay's ledger before a temporary one is removed."""
    return backtest(models=models, data=data, config_path=config_path, registry_root=registry_root, start=start,
                    end=end, allow_in_sample=allow_in_sample, allow_symbol_mismatch=allow_symbol_mismatch,
                    out_run=out_run, runs_dir=runs_dir, view=view, report=report, books=books).as_dict()


@dataclass
class Backtest:
    """:func:`backtest`'s result: :meth:`as_dict` is :func:`run_backtest`'s document; the trades kept as
    columns (``--json`` writes their text from them: :func:`aitrader.trading.trips.trades_text`)."""

    models: list[str]
    run: dict[str, Any]
    kept: bool
    performance: dict[str, Any]
    trades: TradeColumns
    excursion: Excursions
    report: str | None

    def trade_records(self, last: int | None = None) -> list[dict[str, Any]]:
        """One dict per round trip (:data:`aitrader.trading.trades.TRADE_COLUMNS`); the last ``last`` only."""
        return records(self.trades, *self.excursion, last=last)

    def as_dict(self) -> dict[str, Any]:
        return {"models": self.models, "run": self.run, "kept": self.kept, "performance": self.performance,
                "trades": self.trade_records(), "report": self.report}


def backtest(*, models: list[str] | None, data: list[str] | None, config_path: str | None = None,
             registry_root: str | None = None, start: str | None = None, end: str | None = None,
             allow_in_sample: bool = False, allow_symbol_mismatch: bool = False,
             out_run: str | None = None, runs_dir: str = "runs", view: str = "none",
             report: str | None = None, books: str | dict[str, str] | None = None) -> Backtest:
    """:func:`run_backtest`, its trades left as columns."""
    from aitrader.trading.service import paper_trade

    tap = BarTap()
    recorder = FillRecorder()
    # the replay's blocks' prices (for scan_bars) and its fills, kept as the replay makes them
    lean = out_run is None and report is None  # a temporary ledger that only the summary and this report read
    collect: dict[str, Any] = {"bar_tap": tap, "subscribers": [recorder.attach], "scratch_ledger": lean}
    tmp = None if out_run else tempfile.mkdtemp(prefix="aitrader-backtest-")
    try:
        summary = paper_trade(
            config_path=config_path, data=data, run_id=out_run or "backtest", state_dir=tmp,
            registry_root=registry_root, runs_dir=runs_dir, view=view, start=start, end=end,
            allow_in_sample=allow_in_sample, models=models, allow_symbol_mismatch=allow_symbol_mismatch,
            collect=collect, books=books,
            # a temporary ledger without a report: nothing reads its feature rows, so they are not packed (and
            # it is a scratch one: no outcome rows, no journal, no sync)
            ledger_features=not lean,
        )
        run_dir = Path(summary["state_dir"])
        series: dict[str, BarSeries] = collect.get("series") or {}
        curve = read_curve(run_dir, collect)
        # what the ledger's fills table holds (read it when the count says otherwise)
        fills = recorder.columns() if len(recorder) == summary["fills"] else FillColumns.read(run_dir / LEDGER_NAME)
        trades = trade_columns(match_fills(fills))  # columns: no dict, Timestamp or frame per trade
        hold_rows = hold_rows_of(series, collect["trade_from"], curve.epochs)
        passes = {sym: scan_bars(s, close_rows=hold_rows[sym][0], open_row=hold_rows[sym][1],
                                 spans=trip_spans(trades, sym, s), keep_closes=report is not None, tap=tap)
                  for sym, s in sorted(series.items())}
        excursion = trade_excursions(trades, series, passes)
        perf = performance_report(curve, fills, collect, summary, trades, excursion, passes)
        if report is not None:
            from aitrader.monitoring.tearsheet import write_tearsheet

            specs = collect.get("specs") or []
            write_tearsheet(Path(report), run_dir=run_dir, manifest=specs[0].manifest if specs else None,
                            bars=close_frames(series, passes),
                            title="backtest " + ", ".join(f"{s.model_id} ({s.symbol})" for s in specs))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if tmp is not None:
        summary = {**summary, "state_dir": None}
    names = [f"{s.model_id} ({s.symbol})" for s in collect.get("specs") or []]
    return Backtest(models=names, run=summary, kept=out_run is not None, performance=perf, trades=trades,
                    excursion=excursion, report=report)


# ------------------------------------------------------------------------------ the ledger's side


class Stamps(Sequence[str]):
    """The equity steps' ISO stamps without a Python string per step: the ledger's compressed text
    blobs (one per checkpoint), a stamp decoded when asked for (the report asks for a handful)."""

    def __init__(self, blobs: list[tuple[int, bytes]], rows: np.ndarray) -> None:
        self._blobs = blobs
        self._starts = np.cumsum([0] + [n for n, _ in blobs])
        self._rows = rows  # step i of the curve is stamp rows[i] of the ledger (the traded steps)
        self._cache: tuple[int, list[str | None]] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        row = int(self._rows[i])
        b = int(np.searchsorted(self._starts, row, side="right")) - 1
        if self._cache is None or self._cache[0] != b:
            n, blob = self._blobs[b]
            self._cache = (b, unpack_text(blob, n))
        return str(self._cache[1][row - int(self._starts[b])])


@dataclass
class Curve:
    """The replay's equity over the traded bars: stamps, epoch seconds and equity (O(steps) floats)."""

    stamps: Sequence[str]
    epochs: np.ndarray
    equity: np.ndarray


def read_curve(run_dir: Path, collect: dict[str, Any]) -> Curve:
    """The ledger's equity steps from the first bar the models may trade (``collect["trade_from"]``),
    read a checkpoint block at a time: equity as float64, stamps kept compressed (:class:`Stamps`) and
    their epoch seconds those of the replayed series' bars (:func:`step_epochs`), else parsed per block."""
    first = min((t for t in collect["trade_from"].values() if t is not None), default=None)
    conn = connect(run_dir / LEDGER_NAME, readonly=True)  # a new run's: block format only (docs/trading.md)
    try:
        blobs = [(int(n), bytes(ts)) for n, ts in conn.execute("SELECT n, ts FROM equity_blocks ORDER BY first_bar")]
        equity = equity_column(conn)
    finally:
        conn.close()
    epochs = step_epochs(list((collect.get("series") or {}).values()), blobs)
    if epochs is None:
        epochs = np.concatenate([epochs_of([str(t) for t in unpack_text(blob, n)]) for n, blob in blobs]) \
            if blobs else np.empty(0)
    keep = epochs >= first if first is not None else np.ones(len(epochs), dtype=bool)
    rows_kept = np.flatnonzero(keep)
    return Curve(Stamps(blobs, rows_kept), epochs[keep], equity[keep])


def step_epochs(series: list[BarSeries], blobs: list[tuple[int, bytes]]) -> np.ndarray | None:
    """:func:`epochs_of` the equity steps' stamps (``blobs``: the ledger's, one per checkpoint) without
    parsing them: a replay's step ``i`` is the ``i``-th distinct stamp of its series' bars, in time order,
    written from those nanoseconds (whole seconds: no digit lost). None (parse them) unless the series'
    stamps are whole seconds, the steps are a prefix of them (a stopped replay writes fewer) and the first
    and the last stamps parse to the expected epochs."""
    blobs = [(n, blob) for n, blob in blobs if n]
    total = sum(n for n, _ in blobs)
    ns = [s.ns() for s in series if len(s)]
    if not total or not ns or not all(s.whole_seconds for s in series if len(s)):
        return None
    union = ns[0] if len(ns) == 1 and bool((np.diff(ns[0]) > 0).all()) else np.unique(np.concatenate(ns))
    if total > len(union):
        return None
    epochs = union[:total] / 1e9
    ends = epochs_of([str(unpack_text(blobs[0][1], blobs[0][0])[0]), str(unpack_text(blobs[-1][1], blobs[-1][0])[-1])])
    return epochs if ends[0] == epochs[0] and ends[1] == epochs[-1] else None


def performance_report(curve: Curve, fills: FillColumns, collect: dict[str, Any], summary: dict[str, Any],
                       trades: TradeColumns, excursion: Excursions, passes: dict[str, BarPass]
                       ) -> dict[str, dict[str, Any]]:
    """``{"strategy": {...}, "buy_and_hold": {...}}`` over the traded bars of a finished replay."""
    initial = float(summary["initial_cash"])
    costs = summary["costs"]
    periods = float(collect["calendar"]["periods_per_year"])
    stamps, epochs, equity = curve.stamps, curve.epochs, curve.equity
    positions = _positions(fills, epochs)
    # as pandas summed the fills' columns (pairwise float sums over the same float64 arrays)
    traded = float(pd.Series(np.abs(fills.quantity * fills.price)).sum()) if len(fills) else 0.0
    strategy = curve_stats(equity, stamps, initial, periods, positions, traded,
                           float(pd.Series(fills.commission).sum()) if len(fills) else 0.0)
    strategy.update(trade_stats(trades, excursion))
    strategy["final_equity"] = float(equity[-1]) if equity.size else initial

    bench, bench_pos, bench_traded, bench_fees = buy_and_hold(
        passes, len(epochs), initial, float(costs["commission_bps"]), float(costs["slippage_bps"]))
    hold = curve_stats(bench, stamps, initial, periods, bench_pos, bench_traded, bench_fees)
    hold.update({"trades": 0, "win_rate": None, "profit_factor": None, "avg_trade_return": None,
                 "avg_trade_duration": None, "avg_trade_bars": None,
                 "final_equity": float(bench[-1]) if bench.size else initial})
    return {"strategy": strategy, "buy_and_hold": hold,
            "window": {"first_bar": stamps[0] if stamps else None, "last_bar": stamps[-1] if stamps else None,
                       "bars": len(stamps), "periods_per_year": periods, "costs": costs}}


def epochs_of(stamps: list[str]) -> np.ndarray:
    """:func:`aitrader.trading.session.to_epoch` of each ISO stamp (aware: UTC; naive: as if UTC; 0.0 for
    one it cannot read), parsed in one vectorised call instead of one Timestamp per stamp."""
    parsed = pd.to_datetime(pd.Series(stamps, dtype=object), utc=True, format="ISO8601", errors="coerce")
    index = pd.DatetimeIndex(parsed).as_unit("ns")
    return np.where(index.isna(), 0.0, index.asi8 / 1e9)


def _positions(fills: FillColumns, epochs: np.ndarray) -> np.ndarray:
    """Gross position (sum of |quantity| over symbols) held after each bar's fills."""
    gross = np.zeros(len(epochs))
    if not len(fills):
        return gross
    symbols = np.array(fills.symbol, dtype=object)
    for sym in sorted(set(fills.symbol)):
        rows = np.flatnonzero(symbols == sym)
        signed = np.where(fills.buy[rows], 1.0, -1.0) * fills.quantity[rows]
        held = np.round(np.cumsum(signed), QTY_DECIMALS)
        parsed = fills.stamp_ns()
        at = parsed[0][rows] / 1e9 if parsed is not None else epochs_of([fills.ts[i] for i in rows.tolist()])
        idx = np.searchsorted(at, epochs, side="right") - 1
        gross += np.where(idx >= 0, np.abs(held[np.maximum(idx, 0)]), 0.0)
    return gross


# ------------------------------------------------------------------------------ the bars' side

def hold_rows_of(series: dict[str, BarSeries], trade_from: dict[str, float | None], epochs: np.ndarray
                 ) -> dict[str, tuple[np.ndarray, int | None]]:
    """Per symbol: the bar row in effect at each equity step (-1 before the first bar) and the row whose
    open buy-and-hold buys at: the bar after the first traded one (None when there is none)."""
    out = {}
    for sym, s in series.items():
        bar_epochs = s.ns() / 1e9  # what session.to_epoch gives each stamp (UTC for aware bars), 8 B/bar
        start = trade_from.get(sym)
        i0 = int(np.searchsorted(bar_epochs, start, side="left")) if start is not None else 0
        rows = np.searchsorted(bar_epochs, epochs, side="right").astype(np.int64) - 1
        out[sym] = (rows, i0 + 1 if i0 + 1 < len(s) else None)
    return out


@dataclass
class BarPass:
    """What the report needs of one symbol's bars, gathered in one pass over its blocks.

    ``closes``: the close at each requested row (``close_rows``; NaN for a row before the first bar);
    ``open``: the open at ``open_row``; ``lows``/``highs``: the lowest low and highest high over each
    trade's rows ``spans`` (:func:`trade_spans`); ``all_closes``: every close (8 B a bar), kept only for
    the tearsheet's charts."""

    close_rows: np.ndarray
    closes: np.ndarray
    open_row: int | None
    open: float | None
    spans: tuple[np.ndarray, np.ndarray]
    lows: np.ndarray
    highs: np.ndarray
    all_closes: np.ndarray | None


class BarTap:
    """The open, high, low and close of each block the replay reads (32 bytes a bar), kept per series as
    the replay's shared pass reads it (a ``BarSeries.taps`` callable, installed by ``paper_trade`` from
    ``collect["bar_tap"]``), so that :func:`scan_bars` need not read and validate the files again."""

    def __init__(self) -> None:
        self._blocks: dict[BarSeries, list[tuple[int, np.ndarray]]] = {}

    def __call__(self, series: BarSeries, block: tuple[int, np.ndarray, np.ndarray]) -> None:
        k, _, values = block
        self._blocks.setdefault(series, []).append((k, np.array(values[:4], dtype=np.float64)))

    def blocks(self, series: BarSeries, first: int, size: int) -> Iterator[tuple[int, None, np.ndarray]] | None:
        """``series``' rows from ``first`` on as ``(first row, None, (4, m) prices)`` pieces of at most
        ``size`` rows; None unless the tap saw every bar of ``series`` once, in order (a stopped replay
        may not have read them all)."""
        got = self._blocks.get(series, [])
        at = 0
        for k, values in got:
            if k != at:
                return None
            at += values.shape[1]
        return self._pieces(got, first, size) if at == len(series) else None

    @staticmethod
    def _pieces(got: list[tuple[int, np.ndarray]], first: int, size: int) -> Iterator[tuple[int, None, np.ndarray]]:
        for k, values in got:
            m = values.shape[1]
            for j in range(max(first - k, 0), m, size):
                yield k + j, None, values[:, j:j + size]


def scan_bars(series: BarSeries, *, close_rows: np.ndarray, open_row: int | None,
              spans: tuple[np.ndarray, np.ndarray], keep_closes: bool, tap: BarTap | None = None) -> BarPass:
    """One pass over ``series``' blocks from the first row anything needs: no frame, no whole-length
    price array (except every close when ``keep_closes``). With a ``tap`` that saw the whole replay, its
    copies of the blocks' prices; else the blocks are read from the file again."""
    n = len(series)
    lo, hi = spans
    closes = np.full(len(close_rows), np.nan)
    lows = np.full(len(lo), np.nan)
    highs = np.full(len(lo), np.nan)
    valid = np.flatnonzero((close_rows >= 0) & (close_rows < n))
    order = valid[np.argsort(close_rows[valid], kind="stable")]
    wanted = close_rows[order]
    all_closes = np.empty(n) if keep_closes else None
    found_open: float | None = None
    firsts = [int(wanted[0])] if wanted.size else []
    firsts += [int(lo.min())] if lo.size else []
    firsts += [open_row] if open_row is not None else []
    first = 0 if keep_closes else min(firsts, default=n)
    kept = tap.blocks(series, first, SCAN_ROWS) if tap is not None and first < n else None
    source = kept if kept is not None else series.own_blocks(first, size=SCAN_ROWS) if first < n else ()
    for k, _, values in source:
        m = values.shape[1]
        a, b = np.searchsorted(wanted, [k, k + m], side="left")
        if b > a:
            closes[order[a:b]] = values[3, wanted[a:b] - k]
        if open_row is not None and k <= open_row < k + m:
            found_open = float(values[0, open_row - k])
        live = np.flatnonzero((lo < k + m) & (hi > k))
        if live.size:  # each live trade's rows x:y of this block, reduced at once (pairs x, y; odd slots unused)
            x, y = np.maximum(lo[live], k) - k, np.minimum(hi[live], k + m) - k
            at = np.column_stack((x, y)).reshape(-1)
            lows[live] = np.fmin(lows[live], np.fmin.reduceat(np.append(values[2], np.nan), at)[0::2])
            highs[live] = np.fmax(highs[live], np.fmax.reduceat(np.append(values[1], np.nan), at)[0::2])
        if all_closes is not None:
            all_closes[k:k + m] = values[3]
    return BarPass(close_rows, closes, open_row, found_open, spans, lows, highs, all_closes)


def buy_and_hold(passes: dict[str, BarPass], steps: int, initial: float, commission_bps: float,
                 slippage_bps: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Equity, position, traded notional and fees of buying each symbol once (see the module doc),
    at each equity step, from the closes gathered at those steps (:func:`scan_bars`)."""
    share = initial / max(1, len(passes))
    total = np.zeros(steps)
    held = np.zeros(steps)
    traded = fees = 0.0
    for _, p in sorted(passes.items()):
        rows = p.close_rows
        value = np.full(steps, share)
        pos = np.zeros(steps)
        if p.open_row is not None and p.open is not None:
            price = p.open * (1.0 + slippage_bps / 1e4)
            qty = math.floor(share / (price * (1.0 + commission_bps / 1e4)) * 10**QTY_DECIMALS) / 10**QTY_DECIMALS
            commission = qty * price * commission_bps / 1e4
            cash = share - qty * price - commission
            bought = rows >= p.open_row
            value[bought] = cash + qty * p.closes[bought]
            pos[bought] = qty
            traded += qty * price
            fees += commission
        total += value
        held += pos
    return total, held, traded, fees


def trade_spans(trips: list[dict[str, Any]], symbol: str, series: BarSeries) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``lo:hi`` of ``series`` each of ``symbol``'s round trips held: :func:`bar_span` on the
    series' index, with the stamps aligned to it one by one and searched all at once (in ns)."""
    mine = [t for t in trips if t["symbol"] == symbol] if len(series) else []
    return stamp_spans([str(t["entry_ts"]) for t in mine], [str(t["exit_ts"]) for t in mine], series)


def trip_spans(trades: TradeColumns, symbol: str, series: BarSeries) -> tuple[np.ndarray, np.ndarray]:
    """:func:`trade_spans` of the round trips in columns (``symbol``'s, in trade order)."""
    rows = _rows_of(trades, symbol) if len(series) else np.empty(0, dtype=np.int64)
    fills = trades.trips.fills
    parsed = fills.stamp_ns() if rows.size else None
    if parsed is not None and (parsed[1] or series.index.tz is None):  # what stamp_ns gives them
        ns = series.ns()
        return (np.searchsorted(ns, parsed[0][trades.trips.entry[rows]], side="left").astype(np.int64),
                np.searchsorted(ns, parsed[0][trades.trips.exit[rows]], side="left").astype(np.int64))
    ts = fills.ts
    return stamp_spans([ts[i] for i in trades.trips.entry[rows].tolist()],
                       [ts[i] for i in trades.trips.exit[rows].tolist()], series)


def _rows_of(trades: TradeColumns, symbol: str) -> np.ndarray:
    """The trades (rows of the columns) of ``symbol``, in trade order."""
    f = trades.trips.fills
    code = {s: i for i, s in enumerate(sorted(set(f.symbol)))}
    if symbol not in code:
        return np.empty(0, dtype=np.int64)
    of_fill = np.array([code[s] for s in f.symbol], dtype=np.int64)
    return np.flatnonzero(of_fill[trades.trips.entry] == code[symbol])


def stamp_spans(entries: list[str], exits: list[str], series: BarSeries) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``lo:hi`` of ``series`` from each entry stamp up to (not including) each exit stamp."""
    if not entries:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    index = series.index
    ns = series.ns()
    return (np.searchsorted(ns, stamp_ns(entries, index), side="left").astype(np.int64),
            np.searchsorted(ns, stamp_ns(exits, index), side="left").astype(np.int64))


def stamp_ns(stamps: list[str], index: pd.DatetimeIndex) -> np.ndarray:
    """What ``index.searchsorted(trades.aligned(pd.Timestamp(s), index))`` compares for each stamp: UTC
    ns for an aware stamp (whatever the index), wall ns for a naive stamp against a naive index.
    Parsed in one call when the stamps are all naive against a naive index or all carry one offset
    (the ledger's: the engine formats them from the index); else one by one through ``aligned``."""
    try:
        with warnings.catch_warnings():  # pandas 2.x warns on mixed offsets before failing below
            warnings.simplefilter("ignore", FutureWarning)
            parsed = pd.DatetimeIndex(pd.to_datetime(pd.Series(stamps, dtype=object), format="ISO8601"))
    except (TypeError, ValueError):
        parsed = None
    if parsed is not None and (parsed.tz is not None or index.tz is None):
        return np.asarray(parsed.as_unit("ns").asi8, dtype=np.int64)
    return np.array([aligned(pd.Timestamp(t), index).as_unit("ns").value for t in stamps], dtype=np.int64)


Excursions = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # bars, mae, mfe, has_bars (per trade)


def trade_excursions(trades: TradeColumns, series: dict[str, BarSeries], passes: dict[str, BarPass]) -> Excursions:
    """Each trade's bar count, MAE and MFE, as :func:`aitrader.trading.trades.round_trips` takes them from
    whole frames (:func:`~aitrader.trading.trades.excursions`, vectorised); ``has_bars`` False for a
    trade whose symbol has no bars (its three figures are then None in the records)."""
    n = len(trades)
    bars = np.zeros(n, dtype=np.int64)
    mae = np.zeros(n)
    mfe = np.zeros(n)
    has = np.zeros(n, dtype=bool)
    price = trades.trips.fills.price[trades.trips.entry]
    for sym, s in series.items():
        if not len(s):
            continue
        rows = _rows_of(trades, sym)
        if not rows.size:
            continue
        p = passes[sym]
        lo, hi = p.spans
        held = hi > lo
        with np.errstate(divide="ignore", invalid="ignore"):
            up, down = p.highs / price[rows] - 1.0, p.lows / price[rows] - 1.0
        long = trades.long[rows]
        best, worst = np.where(long, up, -down), np.where(long, down, -up)
        # min(0.0, worst) and max(0.0, best) as Python takes them: 0.0 unless strictly beyond (NaN -> 0.0)
        mae[rows] = np.where(held & (worst < 0.0), worst, 0.0)
        mfe[rows] = np.where(held & (best > 0.0), best, 0.0)
        bars[rows] = hi - lo
        has[rows] = True
    return bars, mae, mfe, has


def close_frames(series: dict[str, BarSeries], passes: dict[str, BarPass]) -> dict[str, pd.DataFrame]:
    """Each symbol's closes on its stamps, the one column of bars the tearsheet reads."""
    return {sym: pd.DataFrame({"close": passes[sym].all_closes}, index=s.index)
            for sym, s in series.items() if passes[sym].all_closes is not None}


def curve_stats(equity: np.ndarray, stamps: Sequence[str], initial: float, periods: float, positions: np.ndarray,
                traded: float, fees: float) -> dict[str, Any]:
    """Return, CAGR, Sharpe, Sortino, drawdown (depth, bars, calendar time), exposure, turnover, fees."""
    from aitrader.training import metrics as M

    rets = M.simple_returns(equity, initial=initial)
    bars, first, last = M.drawdown_duration(equity, initial=initial)
    dd_time = None
    if bars:
        peak = stamps[first - 1] if first > 0 else stamps[0]
        dd_time = short_duration(pd.Timestamp(stamps[last]) - pd.Timestamp(peak))
    before = np.concatenate(([initial], equity[:-1])) if equity.size else equity
    return {
        "total_return": float(equity[-1] / initial - 1.0) if equity.size else 0.0,
        "cagr": M.cagr(equity, initial, periods),
        "sharpe": M.sharpe_ratio(rets, periods),
        "sortino": M.sortino_ratio(rets, periods),
        "max_drawdown": M.max_drawdown(equity, initial=initial),
        "max_drawdown_bars": bars,
        "max_drawdown_duration": dd_time,
        "exposure": M.exposure(positions),
        "turnover": M.turnover([traded], before),
        "fees": fees,
    }


def trade_stats(trades: TradeColumns, excursion: Excursions) -> dict[str, Any]:
    """Number of round trips, win rate, profit factor, average return, duration and bars (the means
    taken by pandas over numeric columns, as they were over the trades' table)."""
    from aitrader.training import metrics as M

    n = len(trades)
    bars, _, _, has = excursion
    return {
        "trades": n,
        "win_rate": M.win_rate(trades.pnl),
        "profit_factor": M.profit_factor(trades.pnl),
        "avg_trade_return": float(pd.Series(trades.ret).mean()) if n else None,
        "avg_trade_duration": short_duration(pd.Series(trades.duration_ns.astype("m8[ns]")).mean()) if n else None,
        "avg_trade_bars": (float(pd.Series(bars if has.all() else np.where(has, bars, np.nan)).mean())
                           if n and has.any() else None),
    }


def short_duration(value: Any) -> str:
    """A time span rounded to the second: ``3 days``, ``1 days 04:30:00``, ``12:58:12``."""
    text = str(pd.Timedelta(value).round("s"))
    return text.removesuffix(" 00:00:00").removeprefix("0 days ")
