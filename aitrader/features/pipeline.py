"""FeaturePipeline: an ordered list of features, its contract, and both evaluators."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aitrader.data.validate import MAX_PRICE, MAX_VOLUME, MIN_PRICE
from aitrader.errors import DataError, FeatureError, FeatureMismatchError
from aitrader.features import batch
from aitrader.features import fitted as fitted_mod
from aitrader.features.kinds import KINDS
from aitrader.features.registry import FeatureRegistry, FeatureSpec, spec_hash
from aitrader.features.streaming import StreamingFeatures

COLUMNS = ("open", "high", "low", "close", "volume")


def _canon(params: Any) -> str:
    return json.dumps(params, sort_keys=True)



def _book_kinds() -> Any:
    from aitrader.features.kinds import BOOK_KINDS

    return BOOK_KINDS


def _is_fitted(kind: str) -> bool:
    """True for a built-in fitted kind; plug-in kinds (not in KINDS) are plain: the plug-in
    interface has batch and streaming functions only, no train-time fit."""
    found = KINDS.get(kind)
    return found is not None and found.fitted

class FeaturePipeline:
    """Features in a fixed order; ``transform`` (batch) and ``stream`` (live) produce the same values."""

    def __init__(self, names: list[str] | None = None, registry: FeatureRegistry | None = None,
                 fitted: dict[str, dict[str, Any]] | None = None) -> None:
        self.registry = registry if registry is not None else FeatureRegistry.load()
        chosen = list(names) if names else self.registry.default_names()
        self.specs: list[FeatureSpec] = []
        seen: set[str] = set()
        for name in chosen:
            spec = self.registry.spec(name)
            if spec.name not in seen:  # an alias and its canonical name count once
                seen.add(spec.name)
                self.specs.append(spec)
        if not self.specs:
            raise FeatureMismatchError("no features selected; name at least one feature or use the default set")
        #: Order-book snapshots for the book features (docs/orderbook.md); set with :meth:`with_book`.
        self.book: Any = None
        self._layout()
        #: Fitted parameters by feature name (``fitted.entry`` records); None until :meth:`fit`.
        self.fitted_params: dict[str, dict[str, Any]] | None = None
        self._evaluators: list[fitted_mod.Evaluator] = []
        if fitted is not None:
            self._set_fitted(fitted)

    # ------------------------------------------------------------------------------- fitted features
    def _layout(self) -> None:
        """Where each output column comes from: a column of the base evaluation (plain specs, then
        the distinct base inputs of the fitted specs) or a fitted evaluator over some of them."""
        self.fitted_specs = [s for s in self.specs if _is_fitted(s.kind)]
        base = [s for s in self.specs if not _is_fitted(s.kind)]
        position = {fitted_mod.identity_key(s): i for i, s in enumerate(base)}
        self._inputs: dict[str, list[int]] = {}
        for spec in self.fitted_specs:
            cols = []
            for b in fitted_mod.base_inputs(spec):
                key = fitted_mod.identity_key(b)
                if key not in position:
                    position[key] = len(base)
                    base.append(b)
                cols.append(position[key])
            self._inputs[spec.name] = cols
        self.base_specs = base
        self._plain_col = {s.name: position[fitted_mod.identity_key(s)] for s in self.specs
                           if not _is_fitted(s.kind)}

    def _set_fitted(self, params: dict[str, dict[str, Any]]) -> None:
        evaluators = []
        for spec in self.fitted_specs:
            rec = params.get(spec.name)
            expected = fitted_mod.entry(spec, {})
            if not isinstance(rec, dict) or any(rec.get(k) != expected[k] for k in ("kind", "version", "params")):
                raise FeatureMismatchError(
                    f"feature {spec.name}: no fitted parameters for kind {spec.kind} {_canon(spec.params)} "
                    f"(version {spec.version}); the fitted parameters belong to another definition: retrain the model")
            try:
                evaluators.append(fitted_mod.evaluator(spec, rec["values"]))
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise FeatureMismatchError(f"feature {spec.name}: malformed fitted parameters ({exc!r}); "
                                           "retrain the model") from exc
        self.fitted_params = {s.name: params[s.name] for s in self.fitted_specs}
        self._evaluators = evaluators

    @property
    def needs_fit(self) -> bool:
        """True when some feature is fitted and this pipeline has no parameters for it yet."""
        return bool(self.fitted_specs) and self.fitted_params is None

    def _require_fitted(self) -> None:
        if self.needs_fit:
            names = ", ".join(s.name for s in self.fitted_specs)
            raise FeatureMismatchError(
                f"fitted features {names} have no fitted parameters: they are learned at train time "
                "(`aitrader train`) and loaded with the model's artifact; a bare pipeline cannot compute them")

    def base_matrix(self, bars: pd.DataFrame) -> np.ndarray:
        """Batch values of :attr:`base_specs` (plain features and fitted features' inputs) over ``bars``."""
        return self._base_values(bars, validate_bars(bars))

    def _base_values(self, bars: pd.DataFrame, arrays: Any) -> np.ndarray:
        if any(s.kind in _book_kinds() for s in self.base_specs):
            from aitrader.features import book

            return book.transform(self.base_specs, bars, arrays, self._require_book())  # type: ignore[no-any-return]
        return batch.compute(self.base_specs, *arrays)

    def _base_stream(self, buffer_size: int) -> Any:
        if any(s.kind in _book_kinds() for s in self.base_specs):
            from aitrader.features.book import PipelineStream

            return PipelineStream(self.base_specs, buffer_size, self._require_book())
        return StreamingFeatures(self.base_specs, buffer_size)

    def fit(self, bars: pd.DataFrame, rows: np.ndarray) -> FeaturePipeline:
        """A copy of this pipeline with its fitted features learned on bar positions ``rows`` only."""
        return self.fit_matrix(self.base_matrix(bars), rows)

    def fit_matrix(self, base: np.ndarray, rows: np.ndarray) -> FeaturePipeline:
        """:meth:`fit` from a :meth:`base_matrix` already computed (the trainer fits once per fold)."""
        params = {s.name: fitted_mod.entry(s, fitted_mod.fit_one(s, base[:, self._inputs[s.name]], rows))
                  for s in self.fitted_specs}
        return FeaturePipeline(self.names, self.registry, params).with_book(self.book)

    def assemble(self, base: np.ndarray, *, placeholder: bool = False) -> np.ndarray:
        """Output matrix (``names`` order) from a :meth:`base_matrix`. ``placeholder``: an unfitted
        pipeline's fitted columns hold 0.0 where their inputs are known (NaN elsewhere), to find the
        rows a fit will give values to; never used as features."""
        if not placeholder:
            self._require_fitted()
        out = np.empty((len(base), len(self.specs)), order="F")
        evaluators = iter(self._evaluators)
        for j, spec in enumerate(self.specs):
            if spec.name in self._plain_col:
                out[:, j] = base[:, self._plain_col[spec.name]]
                continue
            inputs = base[:, self._inputs[spec.name]]
            if placeholder:
                out[:, j] = np.where(np.isfinite(inputs).all(axis=1), 0.0, np.nan)
            else:
                out[:, j] = next(evaluators).batch(inputs)
            out[: spec.warmup, j] = np.nan
        return out

    def save_fitted(self, folder: str | Path) -> Path | None:
        """Write the fitted parameters file into the artifact ``folder`` (None: nothing is fitted)."""
        if not self.fitted_specs:
            return None
        self._require_fitted()
        assert self.fitted_params is not None
        path = Path(folder) / fitted_mod.FITTED_FILE
        path.write_bytes(fitted_mod.dumps(self.fitted_params))
        return path

    @property
    def names(self) -> list[str]:
        """Canonical names, in column order."""
        return [s.name for s in self.specs]

    @property
    def warmup(self) -> int:
        """Bars before every feature has a value (the longest warm-up)."""
        return max(s.warmup for s in self.specs)

    @property
    def spec_hash(self) -> str:
        return spec_hash(self.specs)

    @property
    def book_features(self) -> list[str]:
        """Names of the features that read order-book snapshots (empty: bars alone suffice)."""
        from aitrader.features.kinds import BOOK_KINDS

        return [s.name for s in self.specs if s.kind in BOOK_KINDS]

    @property
    def needs_book(self) -> bool:
        return bool(self.book_features)

    def with_book(self, book: Any) -> FeaturePipeline:
        """Give the book features their snapshots (an :class:`aitrader.data.book.Book`); returns self."""
        self.book = book
        return self

    def _require_book(self) -> Any:
        if self.book is None:
            from aitrader.features.book import NEEDS_BOOK

            raise FeatureError(f"order-book features ({', '.join(self.book_features)}) {NEEDS_BOOK}")
        return self.book

    def contract(self) -> dict[str, Any]:
        """What a model trained on this pipeline records: names, params, warm-up and spec hash, with
        fitted features the parameters file and its SHA256 (``fitted``), and ``inputs: [bars, book]``
        when some feature reads order-book snapshots."""
        out: dict[str, Any] = {"names": self.names, "params": {s.name: dict(s.params) for s in self.specs},
                               "warmup": self.warmup, "spec_hash": self.spec_hash}
        if self.needs_book:
            out["inputs"] = ["bars", "book"]
        if self.fitted_specs:
            self._require_fitted()
            assert self.fitted_params is not None
            out["fitted"] = {"file": fitted_mod.FITTED_FILE, "sha256": fitted_mod.digest(self.fitted_params),
                             "features": [s.name for s in self.fitted_specs]}
        return out

    @classmethod
    def from_contract(cls, contract: dict[str, Any], registry: FeatureRegistry | None = None,
                      folder: str | Path | None = None) -> FeaturePipeline:
        """The pipeline that reproduces ``contract`` exactly, or FeatureMismatchError naming the difference.

        ``folder``: the model's artifact folder, where fitted features' parameters are read from
        (checked against the SHA256 the contract recorded); required when the contract has any."""
        registry = registry if registry is not None else FeatureRegistry.load()
        names = contract.get("names")
        if not isinstance(names, list) or not names:
            raise FeatureMismatchError(f"feature contract has no feature names: {contract!r}")
        missing = [n for n in names if n not in registry or registry.resolve(n) != n]
        if missing:
            raise FeatureMismatchError(
                f"model expects features the registry ({registry.source}) does not define under those names: "
                f"{', '.join(missing)}; restore their definitions in features.yaml or retrain the model")
        pipeline = cls(list(names), registry)
        pipeline.check_contract(contract)
        if pipeline.fitted_specs:
            if folder is None:
                raise FeatureMismatchError(
                    f"features {', '.join(s.name for s in pipeline.fitted_specs)} are fitted: their parameters "
                    "are in the model's artifact; load the pipeline with the model (its folder)")
            pipeline._set_fitted(fitted_mod.load(folder, contract))
            if fitted_mod.digest(pipeline.fitted_params or {}) != contract["fitted"]["sha256"]:
                raise FeatureMismatchError("the fitted parameters file holds parameters for other features than "
                                           "the contract's; retrain the model")
        elif contract.get("fitted"):
            raise FeatureMismatchError(f"model has fitted features {contract['fitted'].get('features')} that the "
                                       "pipeline does not define as fitted; restore features.yaml or retrain")
        return pipeline

    def check_contract(self, contract: dict[str, Any]) -> None:
        """Raise FeatureMismatchError unless this pipeline produces exactly ``contract``'s features."""
        names = list(contract.get("names") or [])
        if names != self.names:
            extra = [n for n in self.names if n not in names]
            lost = [n for n in names if n not in self.names]
            detail = (f"missing {lost}" if lost else "") + ("; " if lost and extra else "") + (
                f"unexpected {extra}" if extra else "")
            raise FeatureMismatchError(f"model expects features {names}, pipeline has {self.names}"
                                       f" ({detail or 'different order'}); build the pipeline from the contract")
        params = contract.get("params") or {}
        for spec in self.specs:
            expected = params.get(spec.name)
            if expected is not None and _canon(expected) != _canon(spec.params):
                raise FeatureMismatchError(
                    f"feature {spec.name}: model expects params {_canon(expected)}, pipeline has "
                    f"{_canon(spec.params)}; restore the definition in features.yaml or retrain the model")
        expected_hash = contract.get("spec_hash")
        if expected_hash != self.spec_hash:
            raise FeatureMismatchError(
                f"feature spec hash: model expects {str(expected_hash)[:12]}..., pipeline has "
                f"{self.spec_hash[:12]}...: a feature's kind, warm-up or implementation version changed since "
                "training; restore the definitions or retrain the model")

    def transform(self, bars: pd.DataFrame) -> pd.DataFrame:
        """Batch evaluation over a whole bar frame: float64 columns ``names``, NaN during warm-up."""
        arrays = validate_bars(bars)
        if self.fitted_specs:
            self._require_fitted()
            values = self.assemble(self._base_values(bars, arrays))
        elif self.needs_book:
            from aitrader.features import book

            values = book.transform(self.specs, bars, arrays, self._require_book())
        else:
            values = batch.compute(self.specs, *arrays)
        # copy=False: the fresh Fortran-ordered matrix becomes the frame's block as it is (pandas 3
        # would otherwise copy it, a quarter of the time on a million bars).
        return pd.DataFrame(values, index=bars.index, columns=self.names, dtype="float64", copy=False)

    def stream(self, buffer_size: int = 500) -> StreamingFeatures | fitted_mod.FittedStreamingFeatures:
        """A fresh bar-by-bar evaluator of the same features."""
        if self.fitted_specs:
            self._require_fitted()
            assert self.fitted_params is not None
            return fitted_mod.FittedStreamingFeatures(
                self._base_stream(buffer_size), self.specs, self._plain_col, self._inputs,
                [fitted_mod.evaluator(s, self.fitted_params[s.name]["values"]) for s in self.fitted_specs])
        if self.needs_book:
            from aitrader.features.book import PipelineStream

            return PipelineStream(self.specs, buffer_size, self._require_book())  # type: ignore[return-value]
        return StreamingFeatures(self.specs, buffer_size)

    def transform_streaming(self, bars: pd.DataFrame, buffer_size: int = 500) -> pd.DataFrame:
        """Streaming evaluation bar by bar over a frame (same columns and values as ``transform``)."""
        arrays = validate_bars(bars)
        values = self.stream(buffer_size).run(*arrays, index=bars.index)
        return pd.DataFrame(values, index=bars.index, columns=self.names, dtype="float64")


Arrays5 = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def validate_bars(bars: pd.DataFrame) -> Arrays5:
    """The five columns as float64 arrays; DataError naming the first bad row otherwise."""
    missing = [c for c in COLUMNS if c not in bars.columns]
    if missing:
        raise DataError(f"bars lack columns {missing}; expected {', '.join(COLUMNS)}")
    try:
        o, h, low, c, v = (np.ascontiguousarray(bars[c].to_numpy(dtype="float64")) for c in COLUMNS)
    except (TypeError, ValueError) as exc:
        raise DataError(f"bar columns must be numeric: {exc}") from exc
    with np.errstate(invalid="ignore"):
        # NaN fails every comparison; the bounds refuse inf and magnitudes that overflow the kernels.
        lo, hi = np.minimum.reduce((o, h, low, c)), np.maximum.reduce((o, h, low, c))
        bad = ~((lo >= MIN_PRICE) & (hi <= MAX_PRICE) & (v >= 0) & (v <= MAX_VOLUME))
    if bad.any():
        k = int(np.argmax(bad))
        values = " ".join(f"{name}={float(col[k])!r}" for name, col in zip(COLUMNS, (o, h, low, c, v), strict=True))
        raise DataError(f"bar {k} ({bars.index[k]}): invalid values {values}; prices must be in "
                        f"[{MIN_PRICE:g}, {MAX_PRICE:g}], volume in [0, {MAX_VOLUME:g}] (no NaN or inf); check the "
                        "data with `aitrader data check`")
    return o, h, low, c, v
