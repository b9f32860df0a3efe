"""Concurrency stress (issue 10): 20 processes x 3 operations on one registry.

Each process mixes ``register``, ``deploy`` (latest, explicit versions, ``NAME@alias``, two
aliases) and ``rollback``, all released at the same moment. Afterwards:

- the deploy log is one consistent history per alias: every successful move starts where the
  previous one ended (``from_version`` = the previous row's ``to_version``), none is a no-op,
  and the alias holds the last row's ``to_version``;
- every version verifies, numbers run 1..n, one per distinct artifact;
- ``deploy_log.jsonl`` holds every row, so a rebuild from it gives back the same history.

Bounded: 20 processes, 3 operations each, small real LightGBM artifacts built once. Four of the
processes run the full deploy checks (load, sample predictions, feature contract); the other 16
run only the hash check (``run_checks`` replaced in the child) so that 20 interpreters do not
each import LightGBM and pandas: the checks are covered elsewhere, this test is about the lock.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aitrader.registry import Registry, clear_cache
from tests.unit.test_registry_support import deploy_log_rows, make_real_artifact

REPO = Path(__file__).resolve().parents[2]
PROCESSES = 20
OPS = 3
FULL_CHECKS = 4  # processes that run every deploy check
ALIASES = ("production", "staging")

CHILD = r"""
import json, sys, time
from pathlib import Path
root, ops, light = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] == "1"
from aitrader.errors import AitraderError
from aitrader.registry import Registry
if light:
    from aitrader.registry import deploy as _deploy
    from aitrader.registry.types import CheckResult
    from aitrader.registry.verify import check_version

    def hashes_only(catalog, info, **kw):
        check = check_version(catalog, info)
        return [CheckResult("hashes", "failed" if check.problems else "passed", "stress: hashes only")]

    _deploy.run_checks = hashes_only
go = Path(root).parent / "go"
deadline = time.monotonic() + 120
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.005)
out = []
for op in ops:
    reg = Registry(root)
    try:
        if op[0] == "register":
            r = reg.register(op[1], "m")
            out.append(["register", r.version, r.digest])
        elif op[0] == "deploy":
            r = reg.deploy(op[1], alias=op[2], reason="stress")
            out.append(["deploy", op[1], op[2], r.from_version, r.to_version, r.promoted])
        else:
            r = reg.rollback("m", alias=op[1], reason="stress")
            out.append(["rollback", op[1], r.from_version, r.to_version, r.promoted])
    except AitraderError as exc:
        out.append(["error", type(exc).__name__, str(exc)])
    finally:
        reg.close()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from aitrader.features import FeaturePipeline

    contract = FeaturePipeline(["ret_1", "ret_5"]).contract()
    base = tmp_path_factory.mktemp("stress_pool")
    return [make_real_artifact(base / f"a{i}", seed=i, contract=contract) for i in range(6)]


def _plan(rng: random.Random, pool: list[Path]) -> list[list[str]]:
    ops: list[list[str]] = []
    for _ in range(OPS):
        kind = rng.choice(["register", "latest", "explicit", "alias_ref", "rollback"])
        alias = rng.choice(ALIASES)
        if kind == "register":
            ops.append(["register", str(rng.choice(pool))])
        elif kind == "latest":
            ops.append(["deploy", "m", alias])
        elif kind == "explicit":
            ops.append(["deploy", f"m:v{rng.randint(1, 4)}", alias])
        elif kind == "alias_ref":
            other = "staging" if alias == "production" else "production"
            ops.append(["deploy", f"m@{other}", alias])
        else:
            ops.append(["rollback", alias])
    return ops


