"""The index against careless and hostile changes (issue 10): reserved names, a lost, replaced,
truncated, foreign or damaged ``registry.db``, ``aitrader registry rebuild``, read-only registries.

Every case goes through the real CLI (Typer's CliRunner): one ``error:`` line, exit 1, no
traceback, and nothing on disk changed by the refused command.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.errors import RegistryError
from aitrader.registry import Registry, clear_cache
from aitrader.registry import index as index_mod
from tests.unit.test_registry_support import flip_byte, make_artifact, make_real_artifact

runner = CliRunner()


@pytest.fixture(scope="module")
def arts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from aitrader.features import FeaturePipeline

    contract = FeaturePipeline(["ret_1", "ret_5"]).contract()
    base = tmp_path_factory.mktemp("index_arts")
    return {
        "a": make_real_artifact(base / "a", contract=contract, seed=1),
        "b": make_real_artifact(base / "b", contract=contract, seed=2),
        "c": make_artifact(base / "c", payload=b"third\n"),
    }


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def run(root: Path, *args: str):
    return runner.invoke(app, [*args, "--registry", str(root)])


def one_line_error(result, *patterns: str) -> str:
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for pattern in patterns:
        assert pattern in result.stderr, result.stderr
    return str(result.stderr)


def tree(root: Path) -> list[str]:
    """Every path under root except the index's own files (what a refused command must not change)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.name.startswith("registry.db"))


# ---------------------------------------------------------------------- 2. names vs the registry's files


@pytest.mark.parametrize(
    "name",
    ["registry.db", "registry.db-journal", "registry.db-wal", "registry.db-shm", "registry.db.replaced-1",
     "deploy_log.jsonl", "deploy_log", "models.lock", "x.db", "x-wal", "x-shm", "x-journal", "x.jsonl"],
)
def test_a_name_can_never_collide_with_the_registrys_files(tmp_path: Path, arts, name: str) -> None:
    root = tmp_path / "models"
    assert run(root, "register", str(arts["c"]), "--name", "aapl").exit_code == 0
    before = tree(root)
    one_line_error(run(root, "register", str(arts["c"]), "--name", name), "reserved", name)
    assert tree(root) == before  # nothing created beside the index
    assert run(root, "list").exit_code == 0 and run(root, "verify").exit_code == 0


# ---------------------------------------------------------------------- 3. lost / replaced / truncated / foreign


def _break(root: Path, how: str) -> None:
    db = root / "registry.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.unlink()
    if how == "directory":
        db.mkdir()
    elif how == "zero_bytes":
        db.write_bytes(b"")
    elif how == "foreign_sqlite":
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.commit()
        conn.close()
    elif how == "not_sqlite":
        db.write_bytes(b"this is not a database\n" * 100)


@pytest.mark.parametrize("how", ["deleted", "directory", "zero_bytes", "foreign_sqlite", "not_sqlite"])
def test_a_lost_index_is_never_taken_for_an_empty_registry(tmp_path: Path, arts, how: str) -> None:
    root = tmp_path / "models"
    assert run(root, "register", str(arts["c"]), "--name", "aapl").exit_code == 0
    v1 = (root / "aapl" / "v1" / "model.txt").read_bytes()
    Registry(root).close()
    _break(root, how)
    before = tree(root)
    one_line_error(run(root, "verify"), "aapl/v1", "aitrader registry rebuild")  # not "0 version(s)", exit 0
    one_line_error(run(root, "list"), "aitrader registry rebuild")  # not silently empty
    one_line_error(run(root, "history", "aapl"), "aitrader registry rebuild")
    one_line_error(run(root, "register", str(arts["a"]), "--name", "aapl"), "aitrader registry rebuild")
    one_line_error(run(root, "deploy", "--model-id", "aapl"), "aitrader registry rebuild")
    assert tree(root) == before  # no orphaned v1, no reused number, nothing written
    rebuilt = run(root, "registry", "rebuild", "--json")
    assert rebuilt.exit_code == 0, rebuilt.output
    doc = json.loads(rebuilt.stdout)
    assert doc["versions"] == ["aapl:v1"] and doc["skipped"] == []
    assert run(root, "verify").exit_code == 0
    listed = json.loads(run(root, "list", "--json").stdout)["versions"]
    assert [v["model_id"] for v in listed] == ["aapl:v1"]
    assert (root / "aapl" / "v1" / "model.txt").read_bytes() == v1
    new = json.loads(run(root, "register", str(arts["a"]), "--name", "aapl", "--json").stdout)
    assert new["version"] == 2  # never reuses v1


