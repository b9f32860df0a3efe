"""Compiled tree backends (lleaves, treelite): parity with the native libraries, the deploy's choice,
its fallback, and the verified cache. Models are a few trees so each compile takes well under a second."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aitrader.errors import DeployCheckError, IntegrityError, ModelError
from aitrader.models.compiled import compile_model, load_library, read_record
from aitrader.registry import CheckResult, DeployResult, Registry, clear_cache
from aitrader.registry.backends import entries, parity
from tests.unit.test_registry_support import make_real_artifact

N_FEATURES = 4


def _data(task: str, n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    X = rng.normal(size=(n, N_FEATURES))
    y = X @ rng.normal(size=N_FEATURES) * 0.01 + rng.normal(scale=0.002, size=n)
    X_test = rng.normal(size=(200, N_FEATURES))
    X_test[rng.random(X_test.shape) < 0.05] = np.nan  # missing values take the trees' default branch
    return X, (y > 0).astype(int) if task == "classification" else y, X_test


def _lightgbm(tmp: Path, task: str) -> tuple[Path, object]:
    import lightgbm as lgb

    X, y, _ = _data(task)
    cls = lgb.LGBMClassifier if task == "classification" else lgb.LGBMRegressor
    booster = cls(n_estimators=8, num_leaves=7, min_child_samples=5, n_jobs=1, verbose=-1).fit(X, y).booster_
    path = tmp / "model.txt"
    booster.save_model(path)
    return path, booster


def _xgboost(tmp: Path, task: str) -> tuple[Path, object]:
    import xgboost as xgb

    X, y, _ = _data(task)
    cls = xgb.XGBClassifier if task == "classification" else xgb.XGBRegressor
    booster = cls(n_estimators=8, max_depth=3, n_jobs=1).fit(X, y).get_booster()
    path = tmp / "model.ubj"
    booster.save_model(path)
    return path, booster


@pytest.mark.parametrize(("kind", "backend", "task"), [
    ("lightgbm", "lleaves", "regression"), ("lightgbm", "lleaves", "classification"),
    ("lightgbm", "treelite", "regression"), ("lightgbm", "treelite", "classification"),
    ("xgboost", "treelite", "regression"), ("xgboost", "treelite", "classification"),
])
def test_compiled_trees_predict_what_the_native_library_predicts(tmp_path: Path, kind: str, backend: str,
                                                                 task: str) -> None:
    """Reference: the native library itself (LightGBM Booster.predict, XGBoost Booster.predict)."""
    _, _, X = _data(task)
    if kind == "lightgbm":
        path, booster = _lightgbm(tmp_path, task)
        reference = booster.predict(X)  # type: ignore[attr-defined]
        atol = 1e-12  # float64 thresholds and leaves, the same summation order: the same doubles
    else:
        import xgboost as xgb

        path, booster = _xgboost(tmp_path, task)
        reference = booster.predict(xgb.DMatrix(X))  # type: ignore[attr-defined]
        atol = 1e-6  # XGBoost evaluates in float32
    record = compile_model(backend, kind, task, path, tmp_path / "lib")
    assert record["backend"] == backend and record["bytes"] == (tmp_path / "lib" / "model.so").stat().st_size
    predictor = load_library(tmp_path / "lib", read_record(tmp_path / "lib"), N_FEATURES)
    np.testing.assert_allclose(predictor.predict_batch(X), reference, rtol=0, atol=atol)
    one = np.array([predictor.predict_one(row) for row in X])
    np.testing.assert_array_equal(one, predictor.predict_batch(X))  # one entry point for both paths
    if task == "classification":
        assert ((one > 0) & (one < 1)).all()  # probabilities: the link function is compiled in


def test_a_changed_library_is_refused_before_it_is_loaded(tmp_path: Path) -> None:
    path, _ = _lightgbm(tmp_path, "regression")
    record = compile_model("treelite", "lightgbm", "regression", path, tmp_path / "lib")
    lib = tmp_path / "lib" / "model.so"
    lib.write_bytes(lib.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match=r"sha256 mismatch in compiled library .*model\.so.*deploy the model "
                                             r"again"):
        load_library(tmp_path / "lib", record, N_FEATURES)


def test_parity_figures_follow_the_onnx_definition() -> None:
    ref = np.array([0.0, 1.0, 2.0, 3.0, 4.0])  # quartiles 1 and 3: spread 2
    got = ref + np.array([0.0, 0.0, 0.01, 0.0, 0.0])
    out = parity(ref, got, 1e-3)
    assert out["scale"] == pytest.approx(2.0) and out["max_abs_diff"] == pytest.approx(0.01)
    assert out["max_rel_diff"] == pytest.approx(0.005) and out["rows_off"] == 1 and out["rows"] == 5
    assert parity([np.nan, 1.0], [np.nan, 1.0], 1e-3)["max_abs_diff"] == 0.0
    assert parity([np.nan, 1.0], [0.5, 1.0], 1e-3)["max_abs_diff"] == np.inf


# ---------------------------------------------------------------------- the registry's choice


@pytest.fixture
def reg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    monkeypatch.delenv("AITRADER_BACKEND")  # the product default (auto), not the suite's onnx
    clear_cache()
    yield Registry(tmp_path / "models")
    clear_cache()


@pytest.fixture(scope="module")
def contract() -> dict:
    from aitrader.features import FeaturePipeline

    return FeaturePipeline(["ret_1", "ret_5", "ret_10", "ret_60"]).contract()


def _check(result: DeployResult, name: str = "backend") -> CheckResult:
    return next(c for c in result.checks if c.name == name)


def _native(reg: Registry, model_id: str, X: np.ndarray) -> np.ndarray:
    from aitrader.models import load_model

    info = reg.resolve(model_id)
    manifest = json.loads((info.path / "manifest.json").read_text())
    return load_model(info.path, manifest["model"]).predict_score(X)


def test_deploy_compiles_the_trees_and_paper_trade_loads_the_verified_library(reg: Registry, contract: dict,
                                                                             tmp_path: Path) -> None:
    reg.register(make_real_artifact(tmp_path / "a", onnx=True, contract=contract), "aapl")
    result = reg.deploy("aapl")
    check = _check(result)
    assert check.status == "passed" and check.detail.startswith("lleaves: parity max_rel_diff 0 ")
    assert "holdout sample rows (tolerance 0.001)" in check.detail
    assert not [w for w in result.warnings if "compiled" in w]  # (the other: no training verdict in this artifact)
    digest = reg.resolve("aapl:v1").digest
    (folder,) = entries(reg.root, digest)
    record = read_record(folder)
    assert record["digest"] == digest and record["backend"] == "lleaves" and folder.name.startswith(digest[:16])
    events = reg.history("aapl").events
    assert events[-1].checks[-1]["name"] == "backend" and "lleaves: parity" in events[-1].checks[-1]["detail"]
    loaded = reg.load("aapl", backend="auto")
    assert loaded.runner.backend == "lleaves" and loaded.warnings == []
    X = np.random.default_rng(3).normal(size=(50, N_FEATURES))
    np.testing.assert_allclose(loaded.runner.predict_batch(X), _native(reg, "aapl:v1", X), rtol=0, atol=1e-12)
    assert reg.load("aapl", backend="onnx").runner.backend == "onnx"  # the portable runner stays selectable


def test_xgboost_deploys_on_treelite(reg: Registry, contract: dict, tmp_path: Path) -> None:
    reg.register(make_real_artifact(tmp_path / "x", kind="xgboost", contract=contract), "xg")
    assert _check(reg.deploy("xg")).detail.startswith("treelite: parity")
    assert reg.load("xg", backend="auto").runner.backend == "treelite"


def test_deploy_falls_back_to_onnx_when_the_compilers_do_not_import(reg: Registry, contract: dict, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("lleaves", "lleaves.compiler", "lleaves.compiler.ast", "lleaves.compiler.codegen", "treelite",
                 "tl2cgen"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    reg.register(make_real_artifact(tmp_path / "a", onnx=True, contract=contract), "aapl")
    result = reg.deploy("aapl")
    check = _check(result)
    assert check.status == "passed" and check.detail.startswith("onnx (compiled backend not used: lleaves: lleaves is "
                                                                "not installed")
    assert "treelite: tl2cgen is not installed" in check.detail
    (warning,) = [w for w in result.warnings if "compiled" in w]
    assert warning.startswith("aapl:v1: compiled backend not used (") and warning.endswith("the runner stays on onnx")
    assert entries(reg.root, reg.resolve("aapl:v1").digest) == []
    assert reg.load("aapl", backend="auto").runner.backend == "onnx"
    with pytest.raises(DeployCheckError, match=r"deploy check backend failed for aapl:v1: --backend compiled: "
                                               r"lleaves: lleaves is not installed"):
        reg.deploy("aapl", alias="staging", backend="compiled")
    assert reg.resolve("aapl:v1").aliases == ["production"]


def test_a_compiler_crash_moves_on_to_the_next_backend(reg: Registry, contract: dict, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from aitrader.models import compiled

    def broken(*args: object) -> None:
        raise RuntimeError("LLVM ERROR: out of memory")

    monkeypatch.setattr(compiled, "_lleaves_object", broken)
    reg.register(make_real_artifact(tmp_path / "a", onnx=True, contract=contract), "aapl")
    detail = _check(reg.deploy("aapl")).detail
    assert detail.startswith("treelite: parity max_rel_diff 0 ")
    assert detail.endswith("(not lleaves: RuntimeError: LLVM ERROR: out of memory)")
    clear_cache()
    assert reg.load("aapl", backend="auto").runner.backend == "treelite"


def test_parity_off_keeps_onnx_with_a_warning(reg: Registry, contract: dict, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from aitrader.models import compiled

    real = compiled.CompiledPredictor.predict_batch
    monkeypatch.setattr(compiled.CompiledPredictor, "predict_batch", lambda self, X: real(self, X) + 1.0)
    reg.register(make_real_artifact(tmp_path / "a", onnx=True, contract=contract), "aapl")
    result = reg.deploy("aapl")
    assert _check(result).detail.startswith("onnx (compiled backend not used: lleaves: lleaves differs from the "
                                            "native lightgbm model on 8 of 8 holdout sample rows")
    assert entries(reg.root, reg.resolve("aapl:v1").digest) == []  # nothing kept from a mismatched build


def test_a_tampered_cache_is_refused_at_load_and_rebuilt_by_deploy(reg: Registry, contract: dict,
                                                                  tmp_path: Path) -> None:
    reg.register(make_real_artifact(tmp_path / "a", onnx=True, contract=contract), "aapl")
    reg.deploy("aapl")
    (folder,) = entries(reg.root, reg.resolve("aapl:v1").digest)
    lib = folder / "model.so"
    data = bytearray(lib.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lib.write_bytes(bytes(data))
    clear_cache()
    with pytest.raises(IntegrityError, match="sha256 mismatch in compiled library"):
        reg.load("aapl", backend="auto")
    with pytest.raises(IntegrityError):
        reg.load("aapl", backend="compiled")
    assert reg.load("aapl", backend="onnx").runner.backend == "onnx"  # the hashed artifact is untouched
    assert "compiled in" in _check(reg.deploy("aapl")).detail  # deploy recompiles over it
    clear_cache()
    assert reg.load("aapl", backend="auto").runner.backend == "lleaves"
    assert "verified cached build" in _check(reg.deploy("aapl", dry_run=True)).detail


def test_a_stale_cache_is_recompiled_and_onnx_deploys_drop_it(reg: Registry, contract: dict, tmp_path: Path) -> None:
    reg.register(make_real_artifact(tmp_path / "a", onnx=True, contract=contract), "aapl")
    reg.deploy("aapl")
    digest = reg.resolve("aapl:v1").digest
    (folder,) = entries(reg.root, digest)
    old = folder.with_name(folder.name.replace("lleaves1", "lleaves0"))  # built by another lleaves version
    folder.rename(old)
    clear_cache()
    loaded = reg.load("aapl", backend="auto")
    assert loaded.runner.backend == "lleaves" and folder.is_dir()  # compiled again for these versions
    assert reg.deploy("aapl", backend="onnx").checks[-1].detail == "onnx (--backend onnx)"
    assert entries(reg.root, digest) == []
    clear_cache()
    assert reg.load("aapl", backend="auto").runner.backend == "onnx"  # follows the deploy's choice


def test_a_record_of_another_model_is_not_trusted(reg: Registry, contract: dict, tmp_path: Path) -> None:
    reg.register(make_real_artifact(tmp_path / "a", onnx=True, contract=contract), "aapl")
    reg.deploy("aapl")
    (folder,) = entries(reg.root, reg.resolve("aapl:v1").digest)
    record = json.loads((folder / "compiled.json").read_text())
    record["digest"] = "0" * 64
    (folder / "compiled.json").write_text(json.dumps(record))
    clear_cache()
    with pytest.raises(ModelError, match="records digest 000000000000"):
        reg.load("aapl", backend="auto")


def test_unknown_backend_is_a_clear_error(reg: Registry, contract: dict, tmp_path: Path) -> None:
    reg.register(make_real_artifact(tmp_path / "a", contract=contract), "aapl")
    with pytest.raises(ModelError, match=r"unknown --backend 'gpu' .*expected one of auto, compiled, onnx, native"):
        reg.load("aapl", backend="gpu")
