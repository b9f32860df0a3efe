"""Layering (issue 10): the library never reaches up into the CLI, and the trainer and the
manifest builder do not import each other. Read from the source with ``ast`` (no imports run)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "aitrader"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any level (TYPE_CHECKING blocks and functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_library_module_imports_the_cli():
    offenders = sorted(
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if "cli" not in path.relative_to(PACKAGE).parts
        and path.relative_to(PACKAGE) != Path("__main__.py")  # `python -m aitrader` is the CLI's entry point
        and any(m == "aitrader.cli" or m.startswith("aitrader.cli.") for m in imported_modules(path))
    )
    assert offenders == []


def test_the_manifest_builder_does_not_import_the_trainer():
    artifact = imported_modules(PACKAGE / "training" / "artifact.py")
    assert not any(m.startswith("aitrader.training.trainer") for m in artifact)
    assert "aitrader.training.artifact" in imported_modules(PACKAGE / "training" / "trainer.py")


def test_the_json_helper_is_shared_from_below():
    assert "aitrader._json" in imported_modules(PACKAGE / "monitoring" / "check.py")
    assert "aitrader._json" in imported_modules(PACKAGE / "cli" / "_output.py")
    assert not any(m.startswith("aitrader.") and m != "aitrader._util" and not m.startswith("aitrader._util.")
                   for m in imported_modules(PACKAGE / "_json.py"))


def test_the_monitor_state_is_still_strict_json(tmp_path):
    import json

    from aitrader.monitoring.check import save_state

    path = save_state({"run_id": "r", "model": "m", "health": float("nan"), "alerts": []}, tmp_path / "s.json")
    state = json.loads(path.read_text())
    assert state["health"] is None and state["run_id"] == "r"
