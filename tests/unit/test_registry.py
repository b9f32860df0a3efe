"""Registry store: register, names, resolve, list, verify, load (with a recording fake runner)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from aitrader.errors import IntegrityError, ModelNotFoundError, RegistryError, TrustError
from aitrader.registry import Registry, clear_cache
from aitrader.registry.hashing import CHECKSUM_FILE
from tests.unit.test_registry_support import flip_byte, make_artifact


class FakeRunner:
    """Records every construction: the tests prove nothing was built after a failed check."""

    calls: list[tuple[Path, bool]] = []
    backend = "lightgbm"

    def __init__(self, predictions: list[float]) -> None:
        self.predictions = predictions

    @classmethod
    def from_artifact(cls, directory, manifest, *, prefer="onnx", trust_pickle=False):
        cls.calls.append((Path(directory), trust_pickle))
        return cls(manifest["sample"]["predictions"])

    def predict_batch(self, X):
        return list(self.predictions)


@pytest.fixture
def fake_runner(monkeypatch: pytest.MonkeyPatch) -> type[FakeRunner]:
    import aitrader.models.runner as runner_mod

    FakeRunner.calls = []
    clear_cache()
    monkeypatch.setattr(runner_mod, "ModelRunner", FakeRunner)
    yield FakeRunner
    clear_cache()


def test_register_copies_hashes_and_indexes(reg: Registry, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "art", extra={"sub/notes.txt": b"hello"})
    info = reg.register(art, "aapl", tags={"source": "test"})
    assert (info.name, info.version, info.model_id) == ("aapl", 1, "aapl:v1")
    assert info.path == reg.root / "aapl" / "v1"
    assert (info.kind, info.task, info.trusted, info.reused) == ("lightgbm", "regression", False, False)
    assert info.metrics == {"ic": 0.05, "hit_rate": 0.53, "sharpe": 1.1}
    assert info.tags == {"source": "test"}
    for rel in ("manifest.json", "model.txt", "sub/notes.txt"):
        assert (info.path / rel).read_bytes() == (art / rel).read_bytes()
    text = (info.path / CHECKSUM_FILE).read_text()
    assert [line.split("  ")[1] for line in text.splitlines()] == ["manifest.json", "model.txt", "sub/notes.txt"]
    # the version digest is the SHA256 of the checksum file, and sha256sum -c accepts the file
    assert info.digest == hashlib.sha256(text.encode()).hexdigest()
    out = subprocess.run(["sha256sum", "-c", CHECKSUM_FILE], cwd=info.path, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not any(p.name.startswith(".tmp-") for p in (reg.root / "aapl").iterdir())
    assert info.to_dict()["path"] == str(info.path)


def test_same_digest_returns_existing_version(reg: Registry, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "art")
    first = reg.register(art, "aapl")
    again = reg.register(art, "aapl", tags={"note": "x"})
    assert again.reused and again.version == 1 and again.digest == first.digest
    assert again.tags == {"note": "x"}
    assert sorted(p.name for p in (reg.root / "aapl").iterdir()) == ["v1"]
    changed = reg.register(make_artifact(tmp_path / "art2", payload=b"tree model v2\n"), "aapl")
    assert (changed.version, changed.reused) == (2, False)
    other = reg.register(art, "msft")  # the same digest under another name is its own version
    assert other.model_id == "msft:v1" and not other.reused


def test_a_version_folder_can_be_registered_elsewhere(reg: Registry, tmp_path: Path) -> None:
    """A folder copied out of a registry keeps its checksum list; it is checked, then rewritten."""
    info = reg.register(make_artifact(tmp_path / "a1"), "aapl")
    other = Registry(tmp_path / "other").register(info.path, "aapl_copy")
    assert other.digest == info.digest and Registry(tmp_path / "other").verify().ok


def test_reregister_with_trust_pickle_records_trust(reg: Registry, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "art", pickle_based=True)
    assert reg.register(art, "rf").trusted is False
    again = reg.register(art, "rf", trust_pickle=True)
    assert again.trusted and again.version == 1
    assert reg.resolve("rf:v1").trusted


@pytest.mark.parametrize("name", ["", "AAPL", "../evil", "a/b", "/abs", "..", ".hidden", "a..b", "x" * 65, "a b"])
def test_bad_names_are_refused_before_anything_is_written(reg: Registry, tmp_path: Path, name: str) -> None:
    art = make_artifact(tmp_path / "art")
    with pytest.raises(RegistryError, match="invalid model name"):
        reg.register(art, name)
    assert not reg.root.exists()


def test_bad_artifacts_are_refused_and_nothing_written(reg: Registry, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="does not exist"):
        reg.register(tmp_path / "nope", "aapl")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RegistryError, match=r"no manifest\.json in .*aitrader train"):
        reg.register(empty, "aapl")
    broken = make_artifact(tmp_path / "broken")
    (broken / "model.txt").unlink()
    with pytest.raises(RegistryError, match="names 'model.txt' but .* does not exist"):
        reg.register(broken, "aapl")
    bad_json = make_artifact(tmp_path / "badjson")
    (bad_json / "manifest.json").write_text("{not json")
    with pytest.raises(RegistryError, match="not readable JSON"):
        reg.register(bad_json, "aapl")
    incomplete = make_artifact(tmp_path / "incomplete")
    manifest = json.loads((incomplete / "manifest.json").read_text())
    del manifest["sample"]
    (incomplete / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RegistryError, match="missing key 'sample'"):
        reg.register(incomplete, "aapl")
    stale = make_artifact(tmp_path / "stale", extra={CHECKSUM_FILE: f"{'0' * 64}  model.txt\n".encode()})
    with pytest.raises(RegistryError, match=r"checksums\.sha256 does not match the artifact's files"):
        reg.register(stale, "aapl")
    linked = make_artifact(tmp_path / "linked")
    (linked / "link.txt").symlink_to(tmp_path / "art_outside")
    with pytest.raises(RegistryError, match="symbolic links"):
        reg.register(linked, "aapl")
    assert not reg.root.exists()


def test_unwritable_root_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    reg = Registry(blocker / "models")
    with pytest.raises(RegistryError, match=r"registry root .*file/models is not writable.*--registry PATH"):
        reg.register(make_artifact(tmp_path / "art"), "aapl")


def test_default_root_env_and_cwd(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Registry().root == Path("models")
    monkeypatch.setenv("AITRADER_REGISTRY", str(in_tmp / "elsewhere"))
    assert Registry().root == in_tmp / "elsewhere"
    assert Registry(in_tmp / "explicit").root == in_tmp / "explicit"


def test_resolve_forms_and_unknown_ids(reg: Registry, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="is empty; register an artifact first"):
        reg.resolve("aapl")
    reg.register(make_artifact(tmp_path / "a1"), "aapl")
    reg.register(make_artifact(tmp_path / "a2", payload=b"2"), "aapl")
    reg.register(make_artifact(tmp_path / "m1"), "msft")
    assert reg.resolve("aapl").version == 2
    assert reg.resolve("aapl:v1").version == 1
    assert reg.resolve("aapl:1").version == 1
    with pytest.raises(ModelNotFoundError, match=r"'aapl:v9'.*registered: aapl \(v1..v2\), msft \(v1\)"):
        reg.resolve("aapl:v9")
    with pytest.raises(ModelNotFoundError, match="'ibm'"):
        reg.resolve("ibm")
    with pytest.raises(ModelNotFoundError, match="no alias 'production' on model 'aapl'.*aitrader deploy"):
        reg.resolve("aapl@production")
    with pytest.raises(RegistryError, match="invalid version"):
        reg.resolve("aapl:vx")
    assert reg.alias_target("aapl", "production") is None


def test_list_versions(reg: Registry, tmp_path: Path) -> None:
    assert reg.list_versions() == []
    reg.register(make_artifact(tmp_path / "m1"), "msft")
    reg.register(make_artifact(tmp_path / "a1"), "aapl")
    reg.register(make_artifact(tmp_path / "a2", payload=b"2"), "aapl")
    assert [i.model_id for i in reg.list_versions()] == ["aapl:v1", "aapl:v2", "msft:v1"]
    assert [i.model_id for i in reg.list_versions("aapl")] == ["aapl:v1", "aapl:v2"]
    with pytest.raises(ModelNotFoundError):
        reg.list_versions("ibm")


def test_verify_finds_each_kind_of_problem(reg: Registry, tmp_path: Path) -> None:
    info = reg.register(make_artifact(tmp_path / "a1"), "aapl")
    reg.register(make_artifact(tmp_path / "a2", payload=b"other"), "aapl")
    report = reg.verify()
    assert report.ok and len(report.versions) == 2 and report.to_dict()["files_checked"] == 6
    flip_byte(info.path / "model.txt")
    (info.path / "extra.bin").write_bytes(b"x")
    report = reg.verify("aapl:v1")
    kinds = {(Path(p.path).name, p.problem) for p in report.mismatches}
    assert kinds == {("model.txt", "changed"), ("extra.bin", "unexpected")}
    changed = next(p for p in report.mismatches if p.problem == "changed")
    assert changed.expected != changed.found and len(changed.found or "") == 64
    (info.path / "manifest.json").unlink()
    assert ("manifest.json", "missing") in {(Path(p.path).name, p.problem) for p in reg.verify("aapl").mismatches}
    assert reg.verify("aapl:v2").ok


def test_verify_catches_a_rewritten_checksum_file(reg: Registry, tmp_path: Path) -> None:
    """Rewriting both a file and checksums.sha256 consistently is still caught (the index holds the hashes)."""
    info = reg.register(make_artifact(tmp_path / "a1"), "aapl")
    flip_byte(info.path / "model.txt")
    new = hashlib.sha256((info.path / "model.txt").read_bytes()).hexdigest()
    lines = [
        f"{new}  model.txt" if line.endswith("  model.txt") else line
        for line in (info.path / CHECKSUM_FILE).read_text().splitlines()
    ]
    os.chmod(info.path / CHECKSUM_FILE, 0o644)
    (info.path / CHECKSUM_FILE).write_text("\n".join(lines) + "\n")
    problems = {(Path(p.path).name, p.problem) for p in reg.verify().mismatches}
    assert problems == {("model.txt", "changed"), (CHECKSUM_FILE, "checksum_file")}


def test_load_verifies_then_builds_and_caches(reg: Registry, tmp_path: Path, fake_runner) -> None:
    info = reg.register(make_artifact(tmp_path / "a1"), "aapl")
    loaded = reg.load("aapl")
    assert loaded.info.model_id == "aapl:v1" and loaded.path == info.path
    assert loaded.manifest["model"]["kind"] == "lightgbm"
    assert fake_runner.calls == [(info.path, False)]
    again = reg.load("aapl:v1")
    assert again.runner is loaded.runner and len(fake_runner.calls) == 1  # cached by digest


def test_load_refuses_a_tampered_file_before_building(reg: Registry, tmp_path: Path, fake_runner) -> None:
    info = reg.register(make_artifact(tmp_path / "a1"), "aapl")
    reg.load("aapl")  # cached now: a later tamper must still be caught
    flip_byte(info.path / "model.txt")
    with pytest.raises(IntegrityError) as err:
        reg.load("aapl")
    msg = str(err.value)
    assert "sha256 mismatch in" in msg and "model.txt" in msg and "registered" in msg and "found" in msg
    assert "Re-register" in msg
    assert len(fake_runner.calls) == 1


def test_pickle_needs_trust(reg: Registry, tmp_path: Path, fake_runner) -> None:
    art = make_artifact(tmp_path / "rf", kind="random_forest", pickle_based=True)
    reg.register(art, "rf")
    with pytest.raises(TrustError, match="registered without --trust-pickle.*--trust-pickle"):
        reg.load("rf")
    assert fake_runner.calls == []
    reg.register(art, "rf", trust_pickle=True)
    reg.load("rf")
    assert fake_runner.calls == [(reg.root / "rf" / "v1", True)]


def test_deploy_log_is_append_only(reg: Registry, tmp_path: Path) -> None:
    reg.register(make_artifact(tmp_path / "a1"), "aapl")
    conn = sqlite3.connect(reg.db_path)
    conn.execute(
        "INSERT INTO deploy_log (ts, user, host, name, alias, action, from_version, to_version, status, checks)"
        " VALUES ('t', 'u', 'h', 'aapl', 'production', 'promote', NULL, 1, 'success', '[]')"
    )
    conn.commit()
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE deploy_log SET to_version=2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM deploy_log")
    conn.close()


def test_orphan_folder_from_a_crash_is_ignored_then_moved_aside(reg: Registry, tmp_path: Path) -> None:
    reg.register(make_artifact(tmp_path / "a1"), "aapl")
    orphan = reg.root / "aapl" / "v2"  # what a register killed between rename and commit leaves
    orphan.mkdir()
    (orphan / "model.txt").write_bytes(b"whole")
    (orphan / "checksums.sha256").write_text("0" * 64 + "  model.txt\n")  # written before the rename
    assert [i.model_id for i in reg.list_versions()] == ["aapl:v1"]
    report = reg.verify()  # invisible to list/resolve, but verify says the index lacks it
    assert [(p.model_id, p.problem) for p in report.mismatches] == [("aapl:v2", "unindexed")]
    info = reg.register(make_artifact(tmp_path / "a2", payload=b"new"), "aapl")
    # moved aside, and its number is never reused: the new version is v3
    assert info.version == 3 and (info.path / "model.txt").read_bytes() == b"new"
    assert reg.verify().ok
    assert len(list((reg.root / "aapl").glob(".orphan-v2-*"))) == 1
    assert reg.register(make_artifact(tmp_path / "a3", payload=b"newer"), "aapl").version == 4


def test_dead_temp_folder_is_cleaned(reg: Registry, tmp_path: Path) -> None:
    from aitrader.registry.register import _host_token

    reg.register(make_artifact(tmp_path / "a1"), "aapl")
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = reg.root / "aapl" / f".tmp-{_host_token()}-{dead.pid}-abc"
    stale.mkdir()
    reg.register(make_artifact(tmp_path / "a2", payload=b"2"), "aapl")
    assert not stale.exists()


def test_index_schema_is_current(reg: Registry, tmp_path: Path) -> None:
    reg.register(make_artifact(tmp_path / "a1"), "aapl")
    conn = sqlite3.connect(reg.db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "2"
    rows = conn.execute("SELECT path FROM files ORDER BY path").fetchall()
    assert [r[0] for r in rows] == ["manifest.json", "model.txt"]
    conn.close()
    assert reg.integrity_ok()
