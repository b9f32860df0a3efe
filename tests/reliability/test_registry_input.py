"""Hostile input reaching the registry (issue 10): special files in a version folder, control
characters in stored text, and model ids whose version overflows SQLite's integers."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.errors import DeployCheckError, IntegrityError, RegistryError
from aitrader.registry import Registry, clear_cache, safe_text
from tests.unit.test_registry_support import make_artifact, make_real_artifact

runner = CliRunner()


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aitrader.features import FeaturePipeline

    contract = FeaturePipeline(["ret_1", "ret_5"]).contract()
    return make_real_artifact(tmp_path_factory.mktemp("input_art") / "a", contract=contract)


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def run(root: Path, *args: str):
    return runner.invoke(app, [*args, "--registry", str(root)])


def finishes(fn: Callable[[], Any], seconds: float = 30.0) -> Any:
    """Run ``fn`` in a daemon thread; fail (instead of hanging the suite) if it does not return."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn} hung (a special file was opened?)"
    if "error" in box:
        raise box["error"]
    return box.get("value")


# ---------------------------------------------------------------------- 6. FIFOs and other special files


def _replace(path: Path, kind: str) -> None:
    path.chmod(0o644)
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory"])
@pytest.mark.parametrize("victim", ["model.txt", "manifest.json", "checksums.sha256"])
def test_a_special_file_in_place_of_a_registered_file_is_a_tamper_not_a_hang(
    tmp_path: Path, art: Path, kind: str, victim: str
) -> None:
    root = tmp_path / "models"
    info = Registry(root).register(art, "m")
    _replace(info.path / victim, kind)
    report = finishes(lambda: Registry(root).verify())  # a Registry per thread: SQLite connections are per thread
    assert not report.ok
    bad = [p for p in report.mismatches if p.path.endswith(victim)]
    assert bad and bad[0].problem == "not_regular"
    with pytest.raises(IntegrityError, match=f"{victim} is not a regular file"):
        finishes(lambda: Registry(root).load("m"))  # what paper-trade and monitor call
    with pytest.raises(DeployCheckError, match="deploy check hashes failed"):
        finishes(lambda: Registry(root).deploy("m"))
    result = finishes(lambda: run(tmp_path / "models", "verify"))
    assert result.exit_code == 1 and "not_regular" in result.stdout


def test_an_extra_fifo_in_a_version_folder_is_reported_without_being_opened(tmp_path: Path) -> None:
    root = tmp_path / "models"
    info = Registry(root).register(make_artifact(tmp_path / "a"), "m")
    os.mkfifo(info.path / "extra.pipe")
    os.mkfifo(info.path / "model.txt.fifo")
    report = finishes(lambda: Registry(root).verify())
    assert sorted((Path(p.path).name, p.problem) for p in report.mismatches) == [
        ("extra.pipe", "unexpected"),
        ("model.txt.fifo", "unexpected"),
    ]


def test_rebuild_skips_a_version_folder_holding_a_fifo(tmp_path: Path, art: Path) -> None:
    root = tmp_path / "models"
    reg = Registry(root)
    info = reg.register(art, "m")
    reg.close()
    _replace(info.path / "model.txt", "fifo")
    (root / "registry.db").unlink()
    report = finishes(lambda: Registry(root).rebuild())
    assert report.versions == [] and "FIFO" in report.skipped[0]["reason"]


# ---------------------------------------------------------------------- 7. control characters in stored text


def test_safe_text_escapes_every_control_character() -> None:
    # oracle: the escapes written out by hand
    assert safe_text("plain text, ünïcode and spaces") == "plain text, ünïcode and spaces"
    assert safe_text("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert safe_text("\x1b[2J\x1b[31mred\x1b[0m") == "\\x1b[2J\\x1b[31mred\\x1b[0m"
    assert safe_text("\x00\x07\x7f\x9b") == "\\x00\\x07\\x7f\\x9b"
    assert safe_text("evil\u202egnp.exe\u200b") == "evil\\u202egnp.exe\\u200b"
    assert safe_text("line\u2028sep") == "line\\u2028sep"


FORGED = "ok\n2026-01-01 00:00:00  root@prod  promote production: v1 -> v9  success  reason: forged"
ANSI = "\x1b[2J\x1b[1A\x1b[31mcleared the screen\x1b[0m"


def test_deploy_reason_with_newlines_and_ansi_cannot_forge_history_lines(tmp_path: Path, art: Path) -> None:
    root = tmp_path / "models"
    assert run(root, "register", str(art), "--name", "m").exit_code == 0
    assert run(root, "deploy", "--model-id", "m", "--reason", FORGED).exit_code == 0
    assert run(root, "deploy", "--model-id", "m", "--rollback", "--reason", ANSI).exit_code == 1  # nothing earlier
    Registry(root).record_decision("m:v1", decision="unchanged", reason=ANSI, details={"why\n": "x\x1by"})
    out = run(root, "history", "m")
    assert out.exit_code == 0
    lines = out.stdout.splitlines()
    # one promote line, one evaluate line + its details line, the "now:" line; nothing forged
    assert len(lines) == 4, lines
    assert "\x1b" not in out.stdout and "promote production: v1 -> v9" not in lines[1]
    assert "reason: ok\\n2026-01-01 00:00:00  root@prod" in lines[0]
    assert "reason: \\x1b[2J\\x1b[1A\\x1b[31mcleared the screen\\x1b[0m" in lines[1]
    assert "why\\n=x\\x1by" in lines[2]
    stored = json.loads(run(root, "history", "m", "--json").stdout)["events"][0]["reason"]
    assert stored == FORGED  # the log keeps the text as given; only its display is escaped


# ---------------------------------------------------------------------- 8. versions beyond SQLite's integers


@pytest.mark.parametrize("model_id", ["m:v" + "9" * 20, "m:" + "1" * 30, "m:v9223372036854775808"])
def test_an_overflowing_version_is_a_clean_error(tmp_path: Path, art: Path, model_id: str) -> None:
    root = tmp_path / "models"
    assert run(root, "register", str(art), "--name", "m").exit_code == 0
    for args in (["deploy", "--model-id", model_id], ["verify", model_id]):
        result = run(root, *args)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert result.stderr.startswith("error: invalid version") and result.stderr.count("\n") == 1
    with pytest.raises(RegistryError, match="invalid version"):
        Registry(root).resolve(model_id)
    # the largest SQLite integer itself is a valid id that simply does not exist
    missing = run(root, "verify", "m:v9223372036854775807")
    assert missing.exit_code == 1 and "unknown model id" in missing.stderr
