"""The model interface every adapter implements (the scikit-learn estimator contract).

``__init__`` only stores keyword hyper-parameters (``task``, ``random_state``, ``params``);
``fit`` validates them, trains, and sets the learned state (names ending in ``_``);
``predict`` before ``fit`` raises :class:`ModelNotFittedError`.

Adapters implement five hooks: ``_resolve_params`` (defaults + overrides, validated),
``_fit_native``, ``_predict_native`` (regression values or P(class 1)), ``_importance`` and
``_save_native``. Everything else (input checks, classification labels, info) lives here.
"""

from __future__ import annotations

import inspect
import os
import re
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aitrader.errors import ModelError, ModelNotFittedError

TASKS = ("regression", "classification")

# Names the native formats can store verbatim (LightGBM rejects JSON specials, XGBoost "[]<").
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-+]+$")


def default_feature_names(n: int) -> list[str]:
    return [f"f{i}" for i in range(n)]


def check_params(params: dict[str, Any] | None, valid: Collection[str], kind: str) -> dict[str, Any]:
    """Reject unknown hyper-parameters (with the closest valid names: a typo must not be ignored) and
    known ones of the wrong type (before the library sees them).

    The message is one line: the closest names (not the full list, ~300 names for LightGBM) and where
    the valid ones are documented.
    """
    from aitrader.models.params import param_type_problems

    params = dict(params or {})
    for reserved in ("random_state", "seed", "random_seed"):
        if reserved in params:
            raise ModelError(
                f"{kind}: parameter {reserved!r} is set through model.random_state, not model.params; move it there"
            )
    unknown = sorted(set(params) - set(valid), key=str)
    if unknown:
        hints = [f"{name!r} ({_closest(str(name), valid)})" for name in unknown]
        names = sorted(set(valid))
        where = (f"valid: {', '.join(names)}" if len(names) <= _LISTED_PARAMS else
                 f"see the {_LIBRARY.get(kind, kind)} documentation of its {len(names)} parameters")
        raise ModelError(f"{kind}: unknown parameter(s) {', '.join(hints)}; fix model.params ({where})")
    problems = param_type_problems(kind, params)
    if problems:
        raise ModelError(f"{kind}: " + "; ".join(f"parameter {name!r} {why}" for name, why in problems)
                         + "; fix model.params")
    return params


#: An unknown hyper-parameter's error lists the valid names when there are at most this many (else it
#: names the library's documentation: LightGBM has ~300).
_LISTED_PARAMS = 20
_LIBRARY = {"lightgbm": "LightGBM", "xgboost": "XGBoost", "ridge": "scikit-learn", "random_forest": "scikit-learn"}


def _closest(name: str, valid: Collection[str]) -> str:
    """``did you mean 'a', 'b' or 'c'?`` (up to three close valid names by difflib, else the one nearest
    name that is still similar), or ``no close name``."""
    import difflib

    names = sorted(set(valid))
    found = difflib.get_close_matches(name, names, n=3, cutoff=0.75) or difflib.get_close_matches(name, names, n=1)
    close = [repr(c) for c in found]
    if not close:
        return "no close name"
    return "did you mean " + (close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}") + "?"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp_path)`` into a temporary sibling and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        tmp_path.replace(path)
    except Exception as exc:
        refused = None if isinstance(exc, OSError) else _write_refused(tmp_path)
        tmp_path.unlink(missing_ok=True)
        if refused is not None:  # a native library's own words for a full disk / file size limit
            raise OSError(refused, os.strerror(refused), str(path)) from exc
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _write_refused(tmp: Path) -> int | None:
    """ENOSPC/EFBIG when the system refused a write (the file reached ``ulimit -f``, or the disk is full)."""
    import errno
    import resource
    import shutil

    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY and tmp.stat().st_size >= soft:
            return errno.EFBIG
        if shutil.disk_usage(tmp.parent).free < 1 << 20:
            return errno.ENOSPC
    except (OSError, ValueError):
        return None
    return None


