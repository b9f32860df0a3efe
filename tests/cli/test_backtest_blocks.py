"""backtest's report from the replayed series' blocks == the report main built from whole frames.

The oracle is the previous implementation, frozen here: it loaded every replayed symbol as a whole
OHLCV frame (``BarSeries.frame()``), bought and held on it bar by bar and took the trades' MAE/MFE
from the frame (``run_trades(run_dir, frames)``). The report of ``run_backtest`` (which reads the
bars in blocks) must give EXACTLY the same JSON, on synthetic bars with tiny scan blocks (a trade
and the gathered closes spread over many blocks) and on two real crypto symbols of ``../shared/data``;
and the same tearsheet page as the one drawn from whole frames.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import aitrader.trading.backtest as B
import aitrader.trading.service as service
from tests.backtest_oracle import Curve, curve_stats
from tests.model_world import deploy_small_model, synthetic_world


# ------------------------------------------------------------------ the frozen whole-frame oracle
def frozen_buy_and_hold(frames: dict[str, pd.DataFrame], trade_from: dict[str, float | None], epochs: np.ndarray,
                        initial: float, commission_bps: float, slippage_bps: float
                        ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """main's ``backtest.buy_and_hold`` before the blocks (whole frames, a per-bar equity array)."""
    from aitrader.trading.session import to_epoch

    share = initial / max(1, len(frames))
    total = np.zeros(len(epochs))
    held = np.zeros(len(epochs))
    traded = fees = 0.0
    for sym, df in sorted(frames.items()):
        bar_epochs = np.array([to_epoch(t) or 0.0 for t in df.index])
        start = trade_from.get(sym)
        i0 = int(np.searchsorted(bar_epochs, start, side="left")) if start is not None else 0
        values = np.full(len(df), share)
        qty = 0.0
        if i0 + 1 < len(df):
            price = float(df["open"].iloc[i0 + 1]) * (1.0 + slippage_bps / 1e4)
            qty = math.floor(share / (price * (1.0 + commission_bps / 1e4)) * 10**8) / 10**8
            commission = qty * price * commission_bps / 1e4
            cash = share - qty * price - commission
            closes = df["close"].to_numpy(float)
            values[i0 + 1:] = cash + qty * closes[i0 + 1:]
            traded += qty * price
            fees += commission
        pos = np.zeros(len(df))
        pos[i0 + 1:] = qty
        idx = np.searchsorted(bar_epochs, epochs, side="right") - 1
        total += np.where(idx >= 0, values[np.maximum(idx, 0)], share)
        held += np.where(idx >= 0, pos[np.maximum(idx, 0)], 0.0)
    return total, held, traded, fees


def frozen_curve(run_dir: Path, collect: dict[str, Any]) -> Curve:
    """main's equity rows of the traded bars (one ``to_epoch`` per stamp)."""
    from aitrader.trading.ledger import LEDGER_NAME, read_table
    from aitrader.trading.session import to_epoch

    _, rows = read_table(run_dir / LEDGER_NAME, "equity")
    first = min((t for t in collect["trade_from"].values() if t is not None), default=None)
    stamps = [str(r[1]) for r in rows]
    epochs = np.array([to_epoch(t) or 0.0 for t in stamps])
    keep = epochs >= first if first is not None else np.ones(len(rows), dtype=bool)
    return Curve([t for t, k in zip(stamps, keep, strict=True) if k], epochs[keep],
                   np.array([float(r[3]) for r in rows], dtype=np.float64)[keep])


def frozen_positions(fills: pd.DataFrame, epochs: np.ndarray) -> np.ndarray:
    """main's gross position after each bar's fills (one ``to_epoch`` per fill)."""
    from aitrader.trading.session import to_epoch

    gross = np.zeros(len(epochs))
    for _, grp in fills.groupby("symbol", sort=True):
        signed = np.where(grp["side"].str.lower() == "buy", 1.0, -1.0) * grp["quantity"].to_numpy(float)
        held = np.round(np.cumsum(signed), 8)
        at = np.array([to_epoch(t) or 0.0 for t in grp["ts"]])
        idx = np.searchsorted(at, epochs, side="right") - 1
        gross += np.where(idx >= 0, np.abs(held[np.maximum(idx, 0)]), 0.0)
    return gross


