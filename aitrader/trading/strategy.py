"""MLRegressionStrategy: a model's prediction -> direction, confidence, target fraction of equity.

Confidence (documented in docs/trading.md) says how unusual the size of a prediction is for this
model, judged on its own out-of-fold predictions, so that one threshold works for any model and any
target scale:

* regression, when the manifest has ``baseline.calibration.quantiles`` (101 quantiles of the
  out-of-fold predictions: the walk-forward test folds, never the holdout that the default replay
  then trades): ``confidence = P(|P| < |p|)`` for such a prediction ``P``, computed from the
  quantiles (``F(|p|) - F(-|p|)`` with ``F`` the interpolated CDF). ``min_confidence: 0.6`` then
  trades the 40% most decisive predictions. A manifest written before calibration existed has
  only ``baseline.prediction.quantiles`` (the holdout predictions), used the same way;
* regression without those quantiles: ``confidence = min(1, |p| / (k * residual_std))`` with
  ``k = 0.5`` and ``baseline.residual_std``;
* classification (the runner returns P(up)): the signed score is ``p - 0.5`` and
  ``confidence = |2p - 1|``.

Direction is the sign of the (signed) prediction. Below ``min_confidence`` the model's vote is
flat (direction 0, target 0: the model has no conviction, so it holds nothing); at or above it
the target is ``direction * position_size`` of equity.

A strategy is any class built as ``cls(confidence: ConfidenceModel, *, min_confidence, position_size)``
whose ``decide(raw_prediction) -> Decision`` gives the vote; the trading config names it per model
(``ml_trading.models[].strategy``). A class may also define ``decide_many(raw: np.ndarray)`` beside
its ``decide``: (directions, confidences, target fractions) as lists, the decisions ``decide`` gives
value by value, float for float; the batch replay route then decides a whole batch of predictions at
once (:func:`batch_decider`; ``MLRegressionStrategy`` has one). Installed packages add strategies through the
``aitrader.strategies`` entry-point group (:mod:`aitrader.plugins`); :func:`make_strategy` builds either.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aitrader.errors import TradingError

if TYPE_CHECKING:  # numpy is imported by the batch methods only: `export` of a plain table loads no numpy
    import numpy as np

RESIDUAL_K = 0.5


@dataclass(frozen=True, slots=True)
class Decision:
    direction: int
    confidence: float
    target_fraction: float


class ConfidenceModel:
    """Maps a raw model output to (signed score, confidence in [0, 1])."""

    def __init__(
        self,
        *,
        task: str = "regression",
        quantiles: Sequence[float] | None = None,
        residual_std: float | None = None,
        k: float = RESIDUAL_K,
    ) -> None:
        self.task = task
        self.quantiles = [float(q) for q in quantiles] if quantiles else None
        if self.quantiles is not None and (len(self.quantiles) < 2 or self.quantiles != sorted(self.quantiles)):
            raise TradingError(
                "baseline.calibration.quantiles (or baseline.prediction.quantiles) must be an increasing "
                "list of at least 2 values; retrain the model with aitrader train"
            )
        self.residual_std = residual_std
        self.k = k
        if task == "regression" and self.quantiles is None and not (residual_std and residual_std > 0):
            raise TradingError(
                "the model manifest has neither baseline.calibration/prediction quantiles nor a positive "
                "baseline.residual_std, so a confidence cannot be computed; retrain it with aitrader train"
            )

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> ConfidenceModel:
        target, model = manifest.get("target") or {}, manifest.get("model") or {}
        task = str(target.get("task") or model.get("task") or "regression")
        baseline = manifest.get("baseline") or {}
        quantiles = ((baseline.get("calibration") or {}).get("quantiles")
                     or (baseline.get("prediction") or {}).get("quantiles"))
        residual_std = baseline.get("residual_std")
        return cls(task=task, quantiles=quantiles, residual_std=residual_std)

    def _cdf(self, x: float) -> float:
        q = self.quantiles
        assert q is not None
        n = len(q) - 1
        if x <= q[0]:
            return 0.0
        if x >= q[-1]:
            return 1.0
        i = bisect_left(q, x)  # q[i-1] < x <= q[i]
        lo, hi = q[i - 1], q[i]
        frac = (x - lo) / (hi - lo) if hi > lo else 1.0
        return (i - 1 + frac) / n

    def score(self, raw: float) -> tuple[float, float]:
        """(signed score, confidence) for one raw model output."""
        if self.task == "classification":
            s = raw - 0.5
            return s, min(1.0, abs(2.0 * s))
        a = abs(raw)
        if self.quantiles is not None:
            return raw, max(0.0, min(1.0, self._cdf(a) - self._cdf(-a)))
        assert self.residual_std is not None
        return raw, min(1.0, a / (self.k * self.residual_std))

    def _cdf_many(self, x: np.ndarray) -> np.ndarray:
        """:meth:`_cdf` of each finite value of ``x``: the same operations in the same order, so the
        same float64 (``searchsorted`` is ``bisect_left``; int + float and float / int as in Python)."""
        import numpy as np

        q = np.asarray(self.quantiles, dtype=np.float64)
        n = len(q) - 1
        i = np.clip(np.searchsorted(q, x, side="left"), 1, n)  # clipped where the ends decide anyway
        lo, hi = q[i - 1], q[i]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # in rows the ends decide
            frac = np.where(hi > lo, (x - lo) / (hi - lo), 1.0)
        out = ((i - 1) + frac) / n
        return np.where(x <= q[0], 0.0, np.where(x >= q[-1], 1.0, out))

    def score_many(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`score` of each finite value of ``raw`` (float64), float for float. ``max(0.0, d)``
        and ``min(1.0, d)`` are written as the ``where`` that Python's max/min evaluate (the first
        argument on a tie), so signed zeros come out the same too."""
        import numpy as np

        if self.task == "classification":
            s = raw - 0.5
            d = np.abs(2.0 * s)
            return s, np.where(d < 1.0, d, 1.0)
        a = np.abs(raw)
        if self.quantiles is not None:
            d = self._cdf_many(a) - self._cdf_many(-a)
            d = np.where(d < 1.0, d, 1.0)
            return raw, np.where(d > 0.0, d, 0.0)
        assert self.residual_std is not None
        d = a / (self.k * self.residual_std)
        return raw, np.where(d < 1.0, d, 1.0)


