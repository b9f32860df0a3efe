"""The loop end to end with fake models: equity to the cent, determinism, fallbacks, outcomes, memory."""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from trading_helpers import ScriptedPredictor, bars, config, series, spec, to_old_format  # noqa: E402

from aitrader.trading.engine import TargetSchedule  # noqa: E402
from aitrader.trading.ledger import decoded_copy, ledger_content  # noqa: E402
from aitrader.trading.session import RunOptions, run_session  # noqa: E402
from aitrader.trading.sources import FollowSource, replay_steps  # noqa: E402


def run(tmp: Path, name: str, frames: dict[str, pd.DataFrame], specs=None, cfg=None, **kw) -> dict:
    cfg = cfg or config()
    specs = specs if specs is not None else [spec()]
    opts = kw.pop("opts", RunOptions(commit_every=kw.pop("commit_every", 50), handle_signals=False))
    return run_session(cfg, specs, replay_steps(series(frames)), tmp / name, run_id=name, opts=opts, **kw)


def rows(run_dir: Path, sql: str) -> list[tuple]:
    """``sql`` on the ledger with its predictions and equity decoded into their one-row-per-item tables."""
    with closing(decoded_copy(run_dir / "ledger.db")) as conn:
        return conn.execute(sql).fetchall()


def test_equity_recomputed_from_fills_and_bars_to_the_cent(tmp_path: Path) -> None:
    frames = {"AAA": bars(400, seed=3), "BBB": bars(380, seed=4, start="2021-01-06")}
    specs = [spec("AAA"), spec("BBB", model_id="n:v1")]
    summary = run(tmp_path, "r", frames, specs)
    assert summary["fills"] > 20
    fills = rows(tmp_path / "r", "SELECT ts, symbol, side, quantity, price, commission FROM fills ORDER BY id")
    ledger_eq = rows(tmp_path / "r", "SELECT ts, cash, equity FROM equity ORDER BY bar_index")
    long = pd.concat([df.assign(symbol=s) for s, df in frames.items()])
    closes = long.reset_index().pivot(index="timestamp", columns="symbol", values="close").ffill()
    cash, qty, k = 100_000.0, {"AAA": 0.0, "BBB": 0.0}, 0
    for (ts, cash_l, eq_l), (stamp, row) in zip(ledger_eq, closes.iterrows(), strict=True):
        assert ts == stamp.isoformat()
        while k < len(fills) and fills[k][0] == ts:
            _, sym, side, q, price, commission = fills[k]
            sign = 1.0 if side == "buy" else -1.0
            cash -= sign * q * price + commission
            qty[sym] += sign * q
            k += 1
        equity = cash + sum(q * row[s] for s, q in qty.items() if q)
        assert round(cash, 2) == round(cash_l, 2)
        assert round(equity, 2) == round(eq_l, 2)
    assert k == len(fills)
    assert summary["final_equity"] == pytest.approx(ledger_eq[-1][2])


def test_same_inputs_give_identical_ledgers(tmp_path: Path) -> None:
    frames = {"AAA": bars(300, seed=5)}
    run(tmp_path, "a", frames, commit_every=7)
    run(tmp_path, "b", frames, commit_every=300)
    a, b = ledger_content(tmp_path / "a" / "ledger.db"), ledger_content(tmp_path / "b" / "ledger.db")
    assert a["fills"] and a["predictions"]
    assert a == b


def test_resume_after_max_bars_equals_uninterrupted(tmp_path: Path) -> None:
    frames = {"AAA": bars(300, seed=6)}
    run(tmp_path, "full", frames)
    opts = RunOptions(commit_every=13, max_bars=111, handle_signals=False)
    first = run(tmp_path, "part", frames, specs=[spec()], opts=opts)
    assert first["status"] == "stopped" and first["bars"] == 111
    run(tmp_path, "part", frames, specs=[spec()], resume=True)
    assert ledger_content(tmp_path / "part" / "ledger.db") == ledger_content(tmp_path / "full" / "ledger.db")


