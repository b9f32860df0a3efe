"""ONNX export of every trained model, an inference-only ONNX adapter, and parity checks.

Converters: LightGBM -> ``onnxmltools.convert_lightgbm`` (from the Booster), XGBoost ->
``onnxmltools.convert_xgboost`` (from a copy of the Booster with its feature names removed: the
converter only understands ``f0..fN``), scikit-learn -> ``skl2onnx.convert_sklearn``.
Classifiers are exported with ``zipmap=False`` so the graph returns a plain (n, 2) probability
tensor. The graph input is ``input``: float32 ``[None, n_features]``; feature names, task and
kind are stored in the model's ``metadata_props``.

ONNX tree ensembles evaluate in float32: LightGBM's float64 thresholds are rounded, so ~1e-4
relative differences are normal. :func:`onnx_parity` measures them on real rows and refuses
anything above the tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aitrader import __version__
from aitrader.errors import ModelError
from aitrader.models.base import Model, atomic_write, default_feature_names

INPUT_NAME = "input"
DEFAULT_TOLERANCE_REL = 1e-3


def _convert(model: Model) -> Any:
    from onnxmltools.convert.common.data_types import FloatTensorType

    n = int(model.n_features_in_)
    initial = [(INPUT_NAME, FloatTensorType([None, n]))]
    classifier = model.task == "classification"
    if model.kind == "lightgbm":
        from onnxmltools import convert_lightgbm

        return convert_lightgbm(model.booster_, initial_types=initial, zipmap=False)  # type: ignore[attr-defined]
    if model.kind == "xgboost":
        from onnxmltools import convert_xgboost

        booster = model.booster_.copy()  # type: ignore[attr-defined]
        booster.feature_names = None  # the converter parses "f<index>" split names only
        return convert_xgboost(booster, initial_types=initial)
    if model.kind in ("ridge", "random_forest"):
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType as SkFloatTensorType

        # skl2onnx checks against its own tensor-type class, not onnxmltools'.
        initial = [(INPUT_NAME, SkFloatTensorType([None, n]))]
        est = model.estimator_  # type: ignore[attr-defined]
        final = est[-1] if hasattr(est, "steps") else est
        options = {id(final): {"zipmap": False}} if classifier else None
        return convert_sklearn(est, initial_types=initial, options=options)
    raise ModelError(f"no ONNX converter for model kind {model.kind!r}")


def _fix_label_shape(onnx_model: Any) -> None:
    # The LightGBM converter declares the label output as shape [1]; ONNX Runtime then warns on
    # every batch. The real shape is [N].
    for out in onnx_model.graph.output:
        dims = out.type.tensor_type.shape.dim
        if out.name == "label" and len(dims) == 1:
            dims[0].Clear()
            dims[0].dim_param = "N"


def _canonical_opsets(onnx_model: Any) -> None:
    # skl2onnx/onnxmltools collect the (domain, version) pairs in a set, so their order follows
    # the per-process string-hash seed: the same model would serialise to different bytes (and a
    # different registry digest) in another process. Sort them, and drop exact duplicates (skl2onnx
    # adds the main opset twice); the pairs themselves are untouched.
    pairs = sorted({(op.domain, int(op.version)) for op in onnx_model.opset_import})
    domains = [domain for domain, _ in pairs]
    if len(set(domains)) != len(domains):
        raise ModelError(
            f"ONNX export declares one domain with several opset versions {pairs}; "
            "this converter output is not supported, set onnx.export: false in train.yaml"
        )
    del onnx_model.opset_import[:]
    for domain, version in pairs:
        entry = onnx_model.opset_import.add()
        entry.domain, entry.version = domain, version


def export_onnx(model: Model, path: str | Path) -> Path:
    """Convert a fitted model to ONNX and write it atomically to ``path`` (``model.onnx``)."""
    if isinstance(model, OnnxModel):
        raise ModelError("the model is already an ONNX model; copy its file instead of re-exporting")
    model._check_fitted("export_onnx")
    try:
        onnx_model = _convert(model)
    except ModelError:
        raise
    except Exception as exc:  # converters raise a zoo of types for unsupported graphs
        raise ModelError(
            f"ONNX export of the {model.kind} model failed: {type(exc).__name__}: {exc}; "
            f"set onnx.export: false in train.yaml to skip it"
        ) from exc
    _fix_label_shape(onnx_model)
    _canonical_opsets(onnx_model)
    # Converters name the graph with a random UUID; a fixed name makes the export byte-reproducible.
    onnx_model.graph.name = f"aitrader_{model.kind}_{model.task}"
    meta = {
        "aitrader_version": __version__,
        "kind": model.kind,
        "task": model.task,
        "feature_names": json.dumps([str(n) for n in model.feature_names_in_]),
    }
    del onnx_model.metadata_props[:]
    for key, value in meta.items():
        prop = onnx_model.metadata_props.add()
        prop.key, prop.value = key, value
    data = onnx_model.SerializeToString()
    path = Path(path)

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    atomic_write(path, write)
    return path


def make_session(path: str | Path, *, threads: int = 1) -> Any:
    """An ONNX Runtime session tuned for latency: fixed threads, sequential, full graph optimisation."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # warnings would go to stderr on every call
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
        raise ModelError(f"cannot load ONNX model {path}: {exc}; re-export or retrain the model") from exc


def output_index(session: Any) -> tuple[int, bool]:
    """Index of the output holding the score, and whether it is a probability matrix."""
    names = [o.name for o in session.get_outputs()]
    if "probabilities" in names:
        return names.index("probabilities"), True
    return 0, False