def test_rebuild_restores_versions_aliases_tags_trust_and_history(tmp_path: Path, arts) -> None:
    root = tmp_path / "models"
    reg = Registry(root)
    reg.register(arts["a"], "aapl", tags={"source": "demo"})
    reg.register(arts["b"], "aapl")
    reg.register(arts["c"], "msft", trust_pickle=True)
    reg.register(arts["b"], "aapl", tags={"note": "re-tagged"})  # an update of v2
    reg.deploy("aapl:v1", reason="first")
    reg.deploy("aapl:v2", alias="staging")
    reg.deploy("aapl:v2", reason="second")
    reg.rollback("aapl", reason="bad live hit rate")
    reg.record_decision("aapl:v2", decision="rejected", reason="worse", details={"ic": 0.01})
    before_list = [i.to_dict() for i in reg.list_versions()]
    before_hist = reg.history("aapl").to_dict()
    reg.close()
    _break(root, "deleted")
    result = run(root, "registry", "rebuild")
    assert result.exit_code == 0, result.output
    assert "alias aapl@production -> v1" in result.stdout and "alias aapl@staging -> v2" in result.stdout
    reg = Registry(root)
    assert [i.to_dict() for i in reg.list_versions()] == before_list  # tags, trust, created_at, aliases...
    assert reg.history("aapl").to_dict() == before_hist  # every row, in order, with its id
    assert reg.verify().ok
    assert reg.rollback("aapl").to_version == 2  # the restored history still drives rollback


def test_rebuild_without_the_journal_says_what_is_lost(tmp_path: Path, arts) -> None:
    root = tmp_path / "models"
    reg = Registry(root)
    reg.register(arts["a"], "aapl")
    reg.deploy("aapl")
    reg.close()
    _break(root, "zero_bytes")
    (root / "deploy_log.jsonl").unlink()
    result = run(root, "registry", "rebuild")
    assert result.exit_code == 0, result.output
    assert "aliases and the deploy history could not be recovered" in result.stderr
    reg = Registry(root)
    assert [i.model_id for i in reg.list_versions()] == ["aapl:v1"]
    assert reg.alias_target("aapl", "production") is None
    replaced = list(root.glob("registry.db.replaced-*"))
    assert len(replaced) == 1 and replaced[0].stat().st_size == 0  # the old file is kept, not deleted


def test_rebuild_leaves_out_a_folder_that_does_not_match_its_checksums(tmp_path: Path, arts) -> None:
    root = tmp_path / "models"
    reg = Registry(root)
    reg.register(arts["c"], "aapl")
    reg.register(arts["a"], "aapl")
    reg.close()
    flip_byte(root / "aapl" / "v1" / "model.txt")
    doc = json.loads(run(root, "registry", "rebuild", "--json").stdout)
    assert doc["versions"] == ["aapl:v2"]
    assert [s["path"] for s in doc["skipped"]] == [str(root / "aapl" / "v1")]
    assert "model.txt" in doc["skipped"][0]["reason"]
    one_line_error(run(root, "verify"), "aapl:v1", "not in the index")  # still reported, never silently dropped


def test_an_unindexed_version_folder_is_reported_by_list_and_verify(tmp_path: Path, arts) -> None:
    root = tmp_path / "models"
    reg = Registry(root)
    reg.register(arts["c"], "aapl")
    reg.register(arts["a"], "aapl")
    reg.close()
    conn = sqlite3.connect(root / "registry.db")  # an index restored from a copy taken after v1
    conn.execute("DELETE FROM files WHERE version_id=(SELECT id FROM versions WHERE version=2)")
    conn.execute("DELETE FROM versions WHERE version=2")
    conn.commit()
    conn.close()
    listed = run(root, "list")
    assert listed.exit_code == 0 and "aapl/v2" in listed.stderr and "registry rebuild" in listed.stderr
    one_line_error(run(root, "verify"), "aapl:v2", "registry rebuild")
    assert run(root, "registry", "rebuild").exit_code == 0
    assert run(root, "verify").exit_code == 0


# ---------------------------------------------------------------------- 4. damaged content SQLite does not see


