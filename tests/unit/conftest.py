"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aitrader.registry import Registry, clear_cache


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    """An empty registry in a temp folder, with the per-process model cache cleared around it."""
    clear_cache()
    yield Registry(tmp_path / "models")
    clear_cache()
