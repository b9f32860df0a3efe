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

import bisect
import math
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import pandas as pd

from aitrader.errors import TradingError
from aitrader.trading.ledger import LEDGER_NAME, connect, equity_column, unpack_text
from aitrader.trading.trades import aligned
from aitrader.trading.trips import (
    FillColumns,
    FillRecorder,
    TradeColumns,
    match_fills,
    records,
    stamp_texts,
    trade_columns,
)

if TYPE_CHECKING:
    from aitrader.trading.sources import BarSeries

QTY_DECIMALS = 8  # as the paper broker
SCAN_ROWS = 65_536  # bars per block of the report's pass over a symbol's bars (scan_bars)
FILL_COLUMNS = ["id", "order_id", "ts", "symbol", "side", "quantity", "price", "commission", "slippage"]


def run_backtest(*, models: list[str] | None, data: list[str] | None, config_path: str | None = None,
                 registry_root: str | None = None, start: str | None = None, end: str | None = None,
                 allow_in_sample: bool = False, allow_symbol_mismatch: bool = False,
                 out_run: str | None = None, runs_dir: str = "runs", view: str = "none",
                 report: str | None = None, books: str | dict[str, str] | None = None,
                 workers: int | str = "auto") -> dict[str, Any]:
    """Replay, then report: ``{"run": paper-trade summary, "performance": {...}, "trades": [...]}``.

    ``report``: also write the HTML tearsheet there (:func:`aitrader.monitoring.tearsheet.write_tearsheet`,
    the same report as ``monitor --report``), from the replay's ledger before a temporary one is removed."""
    return backtest(models=models, data=data, config_path=config_path, registry_root=registry_root, start=start,
                    end=end, allow_in_sample=allow_in_sample, allow_symbol_mismatch=allow_symbol_mismatch,
                    out_run=out_run, runs_dir=runs_dir, view=view, report=report, books=books,
                    workers=workers).as_dict()


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
             report: str | None = None, books: str | dict[str, str] | None = None,
             workers: int | str = "auto") -> Backtest:
    """:func:`run_backtest`, its trades left as columns; ``workers``: paper-trade's ``--workers``."""
    from aitrader._memory import release_free_memory
    from aitrader.trading.service import paper_trade

    recorder = FillRecorder()  # the replay's fills as typed columns, kept as the broker publishes them
    lean = out_run is None and report is None  # a temporary ledger that only the summary and this report read
    collect: dict[str, Any] = {"subscribers": [recorder.attach], "scratch_ledger": lean}
    tmp = None if out_run else tempfile.mkdtemp(prefix="aitrader-backtest-")
    try:
        summary = paper_trade(
            config_path=config_path, data=data, run_id=out_run or "backtest", state_dir=tmp,
            registry_root=registry_root, runs_dir=runs_dir, view=view, start=start, end=end,
            allow_in_sample=allow_in_sample, models=models, allow_symbol_mismatch=allow_symbol_mismatch,
            collect=collect, books=books, workers=workers,
            # a temporary ledger without a report: nothing reads its feature rows, so they are not packed (and
            # it is a scratch one: no outcome rows, no journal, no sync)
            ledger_features=not lean,
        )
        run_dir = Path(summary["state_dir"])
        series: dict[str, BarSeries] = collect.get("series") or {}
        release_free_memory()  # the replay's freed heap goes back to the system before the report's arrays
        # what the ledger's fills table holds (read it when the count says otherwise)
        fills = recorder.columns() if len(recorder) == summary["fills"] else FillColumns.read(run_dir / LEDGER_NAME)
        del recorder
        collect.pop("subscribers", None)
        release_free_memory()  # the recorder's pieces, merged into the columns
        # the curves' figures first (their one array of the run's length is freed before the trades are made)
        perf = performance_report(read_steps(run_dir, collect), fills, collect, summary)
        release_free_memory()
        trades = trade_columns(match_fills(fills))  # columns: no dict, Timestamp or frame per trade
        release_free_memory()  # the matching's Python numbers
        passes = {sym: scan_bars(s, spans=trip_spans(trades, sym, s), keep_closes=report is not None)
                  for sym, s in sorted(series.items())}
        excursion = trade_excursions(trades, series, passes)
        closes = close_frames(series, passes) if report is not None else {}
        del passes  # each trade's span, low and high: done
        strategy = perf["strategy"]
        final = strategy.pop("final_equity")
        strategy.update(trade_stats(trades, excursion))
        strategy["final_equity"] = final
        if report is not None:
            from aitrader.monitoring.tearsheet import write_tearsheet

            specs = collect.get("specs") or []
            write_tearsheet(Path(report), run_dir=run_dir, manifest=specs[0].manifest if specs else None,
                            bars=closes, title="backtest " + ", ".join(f"{s.model_id} ({s.symbol})" for s in specs))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if tmp is not None:
        summary = {**summary, "state_dir": None}
    names = [f"{s.model_id} ({s.symbol})" for s in collect.get("specs") or []]
    return Backtest(models=names, run=summary, kept=out_run is not None, performance=perf, trades=trades,
                    excursion=excursion, report=report)


