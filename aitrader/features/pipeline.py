"""FeaturePipeline: an ordered list of features, its contract, and both evaluators."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from aitrader.data.validate import MAX_PRICE, MAX_VOLUME, MIN_PRICE
from aitrader.errors import DataError, FeatureError, FeatureMismatchError
from aitrader.features import batch
from aitrader.features.registry import FeatureRegistry, FeatureSpec, spec_hash
from aitrader.features.streaming import StreamingFeatures

COLUMNS = ("open", "high", "low", "close", "volume")


def _canon(params: Any) -> str:
    return json.dumps(params, sort_keys=True)


class FeaturePipeline:
    """Features in a fixed order; ``transform`` (batch) and ``stream`` (live) produce the same values."""

    def __init__(self, names: list[str] | None = None, registry: FeatureRegistry | None = None) -> None:
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
        """What a model trained on this pipeline records: names, params, warm-up and spec hash
        (and ``inputs: [bars, book]`` when some feature reads order-book snapshots)."""
        contract = {"names": self.names, "params": {s.name: dict(s.params) for s in self.specs},
                    "warmup": self.warmup, "spec_hash": self.spec_hash}
        if self.needs_book:
            contract["inputs"] = ["bars", "book"]
        return contract

    @classmethod
    def from_contract(cls, contract: dict[str, Any], registry: FeatureRegistry | None = None) -> FeaturePipeline:
        """The pipeline that reproduces ``contract`` exactly, or FeatureMismatchError naming the difference."""
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
        if self.needs_book:
            from aitrader.features import book

            values = book.transform(self.specs, bars, arrays, self._require_book())
        else:
            values = batch.compute(self.specs, *arrays)
        # copy=False: the fresh Fortran-ordered matrix becomes the frame's block as it is (pandas 3
        # would otherwise copy it, a quarter of the time on a million bars).
        return pd.DataFrame(values, index=bars.index, columns=self.names, dtype="float64", copy=False)

    def stream(self, buffer_size: int = 500) -> StreamingFeatures:
        """A fresh bar-by-bar evaluator of the same features."""
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