def _sql(root: Path, *statements: str) -> None:
    conn = sqlite3.connect(root / "registry.db")
    for s in statements:
        conn.execute(s)
    conn.commit()
    conn.close()


@pytest.mark.parametrize("column", ["metrics", "tags"])
def test_bad_json_in_a_versions_column_is_one_error_line(tmp_path: Path, arts, column: str) -> None:
    root = tmp_path / "models"
    Registry(root).register(arts["c"], "aapl")
    _sql(root, f"UPDATE versions SET {column}='{{not json'")
    for args in (["list"], ["verify"], ["deploy", "--model-id", "aapl"], ["history", "aapl"]):
        one_line_error(run(root, *args), str(root / "registry.db"), column, "aitrader registry rebuild")


def test_bad_json_in_the_checks_column_is_one_error_line(tmp_path: Path, arts) -> None:
    root = tmp_path / "models"
    Registry(root).register(arts["c"], "aapl")
    _sql(
        root,
        "INSERT INTO deploy_log (ts, user, host, name, alias, action, from_version, to_version, status, checks)"
        " VALUES ('2026-01-01', 'u', 'h', 'aapl', 'production', 'promote', NULL, 1, 'success', '[broken')",
    )
    one_line_error(run(root, "history", "aapl"), "checks", "aitrader registry rebuild")


def test_a_malformed_database_image_is_one_error_line(tmp_path: Path, arts) -> None:
    root = tmp_path / "models"
    reg = Registry(root)
    reg.register(arts["c"], "aapl")
    reg.close()  # the last connection checkpoints the WAL into registry.db
    db = root / "registry.db"
    assert not Path(f"{db}-wal").exists()
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for i in range(page, len(data)):  # every page but the first (the schema) becomes garbage
        data[i] = (i * 131) % 251
    db.write_bytes(bytes(data))
    for args in (["verify"], ["list"], ["deploy", "--model-id", "aapl"], ["register", str(arts["a"]), "--name", "x"]):
        one_line_error(run(root, *args), str(db), "aitrader registry rebuild")
    assert run(root, "registry", "rebuild").exit_code == 0
    assert run(root, "verify").exit_code == 0


def test_a_foreign_schema_with_the_same_table_names_is_one_error_line(tmp_path: Path, arts) -> None:
    root = tmp_path / "models"
    root.mkdir()
    conn = sqlite3.connect(root / "registry.db")
    for table in ("meta", "models", "versions", "files", "aliases", "deploy_log"):
        conn.execute(f"CREATE TABLE {table} (something TEXT)")
    conn.commit()
    conn.close()
    one_line_error(run(root, "register", str(arts["c"]), "--name", "aapl"), "aitrader registry rebuild")
    one_line_error(run(root, "list"), "aitrader registry rebuild")


# ---------------------------------------------------------------------- 5. read-only registry


def test_read_commands_work_on_a_read_only_registry(tmp_path: Path, arts, monkeypatch) -> None:
    """Tests run as root, who ignores permissions: the read-only mount is emulated by making
    ``aitrader.registry.index.writable`` (the one place the registry asks) answer False, and the
    root is also chmod 0555 for a non-root run. Asserts no file is created (no -shm, no -wal)."""
    root = tmp_path / "models"
    reg = Registry(root)
    reg.register(arts["a"], "aapl")
    reg.deploy("aapl", reason="live")
    reg.close()
    monkeypatch.setattr(index_mod, "writable", lambda path: False)
    os.chmod(root, 0o555)
    try:
        before = sorted(p.name for p in root.iterdir())
        assert run(root, "list").exit_code == 0
        assert run(root, "verify").exit_code == 0
        hist = run(root, "history", "aapl")
        assert hist.exit_code == 0 and "reason: live" in hist.stdout
        loaded = Registry(root).load("aapl@production")  # what paper-trade and monitor do
        assert loaded.info.version == 1 and loaded.runner is not None
        assert Registry(root).catalog.reader().immutable  # opened without a lock or -shm
        assert sorted(p.name for p in root.iterdir()) == before
        one_line_error(run(root, "deploy", "--model-id", "aapl", "--alias", "staging"), "read-only")
    finally:
        os.chmod(root, 0o755)