# ------------------------------------------------------------------------------ the ledger's side


Blob = bytes | Callable[[], bytes]  # a compressed text blob, or what reads it from the ledger when asked


class Stamps(Sequence[str]):
    """The equity steps' ISO stamps without a Python string per step: the ledger's compressed text
    blobs (one per checkpoint; each given as bytes, or read from the ledger when needed), a stamp
    decoded when asked for (the report asks for a handful)."""

    def __init__(self, blobs: list[tuple[int, Blob]], rows: np.ndarray | range) -> None:
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
            self._cache = (b, unpack_text(_bytes(blob), n))
        return str(self._cache[1][row - int(self._starts[b])])


def _bytes(blob: Blob) -> bytes:
    return blob() if callable(blob) else blob


#: Equity steps (and bars) handled at a time by the report's passes over the steps (a piece's arrays, not the run's).
STEP_PIECE = 16_384


class Steps:
    """The replay's equity steps over the traded bars without an array of their length: the ledger's
    step stamps (:class:`Stamps`), their epoch seconds made a piece at a time (:meth:`epochs`) from the
    replayed series' nanoseconds (:func:`step_ns`), else from the ledger's stamps parsed once, and the
    equity read from the ledger into the one array the report's figures are computed in (:meth:`path`)."""

    def __init__(self, ledger: Path, stamps: Stamps, rows: range | np.ndarray, ns: np.ndarray | None,
                 epochs: np.ndarray | None) -> None:
        self.ledger = ledger
        self.stamps = stamps
        self._rows = rows  # the traded steps: rows of the ledger's steps (a range: the usual suffix)
        self._ns = ns  # int64 ns of every ledger step (views of the series' index when one symbol)
        self._epochs = epochs  # or their epoch seconds (parsed from the ledger's stamps)
        self._column: np.ndarray | None = None  # what path() reads the equity into

    def __len__(self) -> int:
        return len(self._rows)

    def epochs(self, a: int, b: int) -> np.ndarray:
        """The epoch seconds of traded steps ``a:b`` (``ns / 1e9``)."""
        rows = self._rows[a:b]
        if isinstance(rows, range):
            if self._ns is not None:
                return self._ns[rows.start:rows.stop] / 1e9
            assert self._epochs is not None
            return self._epochs[rows.start:rows.stop].copy()
        if self._ns is not None:
            return self._ns[rows] / 1e9
        assert self._epochs is not None
        return self._epochs[rows]

    def path(self, initial: float) -> np.ndarray:
        """``[initial, *equity of the traded steps]`` (float64, contiguous), read from the ledger's equity
        column; each call writes it again into the same array (the figures are computed over it in place)."""
        conn = connect(self.ledger, readonly=True)
        try:
            if isinstance(self._rows, range):  # a suffix of the steps: the path is a view of the column
                self._column = equity_column(conn, lead=0.0, out=self._column)
                path = self._column[self._rows.start:]
                path[0] = initial  # over the step before the first traded one (or the lead)
                return path
            col = equity_column(conn)
        finally:
            conn.close()
        if self._column is None:
            self._column = np.empty(len(self._rows) + 1)
        self._column[0] = initial
        self._column[1:] = col[self._rows]
        return self._column