def as_matrix(X: Any, n_features: int | None, names: list[str] | None, what: str) -> np.ndarray:
    """A C-contiguous float64 matrix from a DataFrame or array, checked against the trained shape.

    A DataFrame must carry exactly the trained columns (reordered by name if needed), so that a
    shuffled feature frame cannot silently feed the wrong inputs.
    """
    columns = getattr(X, "columns", None)
    if columns is not None and names is not None:
        cols = [str(c) for c in columns]
        if cols != names:
            missing = [n for n in names if n not in cols]
            extra = [c for c in cols if c not in names]
            if missing or extra:
                raise ModelError(
                    f"{what}: feature columns do not match the trained ones; missing {missing}, "
                    f"unexpected {extra}; pass the features in the manifest's order"
                )
            X = X.iloc[:, [cols.index(n) for n in names]]
    try:
        if columns is not None:
            # to_numpy maps pandas' nullable NA to NaN, which np.asarray cannot.
            arr = X.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{what}: features must be numeric, got {exc}") from exc
    if arr.ndim == 1 and n_features is not None and arr.shape[0] == n_features:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ModelError(f"{what}: expected a 2-D feature matrix (rows x features), got shape {arr.shape}")
    if n_features is not None and arr.shape[1] != n_features:
        raise ModelError(
            f"{what}: expected {n_features} features, got {arr.shape[1]}; pass the features listed in "
            f"the model's feature_names_in_ / the manifest"
        )
    return np.ascontiguousarray(arr)


