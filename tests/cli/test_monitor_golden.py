"""``monitor`` prints, character for character, what it printed before its start-up work (issue 11: the
streamed monitor without pandas), on ledgers written before it.

The oracle is in ``data/``, written ONCE by commit f9a6021 (main before this work), never by the code under
test: ``monitor_ledger.db.gz`` is the ledger :func:`write_ledger` wrote under that commit (two symbols on
hourly tz-aware bars over eight days, model errors of several reasons, risk rejections, a disabled model,
portfolio-level events without a model, one model's daily drawdown), ``monitor_manifest.json`` the
manifest it is judged against (a baseline from other bars of the same generator), and ``monitor_*.json`` /
``monitor_*.txt`` what that commit's ``python -m aitrader monitor --run RUN --runs-dir runs --manifest
monitor_manifest.json --config trading.yaml ...`` printed (with ``COLUMNS=100``) on it, on
``status_ledger.db.gz`` (the status golden's columnar ledger) and on ``tests/unit/data/ledger_v1.db.gz``
(the older one-row-per-item ledger). To write them again (only if the output is meant to change):
``python tests/cli/test_monitor_golden.py DIR`` with ``PYTHONPATH`` set to the tree whose output is the
reference, then copy DIR's files into ``data/``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
#: run id -> the gzipped ledger it reads
LEDGERS = {"m1": DATA / "monitor_ledger.db.gz", "g1": DATA / "status_ledger.db.gz",
           "v1": Path(__file__).parents[1] / "unit" / "data" / "ledger_v1.db.gz"}
#: case -> (run id, extra arguments)
CASES = {
    "m1_m": ("m1", ["--model-id", "m:v1", "--json"]),
    "m1_n": ("m1", ["--model-id", "n:v1", "--json"]),
    "m1_n_w20": ("m1", ["--model-id", "n:v1", "--window", "20", "--json"]),
    "m1_n_table": ("m1", ["--model-id", "n:v1"]),
    "g1_n": ("g1", ["--model-id", "n:v1", "--json"]),
    "v1_m": ("v1", ["--model-id", "m:v1", "--json"]),
}
CONFIG = """
ml_trading:
  models:
    - {model_id: m, symbol: AAA, min_confidence: 0.6, position_size: 0.05}
  risk_limits: {daily_ml_loss_limit: 0.01}
monitoring: {drift_min_samples: 50, window: 60}
"""
#: hand-written events added to the run (model errors of tied counts, a missing reason, portfolio-level
#: events without a model, a disabling alert worded in its payload, daily-loss events)
EXTRA_EVENTS = [
    ("ML_ERROR", "m:v1", "timeout", {"ms": 1200}),
    ("ML_ERROR", "m:v1", "bad_input", {}),
    ("ML_ERROR", "m:v1", "timeout", {"ms": 1500}),
    ("ML_ERROR", "m:v1", "bad_input", {}),
    ("ML_ERROR", "m:v1", None, {}),
    ("RISK_REJECTED", "m:v1", None, {"why": "unknown"}),
    ("RISK_REJECTED", None, "daily_loss", {"loss": 0.012}),
    ("ALERT", "", "daily loss limit hit", {"loss": 0.012}),
    ("ALERT", "m:v1", "breaker", {"note": "model disabled after errors"}),
    ("ALERT", None, "note", "plain text payload"),
]


def write_ledger(run_dir: Path, manifest_path: Path) -> None:
    """The run behind ``monitor_ledger.db.gz`` and its manifest (see the module docstring)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
    import numpy as np
    from trading_helpers import MomentumStream, ScriptedPredictor, bars, config, series, spec

    from aitrader.monitoring.drift import make_baseline
    from aitrader.trading.session import RunOptions, run_session
    from aitrader.trading.sources import replay_steps

    def hourly(n: int, seed: int, start: str):  # type: ignore[no-untyped-def]
        return bars(n, seed=seed, start=start, freq="1h").tz_localize("UTC")

    frames = {"AAA": hourly(190, 7, "2022-03-01"), "BBB": hourly(170, 8, "2022-03-01 05:00")}
    predictor = ScriptedPredictor({**{k: "raise" for k in (9, 40, 41, 42, 90)}, **{k: "nan" for k in (20, 21)}})
    specs = [spec("AAA"), spec("BBB", model_id="n:v1", predictor=predictor)]
    cfg = config(risk_limits__max_ml_positions=1)
    run_session(cfg, specs, replay_steps(series(frames)), run_dir, run_id=run_dir.name,
                opts=RunOptions(commit_every=40, handle_signals=False))
    conn = sqlite3.connect(run_dir / "ledger.db")
    with conn:
        conn.executemany("INSERT INTO events (ts, type, symbol, model_id, reason, payload) VALUES (?,?,?,?,?,?)",
                         [("2022-03-03T10:00:00+00:00", t, "AAA", m, r, json.dumps(p)) for t, m, r, p in EXTRA_EVENTS])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the file alone holds every row (it is copied)
    conn.close()
    train = hourly(2000, 99, "2021-01-01")
    stream = MomentumStream()
    rows = np.array([stream.update(ts, *row).copy() for ts, row in zip(train.index, train.to_numpy(), strict=True)])
    rows = rows[np.isfinite(rows).all(axis=1)]
    outcome = np.roll(rows[:, 0], -3)[:-3]
    pred = rows[:-3, 0]
    err = pred - outcome
    manifest = {
        "format_version": 1,
        "target": {"name": "fwd_return_3", "horizon": 3, "task": "regression"},
        "features": {"names": ["mom_3", "ret_1"], "params": {}, "warmup": 4, "spec_hash": "x"},
        "metrics": {"holdout": {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2))),
                                "hit_rate": 0.55, "ic": 0.1, "rank_ic": 0.1}},
        "importance": {"features": {"mom_3": 0.7, "ret_1": 0.3}},
        "baseline": {
            "features": {name: make_baseline(rows[:, j]) for j, name in enumerate(["mom_3", "ret_1"])},
            "prediction": make_baseline(pred),
            "holdout_mae": float(np.mean(np.abs(err))),
            "residual_std": float(np.std(err)),
            "holdout_hit_rate": float(np.mean(np.sign(pred) == np.sign(outcome))),
            "holdout_ic": float(np.corrcoef(pred, outcome)[0, 1]),
        },
    }
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


