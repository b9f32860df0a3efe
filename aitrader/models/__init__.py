"""Models: one scikit-learn-style interface over LightGBM, XGBoost, scikit-learn and ONNX.

``create_model(kind, ...)`` builds an unfitted adapter; ``load_model(directory, model_meta)``
reads a saved one back (pickle-based artifacts only with ``trust_pickle=True``).
Library imports happen in the adapter modules, on first use of a kind. Installed packages add
kinds through the ``aitrader.models`` entry-point group (:mod:`aitrader.plugins`): a
:class:`~aitrader.models.base.Model` subclass whose ``kind`` is the entry point's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aitrader.errors import ModelError, TrustError

if TYPE_CHECKING:
    from aitrader.models.base import Model

MODEL_KINDS = ("lightgbm", "xgboost", "ridge", "random_forest")

__all__ = ["MODEL_KINDS", "create_model", "load_model", "model_class", "model_kinds"]


def model_kinds() -> tuple[str, ...]:
    """Built-in kinds, then the plug-in kinds installed (names from metadata: nothing imported)."""
    from aitrader import plugins

    return MODEL_KINDS + tuple(n for n in plugins.names("models") if n not in MODEL_KINDS)


def plugin_model_problem(obj: object) -> str | None:
    """Why ``obj`` (an ``aitrader.models`` entry point) is not a usable adapter class, or None."""
    from aitrader.models.base import Model

    if not (isinstance(obj, type) and issubclass(obj, Model)):
        return f"is {obj!r}, not a subclass of aitrader.models.base.Model"
    if not obj.kind or obj.kind in MODEL_KINDS or obj.kind == "onnx":
        return (f"has kind {obj.kind!r}, a built-in kind; a plug-in model needs its own kind, equal to its "
                "entry-point name")
    return None


def model_class(kind: str) -> type[Model]:
    """The adapter class for ``kind`` (one of MODEL_KINDS, or an installed plug-in's)."""
    if kind == "lightgbm":
        from aitrader.models.boosters import LightGBMModel

        return LightGBMModel
    if kind == "xgboost":
        from aitrader.models.boosters import XGBoostModel

        return XGBoostModel
    if kind == "ridge":
        from aitrader.models.sklearn_models import RidgeModel

        return RidgeModel
    if kind == "random_forest":
        from aitrader.models.sklearn_models import RandomForestModel

        return RandomForestModel
    if kind == "onnx":
        raise ModelError(
            f"'onnx' models are inference-only: open one with aitrader.models.onnx.OnnxModel(path), or "
            f"train one of {', '.join(MODEL_KINDS)}"
        )
    from aitrader import plugins

    if kind in plugins.discover("models"):
        cls: type[Model] = plugins.load("models", kind, plugin_model_problem)
        if cls.kind != kind:
            raise plugins.PluginError(f"model plug-in {kind!r} provides a class of kind {cls.kind!r}; the entry "
                                      "point and the kind must have the same name")
        return cls
    raise ModelError(f"unknown model kind {kind!r}; expected one of {', '.join(model_kinds())}")


def _onnx_class() -> type[Model]:
    # An ONNX-only artifact (saved from OnnxModel): loadable, never trainable, so not in MODEL_KINDS.
    from aitrader.models.onnx import OnnxModel

    return OnnxModel


def create_model(
    kind: str, *, task: str = "regression", random_state: int = 42, params: dict[str, Any] | None = None
) -> Model:
    """An unfitted model; task and params are validated now so a typo fails before training."""
    model = model_class(kind)(task=task, random_state=random_state, params=params)
    model.validate()
    return model


def load_model(directory: str | Path, model_meta: dict[str, Any], *, trust_pickle: bool = False) -> Model:
    """Load the native model file named in ``model_meta`` (the manifest's ``model`` section)."""
    directory = Path(directory)
    kind = model_meta.get("kind")
    if not isinstance(kind, str):
        raise ModelError(f"{directory}: manifest model section has no 'kind'; expected one of {model_kinds()}")
    cls = _onnx_class() if kind == "onnx" else model_class(kind)
    files = model_meta.get("files") or {}
    name = files.get("native", cls.native_file)
    path = directory / name
    if (model_meta.get("pickle_based") or cls.pickle_based) and not trust_pickle:
        raise TrustError(
            f"{path} is a pickle-based {kind} model: loading it can run arbitrary code; "
            f"re-register it with --trust-pickle if you trust the source"
        )
    if not path.is_file():
        raise ModelError(f"model file not found: {path}; the artifact is incomplete, retrain or re-register it")
    task = model_meta.get("task", "regression")
    if task not in ("regression", "classification"):
        raise ModelError(f"{directory}: unknown task {task!r} in the manifest; expected regression or classification")
    return cls._load_native(path, model_meta)
