"""SIGKILL at random points, resume each time: the ledger equals an uninterrupted run's."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from aitrader.trading.ledger import ledger_content
from aitrader.trading.summary import summarise

HERE = Path(__file__).parent
DRIVER = """
import sys, time
sys.path.insert(0, {here!r})
from pathlib import Path
from trading_helpers import bars, config, series, spec
from aitrader.trading.events import EventType
from aitrader.trading.session import RunOptions, run_session
from aitrader.trading.sources import replay_steps

run_dir = Path(sys.argv[1])
slow = float(sys.argv[2])
frames = {{"AAA": bars(900, seed=11), "BBB": bars(900, seed=12)}}
specs = [spec("AAA"), spec("BBB", model_id="n:v1"), spec("BBB", model_id="o:v1", weight=2.0)]
opts = RunOptions(commit_every=17, handle_signals=False)
if slow:
    opts.subscribers.append(lambda bus: bus.subscribe(EventType.BAR, lambda e: time.sleep(slow)))
run_session(config(), specs, replay_steps(series(frames)), run_dir, run_id="r",
            resume=(run_dir / "ledger.db").is_file(), opts=opts)
"""


def _pid(run_dir: Path) -> str | None:
    """The pid the ledger says runs it: set once a (re)started process has opened the run."""
    if not (run_dir / "ledger.db").is_file():
        return None
    try:
        with sqlite3.connect(run_dir / "ledger.db", timeout=1) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'pid'").fetchone()
        return row[0] if row else None
    except sqlite3.Error:
        return None


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_ledger(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(here=str(HERE)))
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    full = tmp_path / "full"
    subprocess.run([sys.executable, str(script), str(full), "0"], check=True, env=env, timeout=60)
    killed = tmp_path / "killed"
    rng = random.Random(7)
    kills = 0
    cursors = []
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, str(script), str(killed), "0.0004"], env=env)
        deadline = time.time() + 30
        while _pid(killed) != str(proc.pid) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
        with sqlite3.connect(killed / "ledger.db") as conn:
            cursors.append(conn.execute("SELECT MAX(bar_index) FROM cursors").fetchone()[0])
    assert kills >= 3
    assert any(c is not None and c < 899 for c in cursors)  # killed mid-run, not after the end
    subprocess.run([sys.executable, str(script), str(killed), "0"], check=True, env=env, timeout=60)
    a = ledger_content(full / "ledger.db")
    b = ledger_content(killed / "ledger.db")
    assert a["fills"] and a["predictions"]
    for table in a:
        assert a[table] == b[table], table
    # The summary reads the curve from per-checkpoint blobs, whose boundaries differ after kills.
    keep = ("final_equity", "total_return", "sharpe", "max_drawdown", "turnover", "fees", "bars", "last_ts")
    sa, sb = summarise(full), summarise(killed)
    assert {k: sa[k] for k in keep} == {k: sb[k] for k in keep}
