"""Reliability of the registry: tamper, concurrency and crash (SIGKILL) tests.

- Tamper: one flipped byte in any file of a version makes load, deploy and verify refuse, every
  time, before any model library deserialises anything (the loaders are replaced by traps).
- Concurrency: 10 real `aitrader register` processes on one name give v1..v10 and a sound index.
- Crash: a register killed with SIGKILL at any point leaves no partial version visible, a sound
  index, and the next register works.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aitrader.errors import DeployCheckError, IntegrityError, TrustError
from aitrader.registry import Registry, clear_cache
from aitrader.registry.register import TEST_DELAY_ENV
from tests.unit.test_registry_support import flip_byte, make_artifact, make_real_artifact

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def contract() -> dict:
    from aitrader.features import FeaturePipeline

    return FeaturePipeline(["ret_1", "ret_5", "ret_10"]).contract()


@pytest.fixture
def traps(monkeypatch: pytest.MonkeyPatch):
    """``arm()`` replaces every deserialiser a model could reach and returns the list of calls.

    Armed only after the artifacts are built: the ONNX converters themselves use these classes.
    """
    import joblib
    import lightgbm
    import onnxruntime
    import xgboost

    import aitrader.models.runner as runner_mod

    calls: list[str] = []

    def trap(name: str):
        def _called(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called before verification")

        return _called

    def arm() -> list[str]:
        monkeypatch.setattr(lightgbm, "Booster", trap("lightgbm.Booster"))
        monkeypatch.setattr(xgboost, "Booster", trap("xgboost.Booster"))
        monkeypatch.setattr(xgboost, "XGBRegressor", trap("xgboost.XGBRegressor"))
        monkeypatch.setattr(onnxruntime, "InferenceSession", trap("onnxruntime.InferenceSession"))
        monkeypatch.setattr(joblib, "load", trap("joblib.load"))
        monkeypatch.setattr(runner_mod.ModelRunner, "from_artifact", classmethod(lambda cls, *a, **k: trap("runner")()))
        return calls

    clear_cache()
    yield arm
    clear_cache()


def _version_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


@pytest.mark.parametrize("kind", ["lightgbm_onnx", "xgboost", "ridge_trusted"])
def test_one_flipped_byte_in_any_file_is_refused_before_deserialisation(
    tmp_path: Path, contract: dict, traps, kind: str
) -> None:
    reg = Registry(tmp_path / "models")
    if kind == "lightgbm_onnx":
        art = make_real_artifact(tmp_path / "art", contract=contract, onnx=True)
        info = reg.register(art, "aapl")
    elif kind == "xgboost":
        info = reg.register(make_real_artifact(tmp_path / "art", kind="xgboost", contract=contract), "aapl")
    else:
        art = make_real_artifact(tmp_path / "art", kind="ridge", contract=contract)
        info = reg.register(art, "aapl", trust_pickle=True)
    calls = traps()
    files = _version_files(info.path)
    assert {p.name for p in files} >= {"manifest.json", "checksums.sha256"} and len(files) >= 3
    for path in files:
        for offset in (0, None, -1):  # first, middle and last byte
            size = path.stat().st_size
            flip_byte(path, None if offset is None else offset % size)
            for _ in range(2):  # every time, not only the first
                with pytest.raises(IntegrityError, match=path.name):
                    reg.load("aapl:v1")
                with pytest.raises(DeployCheckError, match=r"deploy check hashes failed"):
                    reg.deploy("aapl:v1")
                report = reg.verify("aapl:v1")
                assert not report.ok and any(p.path.endswith(path.name) for p in report.mismatches)
            flip_byte(path, None if offset is None else offset % size)  # restore
            assert reg.verify().ok
    assert calls == []
    assert reg.alias_target("aapl", "production") is None
    with pytest.raises(Exception, match="before verification"):  # control: the traps are live
        reg.load("aapl:v1")
    assert calls == ["runner"]


def test_untrusted_pickle_is_refused_before_joblib(tmp_path: Path, contract: dict, traps) -> None:
    reg = Registry(tmp_path / "models")
    reg.register(make_real_artifact(tmp_path / "art", kind="ridge", contract=contract), "ridge")
    calls = traps()
    with pytest.raises(TrustError, match="--trust-pickle"):
        reg.load("ridge")
    with pytest.raises(DeployCheckError, match="deploy check loads failed for ridge:v1: .*--trust-pickle"):
        reg.deploy("ridge")
    assert calls == []


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "aitrader.cli.main", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _assert_consistent(reg: Registry, *, killed: bool = False) -> None:
    """Index sound, versions increasing, every listed version whole.

    ``killed``: a register was just killed, possibly between its rename and its commit; its whole
    folder is then reported as ``unindexed`` (the only problem allowed) and its number never reused,
    so later versions may skip it.
    """
    assert reg.integrity_ok()
    infos = reg.list_versions()
    versions = [i.version for i in infos]
    assert versions == sorted(set(versions)) and (not versions or versions[0] == 1)
    report = reg.verify()
    problems = [p for p in report.mismatches if not (killed and p.problem == "unindexed")]
    assert not problems, report.mismatches
    conn = sqlite3.connect(reg.db_path)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()


def test_ten_concurrent_register_processes(tmp_path: Path) -> None:
    root = tmp_path / "models"
    arts = [make_artifact(tmp_path / f"a{i}", payload=f"model {i}\n".encode() * 1000) for i in range(10)]
    procs = [_cli("register", str(a), "--name", "aapl", "--registry", str(root), "--json") for a in arts]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    docs = [json.loads(o[0]) for o in outs]
    assert sorted(d["version"] for d in docs) == list(range(1, 11))
    assert len({d["digest"] for d in docs}) == 10
    reg = Registry(root)
    _assert_consistent(reg)
    for art, doc in zip(arts, docs, strict=True):  # each process got the version holding its own files
        assert (root / "aapl" / f"v{doc['version']}" / "model.txt").read_bytes() == (art / "model.txt").read_bytes()
    assert sorted(p.name for p in (root / "aapl").iterdir()) == sorted(f"v{i}" for i in range(1, 11))


def test_same_artifact_from_many_threads_is_stored_once(tmp_path: Path) -> None:
    root = tmp_path / "models"
    art = make_artifact(tmp_path / "art")
    results: list[int] = []

    def work() -> None:
        reg = Registry(root)  # one connection per thread, as separate processes would have
        results.append(reg.register(art, "aapl").version)
        reg.close()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [1] * 8
    assert sorted(p.name for p in (root / "aapl").iterdir()) == ["v1"]


def _wait_for(predicate, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def _kill_and_check(root: Path, proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    reg = Registry(root)
    _assert_consistent(reg, killed=True)
    reg.close()


def test_sigkill_at_every_stage_of_register(tmp_path: Path) -> None:
    root = tmp_path / "models"
    reg = Registry(root)
    reg.register(make_artifact(tmp_path / "base"), "aapl")
    reg.close()
    slow = {TEST_DELAY_ENV: "0.4"}  # widens the windows after the copy and between rename and commit
    model_dir = root / "aapl"
    windows = {
        "copying": lambda: any(p.name.startswith(".tmp-") for p in model_dir.iterdir()),
        "renamed, not committed": lambda: (model_dir / "v2").is_dir(),
    }
    for i, (stage, seen) in enumerate(windows.items()):
        art = make_artifact(tmp_path / f"w{i}", payload=f"window {i}\n".encode())
        proc = _cli("register", str(art), "--name", "aapl", "--registry", str(root), env=slow)
        assert _wait_for(seen), f"never reached stage {stage}: {proc.communicate()}"
        _kill_and_check(root, proc)
        assert [v.version for v in Registry(root).list_versions()] == [1], stage
    rng = random.Random(7)
    for i in range(4):  # and at random moments, with and without the widened windows
        art = make_artifact(tmp_path / f"r{i}", payload=f"random {i}\n".encode() * 50_000)
        proc = _cli("register", str(art), "--name", "aapl", "--registry", str(root), env=slow if i % 2 else None)
        time.sleep(rng.uniform(0.05, 0.9))
        if proc.poll() is None:
            _kill_and_check(root, proc)
        else:
            proc.communicate()
            _assert_consistent(Registry(root), killed=True)
    after = make_artifact(tmp_path / "after", payload=b"after the crashes\n")
    info = Registry(root).register(after, "aapl")
    expected = max(v.version for v in Registry(root).list_versions())
    assert info.version == expected and not info.reused
    _assert_consistent(Registry(root))  # the register moved any unindexed folder aside
    leftovers = [p.name for p in model_dir.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []  # dead writers' temp folders are swept by the next register
