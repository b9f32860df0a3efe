"""Fitted features: parameters learned on the training rows, stored in the artifact, evaluated causally.

A fitted kind (``Kind.fitted``) reads one or more plain *base* features (ordinary kinds computed by
the batch and streaming evaluators) and maps them through parameters learned at train time:

* ``vol_regime``: realised volatility against quantile edges of the training rows' volatility.
* ``hmm_regime_p``: a Gaussian HMM on standardised 1-bar returns, fitted with hmmlearn (train time
  only, the ``regime`` extra); evaluated with the forward (filtering) recursion in plain Python, the
  same step for batch and streaming, so a value at bar t reads only bars <= t. hmmlearn's
  ``predict_proba`` is never used: it smooths over the whole series (looks ahead).
* ``anomaly_score``: a scikit-learn IsolationForest fitted on the training rows' base vectors,
  exported to plain arrays and evaluated in numpy (the same code for one row or many).

The parameters of every fitted feature of a pipeline go into one JSON file in the artifact
(:data:`FITTED_FILE`), whose SHA256 the feature contract records; the registry hashes it like every
artifact file. See docs/features-fitted.md for the formulas.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from aitrader.errors import FeatureError, FeatureMismatchError
from aitrader.features.registry import FeatureSpec

FITTED_FILE = "features_fitted.json"
FITTED_FORMAT = 1
#: Seed of every random fit (HMM initialisation, forest sampling): a retrain on the same rows gives
#: the same parameters.
SEED = 0
#: ``hmm_regime_p`` is rounded to this many decimals (the filter state itself is not): filtered
#: probabilities saturate (1 - 1e-12, 1e-80) where float32 cannot tell them apart, so a tree split
#: between two of them sent 126 of 169 holdout rows down other branches in the float32 ONNX model.
HMM_DECIMALS = 6
#: Training rows a fit needs at least (fewer cannot place quantile edges or fit an HMM honestly).
MIN_FIT_ROWS = 50


def _base(kind: str, params: dict[str, Any], warmup: int) -> FeatureSpec:
    name = "_" + kind + "".join(f"_{k}{v}" for k, v in sorted(params.items()))
    return FeatureSpec(name=name, description=f"base input {kind}", group="ml", kind=kind, params=params,
                       warmup=warmup)


def base_inputs(spec: FeatureSpec) -> list[FeatureSpec]:
    """The plain features ``spec`` (a fitted kind) reads, NaN only during their structural warm-up."""
    p = spec.params
    if spec.kind == "vol_regime":
        return [_base("volatility", {"window": p["window"]}, p["window"])]
    if spec.kind == "hmm_regime_p":
        return [_base("return", {"window": 1}, 1)]
    if spec.kind == "anomaly_score":
        w = p["window"]
        return [_base("return", {"window": 1}, 1), _base("hl_range", {}, 0),
                _base("volume_zscore", {"window": w}, w - 1), _base("volatility", {"window": w}, w)]
    raise FeatureError(f"{spec.name}: kind {spec.kind} is not a fitted kind")


# ----------------------------------------------------------------------------------------------- fit
def _finite_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    sel = x[rows] if x.ndim == 1 else x[rows, :]
    ok = np.isfinite(sel) if sel.ndim == 1 else np.isfinite(sel).all(axis=1)
    return rows[ok]


def _need_rows(spec: FeatureSpec, n: int) -> None:
    if n < MIN_FIT_ROWS:
        raise FeatureError(f"{spec.name}: {n} training rows with known inputs; a fitted feature needs at least "
                           f"{MIN_FIT_ROWS}: use more data or a shorter window")


def fit_one(spec: FeatureSpec, inputs: np.ndarray, rows: np.ndarray) -> dict[str, Any]:
    """Parameters of ``spec`` learned from ``inputs`` (bars x base inputs, causal) at bar positions ``rows``.

    Only those rows are read: the caller passes the training rows of one fit (never holdout or
    test rows)."""
    rows = np.asarray(rows, dtype=np.int64)
    if spec.kind == "vol_regime":
        use = _finite_rows(inputs[:, 0], rows)
        _need_rows(spec, len(use))
        vol = inputs[use, 0]
        bins = int(spec.params["bins"])
        if spec.params["output"] == "bin":
            edges = np.quantile(vol, np.arange(1, bins) / bins)
        else:
            edges = np.quantile(vol, np.linspace(0.0, 1.0, bins + 1))  # the CDF's knots, 1/bins apart
        return {"edges": edges.tolist()}
    if spec.kind == "hmm_regime_p":
        use = _finite_rows(inputs[:, 0], rows)
        _need_rows(spec, len(use))
        return _fit_hmm(inputs[use, 0], use, int(spec.params["states"]), int(spec.params["iterations"]))
    if spec.kind == "anomaly_score":
        use = _finite_rows(inputs, rows)
        _need_rows(spec, len(use))
        return _fit_forest(inputs[use, :], int(spec.params["trees"]))
    raise FeatureError(f"{spec.name}: kind {spec.kind} is not a fitted kind")


def _fit_hmm(r: np.ndarray, positions: np.ndarray, k: int, iterations: int) -> dict[str, Any]:
    try:
        from hmmlearn.hmm import GaussianHMM
    except ImportError as exc:
        raise FeatureError("hmm_regime_p needs hmmlearn at train time; install the extra: "
                           "pip install 'aitrader[regime]'") from exc
    mu, sd = float(np.mean(r)), float(np.std(r))
    if not sd > 0.0:
        raise FeatureError("hmm_regime_p: the training returns are constant; an HMM cannot be fitted to them")
    z = ((r - mu) / sd).reshape(-1, 1)
    # Gaps between training rows (purged folds) split the series into separate sequences.
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    lengths = np.diff(np.concatenate(([0], breaks, [len(positions)]))).tolist()
    # Deterministic start instead of hmmlearn's k-means initialisation (slow, and seed-dependent):
    # zero means, variances spread over the squared returns' quantiles, sticky transitions.
    model = GaussianHMM(n_components=k, covariance_type="diag", n_iter=iterations, random_state=SEED,
                        tol=1e-4, init_params="", params="stmc")
    model.startprob_ = np.full(k, 1.0 / k)
    model.transmat_ = np.full((k, k), 0.05 / (k - 1)) + np.eye(k) * (0.95 - 0.05 / (k - 1))
    model.means_ = np.zeros((k, 1))
    spread = np.quantile(z[:, 0] ** 2, (np.arange(k) + 0.5) / k)
    model.covars_ = np.maximum(spread, 0.05).reshape(k, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hmmlearn warns about non-converged EM; the params still stand
        model.fit(z, lengths)
    var = np.asarray(model.covars_, dtype=np.float64).reshape(k, -1)[:, 0]
    learned = (model.startprob_, model.transmat_, model.means_, var)
    if not all(np.isfinite(np.asarray(x, dtype=np.float64)).all() for x in learned) or not (var > 0).all():
        raise FeatureError(f"hmm_regime_p: the {k}-state HMM fit gave non-finite or zero-variance states on "
                           f"{len(r)} training returns; use fewer states or more data")
    order = np.argsort(var, kind="stable")  # state k-1 = the highest variance, stable across retrains
    return {
        "mu": mu, "sd": sd,
        "startprob": np.asarray(model.startprob_, dtype=np.float64)[order].tolist(),
        "transmat": np.asarray(model.transmat_, dtype=np.float64)[np.ix_(order, order)].tolist(),
        "means": np.asarray(model.means_, dtype=np.float64).reshape(k, -1)[order, 0].tolist(),
        "vars": var[order].tolist(),
    }


def _fit_forest(x: np.ndarray, trees: int) -> dict[str, Any]:
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(n_estimators=trees, random_state=SEED, n_jobs=1).fit(x)
    return export_forest(forest)


def average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n): the average path length of an unsuccessful search in a binary tree of n points (0 for n<=1)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def export_forest(forest: Any) -> dict[str, Any]:
    """A fitted IsolationForest as plain arrays: per tree the children, split column (of the full
    input vector), threshold, and each leaf's depth + c(samples at the leaf)."""
    trees = []
    # scikit-learn indexes the input columns per tree only when it subsamples them.
    subsample = int(forest._max_features) != int(forest.n_features_in_)
    for est, chosen in zip(forest.estimators_, forest.estimators_features_, strict=True):
        cols = chosen if subsample else np.arange(forest.n_features_in_)
        t = est.tree_
        left, right = t.children_left.astype(np.int64), t.children_right.astype(np.int64)
        depth = np.zeros(t.node_count)
        for node in range(t.node_count):  # parents come before their children in sklearn's arrays
            if left[node] >= 0:
                depth[left[node]] = depth[right[node]] = depth[node] + 1.0
        leaf = left < 0
        value = np.where(leaf, depth + average_path_length(t.n_node_samples), 0.0)
        feature = np.where(leaf, 0, np.asarray(cols, dtype=np.int64)[np.maximum(t.feature, 0)])
        trees.append({"left": left.tolist(), "right": right.tolist(), "feature": feature.tolist(),
                      "threshold": np.where(leaf, 0.0, t.threshold).tolist(), "value": value.tolist()})
    return {"max_samples": int(forest.max_samples_), "trees": trees}


