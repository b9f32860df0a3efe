"""Universe retrain: the universe file, task keys, the exit-code rule, the process pool's crash retry."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import pytest

from aitrader.config import TradingConfig, TrainConfig
from aitrader.errors import ConfigError
from aitrader.monitoring.executors import ProcessExecutor, WorkerCrashed, make_executor
from aitrader.monitoring.universe import (
    Entry,
    build_tasks,
    config_hash,
    entry_config,
    exit_code,
    read_universe,
    task_key,
)


def _bars(folder: Path, *symbols: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for s in symbols:
        (folder / f"{s}.csv").write_text("timestamp,open,high,low,close,volume\n")


# ----------------------------------------------------------------------------- the universe file


def test_yaml_universe_with_folder_template_and_overrides(tmp_path: Path) -> None:
    _bars(tmp_path / "bars", "AAA", "BBB")
    (tmp_path / "u.yaml").write_text(
        "name: '{symbol}_lgbm'\nconfig: train.yaml\ndata: bars\nsymbols:\n"
        "  - {symbol: CCC, data: other/CCC.csv, name: ccc_special, overrides: {model.kind: ridge, target.horizon: 3}}\n"
    )
    entries, config = read_universe(tmp_path / "u.yaml")
    assert config == str((tmp_path / "train.yaml").resolve())
    by = {e.symbol: e for e in entries}
    assert sorted(by) == ["AAA", "BBB", "CCC"]
    assert by["AAA"].data == str((tmp_path / "bars" / "AAA.csv").resolve()) and by["AAA"].name == "{symbol}_lgbm"
    assert by["CCC"].data == str((tmp_path / "other" / "CCC.csv").resolve())  # relative to the universe file
    assert by["CCC"].name == "ccc_special"
    assert by["CCC"].overrides == {"model.kind": "ridge", "target.horizon": 3}


def test_csv_universe_reads_override_columns_as_yaml_scalars(tmp_path: Path) -> None:
    (tmp_path / "u.csv").write_text("symbol,data,name,target.horizon,model.kind\n"
                                    "AAA,a.csv,,3,\nBBB,/abs/b.csv,b_model,,xgboost\n")
    entries, config = read_universe(tmp_path / "u.csv", template="{symbol}_x")
    assert config is None
    assert entries[0] == Entry("AAA", str((tmp_path / "a.csv").resolve()), "{symbol}_x", {"target.horizon": 3})
    assert entries[1] == Entry("BBB", "/abs/b.csv", "b_model", {"model.kind": "xgboost"})


def test_folder_universe(tmp_path: Path) -> None:
    _bars(tmp_path, "X1", "Y2")
    entries, _ = read_universe(tmp_path)
    assert [(e.symbol, e.name) for e in entries] == [("X1", "{symbol}_{model}"), ("Y2", "{symbol}_{model}")]


@pytest.mark.parametrize(("text", "needle"), [
    ("symbols:\n  - {symbol: A, data: a.csv}\n  - {symbol: A, data: b.csv}\n", "listed twice"),
    ("symbols:\n  - {symbol: A, data: a.csv, colour: red}\n", "unknown key(s) colour"),
    ("symbols:\n  - {symbol: A}\n", "`data` must be"),
    ("symbols: []\n", "lists no symbol"),
    ("wat: 1\n", "unknown key(s) wat"),
    ("a: &x 1\nb: *x\n", "anchors and aliases"),
])
def test_bad_universe_files_name_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "u.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        read_universe(tmp_path / "u.yaml")
    assert needle in str(info.value)


def test_entry_config_applies_overrides_and_pins_data_and_symbol() -> None:
    base = TrainConfig.model_validate({"model": {"kind": "lightgbm", "params": {"num_leaves": 7}}})
    cfg = entry_config(base, Entry("AAA", "/d/AAA.csv", "t", {"target.horizon": 3, "model.kind": "ridge"}))
    assert (cfg.target.horizon, cfg.model.kind, cfg.model.params) == (3, "ridge", {})  # lightgbm params dropped
    assert (cfg.data.path, cfg.data.symbol) == ("/d/AAA.csv", "AAA")
    with pytest.raises(ConfigError, match="not a train.yaml setting"):
        entry_config(base, Entry("AAA", "/d", "t", {"target.horizn": 3}))
    with pytest.raises(ConfigError, match="target.horizon"):
        entry_config(base, Entry("AAA", "/d", "t", {"target.horizon": 0}))


def test_names_must_differ(tmp_path: Path) -> None:
    entries = [Entry("AAA", "/d/a.csv", "same"), Entry("BBB", "/d/b.csv", "same")]
    with pytest.raises(ConfigError, match="both map to model name same"):
        build_tasks(entries, TrainConfig(), TradingConfig(), _NoRegistry())


class _NoRegistry:
    def list_versions(self, name: str) -> list:
        return []


# ----------------------------------------------------------------------------- keys and exit codes


def test_task_key_is_the_sha256_of_its_four_parts() -> None:
    from aitrader import __version__

    expected = hashlib.sha256(f"m\0c\0d\0{__version__}".encode()).hexdigest()
    assert task_key("m", "c", "d") == expected
    assert len({task_key("m", "c", "d"), task_key("n", "c", "d"), task_key("m", "x", "d"),
                task_key("m", "c", "y")}) == 4


def test_config_hash_ignores_only_the_out_template() -> None:
    a = TrainConfig().model_dump(mode="json")
    b = {**a, "out": "elsewhere/{symbol}"}
    c = {**a, "target": {**a["target"], "horizon": 7}}
    trading = TradingConfig().model_dump(mode="json")
    assert config_hash(a, trading) == config_hash(b, trading)
    assert config_hash(a, trading) != config_hash(c, trading)
    cheaper = TradingConfig.model_validate({"ml_trading": {"execution": {"commission_bps": 0.1}}})
    assert config_hash(a, trading) != config_hash(a, cheaper.model_dump(mode="json"))


@pytest.mark.parametrize(("outcomes", "code"), [
    (["promoted", "registered", "unchanged", "skipped"], 0),
    (["promoted", "rejected"], 3),
    (["insufficient", "registered"], 3),
    (["rejected", "failed", "promoted"], 1),
    ([], 0),
])
def test_exit_code_rule(outcomes: list[str], code: int) -> None:
    assert exit_code([{"outcome": o} for o in outcomes]) == code


def test_executor_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="--executor 'spark'"):
        make_executor("spark")
    with pytest.raises(ConfigError, match="--jobs must be >= 1"):
        make_executor("process", jobs=0)
    with pytest.raises(ConfigError, match="--scheduler applies only"):
        make_executor("process", scheduler="tcp://127.0.0.1:8786")


# ----------------------------------------------------------------------------- the process pool


def _crash_once(marker: str) -> int:
    """Dies by SIGKILL the first time it runs for ``marker``; returns the pid the second time."""
    path = Path(marker)
    if not path.exists():
        path.write_text("crashed")
        os.kill(os.getpid(), signal.SIGKILL)
    assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["AITRADER_FIT_THREADS"] == "1"
    return os.getpid()


def _always_crash(marker: str) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


def _fail(marker: str) -> int:
    raise ValueError(f"bad {Path(marker).name}")


def test_process_pool_retries_a_killed_task_once(tmp_path: Path) -> None:
    # One worker: each task's crash breaks a pool in which only it had started, so each is retried once.
    items = [str(tmp_path / f"m{i}") for i in range(3)]
    out = {i: (res, err) for i, res, err in ProcessExecutor(jobs=1).run(_crash_once, items)}
    assert sorted(out) == [0, 1, 2]
    assert all(err is None and isinstance(res, int) for res, err in out.values())
    assert len({res for res, _ in out.values()}) == 3  # every retry ran in a fresh pool's worker


def test_process_pool_reports_a_task_that_keeps_crashing_and_a_task_error(tmp_path: Path) -> None:
    out = {i: err for i, _, err in ProcessExecutor(jobs=1).run(_always_crash, [str(tmp_path / "x")])}
    assert isinstance(out[0], WorkerCrashed) and "2 times" in str(out[0])
    out = {i: err for i, _, err in ProcessExecutor(jobs=1).run(_fail, [str(tmp_path / "y")])}
    assert isinstance(out[0], ValueError) and str(out[0]) == "bad y"


def test_training_folders_of_dead_workers_are_swept(tmp_path: Path) -> None:
    import subprocess
    import sys

    from aitrader.monitoring.universe import WORK_PREFIX, sweep_dead_workers_dirs

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()  # a pid that has just ended
    dead = tmp_path / f"{WORK_PREFIX}{gone}-abc"
    (dead / "artifact").mkdir(parents=True)
    (dead / "artifact" / "model.txt").write_text("half-written")
    alive = tmp_path / f"{WORK_PREFIX}{os.getpid()}-def"
    alive.mkdir()
    untagged = tmp_path / f"{WORK_PREFIX}xyz123"  # the old name: whose it is cannot be told
    untagged.mkdir()
    other = tmp_path / "something-else-1-2"
    other.mkdir()
    assert sweep_dead_workers_dirs(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, untagged.name, other.name])
