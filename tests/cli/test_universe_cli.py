"""Universe retrain for real: a Dask cluster of separate processes, killed workers, a corrupt file.

The cluster is a real ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1 (random
ports, no nanny so that SIGKILL of the process is the death of the worker), importing this
worktree's aitrader. Models are small (800 bars, 30 trees, 2 folds) to keep each test well
under a minute on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.monitoring.lock import FileLock
from aitrader.monitoring.retrain import artifact_fingerprint
from aitrader.monitoring.universe import KEY_TAG, Options, run_universe

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
SYMBOLS = ("AAA", "BBB", "CCC", "DDD")
TRAIN_YAML = """
model: {kind: lightgbm, params: {n_estimators: 30, num_leaves: 7, n_jobs: 1}}
split: {n_folds: 2, embargo: 5, holdout: 0.25, min_train: 150}
"""


def _universe(root: Path, symbols: tuple[str, ...] = SYMBOLS) -> Path:
    from aitrader.data.synthetic import generate_bars

    (root / "bars").mkdir(exist_ok=True)
    for i, s in enumerate(symbols):
        generate_bars(800, seed=10 + i, signal=0.5).to_csv(root / "bars" / f"{s}.csv")
    (root / "train.yaml").write_text(TRAIN_YAML)
    lines = ["name: '{symbol}_lgbm'", "config: train.yaml", "symbols:"]
    lines += [f"  - {{symbol: {s}, data: bars/{s}.csv}}" for s in symbols]
    (root / "universe.yaml").write_text("\n".join(lines) + "\n")
    return root / "universe.yaml"


def _versions(registry: Path) -> dict[str, list]:
    from aitrader.registry import Registry

    out: dict[str, list] = {}
    for v in Registry(registry).list_versions():
        out.setdefault(v.name, []).append(v)
    return out


def _invoke(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code in (0, 1, 3), (result.exit_code, result.stdout, result.stderr)
    return result.exit_code, json.loads(result.stdout)


# ----------------------------------------------------------------------------- a real Dask cluster


def _popen(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    pytest.importorskip("distributed")
    from distributed import Client

    root = tmp_path_factory.mktemp("dask")
    sched_file = root / "scheduler.json"
    procs = [_popen(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                     "--no-dashboard", "--scheduler-file", str(sched_file)], root, root / "scheduler.log")]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        for k in range(2):
            procs.append(_popen(["distributed.cli.dask_worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                                 "--no-nanny", "--no-dashboard", "--name", f"w{k}"], root, root / f"worker{k}.log"))
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield {"address": address, "workers": procs[1:]}
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_dask_cluster_registers_the_same_artifacts_as_the_process_pool(in_tmp: Path, cluster: dict) -> None:
    universe = _universe(in_tmp, SYMBOLS[:3])
    code, local = _invoke("retrain", "--universe", str(universe), "--registry", "reg_process", "--jobs", "2",
                          "--promote-if-better")
    assert code == 0 and local["counts"] == {"promoted": 3}, local
    code, remote = _invoke("retrain", "--universe", str(universe), "--registry", "reg_dask", "--executor", "dask",
                           "--scheduler", cluster["address"], "--promote-if-better")
    assert code == 0 and remote["counts"] == {"promoted": 3} and remote["scheduler"] == cluster["address"], remote
    a, b = _versions(in_tmp / "reg_process"), _versions(in_tmp / "reg_dask")
    assert sorted(a) == sorted(b) == ["aaa_lgbm", "bbb_lgbm", "ccc_lgbm"]
    for name in a:
        (va,), (vb,) = a[name], b[name]
        # Every model file byte for byte; the manifest equal but for its created_at stamp (which is why
        # the registry's digests and checksums.sha256, which hash the manifest too, differ between runs).
        files = sorted(p.name for p in va.path.iterdir())
        assert files == sorted(p.name for p in vb.path.iterdir())
        for f in files:
            if f not in ("manifest.json", "checksums.sha256"):
                assert (va.path / f).read_bytes() == (vb.path / f).read_bytes(), (name, f)
        ma, mb = (json.loads((v.path / "manifest.json").read_text()) for v in (va, vb))
        ma.pop("created_at"), mb.pop("created_at")
        assert ma == mb
        assert artifact_fingerprint(va.path) == artifact_fingerprint(vb.path)
        assert {"model.txt", "model.onnx"} <= set(files)
        assert va.tags[KEY_TAG] == vb.tags[KEY_TAG]  # the same task key from either executor


def test_a_worker_killed_mid_batch_registers_nothing_twice_and_the_rerun_skips(in_tmp: Path, cluster: dict) -> None:
    universe = _universe(in_tmp)
    victim = cluster["workers"][0]

    def kill_after_first(done: int, total: int, failures: int) -> None:
        if done == 1 and victim.poll() is None:
            os.kill(victim.pid, signal.SIGKILL)

    first = run_universe(universe, executor="dask", scheduler=cluster["address"], registry_root="reg",
                         options=Options(promote_if_better=True), progress=kill_after_first)
    assert victim.poll() == -signal.SIGKILL
    assert first["exit_code"] == 0 and first["counts"] == {"promoted": 4}, first["results"]
    versions = _versions(in_tmp / "reg")
    assert {n: len(v) for n, v in versions.items()} == {f"{s.lower()}_lgbm": 1 for s in SYMBOLS}
    again = run_universe(universe, executor="dask", scheduler=cluster["address"], registry_root="reg")
    assert again["exit_code"] == 0 and again["counts"] == {"skipped": 4}
    assert {n: len(v) for n, v in _versions(in_tmp / "reg").items()} == {n: 1 for n in versions}


# ----------------------------------------------------------------------------- the process pool


def _pool_workers() -> list:
    import psutil

    me = psutil.Process()
    return [p for p in me.children(recursive=True)
            if "spawn_main" in " ".join(p.cmdline()) and "resource_tracker" not in " ".join(p.cmdline())]


def test_process_pool_worker_killed_mid_batch(in_tmp: Path) -> None:
    universe = _universe(in_tmp)
    killed: list[int] = []

    def kill_a_worker(done: int, total: int, failures: int) -> None:
        if done == 1 and not killed:
            workers = _pool_workers()
            if workers:
                killed.append(workers[0].pid)
                os.kill(workers[0].pid, signal.SIGKILL)

    first = run_universe(universe, jobs=2, registry_root="reg", progress=kill_a_worker)
    assert killed, "no pool worker was found to kill"
    assert first["exit_code"] == 0 and first["counts"] == {"registered": 4}, first["results"]
    assert {n: len(v) for n, v in _versions(in_tmp / "reg").items()} == {f"{s.lower()}_lgbm": 1 for s in SYMBOLS}
    again = run_universe(universe, jobs=2, registry_root="reg")
    assert again["counts"] == {"skipped": 4} and again["exit_code"] == 0


def test_one_corrupt_file_is_reported_the_others_registered_exit_1(in_tmp: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    _universe(in_tmp, SYMBOLS[:2])
    (in_tmp / "bars" / "BAD.csv").write_text("timestamp,open,high,low,close,volume\n2020-01-01,1,2,0.5,1,abc\n")
    result = runner.invoke(app, ["retrain", "--data", "bars", "--config", "train.yaml", "--jobs", "2", "--json"])
    assert result.exit_code == 1, result.stderr
    doc = json.loads(result.stdout)
    rows = {r["symbol"]: r for r in doc["results"]}
    assert rows["BAD"]["outcome"] == "failed" and "BAD.csv: row 1" in rows["BAD"]["error"]
    assert "volume 'abc' is not a number" in rows["BAD"]["error"]
    assert rows["AAA"]["outcome"] == rows["BBB"]["outcome"] == "registered"
    assert sorted(_versions(in_tmp / "models")) == ["aaa_lightgbm", "bbb_lightgbm"]
    # The table (human output) says the same.
    from aitrader.cli._universe import render

    render(doc)
    out = capsys.readouterr().out
    assert "BAD" in out and "failed" in out and "1 failed, 2 registered" in out


def test_train_universe_applies_per_symbol_overrides(in_tmp: Path) -> None:
    _universe(in_tmp, SYMBOLS[:2])
    (in_tmp / "u.csv").write_text("symbol,data,target.horizon\nAAA,bars/AAA.csv,3\nBBB,bars/BBB.csv,\n")
    code, doc = _invoke("train", "--universe", "u.csv", "--config", "train.yaml", "--register", "{symbol}_first",
                        "--jobs", "1")
    assert code == 0 and doc["counts"] == {"registered": 2}
    versions = _versions(in_tmp / "models")
    horizons = {n: json.loads((v[0].path / "manifest.json").read_text())["target"]["horizon"]
                for n, v in versions.items()}
    assert horizons == {"aaa_first": 3, "bbb_first": 5}


def test_a_held_lock_exits_4(in_tmp: Path) -> None:
    universe = _universe(in_tmp, SYMBOLS[:1])
    with FileLock(in_tmp / "logs" / "retrain.lock"):
        result = runner.invoke(app, ["retrain", "--universe", str(universe)])
    assert result.exit_code == 4 and "another retrain holds the lock" in result.stderr


def test_option_errors_name_the_fix(in_tmp: Path) -> None:
    result = runner.invoke(app, ["retrain"])
    assert result.exit_code == 1 and "--name is required" in result.stderr and "--universe" in result.stderr
    universe = _universe(in_tmp, SYMBOLS[:1])
    result = runner.invoke(app, ["retrain", "--universe", str(universe), "--if-alert"])
    assert result.exit_code == 1 and "--if-alert applies to one model" in result.stderr
    result = runner.invoke(app, ["retrain", "--universe", str(universe), "--scheduler", "tcp://127.0.0.1:1"])
    assert result.exit_code == 1 and "--scheduler applies only with --executor dask" in result.stderr
    result = runner.invoke(app, ["train", "--universe", str(universe), "--out", "x"])
    assert result.exit_code == 1 and "drop --out" in result.stderr
    assert not (in_tmp / "models").exists()