# ------------------------------------------------------------------------------------------ evaluate
class Evaluator(ABC):
    """One fitted feature: ``batch(inputs) -> values`` over bars, and ``step(row) -> value`` per bar.

    ``step`` takes the current inputs as a list of Python floats and keeps whatever state the
    recursion needs (the HMM filter); ``reset`` clears it. Both follow the same arithmetic, so
    streaming equals batch (bit for bit, or to ~1e-16 where numpy sums in another order)."""

    def __init__(self, spec: FeatureSpec, params: dict[str, Any]) -> None:
        self.spec = spec
        self.params = params

    @abstractmethod
    def reset(self) -> None:
        """Forget the state (a fresh stream)."""

    @abstractmethod
    def step(self, x: list[float]) -> float:
        """The value at the current bar from its inputs (NaN while an input is unknown)."""

    @abstractmethod
    def batch(self, inputs: np.ndarray) -> np.ndarray:
        """The values over bars (rows of ``inputs``), from a fresh state."""


class VolRegime(Evaluator):
    def __init__(self, spec: FeatureSpec, params: dict[str, Any]) -> None:
        super().__init__(spec, params)
        self.edges = np.asarray(params["edges"], dtype=np.float64)
        self.edge_list = self.edges.tolist()
        self.percentile = spec.params["output"] == "percentile"
        self.grid = np.linspace(0.0, 1.0, len(self.edges))

    def reset(self) -> None:
        """Stateless (each value reads the current volatility only): nothing to forget."""
        return None

    def batch(self, inputs: np.ndarray) -> np.ndarray:
        vol = inputs[:, 0]
        if self.percentile:
            out = np.interp(vol, self.edges, self.grid)
        else:  # bin k: edges[k-1] < vol <= edges[k]
            out = np.searchsorted(self.edges, vol, side="left").astype(np.float64)
        out[~np.isfinite(vol)] = np.nan
        return out

    def step(self, x: list[float]) -> float:
        v = x[0]
        if not math.isfinite(v):
            return math.nan
        if self.percentile:
            return float(np.interp(v, self.edges, self.grid))
        return float(bisect.bisect_left(self.edge_list, v))