def read_steps(run_dir: Path, collect: dict[str, Any]) -> Steps:
    """The ledger's equity steps from the first bar the models may trade (``collect["trade_from"]``):
    their stamps kept compressed (:class:`Stamps`) and their epoch seconds those of the replayed series'
    bars (:func:`step_ns`), else parsed per checkpoint block."""
    first = min((t for t in collect["trade_from"].values() if t is not None), default=None)
    ledger = run_dir / LEDGER_NAME
    conn = connect(ledger, readonly=True)  # a new run's: block format only (docs/trading.md)
    try:
        blocks = [(int(n), int(at))
                  for n, at in conn.execute("SELECT n, first_bar FROM equity_blocks ORDER BY first_bar")]
    finally:
        conn.close()
    blobs: list[tuple[int, Blob]] = [(n, partial(_stamp_blob, ledger, at)) for n, at in blocks]  # read when asked
    total = sum(n for n, _ in blobs)
    ns = step_ns(list((collect.get("series") or {}).values()), blobs)
    parsed = None
    if ns is None:
        parsed = np.concatenate([epochs_of([str(t) for t in unpack_text(_bytes(blob), n)]) for n, blob in blobs]) \
            if blobs else np.empty(0)
    rows = _kept_rows(total, first, ns, parsed)
    return Steps(ledger, Stamps(blobs, rows), rows, ns, parsed)


def _stamp_blob(ledger: Path, first_bar: int) -> bytes:
    """The stamps' blob of the ledger's checkpoint block starting at ``first_bar``."""
    conn = connect(ledger, readonly=True)
    try:
        row = conn.execute("SELECT ts FROM equity_blocks WHERE first_bar = ?", (first_bar,)).fetchone()
    finally:
        conn.close()
    if row is None:
        raise TradingError(f"the ledger {ledger} lost its equity block from bar {first_bar} during the backtest; "
                           "run the backtest again")
    return bytes(row[0])


def _kept_rows(total: int, first: float | None, ns: np.ndarray | None, parsed: np.ndarray | None) -> range | np.ndarray:
    """The steps whose epoch is ``>= first`` (all without ``first``): a range when they are a suffix of
    the steps (the steps are in time order), else their rows. Checked a piece at a time."""
    if first is None:
        return range(total)
    k0: int | None = None  # the first kept step
    suffix = True
    for lo in range(0, total, STEP_PIECE):
        hi = min(total, lo + STEP_PIECE)
        keep = (ns[lo:hi] / 1e9 if ns is not None else parsed[lo:hi]) >= first  # type: ignore[index]
        if k0 is None:
            at = np.flatnonzero(keep)
            if at.size:
                k0 = lo + int(at[0])
                suffix = bool(keep[int(at[0]):].all())
        elif not keep.all():
            suffix = False
        if not suffix:
            break
    if suffix:
        return range(total if k0 is None else k0, total)
    epochs = ns / 1e9 if ns is not None else parsed
    assert epochs is not None
    return np.flatnonzero(epochs >= first)


def _increasing(a: np.ndarray) -> bool:
    """``(np.diff(a) > 0).all()``, a piece at a time."""
    last = len(a) - 1
    return all(bool((a[lo + 1:min(lo + STEP_PIECE, last) + 1] > a[lo:min(lo + STEP_PIECE, last)]).all())
               for lo in range(0, max(last, 0), STEP_PIECE))


