"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AITRADER_SHARED_DATA", REPO.parent / "shared" / "data"))
# Deploys and paper-trade runs of the suite use the ONNX runner unless a test asks for another
# backend: compiling every test model (~0.5-1 s each) would add minutes. tests/unit/test_compiled.py
# covers the default (auto) with its own monkeypatched environment.
os.environ["AITRADER_BACKEND"] = "onnx"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real bars); the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test with the working directory in a fresh temporary folder (no ./config, ./models)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AITRADER_REGISTRY", raising=False)
    return tmp_path
