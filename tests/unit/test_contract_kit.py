"""aitrader.testing: every built-in passes the contract kit, and each check fails on a deliberately broken example.

The broken examples are small plug-in objects defined here (never installed: the kit checks them
through aitrader.plugins.provide, the same code paths an installed plug-in takes).
"""

from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from aitrader.features.kinds import KINDS, FeatureKind, Param
from aitrader.models import MODEL_KINDS, model_class
from aitrader.models.base import Model
from aitrader.testing import ContractError, check_feature_kind, check_model_adapter, check_strategy
from aitrader.trading.strategy import BUILTIN_STRATEGIES, Decision

# ---------------------------------------------------------------------- every built-in passes


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_builtin_feature_kind_passes(kind: str) -> None:
    report = check_feature_kind(kind)
    assert report["definitions"], "checked with at least one features.yaml definition"
    assert report["max_parity_diff"] <= 1e-7


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_every_builtin_model_adapter_passes(kind: str) -> None:
    report = check_model_adapter(model_class(kind))
    assert set(report["tasks"]) == {"regression", "classification"}


@pytest.mark.parametrize("name", sorted(BUILTIN_STRATEGIES))
def test_every_builtin_strategy_passes(name: str) -> None:
    assert check_strategy(BUILTIN_STRATEGIES[name])["decisions"] == 2 * (12 + 10)  # 2 settings x both grids


# ---------------------------------------------------------------------- feature kinds, good and broken


def _sma_gap_batch(o, h, low, c, v, params):  # type: ignore[no-untyped-def]
    """close / mean(close over window) - 1, from a window of exact sums."""
    n = params["window"]
    out = np.full(len(c), np.nan)
    for t in range(n - 1, len(c)):
        out[t] = c[t] / (math.fsum(c[t - n + 1 : t + 1]) / n) - 1.0
    return out


def _sma_gap_stream(params):  # type: ignore[no-untyped-def]
    n = params["window"]
    window: deque[float] = deque(maxlen=n)

    def update(o: float, h: float, low: float, c: float, v: float) -> float:
        window.append(c)
        return c / (math.fsum(window) / n) - 1.0 if len(window) == n else math.nan

    return update


def _kind(name: str, batch=_sma_gap_batch, stream=_sma_gap_stream, warmup: int = 9) -> FeatureKind:  # type: ignore[no-untyped-def]
    return FeatureKind(name=name, summary="close / SMA - 1 (test kind)", params={"window": Param(int, 2)},
                       min_warmup=lambda p: 0, history=lambda p: int(p["window"]), batch=batch, stream=stream,
                       features=({"name": f"{name}_10", "description": "test", "group": "indicator",
                                  "params": {"window": 10}, "warmup": warmup, "metadata": {"unit": "ratio"}},))


def test_a_correct_plugin_kind_passes_without_being_installed() -> None:
    report = check_feature_kind(_kind("sma_gap"))
    assert report["definitions"] == [{"params": {"window": 10}, "warmup": 9}]
    assert report["max_parity_diff"] < 1e-12


def test_look_ahead_in_batch_fails() -> None:
    def peeking(o, h, low, c, v, params):  # type: ignore[no-untyped-def]
        out = _sma_gap_batch(o, h, low, c, v, params)
        out[:-1] += 1e-3 * (c[1:] > c[:-1])  # reads tomorrow's close
        return out

    with pytest.raises(ContractError, match=r"look-ahead: batch over the first \d+ bars differs"):
        check_feature_kind(_kind("peeking", batch=peeking))


def test_streaming_that_drifts_from_batch_fails() -> None:
    def drifting(params):  # type: ignore[no-untyped-def]
        inner = _sma_gap_stream(params)
        return lambda o, h, low, c, v: inner(o, h, low, c, v) * (1.0 + 1e-6)

    with pytest.raises(ContractError, match=r"streaming differs from batch at \d+ bars after the warm-up"):
        check_feature_kind(_kind("drifting", stream=drifting))


def test_a_warm_up_shorter_than_the_kind_needs_fails() -> None:
    with pytest.raises(ContractError, match=r"batch is NaN/inf at 3 bars after the warm-up \(first: bar 6\)"):
        check_feature_kind(_kind("short_warmup", warmup=6))