def frozen_trade_stats(trades: pd.DataFrame) -> dict[str, Any]:
    """main's ``backtest.trade_stats`` over the trades' table (pandas columns of objects)."""
    from aitrader.training import metrics as M

    n = len(trades)
    pnl = trades["pnl"].to_numpy(float) if n else np.empty(0)
    durations = pd.to_timedelta(trades["duration"]) if n else None
    bars = pd.to_numeric(trades["bars"], errors="coerce") if n else None
    return {
        "trades": n,
        "win_rate": M.win_rate(pnl),
        "profit_factor": M.profit_factor(pnl),
        "avg_trade_return": float(trades["return"].mean()) if n else None,
        "avg_trade_duration": B.short_duration(durations.mean()) if durations is not None else None,
        "avg_trade_bars": float(bars.mean()) if bars is not None and bars.notna().any() else None,
    }


def frozen_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """main's ``backtest._records``: the table's rows as dicts, NaN as None."""
    return [{str(k): (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in df.to_dict(orient="records")]


def frozen_run_trades(run_dir: Path, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """main's ``service.run_trades``: the fills' dicts through ``round_trips`` (a Timestamp pair and pandas
    slices of the frame per trade)."""
    from aitrader.trading.ledger import LEDGER_NAME, read_table
    from aitrader.trading.trades import round_trips, trades_frame

    cols, rows = read_table(run_dir / LEDGER_NAME, "fills")
    return trades_frame(round_trips([dict(zip(cols, r, strict=True)) for r in rows], frames))


def frozen_report(run_dir: Path, collect: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """main's performance report and trades, from whole frames of the replayed series."""
    from aitrader.trading.ledger import LEDGER_NAME, read_table

    frames = {sym: s.frame() for sym, s in collect["series"].items()}
    trades = frozen_run_trades(run_dir, frames)
    curve = frozen_curve(run_dir, collect)
    _, rows = read_table(run_dir / LEDGER_NAME, "fills")
    fills = pd.DataFrame.from_records(rows, columns=B.FILL_COLUMNS)
    initial, costs = float(summary["initial_cash"]), summary["costs"]
    periods = float(collect["calendar"]["periods_per_year"])
    positions = frozen_positions(fills, curve.epochs)
    traded = float((fills["quantity"] * fills["price"]).abs().sum()) if len(fills) else 0.0
    strategy = curve_stats(curve.equity, curve.stamps, initial, periods, positions, traded,
                             float(fills["commission"].sum()) if len(fills) else 0.0)
    strategy.update(frozen_trade_stats(trades))
    strategy["final_equity"] = float(curve.equity[-1]) if curve.equity.size else initial
    bench, pos, b_traded, b_fees = frozen_buy_and_hold(frames, collect["trade_from"], curve.epochs, initial,
                                                       float(costs["commission_bps"]), float(costs["slippage_bps"]))
    hold = curve_stats(bench, curve.stamps, initial, periods, pos, b_traded, b_fees)
    hold.update({"trades": 0, "win_rate": None, "profit_factor": None, "avg_trade_return": None,
                 "avg_trade_duration": None, "avg_trade_bars": None,
                 "final_equity": float(bench[-1]) if bench.size else initial})
    window = {"first_bar": curve.stamps[0] if curve.stamps else None,
              "last_bar": curve.stamps[-1] if curve.stamps else None, "bars": len(curve.stamps),
              "periods_per_year": periods, "costs": costs}
    return {"performance": {"strategy": strategy, "buy_and_hold": hold, "window": window},
            "trades": frozen_records(trades), "frames": frames, "specs": collect["specs"]}


def backtest_and_oracle(monkeypatch: pytest.MonkeyPatch, tmp: Path, report: Path | None,
                        **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``run_backtest`` with its ledger kept (``--out-run``), and the frozen report of that ledger."""
    seen: dict[str, Any] = {}
    real = service.paper_trade

    def spy(**kw: Any) -> dict[str, Any]:
        seen["collect"] = kw["collect"]
        return real(**kw)

    monkeypatch.setattr(service, "paper_trade", spy)
    got = B.run_backtest(out_run="b", runs_dir=str(tmp / "runs"), report=str(report) if report else None, **kwargs)
    oracle = frozen_report(tmp / "runs" / "b", seen["collect"], got["run"])
    return got, oracle


def same_json(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# ------------------------------------------------------------------------------------------ tests
@pytest.fixture(scope="module")
def syn_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("backtest_blocks")
    # 300 in-sample bars before the traded ones
    registry, data, bars = synthetic_world(base, n=1600, seed=5, traded_from=700)
    aware = base / "SYN_ny.csv"  # the same bars with New York offsets (the ledger's stamps are UTC)
    bars.iloc[700:].tz_localize("UTC").tz_convert("America/New_York").rename_axis("timestamp").to_csv(aware)
    return {"registry": registry, "data": data, "aware": aware}


@pytest.mark.parametrize(("scan_rows", "bars"), [(3, "data"), (B.SCAN_ROWS, "data"), (3, "aware")])
def test_synthetic_report_equals_the_whole_frame_report(syn_world: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, scan_rows: int,
                                                         bars: str) -> None:
    monkeypatch.setattr(B, "SCAN_ROWS", scan_rows)
    got, oracle = backtest_and_oracle(monkeypatch, tmp_path, None, models=["syn_lgbm"],
                                      data=[f"SYN={syn_world[bars]}"], registry_root=str(syn_world["registry"]))
    assert (getattr(oracle["frames"]["SYN"].index, "tz", None) is not None) == (bars == "aware")
    assert 0 < got["performance"]["window"]["bars"] < len(oracle["frames"]["SYN"])  # warm-up bars before
    assert len(got["trades"]) > 5 and any(t["bars"] > scan_rows for t in got["trades"]) == (scan_rows == 3)
    assert same_json(got["performance"], oracle["performance"])
    assert same_json(got["trades"], oracle["trades"])


@pytest.mark.shared_data
def test_two_real_crypto_symbols_report_and_tearsheet_equal_the_whole_frames(
        shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aitrader.data import load_bars
    from aitrader.monitoring.tearsheet import render_tearsheet

    folder = shared_data / "crypto_5m"
    if not (folder / "ADA_BTC.csv.gz").is_file() or not (folder / "ETH_BTC.csv.gz").is_file():
        pytest.skip(f"{folder} lacks ADA_BTC/ETH_BTC")
    ada = load_bars(folder / "ADA_BTC.csv.gz", symbol="ADA_BTC")
    registry = deploy_small_model(tmp_path, ada, name="ada", n_estimators=20, train_rows=2000, symbol="ADA_BTC")
    monkeypatch.setattr(B, "SCAN_ROWS", 1000)
    page = tmp_path / "report.html"
    got, oracle = backtest_and_oracle(
        monkeypatch, tmp_path, page, models=["ada", "ada"], allow_symbol_mismatch=True,
        data=[f"ADA_BTC={folder / 'ADA_BTC.csv.gz'}", f"ETH_BTC={folder / 'ETH_BTC.csv.gz'}"],
        registry_root=str(registry))
    assert {t["symbol"] for t in got["trades"]} == {"ADA_BTC", "ETH_BTC"}
    assert same_json(got["performance"], oracle["performance"])
    assert same_json(got["trades"], oracle["trades"])
    # the tearsheet drawn from close-only frames == the one drawn from the whole frames (but its time)
    specs = oracle["specs"]
    whole, charts = render_tearsheet(run_dir=tmp_path / "runs" / "b", manifest=specs[0].manifest,
                                     bars=oracle["frames"],
                                     title="backtest " + ", ".join(f"{s.model_id} ({s.symbol})" for s in specs))
    assert {"equity", "trades"} <= set(charts)

    def timeless(text: str) -> str:
        return re.sub(r'<p class="sub">Written [^<]*</p>', "", text)

    assert timeless(page.read_text()) == timeless(whole)


def test_vectorised_epochs_equal_to_epoch_stamp_by_stamp() -> None:
    from aitrader.trading.session import to_epoch

    stamps = ["2024-01-02T09:30:00", "2024-01-02T09:30:00+00:00", "2024-01-02T09:30:00-05:00",
              "2024-03-10T02:00:00.123456", "2011-01-03T14:31:00+00:00", "1999-12-31 23:59:59.999999999",
              "2024-06-30T23:00:00+09:30", "not a time", ""]
    assert B.epochs_of(stamps).tolist() == [to_epoch(t) or 0.0 for t in stamps]
    assert B.epochs_of([]).tolist() == []


@pytest.mark.parametrize("tz", [None, "UTC", "America/New_York"])
def test_trade_spans_equal_bar_span_stamp_by_stamp(tz: str | None) -> None:
    """Spans parsed in one call (or one by one for a mix) == trades.bar_span on the index, per stamp."""
    from aitrader.trading.sources import BarSeries
    from aitrader.trading.trades import bar_span

    index = pd.date_range("2024-03-09 20:00", periods=600, freq="5min", tz=tz)  # across New York's DST change
    df = pd.DataFrame({c: np.arange(600.0) + 1 for c in ("open", "high", "low", "close", "volume")}, index=index)
    series = BarSeries.from_frame("X", df)
    naive = [str(t.tz_localize(None)) if tz else str(t) for t in index[::37]]
    offsets = [t.isoformat() for t in index[::41]]
    utc = [t.tz_convert("UTC").isoformat() for t in index[5::43]] if tz else []
    for stamps in (naive, offsets, utc, naive + offsets, offsets[:3] + utc[:3], ["2024-03-10T01:30:00"]):
        if not stamps:
            continue
        exits = stamps[1:] + stamps[:1]
        trips = [{"symbol": "X", "entry_ts": s, "exit_ts": e} for s, e in zip(stamps, exits, strict=True)]
        lo, hi = B.trade_spans(trips, "X", series)
        want = [bar_span(index, pd.Timestamp(t["entry_ts"]), pd.Timestamp(t["exit_ts"])) for t in trips]
        assert list(zip(lo.tolist(), hi.tolist(), strict=True)) == want


def test_buy_and_hold_from_gathered_closes_by_hand() -> None:
    """Two symbols, 10,000 cash (5,000 each), 1 bps commission, 2 bps slippage. A buys at the open 10.0
    of its row 1 (steps at rows -1, 0, 1, 2); B has no bar after its first traded one and keeps cash."""
    a = B.BarPass(close_rows=np.array([-1, 0, 1, 2]), closes=np.array([np.nan, 10.0, 11.0, 9.0]), open_row=1,
                  open=10.0, spans=(np.empty(0, np.int64), np.empty(0, np.int64)), lows=np.empty(0),
                  highs=np.empty(0), all_closes=None)
    b = B.BarPass(close_rows=np.array([0, 0, 0, 0]), closes=np.array([50.0] * 4), open_row=None, open=None,
                  spans=(np.empty(0, np.int64), np.empty(0, np.int64)), lows=np.empty(0), highs=np.empty(0),
                  all_closes=None)
    equity, held, traded, fees = B.buy_and_hold({"A": a, "B": b}, 4, 10_000.0, 1.0, 2.0)
    # by hand: price 10 * 1.0002 = 10.002; qty = floor(5000 / (10.002 * 1.0001) * 1e8) / 1e8 = 499.85003499
    # (5000 / 10.0030002 = 499.85003499250..., exact decimal arithmetic); fee = qty * 10.002 * 1e-4;
    # cash = 5000 - qty * 10.002 - fee
    qty = 499.85003499
    fee = qty * 10.002 * 1e-4
    cash = 5000 - qty * 10.002 - fee
    assert held.tolist() == [0.0, 0.0, qty, qty]
    assert equity.tolist() == pytest.approx([10_000.0, 10_000.0, 5000 + cash + qty * 11.0, 5000 + cash + qty * 9.0],
                                            rel=1e-15)
    assert traded == pytest.approx(qty * 10.002, rel=1e-15) and fees == pytest.approx(fee, rel=1e-15)


def test_stamps_decode_like_the_list_they_stand_for() -> None:
    from aitrader.trading.ledger import pack_text

    texts = [f"2024-01-01T00:{m:02d}:00" for m in range(50)]
    blobs = [(20, pack_text(texts[:20])), (25, pack_text(texts[20:45])), (5, pack_text(texts[45:]))]
    rows = np.array([3, 19, 20, 44, 45, 49])  # the kept steps
    stamps = B.Stamps(blobs, rows)
    want = [texts[i] for i in rows]
    assert len(stamps) == 6 and [stamps[i] for i in range(6)] == want
    assert stamps[-1] == want[-1] and stamps[-6] == want[0] and stamps[1:4] == want[1:4] and list(stamps) == want