class HmmFilter(Evaluator):
    """Forward filtering: alpha_t ~ N(x_t) * (alpha_{t-1} A), alpha_0 ~ N(x_0) * pi, normalised."""

    def __init__(self, spec: FeatureSpec, params: dict[str, Any]) -> None:
        super().__init__(spec, params)
        self.mu, self.sd = float(params["mu"]), float(params["sd"])
        self.pi = [float(p) for p in params["startprob"]]
        self.k = len(self.pi)
        a = [[float(p) for p in row] for row in params["transmat"]]
        if len(a) != self.k or any(len(row) != self.k for row in a) or len(params["means"]) != self.k:
            raise ValueError(f"transmat/means do not match {self.k} states")
        self.cols = [[a[i][j] for i in range(self.k)] for j in range(self.k)]  # column j of A
        self.means = [float(m) for m in params["means"]]
        self.half_inv = [0.5 / float(v) for v in params["vars"]]
        self.norm = [-0.5 * math.log(2.0 * math.pi * float(v)) for v in params["vars"]]
        self.states = list(zip(self.norm, self.means, self.half_inv, strict=True))
        self.alpha: list[float] | None = None

    def reset(self) -> None:
        self.alpha = None

    def _step(self, r: float) -> float:
        if not math.isfinite(r):
            return math.nan
        z = (r - self.mu) / self.sd
        logb = [n - h * (z - m) * (z - m) for n, m, h in self.states]
        top = max(logb)
        prev = self.alpha
        if prev is None:
            pred = self.pi
        else:
            pred = [sum([p * a for p, a in zip(prev, col, strict=True)]) for col in self.cols]
        alpha = [p * math.exp(lb - top) for p, lb in zip(pred, logb, strict=True)]
        total = sum(alpha)
        if not total > 0.0:  # every likely state had probability 0: keep the prediction
            alpha, total = list(pred), sum(pred)
        self.alpha = alpha = [x / total for x in alpha]
        # The highest-variance state (states are ordered by variance), rounded (see HMM_DECIMALS).
        return round(alpha[-1], HMM_DECIMALS)

    def step(self, x: list[float]) -> float:
        return self._step(x[0])

    def batch(self, inputs: np.ndarray) -> np.ndarray:
        self.reset()
        out = np.array([self._step(r) for r in inputs[:, 0].tolist()], dtype=np.float64)
        self.reset()
        return out


