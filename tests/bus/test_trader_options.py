"""`paper-trade --bus` refuses the replay options it cannot honour instead of dropping them silently.

No server is needed: the check runs before anything connects or writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app


@pytest.mark.parametrize("extra, named", [
    (["--data", "AAPL=x.csv"], "--data"),
    (["--book", "x.jsonl"], "--book"),
    (["--model-endpoint", "tcp://127.0.0.1:5555"], "--model-endpoint"),
    (["--speed", "2", "--workers", "2"], "--speed, --workers"),
    (["--backend", "onnx", "--from", "2020-01-01"], "--from, --backend"),
])
def test_bus_trader_refuses_options_it_would_ignore(tmp_path: Path, extra: list[str], named: str) -> None:
    result = CliRunner().invoke(app, ["paper-trade", "--bus", "redis://127.0.0.1:1/0", "--runs-dir",
                                      str(tmp_path / "runs"), "--run-id", "r", *extra])
    assert result.exit_code == 1, result.output
    err = result.stderr
    assert err.startswith("error: paper-trade --bus takes its bars and predictions from the bus, so "
                          f"{named} would be ignored;") and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()  # nothing written