def test_twenty_processes_mixing_register_deploy_and_rollback(tmp_path: Path, pool: list[Path]) -> None:
    clear_cache()
    root = tmp_path / "models"
    reg = Registry(root)
    reg.register(pool[0], "m")
    reg.register(pool[1], "m")
    reg.deploy("m:v1")
    reg.deploy("m:v1", alias="staging")
    reg.close()
    rng = random.Random(20)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    procs = []
    for i in range(PROCESSES):
        ops = _plan(rng, pool)
        light = "0" if i < FULL_CHECKS else "1"
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", CHILD, str(root), json.dumps(ops), light],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    time.sleep(0.5)
    (tmp_path / "go").touch()  # release them together (the late ones start as soon as imported)
    outs = [p.communicate(timeout=300) for p in procs]
    failed = [(p.returncode, o[1][-1500:]) for p, o in zip(procs, outs, strict=True) if p.returncode]
    assert failed == []
    assert not any("Traceback" in err for _, err in outs)
    results = [entry for out, _ in outs for entry in json.loads(out)]
    assert len(results) == PROCESSES * OPS
    errors = [r for r in results if r[0] == "error"]
    # allowed: an explicit version not registered (yet), a rollback with nothing before it;
    # never a lock timeout, a failed check or anything else
    for _, kind, message in errors:
        assert kind in ("ModelNotFoundError", "RegistryError"), message
        assert "unknown model id" in message or "no previous" in message, message
    assert sum(r[0] == "deploy" and r[5] for r in results) >= 5  # enough real moves to mean something

    reg = Registry(root)
    assert reg.integrity_ok()
    report = reg.verify()
    assert report.ok, report.mismatches
    infos = reg.list_versions("m")
    assert [i.version for i in infos] == list(range(1, len(infos) + 1))
    assert len({i.digest for i in infos}) == len(infos)
    registered = {r[2] for r in results if r[0] == "register"} | {infos[0].digest, infos[1].digest}
    assert {i.digest for i in infos} == registered

    rows = deploy_log_rows(reg)
    assert all(r["status"] == "success" for r in rows), [dict(r) for r in rows if r["status"] != "success"]
    for alias in ALIASES:
        moves = [(r["from_version"], r["to_version"]) for r in rows if r["alias"] == alias]
        assert moves[0] == (None, 1)
        for (_, prev_to), (frm, to) in zip(moves, moves[1:], strict=False):
            assert frm == prev_to, moves  # each row starts where the previous one ended
            assert frm != to, moves  # no no-op rows
        assert reg.alias_target("m", alias).version == moves[-1][1]

    # the journal copied every committed row: a rebuild gives back the same history and aliases
    history = reg.history("m").to_dict()
    reg.close()
    (root / "registry.db").unlink()
    rebuilt = Registry(root).rebuild()
    assert rebuilt.events == len(rows) and rebuilt.skipped == []
    reg = Registry(root)
    assert reg.history("m").to_dict() == history
    assert reg.verify().ok
    clear_cache()


KILLED_CHILD = r"""
import sys
from aitrader.registry import Registry
from aitrader.registry import deploy as _deploy
from aitrader.registry.types import CheckResult
from aitrader.registry.verify import check_version


def hashes_only(catalog, info, **kw):
    check = check_version(catalog, info)
    return [CheckResult("hashes", "failed" if check.problems else "passed", "kill test: hashes only")]


_deploy.run_checks = hashes_only
reg = Registry(sys.argv[1])
print("ready", flush=True)
i = 0
while True:  # until killed: alternate promotions and rollbacks
    if i % 3 == 2:
        reg.rollback("m")
    else:
        reg.deploy(f"m:v{1 + i % 2}")
    i += 1
"""


def _chain(rows: list) -> list[tuple[int | None, int]]:
    moves = [(r["from_version"], r["to_version"]) for r in rows if r["status"] == "success"]
    for (_, prev_to), (frm, to) in zip(moves, moves[1:], strict=False):
        assert frm == prev_to and frm != to, moves
    return moves


def test_sigkill_during_deploys_leaves_one_consistent_history(tmp_path: Path, pool: list[Path]) -> None:
    """kill -9 at random moments of a deploy/rollback loop: the index is never half written."""
    import signal

    from aitrader.registry import journal

    root = tmp_path / "models"
    reg = Registry(root)
    reg.register(pool[0], "m")
    reg.register(pool[1], "m")
    reg.close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    rng = random.Random(9)
    kills = 4
    for _ in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_CHILD, str(root)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.2, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        reg = Registry(root)
        assert reg.integrity_ok()
        moves = _chain(deploy_log_rows(reg))
        assert moves and reg.alias_target("m", "production").version == moves[-1][1]
        reg.close()
    rows = deploy_log_rows(Registry(root))
    events, bad = journal.read(root / "deploy_log.jsonl")
    copied = {e["id"] for e in events if e["event"] == "deploy_log"}
    ids = {r["id"] for r in rows}
    assert copied <= ids  # the copy never holds a row the index does not (appended after the commit)
    assert len(ids - copied) <= kills and bad <= kills  # at most the row of each kill, and a torn line