def test_outcomes_filled_after_the_horizon(tmp_path: Path) -> None:
    df = bars(120, seed=7)
    run(tmp_path, "r", {"AAA": df})
    got = rows(tmp_path / "r", "SELECT bar_index, outcome, outcome_ts, features FROM predictions ORDER BY id")
    close = df["close"].to_numpy()
    for i, outcome, outcome_ts, feats in got:
        if i + 3 < len(df):
            assert outcome == pytest.approx(close[i + 3] / close[i] - 1)
            assert outcome_ts == df.index[i + 3].isoformat()
            assert len(json.loads(feats)) == 2
        else:
            assert outcome is None


@pytest.mark.parametrize(
    ("fallback", "sources"),
    [("previous", {"model", "fallback_previous"}), ("rule", {"model", "fallback_rule"}), ("skip", {"model"})],
)
def test_fallback_modes(tmp_path: Path, fallback: str, sources: set[str]) -> None:
    predictor = ScriptedPredictor({5: "raise", 9: "nan", 10: "raise"})
    cfg = config(errors__fallback=fallback)
    summary = run(tmp_path, "r", {"AAA": bars(60)}, specs=[spec(predictor=predictor)], cfg=cfg)
    assert summary["errors"] == {"exception": 2, "nan": 1}
    assert {r[0] for r in rows(tmp_path / "r", "SELECT DISTINCT source FROM predictions")} == sources
    assert not summary["alerts"]


def test_previous_fallback_is_bounded(tmp_path: Path) -> None:
    predictor = ScriptedPredictor({k: "raise" for k in range(5, 9)})
    cfg = config(errors__max_consecutive_errors=10)
    run(tmp_path, "r", {"AAA": bars(40)}, specs=[spec(predictor=predictor)], cfg=cfg)
    used = rows(tmp_path / "r", "SELECT COUNT(*) FROM predictions WHERE source = 'fallback_previous'")
    assert used[0][0] == 2  # previous_max_bars


def test_model_disabled_after_consecutive_errors_with_alert(tmp_path: Path) -> None:
    predictor = ScriptedPredictor({k: "raise" for k in range(20, 200)})
    summary = run(tmp_path, "r", {"AAA": bars(80)}, specs=[spec(predictor=predictor)])
    assert summary["errors"] == {"exception": 3}
    assert summary["alerts"] == {"model_disabled": 1}
    assert summary["models"] == [{"key": "m:v1@AAA", "enabled": False, "consecutive_errors": 3}]
    assert predictor.calls == 22  # never called again once disabled
    assert summary["positions"][0]["quantity"] == 0.0  # its vote was withdrawn: flat


def test_timeout_uses_the_injected_clock(tmp_path: Path) -> None:
    ticks = iter(range(10**6))
    opts = RunOptions(commit_every=50, handle_signals=False, clock=lambda: next(ticks) * 1.5)  # each call: 1.5 s > 1 s
    summary = run(tmp_path, "r", {"AAA": bars(30)}, opts=opts)
    assert summary["errors"] == {"timeout": 3} and summary["alerts"] == {"model_disabled": 1}


