"""Documented means tested: every command has help text and a section in docs/cli.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

from aitrader.cli.main import app

REPO = Path(__file__).resolve().parents[1]


def _commands() -> list[tuple[str, object]]:
    group = typer.main.get_command(app)
    found: list[tuple[str, object]] = []
    for name, cmd in sorted(group.commands.items()):
        subs = getattr(cmd, "commands", None)
        if subs:
            found.extend((f"{name} {sub}", subcmd) for sub, subcmd in sorted(subs.items()))
        else:
            found.append((name, cmd))
    return found


COMMANDS = _commands()


def test_the_lifecycle_is_all_there() -> None:
    names = {name for name, _ in COMMANDS}
    expected = {"train", "register", "list", "deploy", "verify", "history", "paper-trade", "status",
                "export", "monitor", "retrain", "data check", "data sample", "features list", "features build"}
    assert expected <= names, f"missing commands: {sorted(expected - names)}"


@pytest.mark.parametrize(("name", "cmd"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_command_has_help_text(name: str, cmd) -> None:
    assert (cmd.help or "").strip(), f"`aitrader {name}` has no help text"
    undocumented = [p.name for p in cmd.params if p.name != "help" and not getattr(p, "help", None)]
    assert not undocumented, f"`aitrader {name}`: options/arguments without help text: {undocumented}"


@pytest.mark.parametrize(("name", "cmd"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_command_is_in_cli_reference(name: str, cmd) -> None:
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert re.search(rf"^#+ .*`aitrader {re.escape(name)}\b", text, re.MULTILINE), (
        f"`aitrader {name}` has no heading in docs/cli.md"
    )


def test_packaged_defaults_match_config_folder() -> None:
    for path in sorted((REPO / "config").glob("*.yaml")):
        packaged = REPO / "aitrader" / "defaults" / path.name
        assert packaged.is_file(), f"{path.name} is not shipped in aitrader/defaults/"
        assert packaged.read_bytes() == path.read_bytes(), f"aitrader/defaults/{path.name} differs from config/"


def test_readme_quick_start_has_two_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quick start.*?```(?:bash|sh)?\n(.*?)```", readme, re.DOTALL)
    assert block, "README has no quick start code block"
    commands = [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, commands
