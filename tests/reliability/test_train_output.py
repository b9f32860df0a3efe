"""`train --out DIR --force` replaces an artifact and nothing else (issue 10, "Data loss").

Each case builds its own folders and bars; the model is a tiny ridge without ONNX so a training
run takes well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.config import TrainConfig, build_model
from aitrader.data.synthetic import generate_bars
from aitrader.errors import ConfigError
from aitrader.training import output
from aitrader.training.trainer import train

runner = CliRunner()
QUICK = {"model": {"kind": "ridge"}, "split": {"n_folds": 2, "min_train": 100, "holdout": 0.2},
         "onnx": {"export": False}}


@pytest.fixture(scope="module")
def bars():
    return generate_bars(600, seed=4)


def cfg(**top) -> TrainConfig:
    return build_model(TrainConfig, {**QUICK, **top})


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: what must survive a refused command."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def project(in_tmp, bars):
    (in_tmp / "quick.yaml").write_text(json.dumps(QUICK))  # JSON is YAML
    bars.to_csv(in_tmp / "bars.csv")
    return in_tmp


def cli(*args: str):
    return runner.invoke(app, ["train", "-c", "quick.yaml", "--data", "bars.csv", *args])


def test_force_refuses_a_folder_that_is_not_an_artifact(project):
    keep = project / "keep"
    keep.mkdir()
    (keep / "precious.txt").write_text("precious\n")
    result = cli("--out", "keep", "--force")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: --force replaces only an aitrader artifact folder")
    assert "precious.txt" in result.stderr and "Traceback" not in result.output
    assert (keep / "precious.txt").read_text() == "precious\n"
    assert sorted(p.name for p in project.iterdir()) == ["bars.csv", "keep", "quick.yaml"]  # no temp left


def test_force_refuses_an_artifact_with_an_extra_file(project):
    assert cli("--out", "art").exit_code == 0
    (project / "art" / "notes.md").write_text("my notes")
    before = tree(project / "art")
    result = cli("--out", "art", "--force")
    assert result.exit_code == 1 and "notes.md" in result.stderr and "would be lost" in result.stderr
    assert tree(project / "art") == before


def test_force_refuses_a_folder_with_a_manifest_but_no_format_version(project):
    fake = project / "fake"
    fake.mkdir()
    (fake / "manifest.json").write_text('{"model": {"files": {"native": "model.joblib"}}}')
    result = cli("--out", "fake", "--force")
    assert result.exit_code == 1 and "format_version" in result.stderr
    assert (fake / "manifest.json").exists()


def test_force_replaces_a_real_artifact(project):
    assert cli("--out", "art").exit_code == 0
    first = json.loads((project / "art" / "manifest.json").read_text())["created_at"]
    result = cli("--out", "art", "--force", "--json")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (project / "art").iterdir()) == ["manifest.json", "model.joblib"]
    assert json.loads(result.stdout)["out_dir"] == "art" and first  # replaced in place
    assert sorted(p.name for p in project.iterdir()) == ["art", "bars.csv", "quick.yaml"]


@pytest.mark.parametrize("out", [".", "..", "./", "sub/..", "/"])
def test_force_never_takes_the_working_directory_or_a_parent(project, out):
    (project / "sub").mkdir()
    before = tree(project)
    result = cli("--out", out, "--force")
    assert result.exit_code == 1, result.output
    assert "working directory or one of its parents" in result.stderr and "Traceback" not in result.output
    assert tree(project) == before


def test_the_home_folder_is_never_an_output(project, monkeypatch, bars):
    home = project / "home"
    (home / "work").mkdir(parents=True)
    (home / "diary.txt").write_text("x")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(ConfigError, match="home folder"):
        train(cfg(), bars=bars, out_dir=home, overwrite=True)
    assert (home / "diary.txt").exists()


def _fake_registry(root: Path) -> Path:
    version = root / "m" / "v1"
    version.mkdir(parents=True)
    (root / "registry.db").write_bytes(b"SQLite format 3\x00")
    (version / "manifest.json").write_text('{"format_version": 1, "model": {"files": {"native": "model.joblib"}}}')
    (version / "model.joblib").write_bytes(b"registered")
    return version


@pytest.mark.parametrize("force", [True, False])
def test_nothing_is_written_inside_a_registry_found_by_its_index(project, force):
    version = _fake_registry(project / "elsewhere" / "reg")
    before = tree(project / "elsewhere")
    for out in (version, version.parent / "v2", version.parent.parent):
        result = cli("--out", str(out), *(["--force"] if force else []))
        assert result.exit_code == 1, result.output
        assert "inside the model registry" in result.stderr and "aitrader register" in result.stderr
    assert tree(project / "elsewhere") == before
    assert not (version.parent / "v2").exists()


def test_nothing_is_written_inside_the_configured_registry_even_before_it_exists(project, monkeypatch):
    monkeypatch.setenv("AITRADER_REGISTRY", str(project / "reg"))
    result = cli("--out", "reg/m/v1")
    assert result.exit_code == 1 and "inside the model registry" in result.stderr
    assert not (project / "reg").exists()
    monkeypatch.delenv("AITRADER_REGISTRY")
    result = cli("--out", "models/m/v1")  # ./models is the default registry root
    assert result.exit_code == 1 and "inside the model registry" in result.stderr
    assert not (project / "models").exists()


def test_a_file_in_the_way_is_a_clean_error(project):
    (project / "afile").write_text("x")
    for out in ("afile", "afile/art"):
        result = cli("--out", out, "--force")
        assert result.exit_code == 1 and "not a folder" in result.stderr, result.output
    assert (project / "afile").read_text() == "x"


def test_a_file_appearing_during_training_is_not_deleted(project, bars, monkeypatch):
    assert cli("--out", "art").exit_code == 0
    import aitrader.training.trainer as trainer

    real = trainer._swap_into_place

    def late_file(tmp: Path, target: Path) -> None:
        (target / "late.txt").write_text("arrived while training")
        real(tmp, target)

    monkeypatch.setattr(trainer, "_swap_into_place", late_file)
    with pytest.raises(ConfigError, match="late.txt"):
        train(cfg(), bars=bars, out_dir=project / "art", overwrite=True)
    assert (project / "art" / "late.txt").exists() and (project / "art" / "manifest.json").exists()
    assert sorted(p.name for p in project.iterdir()) == ["art", "bars.csv", "quick.yaml"]  # temp removed


@pytest.mark.parametrize("symbol", ["../escape", "a/b", "..", "x\ty"])
def test_the_out_template_refuses_an_unsafe_symbol(project, bars, symbol):
    odd = bars.copy()
    odd.attrs["symbol"] = symbol
    with pytest.raises(ConfigError, match=r"out: the symbol .* cannot be part of a folder name"):
        train(cfg(), bars=odd)
    assert sorted(p.name for p in project.iterdir()) == ["bars.csv", "quick.yaml"]


def test_local_names_match_the_registry_and_the_manifest(tmp_path, monkeypatch):
    from aitrader.registry import ENV_ROOT, Registry
    from aitrader.training.manifest import MANIFEST_NAME

    assert output.REGISTRY_ENV == ENV_ROOT
    assert output.MANIFEST_NAME == MANIFEST_NAME
    assert Registry(tmp_path).db_path.name == output.REGISTRY_INDEX
    monkeypatch.delenv(ENV_ROOT, raising=False)
    assert Registry().root == Path(output.REGISTRY_DEFAULT_ROOT)