def _monitor(cwd: Path, run_id: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    # rich draws for a 100-column pipe in UTF-8 whatever the caller's terminal, locale or colour settings
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "LINES", "TERM")}
    env.update(COLUMNS="100", PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "-m", "aitrader", "monitor", "--run", run_id, "--runs-dir", "runs",
                           "--manifest", "monitor_manifest.json", "--config", "trading.yaml", *args],
                          capture_output=True, text=True, encoding="utf-8", cwd=cwd, env=env, timeout=60)


def _place(base: Path) -> Path:
    for run_id, src in LEDGERS.items():
        (base / "runs" / run_id).mkdir(parents=True)
        (base / "runs" / run_id / "ledger.db").write_bytes(gzip.decompress(src.read_bytes()))
    shutil.copy(DATA / "monitor_manifest.json", base / "monitor_manifest.json")
    (base / "trading.yaml").write_text(CONFIG, encoding="utf-8")
    return base


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _place(tmp_path_factory.mktemp("monitor_golden"))


@pytest.mark.parametrize("case", CASES)
def test_monitor_prints_what_it_printed_before(runs: Path, case: str) -> None:
    run_id, args = CASES[case]
    done = _monitor(runs, run_id, args)
    expected = json.loads((DATA / "monitor_exit_codes.json").read_text(encoding="utf-8"))[case]
    assert done.returncode == expected, done.stderr
    suffix = "json" if "--json" in args else "txt"
    assert done.stdout == (DATA / f"monitor_{case}.{suffix}").read_text(encoding="utf-8")


def test_the_reference_run_exercises_the_monitor_fields(runs: Path) -> None:
    """The fixture is worth comparing: tied error reasons, a missing reason, portfolio events without a
    model, two days' equity at least, a disabled model (read from its tables with SQL, not through monitor)."""
    with sqlite3.connect(runs / "runs" / "m1" / "ledger.db") as conn:
        errors = dict(conn.execute("SELECT COALESCE(reason, '-'), COUNT(*) FROM events WHERE type = 'ML_ERROR' "
                                   "AND model_id = 'm:v1' GROUP BY 1").fetchall())
        assert errors == {"timeout": 2, "bad_input": 2, "-": 1}
        assert conn.execute("SELECT COUNT(*) FROM events WHERE model_id IS NULL OR model_id = ''").fetchone()[0] == 3
        assert conn.execute("SELECT COUNT(*) FROM events WHERE type = 'ALERT' AND reason = 'model_disabled'"
                            ).fetchone()[0] == 1
        assert conn.execute("SELECT COUNT(*) FROM events WHERE type = 'RISK_REJECTED'").fetchone()[0] > 2
        assert conn.execute("SELECT COUNT(*) FROM prediction_blocks").fetchone()[0] > 1
    doc = json.loads((DATA / "monitor_m1_m.json").read_text(encoding="utf-8"))
    ops = doc["operational"]
    assert list(ops["errors_by_type"]) == ["timeout", "bad_input", "unknown"]  # tie: first seen first
    assert ops["disabled"] is True and ops["daily_loss_limit_hits"] == 2 and ops["worst_day"] is not None


def main(out: Path) -> None:
    """Write the fixture and the reference outputs into ``out`` (see the module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    with __import__("tempfile").TemporaryDirectory() as tmp:
        run = Path(tmp) / "m1"
        write_ledger(run, out / "monitor_manifest.json")
        (out / "monitor_ledger.db.gz").write_bytes(gzip.compress((run / "ledger.db").read_bytes(), mtime=0))
    global DATA, LEDGERS
    DATA = out
    LEDGERS = {**LEDGERS, "m1": out / "monitor_ledger.db.gz"}
    for src in ("status_ledger.db.gz",):
        if not (out / src).exists():
            shutil.copy(Path(__file__).parent / "data" / src, out / src)
    LEDGERS["g1"] = out / "status_ledger.db.gz"
    codes = {}
    with __import__("tempfile").TemporaryDirectory() as tmp:
        base = _place(Path(tmp))
        for case, (run_id, args) in CASES.items():
            done = _monitor(base, run_id, args)
            if done.returncode not in (0, 3):
                raise SystemExit(f"{case}: {done.stderr}")
            codes[case] = done.returncode
            (out / f"monitor_{case}.{'json' if '--json' in args else 'txt'}").write_text(done.stdout, encoding="utf-8")
    (out / "monitor_exit_codes.json").write_text(json.dumps(codes, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