def step_ns(series: list[BarSeries], blobs: list[tuple[int, Blob]]) -> np.ndarray | None:
    """The equity steps' stamps (``blobs``: the ledger's, one per checkpoint) as the series' int64 ns,
    without parsing them: a replay's step ``i`` is the ``i``-th distinct stamp of its series' bars, in
    time order (one series: a view of its index). None (parse them) unless the series' stamps are whole
    seconds, the steps are a prefix of them (a stopped replay writes fewer) and the first and the last
    stamps parse to the expected epochs."""
    blobs = [(n, blob) for n, blob in blobs if n]
    total = sum(n for n, _ in blobs)
    ns = [s.ns() for s in series if len(s)]
    if not total or not ns or not all(s.whole_seconds for s in series if len(s)):
        return None
    one = len(ns) == 1 and _increasing(ns[0])
    union = ns[0] if one else np.unique(np.concatenate(ns))
    if total > len(union):
        return None
    steps = union[:total]
    ends = epochs_of([str(unpack_text(_bytes(blobs[0][1]), blobs[0][0])[0]),
                      str(unpack_text(_bytes(blobs[-1][1]), blobs[-1][0])[-1])])
    return steps if ends[0] == steps[0] / 1e9 and ends[1] == steps[-1] / 1e9 else None


def performance_report(steps: Steps, fills: FillColumns, collect: dict[str, Any], summary: dict[str, Any]
                       ) -> dict[str, dict[str, Any]]:
    """``{"strategy": {...}, "buy_and_hold": {...}, "window": {...}}`` over the traded bars of a finished
    replay, but the strategy's trade figures (:func:`trade_stats`, added by :func:`backtest`): the curve's
    figures (the same floats as the whole-array definition in the tests' ``tests/backtest_oracle.py``) and
    the final equity, computed in one array of the run's length (:func:`curve_stats_over`): the strategy's
    equity read from the ledger, then buy-and-hold's, built a piece of steps at a time from the bars'
    closes (:func:`hold_curve`)."""
    initial = float(summary["initial_cash"])
    costs = summary["costs"]
    periods = float(collect["calendar"]["periods_per_year"])
    stamps, n = steps.stamps, len(steps)
    # as pandas summed the fills' columns (pairwise float sums over the same float64 arrays)
    traded = float(pd.Series(np.abs(fills.quantity * fills.price)).sum()) if len(fills) else 0.0
    tables = _position_tables(fills)
    held = sum(int(np.count_nonzero(_gross(tables, steps.epochs(a, min(n, a + STEP_PIECE))) != 0.0))
               for a in range(0, n, STEP_PIECE))
    del tables
    path = steps.path(initial)
    strategy, final = curve_stats_over(path, lambda: steps.path(initial), stamps, periods, held / n if n else 0.0,
                                       traded, float(pd.Series(fills.commission).sum()) if len(fills) else 0.0)
    strategy["final_equity"] = final

    series: dict[str, BarSeries] = collect.get("series") or {}
    trade_from = collect["trade_from"]
    c_bps, s_bps = float(costs["commission_bps"]), float(costs["slippage_bps"])
    bench = hold_curve(steps, series, trade_from, initial, c_bps, s_bps, out=path)  # the same array, again
    hold, final = curve_stats_over(
        bench.path, lambda: hold_curve(steps, series, trade_from, initial, c_bps, s_bps, out=path).path,
        stamps, periods, bench.held / n if n else 0.0, bench.traded, bench.fees)
    hold.update({"trades": 0, "win_rate": None, "profit_factor": None, "avg_trade_return": None,
                 "avg_trade_duration": None, "avg_trade_bars": None, "final_equity": final})
    return {"strategy": strategy, "buy_and_hold": hold,
            "window": {"first_bar": stamps[0] if n else None, "last_bar": stamps[-1] if n else None,
                       "bars": n, "periods_per_year": periods, "costs": costs}}


