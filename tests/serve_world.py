"""A real ``aitrader serve`` subprocess for the tests: started on a random 127.0.0.1 port, stopped by SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0


class ServeProcess:
    """``python -m aitrader serve ARGS --bind tcp://127.0.0.1:PORT`` (PORT ``*``: the OS picks one)."""

    def __init__(self, args: list[str], cwd: Path, port: int | str = "*") -> None:
        self.args = args
        self.cwd = cwd
        self.port = port
        self.proc: subprocess.Popen[str] | None = None
        self.endpoint = ""
        self.log = cwd / f"serve-{os.getpid()}-{time.monotonic_ns()}.err"

    def start(self) -> ServeProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("AITRADER_REGISTRY", None)
        self._err = self.log.open("w")
        self.proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "aitrader", "serve", *self.args, "--bind", f"tcp://127.0.0.1:{self.port}"],
            cwd=self.cwd, env=env, stdout=subprocess.DEVNULL, stderr=self._err, text=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.log.read_text()
            if m := re.search(r"serving .* on (tcp://127\.0\.0\.1:(\d+))", text):
                self.endpoint, self.port = m.group(1), int(m.group(2))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"aitrader serve exited with {self.proc.returncode}: {text}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"aitrader serve did not start within {START_TIMEOUT_S} s: {self.log.read_text()}")

    def stop(self) -> int:
        """SIGTERM; the exit code (0 for a graceful stop)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        finally:
            self._err.close()
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if hasattr(self, "_err"):
            self._err.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr(self) -> str:
        return self.log.read_text()
