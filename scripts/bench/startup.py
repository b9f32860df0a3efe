"""Benchmark: start-up before the first bar (issue 11): load and verify a model, and short commands.

Every figure is the wall time of a fresh process (``--repeat`` runs; the median, the best and the
1-minute load average beside it), measured for this tree and for a ``--baseline`` git commit (by
default the main commit the start-up work branched from) in the same run, runs of the two trees
alternating so that a drifting load hits both. The set-up deploys a 50-tree LightGBM (ONNX export,
and the compiled library its deploy makes when lleaves/treelite are installed) in a temp registry,
as ``scripts/bench/scale.py`` does, and paper-trades 2,000 unseen 1-minute bars into run ``s1``.

Each tree runs with its own byte-code cache (``PYTHONPYCACHEPREFIX`` in the temp folder, written by
one warm-up run of every command), as an installed package would: without it every run would
compile aitrader's modules again (~60 ms) and the figures would measure the compiler.

Commands (``python -m aitrader ...`` in the temp folder):

* ``--help``; ``status s1`` (table) and ``status s1 --json``; ``export s1 fills`` (CSV on stdout);
  ``list`` (the registry table); ``monitor --run s1`` (table) and ``monitor --run s1 --json`` (the
  streamed pass: no pandas since the start-up work on it);
* ``paper-trade`` on a 500-bar parquet file (``--json``, backend auto): the whole command's wall time
  and its start-up before the first bar: from the process's launch to the entry of
  ``Engine.run`` (the replay loop), reported by a small driver that wraps ``Engine.run`` when
  ``aitrader.trading.engine`` is imported (``python -c DRIVER`` instead of ``-m aitrader``: the
  same interpreter start). The two trees' ledgers must hold the same rows (``ledger_content``:
  every table minus wall-clock columns); the script says so.

And in a child of this tree only: ``import aitrader.registry`` (the floor of every model-loading
command) and ``Registry.load`` (SHA-256 of every file, trust check, ONNX session) timed from
before that import, with the heavy modules it imported (scikit-learn, scipy, lightgbm and pandas
should not be: the runner is ONNX).

``mods``: how many modules the command imports (``-X importtime``, one run): the one figure here that
no load changes. ``--imports`` adds where this tree's imports go (``-X importtime`` self times summed by library) for
``status``, ``export``, ``list``, ``monitor`` and the 500-bar ``paper-trade``.

Usage: .venv/bin/python scripts/bench/startup.py [--repeat 7] [--baseline REF|none] [--imports]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[2]
#: The main commit the start-up work (issue 11) started from: the "previous main" of the ratios.
BASELINE = "f6d96ad"
TARGET_S = 0.3

LOAD = """
import json, sys, time
t0 = time.perf_counter()
from aitrader.registry import Registry
loaded = Registry({root!r}).load("syn_lgbm")
seconds = time.perf_counter() - t0
print(json.dumps({{"seconds": seconds, "backend": loaded.runner.backend,
                  "heavy": [m for m in ("sklearn", "scipy", "lightgbm", "pandas") if m in sys.modules]}}))
"""

#: ``python -c DRIVER paper-trade ...``: the CLI as ``-m aitrader`` runs it, plus the moment the replay
#: loop is entered (wall clock, written to $AITRADER_BENCH_FIRST_BAR) once the engine module is imported.
DRIVER = """
import os, runpy, sys, time
from importlib.machinery import PathFinder

class _Watch:
    def find_spec(self, name, path=None, target=None):
        if name != "aitrader.trading.engine":
            return None
        spec = PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            run = module.Engine.run

            def timed(self, *a, **k):
                with open(os.environ["AITRADER_BENCH_FIRST_BAR"], "a") as fh:
                    fh.write(repr(time.time()) + "\\n")
                return run(self, *a, **k)

            module.Engine.run = timed

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _Watch())
sys.argv = ["aitrader", *sys.argv[1:]]
runpy.run_module("aitrader", run_name="__main__", alter_sys=True)
"""


def load1() -> float:
    return os.getloadavg()[0]


def tree_env(tree: Path, work: Path, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    env.update(PYTHONPATH=str(tree), PYTHONPYCACHEPREFIX=str(work / f"pycache-{name}"), COLUMNS="100",
               AITRADER_REGISTRY=str(work / "models"))
    return env


#: CPU seconds (user + system) of every process :func:`run` measured, by the label given: on a loaded
#: machine the wall time swings with the other work, the CPU time much less.
CPU: dict[str, list[float]] = {}


def run(argv: list[str], env: dict[str, str], cwd: Path, label: str = "") -> tuple[float, str]:
    """Wall seconds of one process (launch to exit) and its stdout; a failure stops the benchmark."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if label:
        CPU.setdefault(label, []).append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])} ... failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return seconds, out.stdout