def epochs_of(stamps: list[str]) -> np.ndarray:
    """:func:`aitrader.trading.session.to_epoch` of each ISO stamp (aware: UTC; naive: as if UTC; 0.0 for
    one it cannot read), parsed in one vectorised call instead of one Timestamp per stamp."""
    parsed = pd.to_datetime(pd.Series(stamps, dtype=object), utc=True, format="ISO8601", errors="coerce")
    index = pd.DatetimeIndex(parsed).as_unit("ns")
    return np.where(index.isna(), 0.0, index.asi8 / 1e9)


def _position_tables(fills: FillColumns) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per symbol (sorted): each fill's epoch and the position held after it (rounded as the broker)."""
    if not len(fills):
        return []
    out = []
    codes, names = fills.symbol_codes()
    parsed = fills.stamp_ns()
    for k in range(len(names)):  # the symbols in sorted order
        rows = np.flatnonzero(codes == k)
        signed = np.where(fills.buy[rows], 1.0, -1.0) * fills.quantity[rows]
        held = np.round(np.cumsum(signed), QTY_DECIMALS)
        at = parsed[0][rows] / 1e9 if parsed is not None else epochs_of(stamp_texts(fills.ts, rows))
        out.append((at, held))
    return out


def _gross(tables: list[tuple[np.ndarray, np.ndarray]], epochs: np.ndarray) -> np.ndarray:
    """The gross position (sum of |quantity| over symbols) held after each of ``epochs``' fills, from
    :func:`_position_tables` (any piece of the steps: element-wise)."""
    gross = np.zeros(len(epochs))
    for at, held in tables:
        idx = np.searchsorted(at, epochs, side="right") - 1
        gross += np.where(idx >= 0, np.abs(held[np.maximum(idx, 0)]), 0.0)
    return gross


# ------------------------------------------------------------------------------ the bars' side

@dataclass
class BarPass:
    """What the report needs of one symbol's bars.

    ``closes``: the close at each requested row (``close_rows``; NaN for a row outside the bars) and
    ``open``: the open at ``open_row``, buy-and-hold's (:func:`hold_curve` gives them a piece of steps at
    a time); ``lows``/``highs``: the lowest low and highest high over each trade's rows ``spans``
    (:func:`trade_spans`) and ``all_closes``: every close (8 B a bar, kept only for the tearsheet's
    charts), gathered in one pass over its blocks (:func:`scan_bars`)."""

    close_rows: np.ndarray
    closes: np.ndarray
    open_row: int | None
    open: float | None
    spans: tuple[np.ndarray, np.ndarray]
    lows: np.ndarray
    highs: np.ndarray
    all_closes: np.ndarray | None


def scan_bars(series: BarSeries, *, spans: tuple[np.ndarray, np.ndarray], keep_closes: bool) -> BarPass:
    """One pass over ``series``' blocks from the first row a trade holds: each trade's lowest low and
    highest high (no frame, no whole-length price array, except every close when ``keep_closes``). A
    scanned file's blocks are read back from the scan's spill file (:mod:`aitrader.data.stream`: no
    second parse), a frame's from memory."""
    n = len(series)
    lo, hi = spans
    lows = np.full(len(lo), np.nan)
    highs = np.full(len(lo), np.nan)
    all_closes = np.empty(n) if keep_closes else None
    first = 0 if keep_closes else int(lo.min()) if lo.size else n
    source = series.own_blocks(first, size=SCAN_ROWS) if first < n else ()
    for k, _, values in source:
        m = values.shape[1]
        live = np.flatnonzero((lo < k + m) & (hi > k))
        if live.size:  # each live trade's rows x:y of this block, reduced at once (pairs x, y; odd slots unused)
            x, y = np.maximum(lo[live], k) - k, np.minimum(hi[live], k + m) - k
            at = np.column_stack((x, y)).reshape(-1)
            lows[live] = np.fmin(lows[live], np.fmin.reduceat(np.append(values[2], np.nan), at)[0::2])
            highs[live] = np.fmax(highs[live], np.fmax.reduceat(np.append(values[1], np.nan), at)[0::2])
        if all_closes is not None:
            all_closes[k:k + m] = values[3]
    empty = np.empty(0, dtype=np.int64)
    return BarPass(empty, np.empty(0), None, None, spans, lows, highs, all_closes)


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