def test_a_kind_that_goes_nan_on_a_flat_window_fails() -> None:
    def std_ratio(o, h, low, c, v, params):  # type: ignore[no-untyped-def]
        n = params["window"]
        out = np.full(len(c), np.nan)
        for t in range(n - 1, len(c)):
            w = c[t - n + 1 : t + 1]
            out[t] = (c[t] - w.mean()) / w.std()  # 0/0 on the kit's flat stretch
        return out

    def std_ratio_stream(params):  # type: ignore[no-untyped-def]
        n = params["window"]
        window: deque[float] = deque(maxlen=n)

        def update(o: float, h: float, low: float, c: float, v: float) -> float:
            window.append(c)
            if len(window) < n:
                return math.nan
            w = np.array(window)
            with np.errstate(invalid="ignore", divide="ignore"):
                return float((c - w.mean()) / w.std())

        return update

    with np.errstate(invalid="ignore", divide="ignore"), \
            pytest.raises(ContractError, match="NaN/inf at .* bars after the warm-up"):
        check_feature_kind(_kind("zscore_nan", batch=std_ratio, stream=std_ratio_stream))


_SHARED: deque[float] = deque(maxlen=10)


def test_streams_that_share_state_fail() -> None:
    def shared(params):  # type: ignore[no-untyped-def]
        n = params["window"]
        _SHARED.clear()

        def update(o: float, h: float, low: float, c: float, v: float) -> float:
            _SHARED.append(c)  # module-level: every stream writes to the same window
            return c / (math.fsum(_SHARED) / n) - 1.0 if len(_SHARED) == n else math.nan

        return update

    with pytest.raises(ContractError, match="two streams fed alternately differ from one stream alone"):
        check_feature_kind(_kind("shared_state", stream=shared))


def test_an_object_that_is_not_a_feature_kind_fails() -> None:
    with pytest.raises(ContractError, match="not a FeatureKind"):
        check_feature_kind(KINDS["rsi"].__class__("rsi_copy", "not a plug-in kind"))
    with pytest.raises(ContractError, match="reuses the built-in kind name 'rsi'"):
        check_feature_kind(_kind("rsi"))


# ---------------------------------------------------------------------- model adapters, good and broken


class JsonLinear(Model):
    """A least-squares linear model saved as JSON (no pickle), with an ONNX export: a correct plug-in."""

    kind: ClassVar[str] = "json_linear"
    library: ClassVar[str] = "numpy"
    format: ClassVar[str] = "json"
    native_file: ClassVar[str] = "linear.json"
    accepts_nan: ClassVar[bool] = False

    @classmethod
    def library_version(cls) -> str:
        return np.__version__

    def _resolve_params(self) -> dict[str, Any]:
        return {"ridge": 1e-6, **(self.params or {})}

    def _fit_native(self, X: np.ndarray, y: np.ndarray, params: dict[str, Any], names: list[str]) -> None:
        A = np.column_stack([X, np.ones(len(X))])
        self.coef_ = np.linalg.solve(A.T @ A + params["ridge"] * np.eye(A.shape[1]), A.T @ y)

    def _predict_native(self, X: np.ndarray) -> np.ndarray:
        raw = X @ self.coef_[:-1] + self.coef_[-1]
        return np.clip(raw, 0.0, 1.0) if self.task == "classification" else raw

    def _importance(self) -> np.ndarray:
        return np.abs(self.coef_[:-1])

    def _save_native(self, path: Path) -> None:
        path.write_text(json.dumps({"coef": self.coef_.tolist(), "task": self.task,
                                    "names": [str(n) for n in self.feature_names_in_]}))

    @classmethod
    def _load_native(cls, path: Path, meta: dict[str, Any]) -> Model:
        doc = json.loads(path.read_text())
        model = cls(task=doc["task"], random_state=int(meta.get("random_state", 42)))
        model.coef_ = np.asarray(doc["coef"])
        model._set_fitted(doc["names"], dict(meta.get("hyperparameters") or {}), None)
        return model

    def to_onnx(self, input_name: str, n_features: int) -> Any:
        from onnx import TensorProto, helper

        w = helper.make_tensor("w", TensorProto.FLOAT, [n_features, 1], self.coef_[:-1].astype(np.float32).tolist())
        b = helper.make_tensor("b", TensorProto.FLOAT, [1], [float(self.coef_[-1])])
        graph = helper.make_graph(
            [helper.make_node("MatMul", [input_name, "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["variable"])],
            "linear", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None, n_features])],
            [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])], initializer=[w, b])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_correct_plugin_model_passes_and_its_onnx_hook_is_used(tmp_path: Path) -> None:
    report = check_model_adapter(JsonLinear)
    assert report["tasks"]["regression"]["train_corr"] > 0.9
    from aitrader.models.onnx import export_checked
    from aitrader.testing import _dataset

    X, y = _dataset()
    model = JsonLinear(task="regression").fit(X, y)
    meta = export_checked(model, tmp_path, X)
    assert meta["file"] == "model.onnx" and meta["max_rel_diff"] < 1e-3  # float32 graph vs float64 numpy