def test_precomputed_schedule_and_bounded_memory(tmp_path: Path) -> None:
    n = 3000
    df = bars(n, seed=8)
    targets = [float((i // 10) % 3 - 1) * 10 for i in range(n)]
    opts = RunOptions(commit_every=500, handle_signals=False)
    engines = []
    opts.progress = engines.append
    summary = run(tmp_path, "r", {"AAA": df}, specs=[spec()], opts=opts, schedules=[TargetSchedule("AAA", targets)])
    engine = engines[-1]
    assert summary["bars"] == n
    assert len(engine.closes["AAA"]) == 50  # buffer_size
    assert len(engine.pending_outcomes["AAA"]) <= 3
    assert engine.slots[0].stream.closes.maxlen == 4


def test_follow_mode_tails_a_file_and_stops_cleanly(tmp_path: Path) -> None:
    df = bars(60, seed=9)
    path = tmp_path / "live.csv"
    lines = [f"{ts.isoformat()},{r.open},{r.high},{r.low},{r.close},{r.volume}\n" for ts, r in df.iterrows()]
    path.write_text("timestamp,open,high,low,close,volume\n" + "".join(lines[:20]))
    stop = threading.Event()

    def writer() -> None:
        with path.open("a") as fh:
            for line in lines[20:]:
                fh.write(line[:10])  # a half-written line must not be read as a bar
                fh.flush()
                time.sleep(0.002)
                fh.write(line[10:])
                fh.flush()
        deadline = time.time() + 120  # a bound on waiting, not a timing claim: it breaks as soon as bar 59 is in
        while time.time() < deadline:
            got = rows(tmp_path / "live", "SELECT bar_index FROM cursors")
            if got and got[0][0] == 59:
                break
            time.sleep(0.02)
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    source = FollowSource(path, "AAA", poll_s=0.005, stop_event=stop)
    opts = RunOptions(commit_every=1, handle_signals=False)
    summary = run_session(config(), [spec()], source.steps(), tmp_path / "live", run_id="live", opts=opts,
                          stop_event=stop)
    thread.join()
    assert summary["bars"] == 60 and summary["status"] == "stopped"
    run(tmp_path, "replay", {"AAA": df})
    live = ledger_content(tmp_path / "live" / "ledger.db")
    replay = ledger_content(tmp_path / "replay" / "ledger.db")
    assert live["fills"] == replay["fills"] and live["equity"] == replay["equity"]


def test_changed_data_on_resume_is_refused(tmp_path: Path) -> None:
    df = bars(100, seed=10)
    run(tmp_path, "r", {"AAA": df}, opts=RunOptions(max_bars=50, handle_signals=False))
    shifted = df.copy()
    shifted.index = shifted.index + pd.Timedelta(hours=1)
    from aitrader.errors import TradingError

    with pytest.raises(TradingError, match="data changed"):
        run(tmp_path, "r", {"AAA": shifted}, resume=True)
    assert np.isfinite(rows(tmp_path / "r", "SELECT equity FROM equity")[-1][0])


def test_summary_reads_the_equity_curve_in_bar_order_after_a_resume(tmp_path: Path) -> None:
    # The summary reads the curve by rowid (no sort): that must be bar order even across resumes.
    from aitrader.trading.summary import summarise

    frames = {"AAA": bars(300, seed=6)}
    opts = RunOptions(commit_every=13, max_bars=111, handle_signals=False)
    run(tmp_path, "part", frames, opts=opts)
    run(tmp_path, "part", frames, resume=True)
    by_rowid = [r[0] for r in rows(tmp_path / "part", "SELECT bar_index FROM equity ORDER BY rowid")]
    assert by_rowid == list(range(300))
    curve = rows(tmp_path / "part", "SELECT ts, equity FROM equity ORDER BY bar_index")
    # Independent recomputation (plain numpy): daily bars on every day of the week are 24x7, 365.25 a year.
    path = np.array([100_000.0] + [e for _, e in curve])
    rets = path[1:] / path[:-1] - 1
    summary = summarise(tmp_path / "part")
    assert (summary["first_ts"], summary["last_ts"]) == (curve[0][0], curve[-1][0])
    assert summary["final_equity"] == curve[-1][1]
    assert summary["max_drawdown"] == pytest.approx((path / np.maximum.accumulate(path) - 1).min(), abs=1e-12)
    assert summary["sharpe"] == pytest.approx(rets.mean() / rets.std(ddof=1) * np.sqrt(365.25), rel=1e-9)
    assert summary["total_return"] == pytest.approx(path[-1] / 100_000 - 1, abs=1e-12)


def test_equity_blocks_are_the_equity_column_across_resumes_and_the_old_rows_read_the_same(tmp_path: Path) -> None:
    # The curve is stored as one block per checkpoint; a ledger of the old layout (a row per step,
    # equity_chunks) must give the same curve and summary.
    from aitrader.trading.summary import equity_curve, summarise

    frames = {"AAA": bars(300, seed=6)}
    run(tmp_path, "part", frames, opts=RunOptions(commit_every=13, max_bars=111, handle_signals=False))
    run(tmp_path, "part", frames, resume=True, commit_every=40)
    column = [e for (e,) in rows(tmp_path / "part", "SELECT equity FROM equity ORDER BY bar_index")]
    assert len(column) == 300
    firsts = [f for (f,) in rows(tmp_path / "part", "SELECT first_bar FROM equity_blocks ORDER BY 1")]
    assert firsts[:3] == [0, 13, 26] and 111 in firsts and len(firsts) > 10
    with sqlite3.connect(tmp_path / "part" / "ledger.db") as conn:
        assert equity_curve(conn).tolist() == column
    new = summarise(tmp_path / "part")
    to_old_format(tmp_path / "part" / "ledger.db")
    with sqlite3.connect(tmp_path / "part" / "ledger.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM equity").fetchone() == (300,)
        assert equity_curve(conn).tolist() == column
    assert summarise(tmp_path / "part") == new


def test_a_ledger_with_the_round_1_equity_schema_resumes_to_the_same_ledger(tmp_path: Path) -> None:
    # Round 1 keyed equity by ``ts TEXT PRIMARY KEY`` and had no equity_chunks (and every later layout
    # before the blocks had a row per prediction and per step): such a run resumes.
    frames = {"AAA": bars(300, seed=6)}
    full = run(tmp_path, "full", frames)
    run(tmp_path, "old", frames, opts=RunOptions(commit_every=13, max_bars=111, handle_signals=False))
    to_old_format(tmp_path / "old" / "ledger.db", chunks=False,
                  equity_schema="bar_index INTEGER, ts TEXT PRIMARY KEY, cash REAL, equity REAL")
    resumed = run(tmp_path, "old", frames, resume=True)
    with sqlite3.connect(tmp_path / "old" / "ledger.db") as conn:
        assert conn.execute("SELECT pk FROM pragma_table_info('equity') WHERE name = 'ts'").fetchall() == [(1,)]
        assert conn.execute("SELECT COUNT(*) FROM equity").fetchone() == (111,)  # old rows kept, new in blocks
    assert ledger_content(tmp_path / "old" / "ledger.db") == ledger_content(tmp_path / "full" / "ledger.db")
    keep = ("final_equity", "total_return", "sharpe", "max_drawdown", "turnover", "fills", "first_ts", "last_ts",
            "predictions")
    assert {k: resumed[k] for k in keep} == {k: full[k] for k in keep}


def test_speed_k_replays_at_k_times_the_bars_cadence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 9 one-second intervals at speed 30: 0.3 s of pacing; at speed 0 no pacing at all. A fake clock
    # that only sleeps advance measures the pacing itself, whatever the machine's load (no wall clock).
    clock = {"now": 1000.0, "slept": 0.0}

    def sleep(seconds: float) -> None:
        clock["now"] += seconds
        clock["slept"] += seconds

    monkeypatch.setattr(time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(time, "sleep", sleep)
    frames = {"AAA": bars(10, seed=2, freq="1s")}
    run(tmp_path, "paced", frames, opts=RunOptions(speed=30.0, handle_signals=False))
    paced, clock["slept"] = clock["slept"], 0.0
    run(tmp_path, "fast", frames, opts=RunOptions(speed=0.0, handle_signals=False))
    assert paced == pytest.approx(0.3, abs=1e-9)
    assert clock["slept"] == 0.0
    assert ledger_content(tmp_path / "paced" / "ledger.db") == ledger_content(tmp_path / "fast" / "ledger.db")
