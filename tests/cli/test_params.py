"""aitrader/cli/_params.py: typer's coercion deferred, and skipped for a ``str`` value of a ``str`` parameter,
gives each command the very values (and errors) typer's own coercion gives. The oracle is typer itself: the
same app and arguments run with typer's original ``get_runtime_param`` restored."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import _TyperParameter
from typer.testing import CliRunner

import aitrader.cli.main  # noqa: F401  # installs the hook
from aitrader.cli._params import lazy_param_coercion


class Kind(enum.Enum):
    lgbm = "lightgbm"
    xgb = "xgboost"


def _app(seen: list[Any]) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def cmd(
        name: str = typer.Argument(...),
        opt: str | None = typer.Option(None, "--opt"),
        default: str = typer.Option("runs", "--default"),
        count: int = typer.Option(1, "--count", min=1),
        ratio: float = typer.Option(0.5, "--ratio"),
        items: list[str] = typer.Option(None, "--item"),
        flag: bool = typer.Option(False, "--flag"),
        kind: Kind = typer.Option(Kind.lgbm, "--kind"),
        path: Path | None = typer.Option(None, "--path"),
        upper: str | None = typer.Option(None, "--upper", parser=str.upper),
    ) -> None:
        seen.append({k: (type(v).__name__, v) for k, v in locals().items() if k != "seen"})

    @app.command()
    def other() -> None:  # a second command: typer then dispatches by name
        seen.append("other")

    return app


ARGVS = [
    ["cmd", "s1"],
    ["cmd", "s1", "--opt", "", "--default", "x y", "--count", "3", "--ratio", "1e3", "--item", "a", "--item", "b",
     "--flag", "--kind", "xgboost", "--path", "a/b", "--upper", "abc"],
    ["cmd", "caf\u00e9\udcff", "--opt", "a\x00b"],
    ["cmd", "s1", "--count", "0"],
    ["cmd", "s1", "--count", "abc"],
    ["cmd", "s1", "--ratio", "x"],
    ["cmd", "s1", "--kind", "lightgbmm"],
    ["cmd"],
]


def _invoke(argv: list[str]) -> tuple[int, str, list[Any]]:
    seen: list[Any] = []
    result = CliRunner().invoke(_app(seen), argv)
    return result.exit_code, result.output, seen


@pytest.mark.parametrize("argv", ARGVS)
def test_values_and_errors_are_typers_own(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    hooked = _invoke(argv)
    monkeypatch.setattr(_TyperParameter, "get_runtime_param", _TyperParameter.get_runtime_param.__wrapped__)
    assert hooked == _invoke(argv)


def test_the_hook_is_installed_once_and_builds_no_adapter_for_str_or_absent_values() -> None:
    assert lazy_param_coercion() is True  # already installed: the same function stays
    built: list[str] = []
    import typer._coercion as coercion

    original = coercion.build_runtime_param

    def counted(descriptor: Any) -> Any:
        built.append(getattr(descriptor.annotation, "__name__", str(descriptor.annotation)))
        return original(descriptor)

    coercion.build_runtime_param = counted
    try:
        code, _, seen = _invoke(["cmd", "s1", "--opt", "x", "--count", "2"])
    finally:
        coercion.build_runtime_param = original
    assert code == 0 and seen[0]["opt"] == ("str", "x") and seen[0]["count"] == ("int", 2)
    # --count's value and the non-str defaults (0.5, Kind.lgbm) need typer's adapters; the strings given or
    # defaulted (name, --opt, --default) and the absent options (--item, --path, --upper) build none
    assert built == ["int", "float", "Kind"]