class Unseeded(JsonLinear):
    kind: ClassVar[str] = "unseeded"

    def _fit_native(self, X: np.ndarray, y: np.ndarray, params: dict[str, Any], names: list[str]) -> None:
        super()._fit_native(X, y, params, names)
        self.coef_ = self.coef_ + np.random.default_rng().normal(scale=1e-3, size=self.coef_.shape)


class ForgetfulLoad(JsonLinear):
    kind: ClassVar[str] = "forgetful"

    @classmethod
    def _load_native(cls, path: Path, meta: dict[str, Any]) -> Model:
        model = super()._load_native(path, meta)
        model.coef_ = np.round(model.coef_, 1)  # loses precision on the way back
        return model


class Constant(JsonLinear):
    kind: ClassVar[str] = "constant"

    def _predict_native(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), float(self.coef_[-1]))


class WrongShape(JsonLinear):
    kind: ClassVar[str] = "wrong_shape"

    def predict_score(self, X: Any) -> np.ndarray:
        return super().predict_score(X).reshape(-1, 1)


@pytest.mark.parametrize(("cls", "message"), [
    (Unseeded, "two fits with the same random_state predict differently"),
    (ForgetfulLoad, "save -> load_model predicts differently"),
    (Constant, "do not follow the planted signal"),
    (WrongShape, r"predict/predict_score shapes .*\(400, 1\), expected \(400,\)"),
])
def test_a_broken_model_adapter_fails(cls: type[Model], message: str) -> None:
    with pytest.raises(ContractError, match=message):
        check_model_adapter(cls, tasks=("regression",))


def test_a_model_reusing_a_builtin_kind_or_not_a_model_fails() -> None:
    class Impostor(JsonLinear):
        kind: ClassVar[str] = "ridge"

    with pytest.raises(ContractError, match="not a subclass of aitrader.models.base.Model"):
        check_model_adapter(dict)
    with pytest.raises(ContractError, match="has kind 'ridge', a built-in kind"):
        check_model_adapter(Impostor, tasks=("regression",))


# ---------------------------------------------------------------------- strategies, good and broken


class _Base:
    def __init__(self, confidence: Any, *, min_confidence: float, position_size: float) -> None:
        self.confidence, self.min_confidence, self.position_size = confidence, min_confidence, position_size


class Oversized(_Base):
    def decide(self, raw: float) -> Decision:
        score, conf = self.confidence.score(raw)
        if math.isnan(score) or score == 0 or conf < self.min_confidence:
            return Decision(0, conf, 0.0)
        d = 1 if score > 0 else -1
        return Decision(d, conf, 2 * d * self.position_size)


class IgnoresConfidence(_Base):
    def decide(self, raw: float) -> Decision:
        score, conf = self.confidence.score(raw)
        if math.isnan(score) or score == 0:
            return Decision(0, conf, 0.0)
        d = 1 if score > 0 else -1
        return Decision(d, conf, d * self.position_size)


class Flipper(_Base):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def decide(self, raw: float) -> Decision:
        self.calls += 1
        score, conf = self.confidence.score(raw)
        if math.isnan(score) or conf < self.min_confidence:
            return Decision(0, conf, 0.0)
        d = 1 if self.calls % 2 else -1  # depends on how often it was called, not on the prediction
        return Decision(d, conf, d * self.position_size)


@pytest.mark.parametrize(("cls", "message"), [
    (Oversized, "exceeds position_size"),
    (IgnoresConfidence, "below min_confidence"),
    (Flipper, "keeps hidden state"),
])
def test_a_broken_strategy_fails(cls: type, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        check_strategy(cls)
