"""Start-up (issue 11): the short commands import only what their work needs, proven by ``sys.modules`` in a
fresh interpreter on a real run (no clock: scripts/bench/startup.py times them).

* ``status``, ``export`` of a plain ledger table and ``list`` read SQLite: no pandas, pyarrow or model
  library; ``export`` of fills/orders/events/positions and ``list`` no numpy either; the ``--json``
  forms and ``export`` no rich (nothing is drawn).
* Beyond typer's own imports, ``status`` imports numpy and rich and nothing else from outside the standard
  library (``status --json`` numpy, ``export`` of fills nothing, ``list`` rich): in particular not pydantic,
  which typer would load to coerce every string option (aitrader/cli/_params.py).
* ``paper-trade`` on an ONNX-run LightGBM imports neither the training stack (trainer, splits, ONNX
  export) nor scikit-learn, scipy or lightgbm, and parses ``features.yaml`` once; replaying a file
  without ``--book`` or ``--follow`` it imports no order-book module, no model swap, no data report,
  sample or synthetic bars.
* ``monitor`` (the streamed pass, no ``--report``) imports no pandas or pyarrow and no model library: beyond
  typer, numpy, the config's pydantic and yaml, and rich for the table (not for ``--json``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CONFIG = """
ml_trading:
  models:
    - {model_id: syn_lgbm, symbol: SYN, min_confidence: 0.6, position_size: 0.02}
  errors: {prediction_timeout_ms: 5000}
"""
#: What no light command may import (dataframes, model libraries, the training stack, the monitor).
HEAVY = ("pandas", "pyarrow", "sklearn", "scipy", "lightgbm", "xgboost", "onnxruntime", "onnx", "matplotlib",
         "aitrader.training.trainer", "aitrader.monitoring.stream")
#: What paper-trade on an ONNX-run LightGBM may not import: the native libraries, ONNX export, training;
#: and for a replay of a data file without book features: the order-book modules (no --book), the model
#: swaps (--follow only), the data report (``data check``), the built-in sample and the synthetic bars.
NOT_TRADING = ("sklearn", "scipy", "lightgbm", "xgboost", "onnx", "skl2onnx", "onnxmltools", "hmmlearn",
               "matplotlib", "aitrader.training.trainer", "aitrader.training.splits", "aitrader.monitoring",
               "aitrader.features.book", "aitrader.data.book", "aitrader.trading.swap", "aitrader.data.report",
               "aitrader.data.sample", "aitrader.data.synthetic")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-tree LightGBM trained, registered and deployed, then paper-traded over 300 unseen bars (run r1)."""
    from tests.model_world import traded_world

    return traded_world(tmp_path_factory.mktemp("startup"), CONFIG, seed=5, suffix=".csv")