class Forest(Evaluator):
    """IsolationForest score 2 ** (-mean path length / c(max_samples)), as sklearn's ``-score_samples``.

    The trees are flattened into one node array; a leaf points to itself (threshold +inf), so every
    tree is walked the same number of levels (the deepest tree's) without masks."""

    def __init__(self, spec: FeatureSpec, params: dict[str, Any]) -> None:
        super().__init__(spec, params)
        trees = params["trees"]
        sizes = [len(t["left"]) for t in trees]
        offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        left, right, feature, threshold, value = [], [], [], [], []
        depth = 0
        for off, t in zip(offsets.tolist(), trees, strict=True):
            lo = np.asarray(t["left"], dtype=np.int64)
            ro = np.asarray(t["right"], dtype=np.int64)
            leaf = lo < 0
            own = np.arange(len(lo), dtype=np.int64)
            left.append(np.where(leaf, own, lo) + off)
            right.append(np.where(leaf, own, ro) + off)
            feature.append(np.where(leaf, 0, np.asarray(t["feature"], dtype=np.int64)))
            threshold.append(np.where(leaf, np.inf, np.asarray(t["threshold"], dtype=np.float64)))
            value.append(np.asarray(t["value"], dtype=np.float64))
            depth = max(depth, _tree_depth(t["left"], t["right"]))
        self.left, self.right = np.concatenate(left), np.concatenate(right)
        self.feature, self.threshold = np.concatenate(feature), np.concatenate(threshold)
        self.value = np.concatenate(value)
        self.roots = offsets
        self.depth = depth
        self.scale = float(len(trees) * average_path_length(np.array([params["max_samples"]]))[0])
        # Python lists for the per-bar walk (faster than numpy on one row).
        self._l, self._r = self.left.tolist(), self.right.tolist()
        self._f, self._t, self._v = self.feature.tolist(), self.threshold.tolist(), self.value.tolist()
        self._roots = offsets.tolist()
        self._inner = (self.left != np.arange(len(self.left))).tolist()

    def reset(self) -> None:
        """Stateless (each score reads the current vector only): nothing to forget."""
        return None

    def batch(self, inputs: np.ndarray) -> np.ndarray:
        n = len(inputs)
        out = np.full(n, np.nan)
        ok = np.isfinite(inputs).all(axis=1)
        if not ok.any():
            return out
        # Trees compare float32 inputs with their thresholds (as scikit-learn does).
        x = inputs[ok].astype(np.float32).astype(np.float64)
        width = x.shape[1]
        flat = x.ravel()
        base = (np.arange(len(x), dtype=np.int64) * width)[None, :]
        node = np.repeat(self.roots[:, None], len(x), axis=1)
        for _ in range(self.depth):
            go = flat[base + self.feature[node]] <= self.threshold[node]
            node = np.where(go, self.left[node], self.right[node])
        depth = self.value[node].sum(axis=0)
        out[ok] = np.power(2.0, -depth / self.scale)
        return out

    def step(self, x: list[float]) -> float:
        if not all(math.isfinite(v) for v in x):
            return math.nan
        x32 = np.asarray(x, dtype=np.float32).tolist()
        left, right, feat, thr, inner = self._l, self._r, self._f, self._t, self._inner
        total = 0.0
        for node in self._roots:
            while inner[node]:
                node = left[node] if x32[feat[node]] <= thr[node] else right[node]
            total += self._v[node]
        return float(2.0 ** (-total / self.scale))