def commands(work: Path) -> dict[str, list[str]]:
    runs = ["--runs-dir", str(work / "runs")]
    return {
        "aitrader --help": ["--help"],
        "status s1": ["status", "s1", *runs],
        "status s1 --json": ["status", "s1", "--json", *runs],
        "export s1 fills": ["export", "s1", "fills", *runs],
        "list": ["list", "--registry", str(work / "models")],
        "monitor --run s1": ["monitor", "--run", "s1", *runs, "--registry", str(work / "models"),
                             "--config", str(work / "trading.yaml")],
        "monitor --run s1 --json": ["monitor", "--run", "s1", "--json", *runs, "--registry", str(work / "models"),
                                    "--config", str(work / "trading.yaml")],
    }


def paper_trade_once(env: dict[str, str], work: Path, tag: str, i: int,
                     label: str = "") -> tuple[float, float, Path]:
    """(start-up before the first bar, whole wall) of one 500-bar paper-trade, and its run folder."""
    marks = work / f"first_bar_{tag}_{i}.txt"
    marks.unlink(missing_ok=True)
    rid = f"p_{tag}_{i}"
    argv = [sys.executable, "-c", DRIVER, "paper-trade", "--config", str(work / "trading.yaml"),
            "--data", str(work / "bars_500.parquet"), "--registry", str(work / "models"),
            "--runs-dir", str(work / "runs-pt"), "--run-id", rid, "--json"]
    launched = time.time()
    seconds, out = run(argv, {**env, "AITRADER_BENCH_FIRST_BAR": str(marks)}, work, label)
    doc = json.loads(out)
    if doc.get("status") != "finished" or doc.get("bars") != 500:
        raise SystemExit(f"paper-trade did not trade the 500 bars: {out[:500]}")
    first = float(marks.read_text().split()[0])
    return first - launched, seconds, work / "runs-pt" / rid


def baseline_tree(ref: str, work: Path) -> tuple[Path, str]:
    """``ref`` of this repository exported (git archive) into the temp folder; its one-line description."""
    dest = work / "baseline"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "aitrader"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest, describe(ref)


def describe(ref: str) -> str:
    line = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", ref], capture_output=True,
                          text=True).stdout.strip()
    return line if len(line) <= 90 else line[:87] + "..."


def median_row(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), min(values)


GROUPS = {"pandas": "pandas", "pyarrow": "pyarrow", "numpy": "numpy", "typer": "typer (CLI parsing)",
          "pydantic": "pydantic (typer's option coercion, config models)",
          "pydantic_core": "pydantic (typer's option coercion, config models)",
          "annotated_types": "pydantic (typer's option coercion, config models)",
          "typing_inspection": "pydantic (typer's option coercion, config models)",
          "rich": "rich", "markdown_it": "rich", "yaml": "yaml", "onnxruntime": "onnxruntime"}


def import_breakdown(argv: list[str], env: dict[str, str], cwd: Path, runs: int = 3) -> list[tuple[str, float]]:
    """Where a command's imports go: ``-X importtime`` self times (median of ``runs``), summed by library
    (aitrader by subpackage; the standard library and the rest as "other")."""
    import re
    from collections import defaultdict

    per_run: list[dict[str, float]] = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, env=env,
                             cwd=cwd, timeout=300)
        sums: dict[str, float] = defaultdict(float)
        for line in out.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+\d+ \| +(\S+)", line)
            if m is None:
                continue
            parts = m[2].split(".")
            if parts[0] == "aitrader":
                group = ".".join(parts[:2])
            elif parts[0] == "email" or m[2].startswith("importlib.metadata"):
                group = "importlib.metadata (entry points)"
            else:
                group = GROUPS.get(parts[0], "other (stdlib, ...)")
            sums[group] += int(m[1]) / 1e6
        per_run.append(sums)
    keys = {k for r in per_run for k in r}
    med = {k: statistics.median(r.get(k, 0.0) for r in per_run) for k in keys}
    return sorted(med.items(), key=lambda kv: -kv[1])