class OnnxModel(Model):
    """Inference-only adapter over a ``model.onnx`` file (``fit`` raises ModelError).

    The session is opened at construction: an ONNX file is already-learned state, so the
    instance is "fitted" from the start.
    """

    kind: ClassVar[str] = "onnx"
    library: ClassVar[str] = "onnxruntime"
    format: ClassVar[str] = "onnx"
    native_file: ClassVar[str] = "model.onnx"

    def __init__(self, path: str | Path, *, task: str | None = None):  # noqa: D107
        self.path = path
        self.task = task  # type: ignore[assignment]
        self.random_state = 0
        self.params = None
        self.session_ = make_session(path)
        props = dict(self.session_.get_modelmeta().custom_metadata_map)
        self.out_index_, is_proba = output_index(self.session_)
        inferred = "classification" if is_proba else "regression"
        self.task_ = task or props.get("task", inferred)
        if self.task_ != inferred:
            raise ModelError(f"{path}: task {self.task_!r} does not match the graph's outputs ({inferred})")
        self.task = self.task_
        inputs = self.session_.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{path}: expected one input tensor, found {len(inputs)}")
        self.input_name_ = inputs[0].name
        width = inputs[0].shape[1] if len(inputs[0].shape) == 2 else None
        names = json.loads(props["feature_names"]) if "feature_names" in props else None
        if names is None:
            if not isinstance(width, int):
                raise ModelError(f"{path}: the input has no fixed feature count and no feature_names metadata")
            names = default_feature_names(width)
        self.source_kind_ = props.get("kind")
        self._set_fitted(list(names), {}, None)

    @classmethod
    def library_version(cls) -> str:
        import onnxruntime

        return str(onnxruntime.__version__)

    def _resolve_params(self) -> dict[str, Any]:
        return {}

    def fit(self, X: Any, y: Any) -> Model:
        raise ModelError("OnnxModel is inference-only: train a lightgbm/xgboost/ridge/random_forest model instead")

    def _predict_native(self, X: np.ndarray) -> np.ndarray:
        out = self.session_.run(None, {self.input_name_: X.astype(np.float32)})[self.out_index_]
        out = np.asarray(out, dtype=np.float64)
        return out[:, 1] if self.task_ == "classification" else out.reshape(-1)

    def _importance(self) -> np.ndarray:
        # Number of splits per feature in the tree ensemble (ONNX keeps no gain information).
        import onnx

        graph = onnx.load(str(self.path)).graph
        counts = np.zeros(self.n_features_in_)
        found = False
        for node in graph.node:
            if not node.op_type.startswith("TreeEnsemble"):
                continue
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if "nodes_featureids" not in attrs:
                continue
            found = True
            for fid, mode in zip(attrs["nodes_featureids"], attrs["nodes_modes"], strict=True):
                if mode != b"LEAF":
                    counts[fid] += 1
        if not found:
            raise ModelError(
                f"{self.path}: feature importance is only available for tree-ensemble ONNX graphs; "
                f"use the native model's feature_importance()"
            )
        return counts

    def _save_native(self, path: Path) -> None:
        path.write_bytes(Path(self.path).read_bytes())

    @classmethod
    def _load_native(cls, path: Path, meta: dict[str, Any]) -> Model:
        return cls(path, task=meta.get("task"))


def parity_scale(reference: np.ndarray) -> float:
    """Floor of the relative-difference denominator: the spread of the predictions.

    Return-sized predictions sit near zero, where |a-b|/|a| explodes for harmless float32
    rounding; dividing by max(|a|, std(predictions)) measures the error against the scale that
    matters for trading decisions.
    """
    scale = float(np.std(reference))
    if scale == 0.0 or not np.isfinite(scale):
        scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return scale if scale > 0.0 else 1.0


def onnx_parity(
    model: Model, onnx_path: str | Path, X: Any, *, tolerance: float | None = DEFAULT_TOLERANCE_REL,
    reference: np.ndarray | None = None,
) -> dict[str, float]:
    """Max absolute and relative difference between the native model and its ONNX export on X.

    Compares the runner's output (forward return, or P(up) for classifiers). Raises ModelError
    when ``max_rel_diff`` exceeds ``tolerance`` (None: only measure). ``reference``: the native
    ``model.predict_score(X)`` when the caller already has it (the trainer's holdout predictions).
    """
    if reference is None:
        reference = model.predict_score(X)
    reference = np.asarray(reference, dtype=np.float64).reshape(-1)
    if reference.size != len(X):
        raise ModelError(f"onnx_parity: reference has {reference.size} values for {len(X)} rows of X")
    if reference.size == 0:
        raise ModelError("onnx_parity: X has no rows; pass the holdout features")
    exported = OnnxModel(onnx_path, task=model.task)
    if list(exported.feature_names_in_) != list(model.feature_names_in_):
        raise ModelError(f"{onnx_path}: feature names differ from the model's; re-export it")
    got = exported.predict_score(X)
    diff = np.abs(got - reference)
    rel = diff / np.maximum(np.abs(reference), parity_scale(reference))
    result = {"max_abs_diff": float(diff.max()), "max_rel_diff": float(rel.max())}
    if tolerance is not None and result["max_rel_diff"] > tolerance:
        raise ModelError(
            f"ONNX export of the {model.kind} model disagrees with the native model: max_rel_diff "
            f"{result['max_rel_diff']:.3g} > tolerance {tolerance:.3g} (max_abs_diff "
            f"{result['max_abs_diff']:.3g}); raise onnx.tolerance_rel or set onnx.export: false"
        )
    return result