@dataclass
class HoldCurve:
    """:func:`hold_curve`'s result: ``path`` = ``[initial, *buy-and-hold equity at each traded step]``,
    ``held``: the steps holding a position, and the traded notional and fees of the one buy per symbol."""

    path: np.ndarray
    held: int
    traded: float
    fees: float


def hold_curve(steps: Steps, series: dict[str, BarSeries], trade_from: dict[str, float | None], initial: float,
               commission_bps: float, slippage_bps: float, out: np.ndarray) -> HoldCurve:
    """:func:`buy_and_hold` over every traded step, written into ``out`` (``len(steps) + 1`` floats) a piece of
    :data:`STEP_PIECE` steps at a time: per symbol, the bar row in effect at each step (:func:`rows_at`) and
    its close (:class:`CloseReader`, the bars' blocks read forward), buy-and-hold of the piece (element-wise:
    the same floats as over the whole run)."""
    n = len(steps)
    out[0] = initial
    readers = {}
    for sym, s in sorted(series.items()):
        start = trade_from.get(sym)
        ns = s.ns()
        i0 = bisect.bisect_left(ns, start, key=_epoch) if start is not None else 0  # type: ignore[call-overload]
        row = i0 + 1 if i0 + 1 < len(s) else None
        first = next(iter(s.own_blocks(row, size=1)), None) if row is not None else None
        readers[sym] = (s, row, float(first[2][0, 0]) if first is not None else None, CloseReader(s))
    held = 0
    traded = fees = 0.0
    for a in range(0, max(n, 1), STEP_PIECE):
        b = min(n, a + STEP_PIECE)
        epochs = steps.epochs(a, b)
        passes = {}
        for sym, (s, row, price, reader) in readers.items():
            rows = rows_at(s, epochs)
            passes[sym] = BarPass(close_rows=rows, closes=reader.closes(rows), open_row=row, open=price,
                                  spans=(np.empty(0, np.int64), np.empty(0, np.int64)), lows=np.empty(0),
                                  highs=np.empty(0), all_closes=None)
        total, pos, traded, fees = buy_and_hold(passes, b - a, initial, commission_bps, slippage_bps)
        out[1 + a:1 + b] = total
        held += int(np.count_nonzero(pos != 0.0))
    return HoldCurve(out, held, traded, fees)


def _epoch(ns: Any) -> float:
    """``ns / 1e9`` as the arrays give it (``session.to_epoch`` of a bar's stamp)."""
    return float(ns / 1e9)


def rows_at(series: BarSeries, epochs: np.ndarray) -> np.ndarray:
    """The bar row of ``series`` in effect at each epoch (``searchsorted(bar epochs, epochs, "right") - 1``,
    -1 before the first bar), with the bars' epochs made only for the rows between the lowest and the
    highest epoch asked (two bisections of the stamps for the rest: the epochs are monotonic in them)."""
    if not epochs.size or not len(series):
        return np.full(epochs.size, -1, dtype=np.int64)
    ns = series.ns()
    lo = bisect.bisect_right(ns, float(epochs.min()), key=_epoch)  # type: ignore[call-overload]
    hi = bisect.bisect_right(ns, float(epochs.max()), key=_epoch)  # type: ignore[call-overload]
    rows = np.searchsorted(ns[lo:hi] / 1e9, epochs, side="right")
    rows += lo - 1
    return rows