class Model:
    """Common behaviour of every adapter; see the module docstring for the hooks.

    The scikit-learn estimator contract (``get_params``/``set_params``, ``sklearn.base.clone``,
    ``fit`` returning self, learned state ending in ``_``) is implemented here rather than by
    inheriting ``sklearn.base.BaseEstimator``, so that loading a LightGBM/XGBoost/ONNX model does
    not import scikit-learn and scipy (0.7 s of start-up).
    """

    kind: ClassVar[str] = ""
    library: ClassVar[str] = ""
    format: ClassVar[str] = ""
    native_file: ClassVar[str] = ""
    pickle_based: ClassVar[bool] = False
    accepts_nan: ClassVar[bool] = True

    def __init__(self, *, task: str = "regression", random_state: int = 42, params: dict[str, Any] | None = None):
        self.task = task
        self.random_state = random_state
        self.params = params

    # ------------------------------------------------------------------ estimator contract

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The keyword hyper-parameters of ``__init__`` (sorted, like scikit-learn's)."""
        signature = inspect.signature(cls.__init__)
        return sorted(
            p.name for p in signature.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters (scikit-learn ``get_params``; nested with ``deep``)."""
        out: dict[str, Any] = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params: Any) -> Model:
        """Set constructor parameters (scikit-learn ``set_params``); returns self."""
        valid = self._get_param_names()
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(
                    f"invalid parameter {name!r} for {type(self).__name__}; valid parameters are: {valid}"
                )
            if sub:
                getattr(self, name).set_params(**{sub: value})
            else:
                setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()
        }
        shown = [
            f"{name}={value!r}" for name, value in self.get_params(deep=False).items()
            if not (name in defaults and _same(defaults[name], value))
        ]
        return f"{type(self).__name__}({', '.join(shown)})"

    # ------------------------------------------------------------------ hooks (adapters)

    def _resolve_params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _fit_native(self, X: np.ndarray, y: np.ndarray, params: dict[str, Any], names: list[str]) -> None:
        raise NotImplementedError

    def _predict_native(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _importance(self) -> np.ndarray:
        raise NotImplementedError

    def _save_native(self, path: Path) -> None:
        raise NotImplementedError

    @classmethod
    def _load_native(cls, path: Path, meta: dict[str, Any]) -> Model:
        raise NotImplementedError

    @classmethod
    def library_version(cls) -> str:
        raise NotImplementedError

    def _set_fitted(self, names: list[str], params: dict[str, Any], target: str | None) -> None:
        self.feature_names_in_ = np.asarray(names, dtype=object)
        self.n_features_in_ = len(names)
        self.hyperparameters_ = params
        self.target_name_ = target

    # ------------------------------------------------------------------ public API

    def validate(self) -> dict[str, Any]:
        """Check task and hyper-parameters without fitting; returns the resolved parameters."""
        if self.task not in TASKS:
            close = _closest(str(self.task), TASKS)
            hint = "" if close == "no close name" else f"{close} "
            raise ModelError(f"{self.kind}: unknown task {self.task!r}; {hint}expected one of {', '.join(TASKS)}")
        if not isinstance(self.random_state, int | np.integer) or isinstance(self.random_state, bool):
            raise ModelError(f"{self.kind}: random_state must be an integer, got {self.random_state!r}")
        return self._resolve_params()

    def fit(self, X: Any, y: Any) -> Model:
        params = self.validate()
        names = [str(c) for c in X.columns] if hasattr(X, "columns") else None
        Xa = as_matrix(X, None, names, f"{self.kind}.fit")
        names = names or default_feature_names(Xa.shape[1])
        if len(set(names)) != len(names):
            raise ModelError(f"{self.kind}.fit: duplicate feature names in {names}; make them unique")
        bad = [n for n in names if not _SAFE_NAME.match(n)]
        if bad:
            raise ModelError(
                f"{self.kind}.fit: feature names {bad} contain characters the model files cannot store; "
                f"use letters, digits and _ . - + only"
            )
        ya = np.asarray(y, dtype=np.float64).reshape(-1)
        if ya.shape[0] != Xa.shape[0]:
            raise ModelError(f"{self.kind}.fit: X has {Xa.shape[0]} rows but y has {ya.shape[0]}")
        if Xa.shape[0] < 2:
            raise ModelError(f"{self.kind}.fit: need at least 2 rows to fit, got {Xa.shape[0]}")
        if not np.isfinite(ya).all():
            raise ModelError(
                f"{self.kind}.fit: the target has {int((~np.isfinite(ya)).sum())} NaN/inf values; drop the "
                f"last horizon rows (their forward return is unknown) before fitting"
            )
        if not self.accepts_nan and not np.isfinite(Xa).all():
            raise ModelError(
                f"{self.kind}.fit: features contain NaN/inf ({int((~np.isfinite(Xa)).sum())} cells); "
                f"{self.kind} cannot handle missing values: drop the warm-up rows first"
            )
        if self.task == "classification":
            classes = np.unique(ya)
            if not np.isin(classes, (0.0, 1.0)).all() or classes.size != 2:
                raise ModelError(
                    f"{self.kind}.fit: classification needs a 0/1 direction target with both classes, "
                    f"got values {classes[:5].tolist()}; use aitrader.features.targets.direction"
                )
        self._fit_native(Xa, ya, params, names)
        target = getattr(y, "name", None)
        self._set_fitted(names, params, None if target is None else str(target))
        return self

    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "n_features_in_"):
            raise ModelNotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) before {method}()")

    def _matrix(self, X: Any, method: str) -> np.ndarray:
        self._check_fitted(method)
        Xa = as_matrix(X, self.n_features_in_, list(self.feature_names_in_), f"{self.kind}.{method}")
        if not self.accepts_nan and not np.isfinite(Xa).all():
            raise ModelError(
                f"{self.kind}.{method}: features contain NaN/inf; {self.kind} cannot handle missing "
                f"values: drop the warm-up rows first"
            )
        return Xa

    def predict(self, X: Any) -> np.ndarray:
        """Forward-return predictions (regression) or 0/1 labels (classification)."""
        raw = self._predict_native(self._matrix(X, "predict"))
        if self.task == "classification":
            return (raw >= 0.5).astype(np.int64)
        return raw

    def predict_proba(self, X: Any) -> np.ndarray:
        """Shape (n, 2): P(down), P(up), like scikit-learn classifiers."""
        if self.task != "classification":
            raise ModelError(
                f"{self.kind}: predict_proba needs task='classification', this model is a {self.task} "
                f"model; use predict()"
            )
        p = self._predict_native(self._matrix(X, "predict_proba"))
        return np.column_stack([1.0 - p, p])

    def predict_score(self, X: Any) -> np.ndarray:
        """What the runner returns: the forward return (regression) or P(up) (classification)."""
        return self._predict_native(self._matrix(X, "predict_score"))

    def feature_importance(self) -> dict[str, float]:
        """Feature name -> importance (gain for boosters, impurity for forests, |coef| for ridge)."""
        self._check_fitted("feature_importance")
        scores = np.asarray(self._importance(), dtype=np.float64)
        return {str(n): float(s) for n, s in zip(self.feature_names_in_, scores, strict=True)}

    def info(self) -> dict[str, Any]:
        fitted = hasattr(self, "n_features_in_")
        return {
            "kind": self.kind,
            "library": self.library,
            "library_version": self.library_version(),
            "task": self.task,
            "target": self.target_name_ if fitted else None,
            "features": [str(n) for n in self.feature_names_in_] if fitted else None,
            "n_features": self.n_features_in_ if fitted else None,
            "hyperparameters": dict(self.hyperparameters_) if fitted else self.validate(),
            "random_state": int(self.random_state),
            "fitted": fitted,
            "pickle_based": self.pickle_based,
        }

    def save(self, directory: str | Path) -> dict[str, Any]:
        """Write the native model file into ``directory``; returns the manifest's ``model`` section."""
        self._check_fitted("save")
        directory = Path(directory)
        atomic_write(directory / self.native_file, self._save_native)
        return {
            "kind": self.kind,
            "library": self.library,
            "library_version": self.library_version(),
            "task": self.task,
            "format": self.format,
            "files": {"native": self.native_file},
            "pickle_based": self.pickle_based,
            "hyperparameters": _jsonable(self.hyperparameters_),
            "random_state": int(self.random_state),
        }


def _same(default: Any, value: Any) -> bool:
    try:
        return bool(default is value or default == value)
    except Exception:  # an array-like value: never equal to a scalar default
        return False


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)
