"""ONNX export of every trained model, an inference-only ONNX adapter, and parity checks.

Converters: LightGBM -> ``onnxmltools.convert_lightgbm`` (from the Booster), XGBoost ->
``onnxmltools.convert_xgboost`` (from a copy of the Booster with its feature names removed: the
converter only understands ``f0..fN``), scikit-learn -> ``skl2onnx.convert_sklearn``.
Classifiers are exported with ``zipmap=False`` so the graph returns a plain (n, 2) probability
tensor. The graph input is ``input``: float32 ``[None, n_features]``; feature names, task and
kind are stored in the model's ``metadata_props``.

ONNX tree ensembles evaluate in float32: LightGBM's float64 thresholds are rounded, so ~1e-4
relative differences are normal. :func:`onnx_parity` measures them on real rows relative to the
spread of the native predictions and refuses anything above the tolerance; :func:`export_checked`
(the trainer's path) drops an export that does not match instead of failing: on tightly clustered
features (prices quoted to 4-5 decimals, hourly forex) float32 inputs land on the other side of a
split threshold on some rows, and those rows then get another leaf's value.
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
ONNX_FILE = "model.onnx"
DEFAULT_TOLERANCE_REL = 1e-3
SCALE_FLOOR = 1e-6  # target units: the parity scale never goes below this (see parity_scale)
MAGNITUDE_FLOOR = 1e-3  # nor below this share of the largest |prediction| (float32 resolution)


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
    to_onnx = getattr(model, "to_onnx", None)  # a plug-in adapter's own converter (docs/plugins.md)
    if callable(to_onnx):
        return to_onnx(INPUT_NAME, n)
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
    """The denominator of the parity check: the spread of the native predictions, floored.

    Spread = the interquartile range (robust: a few extreme predictions do not widen the
    tolerance), or the standard deviation when more than half the predictions are equal. Not
    ``|a|``: return-sized predictions sit near zero, where ``|a - b| / |a|`` explodes for harmless
    float32 rounding, while predictions clustered far from zero would hide real differences.
    Two floors: ``MAGNITUDE_FLOOR`` x the largest ``|a|`` (float32 keeps about 7 significant digits,
    so rounding of predictions clustered far from zero stays under the default 1e-3 tolerance),
    and ``SCALE_FLOOR`` in target units (1e-6: 0.01 bp of forward return, or 1e-6 of probability)
    for predictions with no spread at all.
    """
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    ref = ref[np.isfinite(ref)]
    if not ref.size:
        return SCALE_FLOOR
    q1, q3 = np.quantile(ref, [0.25, 0.75])
    spread = float(q3 - q1)
    if not spread > 0.0:
        spread = float(np.std(ref))
    return max(spread, MAGNITUDE_FLOOR * float(np.max(np.abs(ref))), SCALE_FLOOR)


def _measure(
    model: Model, onnx_path: str | Path, X: Any, reference: np.ndarray | None, tolerance: float | None
) -> dict[str, Any]:
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
    diff = np.abs(exported.predict_score(X) - reference)
    scale = parity_scale(reference)
    result: dict[str, Any] = {"max_abs_diff": float(diff.max()), "max_rel_diff": float(diff.max() / scale),
                              "scale": scale}
    if tolerance is not None:
        result.update(tolerance_rel=tolerance, tolerance_abs=tolerance * scale, rows=int(diff.size),
                      rows_off=int(np.count_nonzero(diff > tolerance * scale)))
    return result


def onnx_parity(
    model: Model, onnx_path: str | Path, X: Any, *, tolerance: float | None = DEFAULT_TOLERANCE_REL,
    reference: np.ndarray | None = None,
) -> dict[str, Any]:
    """How far the ONNX export is from the native model on the rows ``X``.

    Compares the runner's output (forward return, or P(up) for classifiers). Returns
    ``max_abs_diff``, ``max_rel_diff`` (= max_abs_diff / :func:`parity_scale`) and ``scale``; with
    a ``tolerance`` also ``tolerance_rel``, ``tolerance_abs`` (= tolerance x scale: what deploy
    re-checks the sample rows against), ``rows`` and ``rows_off`` (rows differing by more than
    ``tolerance_abs``), and raises ModelError when ``max_rel_diff`` exceeds it (``None``: only
    measure). ``reference``: the native ``model.predict_score(X)`` when the caller already has it.
    """
    result = _measure(model, onnx_path, X, reference, tolerance)
    if tolerance is not None and result["max_rel_diff"] > tolerance:
        raise ModelError(
            f"ONNX export of the {model.kind} model disagrees with the native model: max_rel_diff "
            f"{result['max_rel_diff']:.3g} > tolerance {tolerance:.3g} (max_abs_diff "
            f"{result['max_abs_diff']:.3g} on {result['rows_off']} of {result['rows']} rows, relative to the "
            f"predictions' spread {result['scale']:.3g}); raise onnx.tolerance_rel or train with --no-onnx"
        )
    return result


def export_checked(
    model: Model, directory: str | Path, X: Any, *, tolerance: float = DEFAULT_TOLERANCE_REL,
    reference: np.ndarray | None = None,
) -> dict[str, Any]:
    """Export ``directory/model.onnx`` and keep it only if it matches the native model on ``X``.

    Returns the manifest's ``onnx`` section (:func:`onnx_parity`'s figures and ``file``). When the
    export fails or its parity is above ``tolerance`` (e.g. float32 inputs crossing split
    thresholds of a tree model on tightly clustered features), ``model.onnx`` is deleted, ``file``
    is null, ``fallback`` is ``"native"`` and ``warning`` says why: the artifact then runs on its
    native model, which predicts exactly what was evaluated.
    """
    path = Path(directory) / ONNX_FILE
    try:
        export_onnx(model, path)
        meta = {"file": ONNX_FILE, **_measure(model, path, X, reference, tolerance)}
    except Exception as exc:  # converter or ONNX Runtime failure: no usable export, the native model stays
        path.unlink(missing_ok=True)
        why = str(exc)
        if not isinstance(exc, ModelError):
            why = f"ONNX export of the {model.kind} model failed: {type(exc).__name__}: {exc}"
        return {"file": None, "max_abs_diff": None, "max_rel_diff": None, "tolerance_rel": tolerance,
                "fallback": "native", "warning": f"{why}; the artifact has no model.onnx and runs on the "
                f"native {model.kind} model"}
    if meta["max_rel_diff"] <= tolerance:
        return meta
    path.unlink()
    meta.update(file=None, fallback="native", warning=(
        f"ONNX export of the {model.kind} model differs from the native model on {meta['rows_off']} of "
        f"{meta['rows']} holdout rows (max |diff| {meta['max_abs_diff']:.3g} = {meta['max_rel_diff']:.3g} x the "
        f"predictions' spread {meta['scale']:.3g} > tolerance {tolerance:g}); model.onnx dropped, the artifact "
        "runs on the native model (raise onnx.tolerance_rel to keep the ONNX file)"))
    return meta