class CloseReader:
    """The closes of one series at rows asked in pieces (mostly forward), from its blocks read in order
    (:meth:`BarSeries.own_blocks`, :data:`SCAN_ROWS` rows at a time); NaN for a row outside the bars."""

    def __init__(self, series: BarSeries) -> None:
        self.series = series
        self._blocks: Iterator[tuple[int, np.ndarray, np.ndarray]] | None = None
        self._held: list[tuple[int, np.ndarray]] = []  # (first row, closes) of the blocks read and still needed

    def closes(self, rows: np.ndarray) -> np.ndarray:
        out = np.full(rows.size, np.nan)
        valid = np.flatnonzero((rows >= 0) & (rows < len(self.series)))
        if not valid.size:
            return out
        want = rows[valid]
        lo, hi = int(want.min()), int(want.max())
        if self._blocks is None or (self._held and lo < self._held[0][0]):
            self._blocks, self._held = self.series.own_blocks(lo, size=SCAN_ROWS), []
        self._held = [(k, c) for k, c in self._held if k + len(c) > lo]
        while not self._held or self._held[-1][0] + len(self._held[-1][1]) <= hi:
            k, _, values = next(self._blocks)
            if k + values.shape[1] > lo:
                self._held.append((k, values[3].copy()))
        for k, c in self._held:
            inside = (want >= k) & (want < k + len(c))
            out[valid[inside]] = c[want[inside] - k]
        return out


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
    return stamp_spans(stamp_texts(fills.ts, trades.trips.entry[rows]), stamp_texts(fills.ts, trades.trips.exit[rows]),
                       series)


def _rows_of(trades: TradeColumns, symbol: str) -> np.ndarray:
    """The trades (rows of the columns) of ``symbol``, in trade order."""
    codes, names = trades.trips.fills.symbol_codes()
    k = bisect.bisect_left(names, symbol)
    if k == len(names) or names[k] != symbol:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(codes[trades.trips.entry] == k)


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
    out = _no_excursions(len(trades))
    for sym, s in series.items():
        if not len(s):
            continue
        all_rows = _rows_of(trades, sym)
        p = passes[sym]
        for a in range(0, all_rows.size, STEP_PIECE):  # a piece of trades at a time (element-wise)
            piece = slice(a, a + STEP_PIECE)
            _put_excursions(out, trades, all_rows[piece], p.spans[0][piece], p.spans[1][piece], p.lows[piece],
                            p.highs[piece])
    return out


def _no_excursions(n: int) -> Excursions:
    """Bars, MAE, MFE and has_bars of ``n`` trades before any is known (no bars)."""
    return np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool)


def _put_excursions(out: Excursions, trades: TradeColumns, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                    lows: np.ndarray, highs: np.ndarray) -> None:
    """:func:`~aitrader.trading.trades.excursions` of trades ``rows`` into ``out``, vectorised: each held
    bars ``lo:hi``, whose lows' minimum and highs' maximum are ``lows`` and ``highs``."""
    bars, mae, mfe, has = out
    held = hi > lo
    price = trades.trips.fills.price[trades.trips.entry[rows]]
    with np.errstate(divide="ignore", invalid="ignore"):
        up, down = highs / price - 1.0, lows / price - 1.0
    long = trades.long[rows]
    best, worst = np.where(long, up, -down), np.where(long, down, -up)
    # min(0.0, worst) and max(0.0, best) as Python takes them: 0.0 unless strictly beyond (NaN -> 0.0)
    mae[rows] = np.where(held & (worst < 0.0), worst, 0.0)
    mfe[rows] = np.where(held & (best > 0.0), best, 0.0)
    bars[rows] = hi - lo
    has[rows] = True


