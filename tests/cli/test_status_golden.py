"""``status`` and ``status --json`` print, character for character, what they printed before the start-up work
on them (issue 11), on ledgers written before it.

The oracle is in ``data/``, written ONCE by commit 57d5136 (main before this work), never by the code under
test: ``status_ledger.db.gz`` is the ledger :func:`write_ledger` wrote under that commit (two symbols, risk
rejections, model errors, positions left open; the current columnar ledger), and ``status_*.txt`` /
``status_*.json`` what that commit's ``python -m aitrader status RUN --runs-dir runs [--json]`` printed on
it and on ``tests/unit/data/ledger_v1.db.gz`` (the older one-row-per-item ledger), with ``COLUMNS=100``.
To write them again (only if the output is meant to change): ``python tests/cli/test_status_golden.py DIR``
with ``PYTHONPATH`` set to the tree whose output is the reference, then copy DIR's files into ``data/``.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
#: run id -> the gzipped ledger it reads
LEDGERS = {"g1": DATA / "status_ledger.db.gz", "v1": Path(__file__).parents[1] / "unit" / "data" / "ledger_v1.db.gz"}
FORMS = {"txt": [], "json": ["--json"]}


def write_ledger(run_dir: Path) -> None:
    """The run behind ``status_ledger.db.gz``: AAA and BBB daily bars replayed through momentum models (the
    test fakes of tests/unit/trading_helpers.py), BBB's raising on some calls (disabled after three in a
    row), at most one position open (a short AAA one at the end)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
    from trading_helpers import ScriptedPredictor, bars, config, series, spec

    from aitrader.trading.session import RunOptions, run_session
    from aitrader.trading.sources import replay_steps

    frames = {"AAA": bars(149, seed=3), "BBB": bars(120, seed=4, start="2021-01-06")}
    predictor = ScriptedPredictor({k: "raise" for k in (7, 8, 30, 31, 32, 33, 60)})
    specs = [spec("AAA"), spec("BBB", model_id="n:v1", predictor=predictor)]
    cfg = config(risk_limits__max_ml_positions=1)
    run_session(cfg, specs, replay_steps(series(frames)), run_dir, run_id="g1",
                opts=RunOptions(commit_every=25, handle_signals=False))


def _status(cwd: Path, run_id: str, form: str) -> subprocess.CompletedProcess[str]:
    # rich draws for a 100-column pipe in UTF-8 whatever the caller's terminal, locale or colour settings
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "LINES", "TERM")}
    env.update(COLUMNS="100", PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "-m", "aitrader", "status", run_id, "--runs-dir", "runs", *FORMS[form]],
                          capture_output=True, text=True, encoding="utf-8", cwd=cwd, env=env, timeout=60)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("status_golden")
    for run_id, src in LEDGERS.items():
        (base / "runs" / run_id).mkdir(parents=True)
        (base / "runs" / run_id / "ledger.db").write_bytes(gzip.decompress(src.read_bytes()))
    return base


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("run_id", LEDGERS)
def test_status_prints_what_it_printed_before(runs: Path, run_id: str, form: str) -> None:
    done = _status(runs, run_id, form)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout == (DATA / f"status_{run_id}.{form}").read_text(encoding="utf-8")


def test_the_reference_run_exercises_the_status_fields(runs: Path) -> None:
    """The fixture is worth comparing: it has rejections, errors, two symbols and an open position (read
    from its tables with SQL, not through status)."""
    import sqlite3

    with sqlite3.connect(runs / "runs" / "g1" / "ledger.db") as conn:
        by_type = dict(conn.execute("SELECT type, COUNT(*) FROM events GROUP BY 1").fetchall())
        symbols = [r[0] for r in conn.execute("SELECT symbol FROM cursors ORDER BY 1")]
        open_positions = conn.execute("SELECT COUNT(*) FROM positions WHERE quantity != 0").fetchone()[0]
    assert by_type.get("RISK_REJECTED", 0) > 0 and by_type.get("ML_ERROR", 0) > 0
    assert symbols == ["AAA", "BBB"] and open_positions >= 1


if __name__ == "__main__":  # write the reference files with the tree on PYTHONPATH (see the docstring)
    out = Path(sys.argv[1])
    write_ledger(out / "runs" / "g1")
    (out / "runs" / "v1").mkdir(parents=True)
    (out / "runs" / "v1" / "ledger.db").write_bytes(gzip.decompress(LEDGERS["v1"].read_bytes()))
    (out / "status_ledger.db.gz").write_bytes(gzip.compress((out / "runs" / "g1" / "ledger.db").read_bytes(), mtime=0))
    for rid in LEDGERS:
        for fmt in FORMS:
            result = _status(out, rid, fmt)
            if result.returncode != 0:
                raise SystemExit(result.stderr)
            (out / f"status_{rid}.{fmt}").write_text(result.stdout, encoding="utf-8")