def imported_modules(argv: list[str], env: dict[str, str], cwd: Path) -> int:
    """How many modules a command imports (``-X importtime`` lines): a figure no load changes."""
    out = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, env=env,
                         cwd=cwd, timeout=300)
    import re

    return sum(1 for line in out.stderr.splitlines() if re.match(r"import time:\s+\d+ \|", line))


def breakdown_lines(envs: dict[str, dict[str, str]], work: Path, cmds: dict[str, list[str]]) -> list[str]:
    env = envs["this"]
    argv = {**{k: ["-m", "aitrader", *v] for k, v in cmds.items()
               if k in ("status s1", "export s1 fills", "list", "monitor --run s1")},
            "paper-trade 500 bars": ["-m", "aitrader", "paper-trade", "--config", str(work / "trading.yaml"),
                                     "--data", str(work / "bars_500.parquet"), "--registry", str(work / "models"),
                                     "--runs-dir", str(work / "runs-imports"), "--json"]}
    lines = [f"imports of this tree by library, ms (-X importtime self times, median of 3, load {load1():.2f}):"]
    for what, args in argv.items():
        rows = import_breakdown(args, env, work)
        total = sum(v for _, v in rows)
        shown = ", ".join(f"{k} {v * 1e3:.0f}" for k, v in rows if v >= 0.004)
        lines.append(f"  {what}: {total * 1e3:.0f} ms: {shown}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7, help="runs of each command per tree (median printed)")
    ap.add_argument("--imports", action="store_true",
                    help="also print where this tree's imports go, by library, for status, export, list, monitor, "
                         "paper-trade")
    ap.add_argument("--baseline", default=BASELINE,
                    help=f"git commit to compare with (default {BASELINE}, main before the start-up work); none: skip")
    args = ap.parse_args()
    import scale

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="aitrader-startup-") as tmp:
        work = Path(tmp)
        scale.prepare(work, [500, 2000], [])
        from aitrader.trading.service import paper_trade

        paper_trade(config_path=str(work / "trading.yaml"), data=[str(work / "bars_2000.parquet")], run_id="s1",
                    registry_root=str(work / "models"), runs_dir=str(work / "runs"))
        trees: dict[str, Path] = {"this": ROOT}
        described = {"this": describe("HEAD") + " (+ working tree)"}
        if args.baseline != "none":
            trees["baseline"], described["baseline"] = baseline_tree(args.baseline, work)
        envs = {name: tree_env(tree, work, name) for name, tree in trees.items()}
        cmds = commands(work)
        py = [sys.executable, "-m", "aitrader"]
        for name, env in envs.items():  # warm-up: writes each tree's byte-code cache
            for argv in cmds.values():
                run([*py, *argv], env, work)
            paper_trade_once(env, work, f"warm{name}", 0)

        wall: dict[tuple[str, str], list[float]] = {}
        loads: dict[tuple[str, str], list[float]] = {}
        last_run: dict[str, Path] = {}
        for i in range(args.repeat):
            # the trees alternate run by run, and which goes first alternates too (ABBA), so that a
            # drifting load or the page cache favour neither
            order = list(envs.items()) if i % 2 == 0 else list(envs.items())[::-1]
            for what, argv in cmds.items():
                for name, env in order:
                    loads.setdefault((what, name), []).append(load1())
                    wall.setdefault((what, name), []).append(run([*py, *argv], env, work, f"{what}|{name}")[0])
            for name, env in order:
                ld = load1()
                first, whole, last_run[name] = paper_trade_once(
                    env, work, name, i, f"paper-trade 500 bars: whole command|{name}")
                for what, value in (("paper-trade 500 bars: start-up before the first bar", first),
                                    ("paper-trade 500 bars: whole command", whole)):
                    wall.setdefault((what, name), []).append(value)
                    loads.setdefault((what, name), []).append(ld)

        same = None
        if "baseline" in last_run:
            from aitrader.trading.ledger import ledger_content

            contents = []
            for name in ("this", "baseline"):
                content = ledger_content(last_run[name] / "ledger.db")
                content["meta"] = [r for r in content["meta"] if r[0] != "run_id"]  # the run ids differ by design
                contents.append(content)
            same = contents[0] == contents[1]

        pt_argv = ["paper-trade", "--config", str(work / "trading.yaml"), "--data", str(work / "bars_500.parquet"),
                   "--registry", str(work / "models"), "--runs-dir", str(work / "runs-count"), "--json"]
        modules = {(what, name): imported_modules([*py[1:], *argv], env, work)
                   for name, env in envs.items()
                   for what, argv in [*cmds.items(), ("paper-trade 500 bars: whole command", pt_argv)]}
        breakdown = breakdown_lines(envs, work, cmds) if args.imports else []
        child: dict[str, list[float]] = {"import aitrader.registry": [], "load+verify (Registry.load, ONNX)": []}
        heavy: list[str] = []
        backend = ""
        env = envs["this"]
        for _ in range(args.repeat):
            child["import aitrader.registry"].append(run([sys.executable, "-c", "import aitrader.registry"],
                                                         env, work)[0])
            _, out = run([sys.executable, "-c", LOAD.format(root=str(work / "models"))], env, work)
            doc = json.loads(out.strip().splitlines()[-1])
            child["load+verify (Registry.load, ONNX)"].append(doc["seconds"])
            heavy, backend = doc["heavy"], doc["backend"]

    load_after = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, {sys.version.split()[0]}; load average before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f}; {args.repeat} runs per figure (median, best), wall seconds of a fresh process")
    for name, desc in described.items():
        print(f"  {name:<8} {desc}")
    has_base = "baseline" in trees
    head = f"{'what':<52} {'this s':>7} {'best':>6} {'CPU s':>6} {'load':>5} {'mods':>5}"
    if has_base:
        head += f" {'baseline s':>10} {'best':>6} {'CPU s':>6} {'load':>5} {'mods':>5} {'ratio':>6} {'CPU ratio':>9}"
    print(head + "  target (this)")
    rows = [*cmds, "paper-trade 500 bars: start-up before the first bar", "paper-trade 500 bars: whole command"]
    for what in rows:
        med, best = median_row(wall[(what, "this")])
        cpu = statistics.median(CPU.get(f"{what}|this", [float("nan")]))
        mods = modules.get((what, "this"), "")
        line = (f"{what:<52} {med:>7.3f} {best:>6.3f} {cpu:>6.3f} {statistics.median(loads[(what, 'this')]):>5.2f}"
                f" {mods:>5}")
        if has_base:
            bmed, bbest = median_row(wall[(what, "baseline")])
            bcpu = statistics.median(CPU.get(f"{what}|baseline", [float("nan")]))
            line += (f" {bmed:>10.3f} {bbest:>6.3f} {bcpu:>6.3f} {statistics.median(loads[(what, 'baseline')]):>5.2f}"
                     f" {modules.get((what, 'baseline'), ''):>5} {bmed / med:>5.2f}x {bcpu / cpu:>8.2f}x")
        target = "" if what.startswith("paper-trade") or what.startswith("monitor") else (
            f"<= {TARGET_S} s: {'met' if med <= TARGET_S else 'not met'}")
        print(line + "  " + target)
    if same is not None:
        print(f"paper-trade ledgers of the two trees (every table minus wall-clock columns): "
              f"{'identical' if same else 'DIFFERENT'}")
    print(f"{'in a child of this tree':<52} {'median s':>7} {'best':>6}")
    for what, values in child.items():
        med, best = median_row(values)
        print(f"{what:<52} {med:>7.3f} {best:>6.3f}")
    print(f"runner backend: {backend}; heavy modules imported by load+verify: {', '.join(heavy) or 'none'}")
    if breakdown:
        print("\n".join(breakdown))
    floor = [run([sys.executable, "-c", "pass"], dict(os.environ), ROOT)[0] for _ in range(5)]
    print(f"python -c pass (the interpreter alone): {statistics.median(floor):.3f} s")


if __name__ == "__main__":
    main()