def _tree_depth(left: list[int], right: list[int]) -> int:
    """Edges on the longest root-to-leaf path (children come after their parent in sklearn's arrays)."""
    depth = [0] * len(left)
    for node, (lo, ro) in enumerate(zip(left, right, strict=True)):
        if lo >= 0:
            depth[lo] = depth[ro] = depth[node] + 1
    return max(depth)


_EVALUATORS: dict[str, type[Evaluator]] = {"vol_regime": VolRegime, "hmm_regime_p": HmmFilter,
                                           "anomaly_score": Forest}


def evaluator(spec: FeatureSpec, params: dict[str, Any]) -> Evaluator:
    return _EVALUATORS[spec.kind](spec, params)


# ---------------------------------------------------------------------------------------------- file
def dumps(params: dict[str, dict[str, Any]]) -> bytes:
    """The parameters file's exact bytes (canonical JSON: sorted keys, floats round-trip exactly)."""
    doc = {"format": FITTED_FORMAT, "features": params}
    return (json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")


def digest(params: dict[str, dict[str, Any]]) -> str:
    return hashlib.sha256(dumps(params)).hexdigest()


def entry(spec: FeatureSpec, values: dict[str, Any]) -> dict[str, Any]:
    """One feature's record in the file: what it was fitted for, and the values."""
    return {"kind": spec.kind, "version": spec.version, "params": dict(spec.params), "values": values}


def load(folder: str | Path, contract: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The fitted parameters named by ``contract["fitted"]`` from the artifact ``folder``.

    FeatureMismatchError when the file is missing, unreadable or not the one the contract
    recorded (its SHA256 differs)."""
    info = contract.get("fitted")
    if not isinstance(info, dict) or not isinstance(info.get("file"), str) or not isinstance(info.get("sha256"), str):
        raise FeatureMismatchError(f"feature contract has fitted features but no valid 'fitted' record: {info!r}; "
                                   "retrain the model")
    path = Path(folder) / Path(info["file"]).name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FeatureMismatchError(f"cannot read the fitted feature parameters {path}: {exc.strerror}; the "
                                   "artifact is incomplete, retrain or re-register the model") from exc
    got = hashlib.sha256(raw).hexdigest()
    if got != info["sha256"]:
        raise FeatureMismatchError(f"{path}: SHA256 {got[:12]}... differs from the {info['sha256'][:12]}... the "
                                   "model was trained with; the fitted parameters were modified: restore the "
                                   "file or retrain the model")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FeatureMismatchError(f"{path}: not valid JSON ({exc}); retrain the model") from exc
    if not isinstance(doc, dict) or doc.get("format") != FITTED_FORMAT or not isinstance(doc.get("features"), dict):
        raise FeatureMismatchError(f"{path}: expected format {FITTED_FORMAT} with a 'features' mapping; "
                                   "retrain the model")
    return dict(doc["features"])


def identity_key(spec: FeatureSpec) -> str:
    """Two specs with the same key compute the same column (kind, params, warm-up, version)."""
    doc = {k: v for k, v in spec.identity().items() if k != "name"}
    return json.dumps(doc, sort_keys=True)


# --------------------------------------------------------------------------------------- streaming
class FittedStreamingFeatures:
    """Bar-by-bar evaluator of a pipeline with fitted features (``FeaturePipeline.stream``).

    The plain features and the fitted features' inputs come from one
    :class:`aitrader.features.streaming.StreamingFeatures`; each fitted feature then steps its
    evaluator on the current input vector. Same interface as ``StreamingFeatures``: ``update``
    returns the row in ``names`` order (reused by the next call), NaN during each warm-up."""

    def __init__(self, inner: Any, specs: list[FeatureSpec], plain_col: dict[str, int],
                 inputs: dict[str, list[int]], evaluators: list[Evaluator]) -> None:
        self.inner = inner
        self.names = [s.name for s in specs]
        self.warmups = [s.warmup for s in specs]
        self.warmup = max(self.warmups)
        self.buffer_size = inner.buffer_size
        self._out = np.full(len(specs), np.nan)
        self._plain = [(j, plain_col[s.name]) for j, s in enumerate(specs) if s.name in plain_col]
        fitted_specs = [(j, s) for j, s in enumerate(specs) if s.name not in plain_col]
        self._fitted = [(j, list(inputs[s.name]), s.warmup, ev)
                        for (j, s), ev in zip(fitted_specs, evaluators, strict=True)]
        for ev in evaluators:
            ev.reset()

    @property
    def bars_seen(self) -> int:
        return int(self.inner.bars_seen)

    @property
    def ready(self) -> bool:
        return self.bars_seen > self.warmup

    def update(self, ts: Any, o: float, h: float, l: float, c: float, v: float) -> np.ndarray:  # noqa: E741
        row = self.inner.update(ts, o, h, l, c, v)
        i = self.inner.bars_seen - 1
        out = self._out
        for j, k in self._plain:
            out[j] = row[k]
        if self._fitted:
            values = row.tolist()
            for j, cols, warmup, ev in self._fitted:
                # Always stepped: a recursion (the HMM) runs through the warm-up.
                value = ev.step([values[k] for k in cols])
                out[j] = value if i >= warmup else math.nan
        return out

    def run(self, o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray,
            index: Any = None) -> np.ndarray:
        """Feed every bar through ``update``; return the matrix of rows."""
        n = len(c)
        rows = np.empty((n, len(self.names)))
        ts_list = list(index) if index is not None else range(n)
        for k, (ts, a, b, x, y, z) in enumerate(zip(ts_list, o.tolist(), h.tolist(), low.tolist(), c.tolist(),
                                                    v.tolist(), strict=True)):
            rows[k] = self.update(ts, a, b, x, y, z)
        return rows


# ------------------------------------------------------------------------------------------ regimes
def regime_rule(spec: FeatureSpec) -> tuple[str, int] | None:
    """How a fitted feature's values map to discrete regimes (rule, number of regimes), or None.

    ``vol_regime`` with ``output: bin``: the bin itself; with ``output: percentile``: the tercile;
    ``hmm_regime_p``: 1 when the high-volatility state is more likely than not."""
    if spec.kind == "vol_regime":
        if spec.params["output"] == "bin":
            return "bin", int(spec.params["bins"])
        return "tercile", 3
    if spec.kind == "hmm_regime_p":
        return "above_half", 2
    return None


def regime_labels(rule: str, k: int, values: np.ndarray) -> np.ndarray:
    """Regime index 0..k-1 of each finite value (NaN values are dropped)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if rule == "bin":
        labels = np.rint(x)
    elif rule == "tercile":
        labels = np.floor(x * 3.0)
    elif rule == "above_half":
        labels = (x > 0.5).astype(np.float64)
    else:
        raise FeatureError(f"unknown regime rule {rule!r}; expected bin, tercile or above_half")
    return np.clip(labels, 0, k - 1).astype(np.int64)


def regime_shares(rule: str, k: int, values: np.ndarray) -> tuple[list[float], int]:
    """(share of each regime, number of values) over the finite ``values``."""
    labels = regime_labels(rule, k, values)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    n = int(counts.sum())
    return ((counts / n).tolist() if n else [0.0] * k), n


def regime_baseline(specs: list[FeatureSpec], X: Any) -> dict[str, Any]:
    """``baseline.regimes``: the training rows' regime distribution of each regime feature in ``X``."""
    out: dict[str, Any] = {}
    for spec in specs:
        rule = regime_rule(spec)
        if rule is None or spec.name not in X.columns:
            continue
        shares, n = regime_shares(rule[0], rule[1], X[spec.name].to_numpy(dtype=np.float64))
        out[spec.name] = {"kind": spec.kind, "rule": rule[0], "regimes": rule[1], "shares": shares, "rows": n}
    return out