def test_a_read_only_reader_sees_transactions_still_in_the_wal(tmp_path: Path, arts) -> None:
    root = tmp_path / "models"
    reg = Registry(root)
    reg.register(arts["c"], "aapl")
    reg.close()
    writer = sqlite3.connect(root / "registry.db", isolation_level=None)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("UPDATE versions SET tags='{\"late\": \"yes\"}'")  # committed, only in registry.db-wal
    assert (root / "registry.db-wal").stat().st_size > 0
    try:
        ro = index_mod.Index(root / "registry.db", create=False, readonly=True)
        assert not ro.immutable
        assert ro.conn.execute("SELECT tags FROM versions").fetchone()[0] == '{"late": "yes"}'
        ro.close()
    finally:
        writer.close()


def test_a_name_the_index_lost_points_to_rebuild(tmp_path: Path, arts) -> None:
    root = tmp_path / "models"
    reg = Registry(root)
    reg.register(arts["c"], "aapl")
    reg.register(arts["a"], "msft")
    reg.close()
    _sql(root, "DELETE FROM files WHERE version_id=(SELECT id FROM versions WHERE name='msft')",
         "DELETE FROM versions WHERE name='msft'", "DELETE FROM models WHERE name='msft'")
    for args in (["verify", "msft"], ["history", "msft"], ["deploy", "--model-id", "msft:v1"]):
        one_line_error(run(root, *args), "no row for msft/v1, which is on disk", "aitrader registry rebuild")
    one_line_error(run(root, "verify", "aapl:v2"), "registered: aapl (v1)")  # nothing lost: the usual answer


def test_valid_json_of_the_wrong_types_in_metrics_still_lists(tmp_path: Path, arts) -> None:
    root = tmp_path / "models"
    Registry(root).register(arts["c"], "aapl")
    _sql(root, """UPDATE versions SET metrics='{"ic": "abc", "hit_rate": [1], "sharpe": true}', kind='[red]x\x1b'""")
    result = run(root, "list")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "[red]x\\x1b" in result.stdout


def test_rebuilding_a_readable_index_without_a_journal_loses_nothing(tmp_path: Path, arts) -> None:
    """A registry from before the journal existed: rebuild reads the old index's own rows."""
    root = tmp_path / "models"
    reg = Registry(root)
    reg.register(arts["a"], "aapl", tags={"k": "v"})
    reg.register(arts["b"], "aapl")
    reg.deploy("aapl:v1")
    reg.deploy("aapl:v2")
    before = ([i.to_dict() for i in reg.list_versions()], reg.history("aapl").to_dict())
    reg.close()
    (root / "deploy_log.jsonl").unlink()
    doc = json.loads(run(root, "registry", "rebuild", "--json").stdout)
    assert doc["old_index"] and doc["notes"] == []
    reg = Registry(root)
    assert ([i.to_dict() for i in reg.list_versions()], reg.history("aapl").to_dict()) == before


def test_registry_root_of_finds_the_registry_around_a_path(tmp_path: Path, arts) -> None:
    from aitrader.registry.layout import registry_root_of

    root = tmp_path / "models"
    info = Registry(root).register(arts["c"], "aapl")
    assert registry_root_of(info.path) == root.resolve()
    assert registry_root_of(info.path / "model.txt") == root.resolve()
    assert registry_root_of(root / "aapl" / "v9" / "new") == root.resolve()  # not created yet: still inside
    assert registry_root_of(root) == root.resolve()
    assert registry_root_of(tmp_path / "artifacts" / "x") is None


def test_a_writer_that_opened_the_index_before_a_rebuild_writes_nothing_after_it(tmp_path: Path, arts) -> None:
    root = tmp_path / "models"
    stale = Registry(root)
    stale.register(arts["c"], "aapl")  # holds a connection to the index that rebuild replaces
    Registry(root).rebuild()
    with pytest.raises(RegistryError, match="was replaced"):
        stale.register(arts["a"], "aapl")
    # the set-aside index itself, not its -wal/-shm (the glob matches those too, in directory order)
    (replaced,) = [p for p in root.glob("registry.db.replaced-*") if not p.name.endswith(("-wal", "-shm"))]
    conn = sqlite3.connect(f"file:{replaced}?mode=ro", uri=True)  # with its own WAL, renamed alongside
    assert conn.execute("SELECT count(*) FROM versions").fetchone()[0] == 1  # nothing went into the old file
    conn.close()
    stale.close()
    assert Registry(root).register(arts["a"], "aapl").version == 2