class MLRegressionStrategy:
    """Turns one model's predictions into votes: a signed target fraction of equity."""

    def __init__(self, confidence: ConfidenceModel, *, min_confidence: float, position_size: float) -> None:
        self.confidence = confidence
        self.min_confidence = min_confidence
        self.position_size = position_size

    def decide(self, raw_prediction: float) -> Decision:
        score, conf = self.confidence.score(raw_prediction)
        if math.isnan(score) or conf < self.min_confidence or score == 0.0:
            return Decision(0, conf, 0.0)
        direction = 1 if score > 0 else -1
        return Decision(direction, conf, direction * self.position_size)

    def decide_many(self, raw: np.ndarray) -> tuple[list[int], list[float], list[float]]:
        """:meth:`decide` of every value of ``raw`` at once: (directions, confidences, target
        fractions), float for float what ``decide`` gives one value at a time. Non-finite values, and
        a confidence model whose ``score`` is not the one ``score_many`` mirrors, go value by value."""
        import numpy as np

        x = np.asarray(raw, dtype=np.float64).reshape(-1)
        scorer = _paired(type(self.confidence), "score", "score_many")
        finite = np.isfinite(x)
        if scorer is None or not finite.any():
            return _one_by_one(self.decide, x)
        xs = np.where(finite, x, 0.0)
        score, conf = scorer(self.confidence, xs)
        act = (conf >= self.min_confidence) & (score != 0.0)  # decide(): flat below min_confidence or at 0
        direction = np.where(act, np.where(score > 0, 1, -1), 0)
        # direction * position_size: +-1 * p is exact, so the product of the int and the float
        target = np.where(act, direction * self.position_size, 0.0)
        dirs, confs, targets = direction.tolist(), conf.tolist(), target.tolist()
        if not finite.all():
            for k in np.flatnonzero(~finite).tolist():
                d = self.decide(float(x[k]))
                dirs[k], confs[k], targets[k] = d.direction, d.confidence, d.target_fraction
        return dirs, confs, targets


def _paired(cls: type, one: str, many: str) -> Any:
    """``cls``'s ``many`` method when the class defining ``one`` (first in the MRO) defines it too;
    else None: a subclass that overrides ``one`` alone must not get its parent's ``many``."""
    for klass in cls.__mro__:
        if one in klass.__dict__:
            return klass.__dict__.get(many)
    return None


def _one_by_one(decide: Callable[[float], Decision], x: np.ndarray) -> tuple[list[int], list[float], list[float]]:
    out = [decide(v) for v in x.tolist()]
    return [d.direction for d in out], [d.confidence for d in out], [d.target_fraction for d in out]


def batch_decider(strategy: Any) -> Callable[[np.ndarray], tuple[list[int], list[float], list[float]]] | None:
    """``strategy.decide_many`` when its class defines it beside ``decide`` (see the module doc), else None."""
    method = _paired(type(strategy), "decide", "decide_many")
    return None if method is None else method.__get__(strategy)


BUILTIN_STRATEGIES: dict[str, type] = {"ml_regression": MLRegressionStrategy}


def plugin_strategy_problem(obj: Any) -> str | None:
    """Why ``obj`` (an ``aitrader.strategies`` entry point) is not a usable strategy class, or None."""
    if not isinstance(obj, type) or not callable(getattr(obj, "decide", None)):
        return f"is {obj!r}, not a class with a decide(raw_prediction) -> Decision method"
    return None


def strategy_class(name: str) -> type:
    """The built-in or plug-in strategy class ``name`` (PluginError when a plug-in cannot load)."""
    found = BUILTIN_STRATEGIES.get(name)
    if found is not None:
        return found
    from aitrader import plugins

    return plugins.load("strategies", name, plugin_strategy_problem)  # type: ignore[no-any-return]


def make_strategy(name: str, manifest: dict[str, Any], *, min_confidence: float, position_size: float) -> Any:
    """Strategy ``name`` for one model: its confidence model from the manifest, the config's sizing."""
    return strategy_class(name)(ConfidenceModel.from_manifest(manifest), min_confidence=min_confidence,
                                position_size=position_size)