def _modules_after(commands: list[list[str]], cwd: Path) -> list[dict]:
    """Run each CLI invocation in ONE fresh interpreter, in order; after each, the output and which of
    HEAVY, numpy and rich are imported so far."""
    code = textwrap.dedent(
        f"""
        import json, sys
        from typer.testing import CliRunner
        from aitrader.cli.main import app
        out = []
        for args in {commands!r}:
            result = CliRunner().invoke(app, args)
            seen = [m for m in {(*HEAVY, "numpy", "rich")!r} if m in sys.modules]
            out.append({{"code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr, "seen": seen}})
        print(json.dumps(out))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_export_of_plain_tables_and_list_json_import_neither_numpy_nor_rich(world: Path) -> None:
    runs, models = ["--runs-dir", str(world / "runs")], ["--registry", str(world / "models")]
    cmds = [["export", "r1", table, *runs] for table in ("fills", "orders", "events", "positions")]
    cmds += [["list", "--json", *models]]
    results = _modules_after(cmds, world)
    for args, res in zip(cmds, results, strict=True):
        assert res["code"] == 0, (args, res["stderr"])
        assert res["seen"] == [], f"{' '.join(args[:3])} imported {res['seen']}"
    fills_csv = results[0]["stdout"].splitlines()
    assert fills_csv[0] == "id,order_id,ts,symbol,side,quantity,price,commission,slippage"
    import sqlite3

    with sqlite3.connect(world / "runs" / "r1" / "ledger.db") as conn:  # oracle: the table itself
        assert len(fills_csv) - 1 == conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0] > 0
    listed = json.loads(results[-1]["stdout"])
    assert [(v["name"], v["version"]) for v in listed["versions"]] == [("syn_lgbm", 1)]


def test_status_and_list_tables_import_no_dataframe_or_model_library(world: Path) -> None:
    runs, models = ["--runs-dir", str(world / "runs")], ["--registry", str(world / "models")]
    cmds = [["status", "r1", "--json", *runs], ["export", "r1", "equity", *runs], ["status", "r1", *runs],
            ["list", *models]]
    results = _modules_after(cmds, world)
    for args, res in zip(cmds, results, strict=True):
        assert res["code"] == 0, (args, res["stderr"])
        heavy = [m for m in res["seen"] if m in HEAVY]
        assert heavy == [], f"{' '.join(args[:3])} imported {heavy}"
    # status --json and equity decode the ledger's float blocks (numpy), but draw nothing
    assert results[0]["seen"] == ["numpy"] and results[1]["seen"] == ["numpy"]
    assert json.loads(results[0]["stdout"])["bars"] == 300
    assert "syn_lgbm" in results[3]["stdout"]


#: Run ``python -m aitrader ARGS`` in a fresh interpreter, after ``import typer`` (typer's own imports are
#: typer's): the exit code and the top-level packages outside the standard library it imported beyond them.
BEYOND_TYPER = """
import contextlib, io, json, runpy, sys
import typer
before = set(sys.modules)
sys.argv = ["aitrader", *sys.argv[1:]]
code = 0
with contextlib.redirect_stdout(io.StringIO()):
    try:
        runpy.run_module("aitrader", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code or 0
new = {m.split(".")[0] for m in set(sys.modules) - before}
print(json.dumps({"code": code, "third_party": sorted(new - set(sys.stdlib_module_names) - {"aitrader", "typer"}),
                  "pydantic": "pydantic" in sys.modules, "modules": sorted(set(sys.modules) - before)}))
"""


@pytest.mark.parametrize(("args", "allowed"), [
    # status decodes the ledger's equity blocks: numpy for the floats, zstandard for the blobs
    (["status", "r1"], ["numpy", "rich", "zstandard"]),
    (["status", "r1", "--json"], ["numpy", "zstandard"]),
    (["export", "r1", "fills"], []),
    (["list"], ["rich"]),
])
def test_short_commands_import_nothing_beyond_typer_but_what_they_draw_with(
    world: Path, args: list[str], allowed: list[str]
) -> None:
    where = ["--registry", str(world / "models")] if args[0] == "list" else ["--runs-dir", str(world / "runs")]
    done = subprocess.run([sys.executable, "-c", BEYOND_TYPER, *args, *where], capture_output=True, text=True,
                          cwd=world, timeout=120)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["code"] == 0, done.stderr
    assert doc["pydantic"] is False, f"{' '.join(args)} imported pydantic"
    assert doc["third_party"] == allowed, f"{' '.join(args)} imported {doc['third_party']}"


def test_paper_trade_imports_no_training_stack_and_parses_features_yaml_once(world: Path) -> None:
    code = textwrap.dedent(
        f"""
        import json, sys
        from typer.testing import CliRunner
        from aitrader.cli.main import app
        from aitrader.features import registry as feature_registry

        parsed = []
        load = feature_registry.FeatureRegistry.load.__func__

        def counted(cls, path=None):
            parsed.append(path)
            return load(cls, path)

        feature_registry.FeatureRegistry.load = classmethod(counted)
        result = CliRunner().invoke(app, ["paper-trade", "--config", "trading.yaml", "--data", "SYN.csv",
                                          "--registry", "models", "--runs-dir", "runs-pt", "--backend", "onnx",
                                          "--json"])
        heavy = [m for m in {NOT_TRADING!r} if m in sys.modules]
        print(json.dumps({{"code": result.exit_code, "err": result.stderr, "summary": result.stdout,
                          "heavy": heavy, "parsed": len(parsed)}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=world, timeout=180)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["code"] == 0, doc["err"]
    summary = json.loads(doc["summary"])
    assert summary["status"] == "finished" and summary["bars"] == 300 and summary["runners"] == {"syn_lgbm:v1": "onnx"}
    assert doc["heavy"] == [], f"paper-trade imported {doc['heavy']}"
    assert doc["parsed"] == 1, f"features.yaml parsed {doc['parsed']} times in one paper-trade"


#: What ``monitor`` may import beyond typer: numpy, zstandard (the ledger's blobs), the trading config's
#: pydantic (with its own dependencies) and yaml; rich only to draw the table.
MONITOR_ALLOWED = {"numpy", "zstandard", "yaml", "pydantic", "pydantic_core", "annotated_types", "typing_extensions",
                   "typing_inspection"}


@pytest.mark.parametrize("form", [["--json"], []])
def test_monitor_imports_no_dataframe_or_model_library(world: Path, form: list[str]) -> None:
    args = ["monitor", "--run", "r1", "--runs-dir", str(world / "runs"), "--registry", str(world / "models"),
            "--config", str(world / "trading.yaml"), *form]
    done = subprocess.run([sys.executable, "-c", BEYOND_TYPER, *args], capture_output=True, text=True, cwd=world,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["code"] in (0, 3), done.stderr  # 3: the monitor raised an alert (a short run)
    not_monitor = (*HEAVY[:-1], "aitrader.monitoring.tearsheet")  # the streamed pass is what monitor runs
    heavy = [m for m in not_monitor if m in doc["modules"]]
    assert heavy == [], f"monitor imported {heavy}"
    # numpy's compiled helpers (_cython_*, cython_runtime, _sysconfigdata_*) are not packages
    packages = {m for m in doc["third_party"] if not m.startswith("_") and m != "cython_runtime"}
    allowed = MONITOR_ALLOWED | ({"rich"} if not form else set())
    assert packages <= allowed, f"monitor {' '.join(form)} imported {sorted(packages - allowed)}"
    assert "numpy" in packages and ("rich" in packages) == (not form)
