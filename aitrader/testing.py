"""The public contract kit: check a feature kind, a model adapter or a strategy against aitrader's rules.

A plug-in author runs these in their own test suite (aitrader runs them over every built-in)::

    from aitrader.testing import check_feature_kind, check_model_adapter, check_strategy

    def test_contract():
        check_feature_kind(MY_KIND)            # a FeatureKind object, or the name of an installed/built-in kind
        check_model_adapter(MyModel)           # a aitrader.models.base.Model subclass
        check_strategy(MyStrategy)             # cls(confidence, *, min_confidence, position_size).decide(p)

Each check raises :class:`ContractError` (an ``AssertionError``) listing every broken rule, and
returns a small report of what it measured. The data is synthetic and seeded
(:func:`aitrader.data.synthetic.generate_bars`, with a flat stretch and a price jump spliced in), so
a result never depends on the machine or the run. An object that is not installed is checked
through the same code paths as an installed plug-in (:func:`aitrader.plugins.provide`).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aitrader.errors import AitraderError, DataError, ModelNotFittedError

#: batch == streaming after the warm-up within this (absolute, or relative above 1)
PARITY_TOLERANCE = 1e-7
#: a prefix of the bars must give the same batch values as the whole series (no look-ahead)
TRUNCATION_TOLERANCE = 1e-12
BARS = 800
SEEDS = (0, 1)
CUTS = (0.3, 0.55, 0.8)


class ContractError(AssertionError):
    """A feature kind, model adapter or strategy breaks the plug-in contract (docs/plugins.md)."""


class _Problems:
    def __init__(self, what: str) -> None:
        self.what = what
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_if_any(self) -> None:
        if self.items:
            raise ContractError(f"{self.what} breaks the contract:\n" + "\n".join(f"  - {m}" for m in self.items))


def contract_bars(n: int = BARS, seed: int = 0) -> pd.DataFrame:
    """Seeded synthetic bars with a flat stretch (40 equal bars, constant volume) and a 30% jump."""
    from aitrader.data.synthetic import generate_bars

    bars = generate_bars(n, seed=seed, volatility=0.015)[["open", "high", "low", "close", "volume"]]
    values = bars.to_numpy(dtype=np.float64, copy=True)
    flat_from, flat_to = n // 3, n // 3 + 40
    values[flat_from:flat_to, :4] = values[flat_from, 3]
    values[flat_from:flat_to, 4] = values[flat_from, 4]
    jump = (2 * n) // 3
    values[jump:, :4] *= 1.3
    bars = pd.DataFrame(values, index=bars.index, columns=bars.columns)
    return bars


# ---------------------------------------------------------------------- feature kinds


@contextlib.contextmanager
def _as_installed(group: str, name: str, obj: Any, installed: Any) -> Iterator[None]:
    """``obj`` as plug-in ``name`` for the block, unless it already is the installed one."""
    from aitrader import plugins

    if obj is installed:
        yield
        return
    with plugins.provide(group, name, obj, distribution="<aitrader.testing>"):
        yield


def _feature_definitions(kind: Any, params: dict[str, Any] | None, warmup: int | None) -> list[tuple[dict, int]]:
    from aitrader.features.kinds import FeatureKind
    from aitrader.features.registry import FeatureRegistry

    if params is not None:
        return [(dict(params), int(warmup if warmup is not None else kind.min_warmup(params)))]
    if isinstance(kind, FeatureKind) and kind.features:
        return [(dict(f.get("params") or {}), int(f["warmup"])) for f in kind.features]
    registry = FeatureRegistry.load()
    found = [(dict(s.params), s.warmup) for s in (registry.spec(n) for n in registry.names()) if s.kind == kind.name]
    if not found:
        raise ContractError(f"feature kind {kind.name!r}: no params to check it with; pass params=")
    return found


def _differences(a: np.ndarray, b: np.ndarray, tol: float) -> tuple[int, float]:
    """(rows where a and b differ beyond tol or in NaN-ness, largest difference among finite pairs)."""
    both = np.isfinite(a) & np.isfinite(b)
    diff = np.zeros_like(a)
    diff[both] = np.abs(a[both] - b[both]) / np.maximum(1.0, np.abs(a[both]))
    bad = (diff > tol) | (np.isnan(a) != np.isnan(b)) | (np.isinf(a) != np.isinf(b))
    return int(bad.sum()), float(diff.max()) if diff.size else 0.0


def check_feature_kind(kind: Any, params: dict[str, Any] | None = None, *, warmup: int | None = None,
                       n: int = BARS, seeds: tuple[int, ...] = SEEDS) -> dict[str, Any]:
    """Check a feature kind (a ``FeatureKind``, a ``Kind`` or a kind name) on seeded synthetic bars.

    For each definition (``params``, else the kind's own ``features`` entries, else every
    ``features.yaml`` entry of a built-in kind) and seed:

    * parity: the streaming evaluator equals batch within 1e-7 after the warm-up;
    * warm-up honoured: both give NaN before the declared warm-up and a finite value at every bar
      from it on (through a flat stretch and a 30% price jump);
    * no look-ahead: batch over the first k bars equals batch over all bars on those k rows;
    * independent state: two streams fed alternately give the same rows as one stream alone;
    * NaN input: a bar with a NaN close is refused (DataError) by both evaluators, and the stream
      continues as if it had never seen it.

    A fitted kind (``vol_regime``, ``hmm_regime_p``, ``anomaly_score``) is first fitted on the first
    half of each seed's bars, as ``aitrader train`` fits on training rows, then checked the same way.
    An order-book kind gets seeded snapshots aligned to the bars (:func:`aitrader.data.synthetic.generate_book`).
    """
    from aitrader import plugins
    from aitrader.features.kinds import KINDS, FeatureKind, check_params, get_kind, plugin_kind_problem
    from aitrader.features.pipeline import FeaturePipeline
    from aitrader.features.registry import FeatureRegistry, FeatureSpec

    obj = get_kind(kind) if isinstance(kind, str) else kind
    if obj is None:
        raise ContractError(f"feature kind {kind!r} is neither built in nor installed")
    problems = _Problems(f"feature kind {obj.name!r}")
    report: dict[str, Any] = {"kind": obj.name, "definitions": [], "max_parity_diff": 0.0}
    installed: Any = KINDS.get(obj.name)
    if installed is not obj:  # a plug-in kind, installed or not
        if not isinstance(obj, FeatureKind):
            raise ContractError(f"{obj!r} is not a FeatureKind: a plug-in kind needs batch and stream evaluators")
        problem = plugin_kind_problem(obj)
        if problem:
            problems.add(problem)
            problems.raise_if_any()
        if obj.name in plugins.discover("features"):
            with contextlib.suppress(AitraderError):
                installed = get_kind(obj.name)
    with _as_installed("features", obj.name, obj, installed):
        for p, wu in _feature_definitions(obj, params, warmup):
            bad = check_params(obj, p)
            if bad:
                problems.add(f"params {p}: {'; '.join(bad)}")
                continue
            if wu < obj.min_warmup(p):
                problems.add(f"params {p}: warm-up {wu} is below the kind's min_warmup {obj.min_warmup(p)}")
                continue
            spec = FeatureSpec(name="contract_check", description="contract kit", group="indicator", kind=obj.name,
                               params=p, warmup=wu)
            pipeline = FeaturePipeline(["contract_check"], FeatureRegistry([spec], source="<aitrader.testing>"))
            where = f"params {p}, warm-up {wu}"
            report["definitions"].append({"params": p, "warmup": wu})
            for seed in seeds:
                bars = contract_bars(n, seed)
                checked = _prepared(pipeline, bars, seed, f"{where}, seed {seed}", problems)
                if checked is None:
                    continue
                _check_definition(checked, bars, f"{where}, seed {seed}", problems, report)
    problems.raise_if_any()
    return report


def _prepared(pipeline: Any, bars: pd.DataFrame, seed: int, where: str, problems: _Problems) -> Any:
    """The pipeline ready to evaluate ``bars``: an order-book kind gets seeded snapshots aligned to the
    bars, with none missing (a stale book is NaN by design; staleness has its own tests); a fitted kind
    is fitted on the first half of the bars, as ``aitrader train`` fits on training rows. None (and a
    problem recorded) when the fit fails."""
    if pipeline.needs_book:
        from aitrader.data.synthetic import generate_book

        pipeline = pipeline.with_book(generate_book(bars, seed=seed, missing=0.0))
    if not pipeline.fitted_specs:
        return pipeline
    try:
        return pipeline.fit(bars, np.arange(len(bars) // 2))
    except Exception as exc:  # noqa: BLE001 - a failing fit is a broken contract
        problems.add(f"{where}: fit on the first {len(bars) // 2} bars failed: {type(exc).__name__}: {exc}")
        return None


def _check_definition(pipeline: Any, bars: pd.DataFrame, where: str, problems: _Problems,
                      report: dict[str, Any]) -> None:
    wu = pipeline.warmup
    try:
        batch = pipeline.transform(bars).to_numpy()[:, 0]
        stream = pipeline.transform_streaming(bars).to_numpy()[:, 0]
    except Exception as exc:  # noqa: BLE001 - any failure of the evaluators is a broken contract
        problems.add(f"{where}: evaluation failed: {type(exc).__name__}: {exc}")
        return
    early = [name for name, col in (("batch", batch), ("streaming", stream)) if not np.isnan(col[:wu]).all()]
    if early:
        problems.add(f"{where}: {' and '.join(early)} gave values before the warm-up")
    for name, col in (("batch", batch), ("streaming", stream)):
        nonfinite = np.flatnonzero(~np.isfinite(col[wu:]))
        if nonfinite.size:
            problems.add(f"{where}: {name} is NaN/inf at {nonfinite.size} bars after the warm-up "
                         f"(first: bar {wu + int(nonfinite[0])}); raise the warm-up or handle flat windows")
    off, worst = _differences(batch[wu:], stream[wu:], PARITY_TOLERANCE)
    report["max_parity_diff"] = max(report["max_parity_diff"], worst)
    if off:
        problems.add(f"{where}: streaming differs from batch at {off} bars after the warm-up "
                     f"(largest difference {worst:.3g} > {PARITY_TOLERANCE:g})")
    for frac in CUTS:
        k = int(len(bars) * frac)
        prefix = pipeline.transform(bars.iloc[:k]).to_numpy()[:, 0]
        bad, diff = _differences(batch[:k], prefix, TRUNCATION_TOLERANCE)
        if bad:
            problems.add(f"{where}: look-ahead: batch over the first {k} bars differs from batch over all "
                         f"{len(bars)} bars on {bad} of those rows (largest difference {diff:.3g})")
            break
    _check_streams(pipeline, bars, stream, where, problems)


def _check_streams(pipeline: Any, bars: pd.DataFrame, alone: np.ndarray, where: str, problems: _Problems) -> None:
    rows = list(bars.itertuples())
    a, b = pipeline.stream(), pipeline.stream()
    got_a, got_b = np.empty(len(rows)), np.empty(len(rows))
    for i, r in enumerate(rows):
        got_a[i] = a.update(r.Index, r.open, r.high, r.low, r.close, r.volume)[0]
        got_b[i] = b.update(r.Index, r.open, r.high, r.low, r.close, r.volume)[0]
    if _differences(got_a, alone, 0.0)[0] or _differences(got_b, alone, 0.0)[0]:
        problems.add(f"{where}: two streams fed alternately differ from one stream alone: the kind shares "
                     "state between streams (keep it inside the function stream(params) returns)")
    k = len(rows) // 2
    broken = bars.iloc[[k]].assign(close=math.nan)
    try:
        pipeline.transform(pd.concat([bars.iloc[:k], broken]))
        problems.add(f"{where}: batch accepted a bar with a NaN close")
    except DataError:
        pass
    s = pipeline.stream()
    out = np.empty(len(rows))
    for i, r in enumerate(rows):
        if i == k:
            try:
                s.update(r.Index, r.open, r.high, r.low, math.nan, r.volume)
                problems.add(f"{where}: streaming accepted a bar with a NaN close")
                return
            except DataError:
                pass
        out[i] = s.update(r.Index, r.open, r.high, r.low, r.close, r.volume)[0]
    if _differences(out, alone, 0.0)[0]:
        problems.add(f"{where}: a refused NaN bar changed the stream's later values")


# ---------------------------------------------------------------------- model adapters


def _dataset(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["f_a", "f_b", "f_c", "f_d"])
    y = 0.8 * X["f_a"] - 0.5 * X["f_b"] + 0.3 * X["f_c"] * X["f_a"] + 0.2 * rng.normal(size=n)
    return X, pd.Series(np.asarray(y), name="fwd_return_5")


def check_model_adapter(cls: Any, *, params: dict[str, Any] | None = None,
                        tasks: tuple[str, ...] = ("regression", "classification")) -> dict[str, Any]:
    """Check a :class:`~aitrader.models.base.Model` subclass on a seeded synthetic data set.

    Per task: predict before fit raises ModelNotFittedError; fit returns self and sets
    ``n_features_in_``/``feature_names_in_``; predict/predict_score give one finite value per row
    (labels 0/1 and ``predict_proba`` rows summing to 1 for classification) and learn the planted
    signal (training-row correlation > 0.5); a second fit with the same ``random_state`` predicts
    identically; ``save`` -> ``load_model`` predicts identically; ``get_params``/``clone`` work;
    ``feature_importance`` names every feature with a finite value; a runner over the model
    (``ModelRunner.from_model``) predicts what ``predict_score`` does.
    """
    from aitrader import plugins
    from aitrader.models import MODEL_KINDS, model_class, plugin_model_problem
    from aitrader.models.base import Model

    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise ContractError(f"{cls!r} is not a subclass of aitrader.models.base.Model")
    problems = _Problems(f"model adapter {cls.__name__} (kind {cls.kind!r})")
    installed: Any = None
    if cls.kind in MODEL_KINDS or cls.kind in plugins.discover("models"):
        with contextlib.suppress(AitraderError):
            installed = model_class(cls.kind)
    if cls is not installed or cls.kind not in MODEL_KINDS:  # a plug-in adapter, installed or not
        problem = plugin_model_problem(cls)
        if problem:
            problems.add(problem)
            problems.raise_if_any()
    report: dict[str, Any] = {"kind": cls.kind, "tasks": {}}
    with _as_installed("models", cls.kind, cls, installed):
        for task in tasks:
            try:
                report["tasks"][task] = _check_task(cls, task, params, problems)
            except ContractError:
                raise
            except Exception as exc:  # noqa: BLE001 - any crash is a broken contract
                problems.add(f"{task}: {type(exc).__name__}: {exc}")
    problems.raise_if_any()
    return report


def _check_round_trip(cls: Any, model: Any, X: pd.DataFrame, score: np.ndarray, task: str,
                      problems: _Problems) -> None:
    """save -> load_model predicts exactly what the saved model did; the model section is complete JSON."""
    import json

    from aitrader.models import load_model

    with tempfile.TemporaryDirectory(prefix="aitrader-contract-") as tmp:
        meta = model.save(tmp)
        for key in ("kind", "library", "task", "format", "files", "pickle_based", "hyperparameters", "random_state"):
            if key not in meta:
                problems.add(f"{task}: save() result lacks the manifest key {key!r}")
        native = (meta.get("files") or {}).get("native")
        if meta.get("kind") != cls.kind or not native or not (Path(tmp) / str(native)).is_file():
            problems.add(f"{task}: save() must write files.native and report kind {cls.kind!r}, got {meta}")
            return
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as exc:
            problems.add(f"{task}: save() result is not JSON: {exc}")
        loaded = load_model(tmp, meta, trust_pickle=True)
        if not np.array_equal(np.asarray(loaded.predict_score(X), dtype=np.float64), score):
            problems.add(f"{task}: save -> load_model predicts differently from the saved model")


def _check_extras(model: Any, X: pd.DataFrame, score: np.ndarray, task: str, problems: _Problems) -> None:
    """feature_importance, get_params/clone (the scikit-learn contract) and a runner over the model."""
    from sklearn.base import clone

    from aitrader.models.runner import ModelRunner

    importance = model.feature_importance()
    if list(importance) != list(X.columns) or not all(math.isfinite(v) for v in importance.values()):
        problems.add(f"{task}: feature_importance must give a finite value for each of {list(X.columns)}")
    params_now = model.get_params(deep=False)
    if "task" not in params_now or "random_state" not in params_now:
        problems.add(f"{task}: get_params lacks task/random_state: {params_now}")
    try:
        copy = clone(model)
        if repr(copy.get_params(deep=False)) != repr(params_now) or hasattr(copy, "n_features_in_"):
            problems.add(f"{task}: sklearn.base.clone must give an unfitted model with the same parameters")
    except Exception as exc:  # noqa: BLE001
        problems.add(f"{task}: sklearn.base.clone failed: {type(exc).__name__}: {exc}")
    runner = ModelRunner.from_model(model)
    if not np.allclose(runner.predict_batch(X.to_numpy()), score, rtol=1e-6, atol=1e-9) or \
            not math.isclose(runner.predict_one(X.to_numpy()[0]), float(score[0]), rel_tol=1e-6, abs_tol=1e-9):
        problems.add(f"{task}: ModelRunner.from_model predicts differently from predict_score")


def _check_task(cls: Any, task: str, params: dict[str, Any] | None, problems: _Problems) -> dict[str, Any]:
    X, y = _dataset()
    target = (y > 0).astype(np.float64) if task == "classification" else y
    model = cls(task=task, random_state=3, params=params)
    try:
        model.predict(X)
        problems.add(f"{task}: predict before fit did not raise ModelNotFittedError")
    except ModelNotFittedError:
        pass
    if model.fit(X, target) is not model:
        problems.add(f"{task}: fit did not return self")
    if getattr(model, "n_features_in_", None) != 4 or list(getattr(model, "feature_names_in_", [])) != list(X.columns):
        problems.add(f"{task}: fit did not set n_features_in_ = 4 and feature_names_in_ = {list(X.columns)}")
    score = np.asarray(model.predict_score(X), dtype=np.float64)
    pred = np.asarray(model.predict(X))
    if score.shape != (len(X),) or pred.shape != (len(X),):
        problems.add(f"{task}: predict/predict_score shapes {pred.shape}/{score.shape}, expected ({len(X)},)")
        return {}
    if not np.isfinite(score).all():
        problems.add(f"{task}: predict_score gave NaN/inf")
    corr = float(np.corrcoef(score, target)[0, 1]) if np.std(score) > 0 else 0.0
    if not corr > 0.5:
        problems.add(f"{task}: predictions do not follow the planted signal (training correlation {corr:.3f} <= 0.5)")
    if task == "classification":
        proba = np.asarray(model.predict_proba(X))
        if proba.shape != (len(X), 2) or not np.allclose(proba.sum(axis=1), 1.0) or not np.isin(pred, (0, 1)).all():
            problems.add(f"{task}: predict_proba must be (n, 2) rows summing to 1 and predict 0/1 labels")
    again = cls(task=task, random_state=3, params=params).fit(X, target)
    if not np.array_equal(np.asarray(again.predict_score(X)), score):
        problems.add(f"{task}: two fits with the same random_state predict differently (not deterministic)")
    shuffled = X[list(reversed(X.columns))]
    if not np.array_equal(np.asarray(model.predict_score(shuffled)), score):
        problems.add(f"{task}: a frame with the same columns in another order predicts differently")
    _check_round_trip(cls, model, X, score, task, problems)
    _check_extras(model, X, score, task, problems)
    return {"train_corr": corr}


# ---------------------------------------------------------------------- strategies


def check_strategy(cls: Any) -> dict[str, Any]:
    """Check a strategy class: ``cls(confidence, *, min_confidence, position_size).decide(raw)``.

    Over a grid of predictions (both signs, zero, tiny, huge, NaN) for a regression and a
    classification confidence model: a :class:`~aitrader.trading.strategy.Decision` with direction
    in {-1, 0, 1}, confidence in [0, 1], ``|target_fraction| <= position_size`` with the sign of the
    direction (0 when flat); no position below ``min_confidence`` or on NaN; the same input gives
    the same decision in a fresh instance (no hidden state)."""
    from aitrader.trading.strategy import ConfidenceModel, Decision

    problems = _Problems(f"strategy {getattr(cls, '__name__', cls)!r}")
    if not isinstance(cls, type) or not callable(getattr(cls, "decide", None)):
        raise ContractError(f"{cls!r} is not a class with a decide(raw_prediction) method")
    quantiles = list(np.linspace(-0.02, 0.02, 101))
    models = {"regression": (ConfidenceModel(task="regression", quantiles=quantiles),
                             [-1.0, -0.03, -0.01, -0.004, -1e-9, 0.0, 1e-9, 0.004, 0.01, 0.03, 1.0, math.nan]),
              "classification": (ConfidenceModel(task="classification"),
                                 [0.0, 0.1, 0.3, 0.45, 0.5, 0.55, 0.7, 0.9, 1.0, math.nan])}
    decisions = 0
    for task, (conf, grid) in models.items():
        for min_conf, size in ((0.0, 0.05), (0.6, 0.02)):
            first = cls(conf, min_confidence=min_conf, position_size=size)
            seen: list[Any] = []
            for raw in grid:
                where = f"{task}, min_confidence {min_conf}, position_size {size}, prediction {raw!r}"
                try:
                    d = first.decide(raw)
                except Exception as exc:  # noqa: BLE001
                    problems.add(f"{where}: decide raised {type(exc).__name__}: {exc}")
                    continue
                decisions += 1
                seen.append((raw, d))
                if not isinstance(d, Decision):
                    problems.add(f"{where}: decide returned {type(d).__name__}, not a Decision")
                    continue
                _check_decision(d, raw, min_conf, size, where, problems)
            for raw, d in seen:  # the same prediction in a fresh instance: the same decision (NaN-safe)
                if repr(cls(conf, min_confidence=min_conf, position_size=size).decide(raw)) != repr(d):
                    problems.add(f"{task}: decide({raw!r}) differs between a fresh instance and one that decided "
                                 "earlier predictions: the strategy keeps hidden state")
                    break
    problems.raise_if_any()
    return {"strategy": getattr(cls, "__name__", str(cls)), "decisions": decisions}


def _check_decision(d: Any, raw: float, min_conf: float, size: float, where: str, problems: _Problems) -> None:
    if d.direction not in (-1, 0, 1):
        problems.add(f"{where}: direction {d.direction!r} is not -1, 0 or 1")
    if not (0.0 <= d.confidence <= 1.0) and not math.isnan(raw):
        problems.add(f"{where}: confidence {d.confidence!r} is outside [0, 1]")
    t = d.target_fraction
    if not math.isfinite(t) or abs(t) > size + 1e-15:
        problems.add(f"{where}: target_fraction {t!r} exceeds position_size {size}")
    elif (t > 0 and d.direction != 1) or (t < 0 and d.direction != -1) or (t == 0 and d.direction != 0):
        problems.add(f"{where}: target_fraction {t!r} does not have the sign of direction {d.direction}")
    if math.isnan(raw) and (d.direction != 0 or t != 0.0):
        problems.add(f"{where}: a NaN prediction must give no position")
    elif d.confidence < min_conf and t != 0.0:
        problems.add(f"{where}: a position ({t!r}) below min_confidence ({d.confidence:.3f} < {min_conf})")