def frame_excursions(trades: TradeColumns, frames: dict[str, pd.DataFrame] | None) -> Excursions:
    """:func:`trade_excursions` from whole OHLCV frames (``export RUN trades``: the run's bars read back),
    as :func:`aitrader.trading.trades.round_trips` takes them trade by trade: each trade's rows by
    ``searchsorted`` of its aligned stamps on the frame's index (:func:`stamp_ns`), the lows' minimum and
    the highs' maximum over them (pandas' ``min``/``max`` skip NaN), then the same float operations as
    :func:`aitrader.trading.trades.excursions`."""
    out = _no_excursions(len(trades))
    fills = trades.trips.fills
    for sym, frame in sorted((frames or {}).items()):
        rows = _rows_of(trades, sym) if frame is not None and len(frame) else np.empty(0, dtype=np.int64)
        if not rows.size:
            continue
        index = pd.DatetimeIndex(frame.index)
        ns = np.asarray(index.as_unit("ns").asi8, dtype=np.int64)
        lo = np.searchsorted(ns, stamp_ns(stamp_texts(fills.ts, trades.trips.entry[rows]), index), side="left")
        hi = np.searchsorted(ns, stamp_ns(stamp_texts(fills.ts, trades.trips.exit[rows]), index), side="left")
        low, high = frame["low"].to_numpy(dtype=np.float64), frame["high"].to_numpy(dtype=np.float64)
        lows, highs = np.full(rows.size, np.nan), np.full(rows.size, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a span of NaN only: NaN, as pandas gives it
            for k, (a, b) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
                if b > a:
                    lo_v, hi_v = low[a:b].min(), high[a:b].max()
                    lows[k] = lo_v if lo_v == lo_v else np.nanmin(low[a:b])
                    highs[k] = hi_v if hi_v == hi_v else np.nanmax(high[a:b])
        _put_excursions(out, trades, rows, lo, hi, lows, highs)
    return out


def close_frames(series: dict[str, BarSeries], passes: dict[str, BarPass]) -> dict[str, pd.DataFrame]:
    """Each symbol's closes on its stamps, the one column of bars the tearsheet reads."""
    return {sym: pd.DataFrame({"close": passes[sym].all_closes}, index=s.index)
            for sym, s in series.items() if passes[sym].all_closes is not None}


def curve_stats_over(path: np.ndarray, refill: Callable[[], np.ndarray], stamps: Sequence[str], periods: float,
                     exposure: float, traded: float, fees: float) -> tuple[dict[str, Any], float]:
    """Return, CAGR, Sharpe, Sortino, drawdown (depth, bars, calendar time), exposure, turnover and fees of
    the curve ``path`` = ``[initial, *equity]``, and its final equity (``initial``
    without steps), the same floats, computed in ``path`` (consumed) with no other array of its length:
    the figures that read the curve first, then the Sortino ratio in its returns written over it
    (:func:`aitrader.training.metrics.returns_over`), then ``refill()`` writes the curve again (into the
    same array) and the Sharpe ratio is computed in its returns. ``exposure``: the share of steps holding
    a position (:func:`aitrader.training.metrics.exposure` of the positions)."""
    from aitrader.training import metrics as M

    initial = float(path[0])
    equity, before = path[1:], path[:-1]
    bars, first, last = M.drawdown_duration(equity, initial=initial)
    dd_time = None
    if bars:
        peak = stamps[first - 1] if first > 0 else stamps[0]
        dd_time = short_duration(pd.Timestamp(stamps[last]) - pd.Timestamp(peak))
    final = float(equity[-1]) if equity.size else initial
    total_return = float(equity[-1] / initial - 1.0) if equity.size else 0.0
    cagr = M.cagr(equity, initial, periods)
    max_drawdown = M.max_drawdown(equity, initial=initial)
    turnover = M.turnover([traded], before) if equity.size else 0.0
    if equity.size:
        sortino = M.sortino_over(M.returns_over(path), periods)
        sharpe = M.sharpe_over(M.returns_over(refill()), periods)
    else:
        sortino, sharpe = None, 0.0  # what sortino_ratio and sharpe_ratio give without returns
    return {
        "total_return": total_return, "cagr": cagr, "sharpe": sharpe, "sortino": sortino,
        "max_drawdown": max_drawdown, "max_drawdown_bars": bars, "max_drawdown_duration": dd_time,
        "exposure": exposure, "turnover": turnover, "fees": fees,
    }, final


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
