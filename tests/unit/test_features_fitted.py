"""Fitted features (issue 16): oracles, batch == streaming, no look-ahead, and the contract with its file."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from aitrader.errors import FeatureError, FeatureMismatchError
from aitrader.features import FeaturePipeline, FeatureRegistry
from aitrader.features import fitted as F
from aitrader.features.build import build_features

REGISTRY = FeatureRegistry.load()
FITTED = ["vol_regime", "vol_pct_20", "hmm_regime_p", "anomaly_score"]
TOL = 1e-7
TRAIN = np.arange(60, 900)  # training rows of the fits below: the bars after 900 never reach a fit


def regime_bars(n: int = 1500, seed: int = 3) -> pd.DataFrame:
    """A random walk whose volatility switches between a calm (0.4%) and a wild (2.5%) regime in blocks."""
    rng = np.random.default_rng(seed)
    sigma = np.where((np.arange(n) // 120) % 3 == 2, 0.025, 0.004)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, sigma)))
    opens = np.r_[close[0], close[:-1]]
    spread = np.abs(rng.normal(0.0, sigma)) * close
    high = np.maximum(opens, close) + spread * rng.random(n)
    low = np.minimum(opens, close) - spread * rng.random(n)
    volume = rng.lognormal(8, 0.6, n).round() * (1 + 4 * (sigma > 0.01))
    idx = pd.date_range("2023-01-02", periods=n, freq="1h", name="timestamp")
    return pd.DataFrame({"open": opens, "high": high, "low": low, "close": close, "volume": volume}, index=idx)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return regime_bars()


@pytest.fixture(scope="module")
def fitted(bars: pd.DataFrame) -> FeaturePipeline:
    return FeaturePipeline(["ret_1", *FITTED], REGISTRY).fit(bars, TRAIN)


def _realised_vol(bars: pd.DataFrame, n: int) -> pd.Series:
    """Sample std of 1-bar returns over n bars (pandas: an oracle independent of aitrader's kernels)."""
    return bars["close"].pct_change().rolling(n).std(ddof=1)


# ----------------------------------------------------------------------------------------- vol_regime
def test_vol_regime_edges_are_training_quantiles_and_values_the_bin(bars, fitted) -> None:
    vol = _realised_vol(bars, 20).to_numpy()
    train_vol = vol[TRAIN]
    edges = np.quantile(train_vol[np.isfinite(train_vol)], [1 / 3, 2 / 3])
    got_edges = fitted.fitted_params["vol_regime"]["values"]["edges"]
    np.testing.assert_allclose(got_edges, edges, rtol=1e-9)
    out = fitted.transform(bars)
    want = (vol[:, None] > edges[None, :]).sum(axis=1).astype(float)
    ok = np.arange(len(bars)) >= 20
    # The same bin everywhere except within float rounding of an edge.
    near = np.abs(vol[:, None] - edges[None, :]).min(axis=1) < 1e-12
    assert np.array_equal(out["vol_regime"].to_numpy()[ok & ~near], want[ok & ~near])
    assert out["vol_regime"].iloc[:20].isna().all()
    # About a third of the training rows in each tercile; percentile = empirical CDF of the training values.
    counts = np.bincount(out["vol_regime"].to_numpy()[TRAIN[TRAIN >= 20]].astype(int), minlength=3)
    assert counts.min() >= 0.3 * counts.sum()
    pct = out["vol_pct_20"].to_numpy()
    finite = train_vol[np.isfinite(train_vol)]
    for k in (100, 500, 1200, 1400):
        assert abs(pct[k] - np.mean(finite <= vol[k])) < 0.011, k


# ------------------------------------------------------------------------------------------------ HMM
def _oracle_filter(z: np.ndarray, pi: np.ndarray, a: np.ndarray, means: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Textbook forward filter with scipy's normal density, linear space."""
    out = np.empty((len(z), len(pi)))
    alpha = None
    for t, x in enumerate(z):
        b = norm.pdf(x, loc=means, scale=np.sqrt(var))
        alpha = (pi if alpha is None else alpha @ a) * b
        alpha = alpha / alpha.sum()
        out[t] = alpha
    return out


def _hmmlearn_model(values: dict) -> object:
    from hmmlearn.hmm import GaussianHMM

    k = len(values["startprob"])
    m = GaussianHMM(n_components=k, covariance_type="diag", init_params="")
    m.startprob_ = np.array(values["startprob"])
    m.transmat_ = np.array(values["transmat"])
    m.means_ = np.array(values["means"]).reshape(k, 1)
    m.covars_ = np.array(values["vars"]).reshape(k, 1)
    return m


def test_hmm_states_ordered_by_variance_and_causal_probs_equal_the_forward_filter(bars, fitted) -> None:
    values = fitted.fitted_params["hmm_regime_p"]["values"]
    var = np.array(values["vars"])
    assert np.all(np.diff(var) > 0), "states must be ordered by variance (low first)"
    assert var[-1] > 10 * var[0], "on the two-regime series the HMM separates calm and wild"
    r = bars["close"].pct_change().to_numpy()[1:]  # the filter starts at the first return (bar 1)
    z = (r - values["mu"]) / values["sd"]
    oracle = _oracle_filter(z, np.array(values["startprob"]), np.array(values["transmat"]),
                            np.array(values["means"]), var)[:, -1]
    got = fitted.transform(bars)["hmm_regime_p"].to_numpy()[1:]
    warm = REGISTRY.spec("hmm_regime_p").warmup
    # The feature is the probability rounded to 6 decimals (float32-safe): within 1e-6 of the oracle.
    np.testing.assert_allclose(got[warm - 1:], oracle[warm - 1:], rtol=0, atol=1e-6)
    assert np.array_equal(got[warm - 1:], np.round(got[warm - 1:], 6))
    # hmmlearn itself: the last posterior of each prefix is the filtered probability ...
    model = _hmmlearn_model(values)
    for t in (warm, 300, 777, 1201, len(z) - 1):
        prefix = model.predict_proba(z[: t + 1].reshape(-1, 1))
        assert abs(prefix[-1, -1] - got[t]) < 1e-6, t
    # ... and its whole-series probabilities are smoothed: they differ, i.e. they look ahead.
    smoothed = model.predict_proba(z.reshape(-1, 1))[:, -1]
    gap = np.abs(smoothed[warm:] - got[warm:])
    assert gap.max() > 0.3
    assert ((smoothed[warm:] > 0.5) != (got[warm:] > 0.5)).sum() >= 3


def test_hmm_fit_reads_the_training_rows_only(bars) -> None:
    pipe = FeaturePipeline(["hmm_regime_p", "anomaly_score", "vol_regime"], REGISTRY)
    a = pipe.fit(bars, TRAIN)
    changed = bars.copy()
    later = changed.index[TRAIN[-1] + 1:]
    changed.loc[later, ["open", "high", "low", "close"]] *= np.linspace(1.0, 3.0, len(later))[:, None]
    changed.loc[later, "volume"] *= 7.0
    b = pipe.fit(changed, TRAIN)
    assert F.dumps(a.fitted_params) == F.dumps(b.fitted_params)
    assert F.dumps(a.fitted_params) != F.dumps(pipe.fit(changed, TRAIN + 400).fitted_params)


# ---------------------------------------------------------------------------------------- anomaly_score
def test_anomaly_score_equals_sklearn_isolation_forest(bars, fitted) -> None:
    from sklearn.ensemble import IsolationForest

    c, h, low, v = bars["close"], bars["high"], bars["low"], bars["volume"]
    base = pd.DataFrame({
        "ret": c.pct_change(), "range": (h - low) / c,
        "vz": (v - v.rolling(20).mean()) / v.rolling(20).std(ddof=0), "vol": _realised_vol(bars, 20),
    }).to_numpy()
    spec = REGISTRY.spec("anomaly_score")
    ours = FeaturePipeline(["anomaly_score"], REGISTRY).base_matrix(bars)
    np.testing.assert_allclose(ours[20:], base[20:], rtol=1e-9, atol=1e-12)
    rows = TRAIN[np.isfinite(ours[TRAIN]).all(axis=1)]
    forest = IsolationForest(n_estimators=spec.params["trees"], random_state=0, n_jobs=1).fit(ours[rows])
    want = -forest.score_samples(ours[20:])
    got = fitted.transform(bars)["anomaly_score"].to_numpy()[20:]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert 0.0 < got.min() and got.max() <= 1.0


# ------------------------------------------------------------------------------ batch, streaming, causal
def test_batch_equals_streaming(bars, fitted) -> None:
    batch = fitted.transform(bars)
    stream = fitted.transform_streaming(bars)
    assert list(stream.columns) == list(batch.columns)
    assert np.array_equal(batch.isna().to_numpy(), stream.isna().to_numpy())
    diff = np.nanmax(np.abs(batch.to_numpy() - stream.to_numpy()), axis=0)
    assert (diff <= TOL).all(), dict(zip(batch.columns, diff, strict=True))
    warmups = [REGISTRY.spec(n).warmup for n in batch.columns]
    for name, w in zip(batch.columns, warmups, strict=True):
        assert batch[name].iloc[:w].isna().all() and batch[name].iloc[w:].notna().all(), name


@pytest.mark.parametrize("cut", [70, 333, 901, 1250])
def test_no_look_ahead(bars, fitted, cut: int) -> None:
    """Each fitted feature at bar t from bars[:cut] equals its value from the whole series (t < cut)."""
    full = fitted.transform(bars)
    part = fitted.transform(bars.iloc[:cut])
    pd.testing.assert_frame_equal(part, full.iloc[:cut], rtol=0, atol=1e-12)
    stream = fitted.stream()
    rows = [stream.update(ts, *r).copy() for ts, r in zip(bars.index[:cut], bars.to_numpy()[:cut], strict=True)]
    np.testing.assert_allclose(rows[-1], full.iloc[cut - 1].to_numpy(), rtol=0, atol=TOL)


# ------------------------------------------------------------------------------------- contract and file
def test_unfitted_pipeline_refuses(bars, tmp_path: Path) -> None:
    pipe = FeaturePipeline(["ret_1", "vol_regime"], REGISTRY)
    assert pipe.needs_fit
    for call in (lambda: pipe.transform(bars), lambda: pipe.stream(), pipe.contract):
        with pytest.raises(FeatureMismatchError, match="vol_regime have no fitted parameters"):
            call()
    bars.to_csv(tmp_path / "b.csv")
    with pytest.raises(FeatureError, match="vol_regime: fitted features learn their parameters at train time"):
        build_features(tmp_path / "b.csv", tmp_path / "f.parquet", names=["ret_1", "vol_regime"])
    assert not (tmp_path / "f.parquet").exists()


def test_too_few_training_rows_is_refused(bars) -> None:
    with pytest.raises(FeatureError, match="hmm_regime_p: 9 training rows with known inputs; .* at least 50"):
        FeaturePipeline(["hmm_regime_p"], REGISTRY).fit(bars, np.arange(1, 10))


def test_contract_round_trip_and_tampering(bars, fitted, tmp_path: Path) -> None:
    contract = json.loads(json.dumps(fitted.contract()))
    path = fitted.save_fitted(tmp_path)
    assert path is not None and path.name == F.FITTED_FILE
    assert contract["fitted"]["sha256"] == F.hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = FeaturePipeline.from_contract(contract, REGISTRY, folder=tmp_path)
    pd.testing.assert_frame_equal(loaded.transform(bars), fitted.transform(bars), rtol=0, atol=0)
    with pytest.raises(FeatureMismatchError, match="are fitted: their parameters are in the model's artifact"):
        FeaturePipeline.from_contract(contract, REGISTRY)
    # One changed digit of one edge: refused by the hash before anything is parsed.
    text = path.read_text()
    doc = json.loads(text)
    edge = doc["features"]["vol_regime"]["values"]["edges"][0]
    path.write_text(text.replace(repr(edge), repr(edge * 1.01), 1))
    with pytest.raises(FeatureMismatchError, match="differs from the .* the model was trained with"):
        FeaturePipeline.from_contract(contract, REGISTRY, folder=tmp_path)
    path.unlink()
    with pytest.raises(FeatureMismatchError, match="cannot read the fitted feature parameters"):
        FeaturePipeline.from_contract(contract, REGISTRY, folder=tmp_path)
    # A contract that lost its fitted record is refused too.
    del contract["fitted"]
    with pytest.raises(FeatureMismatchError, match="no valid 'fitted' record"):
        FeaturePipeline.from_contract(contract, REGISTRY, folder=tmp_path)


def test_fitted_params_of_another_definition_are_refused(bars, fitted, tmp_path: Path) -> None:
    params = json.loads(json.dumps(fitted.fitted_params))
    params["vol_regime"]["params"]["window"] = 30
    with pytest.raises(FeatureMismatchError, match="vol_regime: no fitted parameters for kind vol_regime"):
        FeaturePipeline(fitted.names, REGISTRY, params)


def test_hmm_filter_survives_an_extreme_return() -> None:
    """A return far beyond both states' variance must not give 0/0: the probabilities stay normalised."""
    spec = REGISTRY.spec("hmm_regime_p")
    ev = F.evaluator(spec, {"mu": 0.0, "sd": 1.0, "startprob": [0.5, 0.5], "transmat": [[0.9, 0.1], [0.1, 0.9]],
                            "means": [0.0, 0.0], "vars": [1.0, 4.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = [ev.step([x]) for x in (0.1, 1e6, -0.2, float("nan"), 0.3)]
    assert p[1] == 1.0 and np.isnan(p[3]) and 0.0 < p[4] < 1.0
    # By hand: from alpha = (0.5, 0.5), x = 0.1: b = N(0.1; 0, 1), N(0.1; 0, 2^2); 6 decimals.
    b0, b1 = norm.pdf(0.1, 0, 1), norm.pdf(0.1, 0, 2)
    assert p[0] == round(b1 / (b0 + b1), 6)


@pytest.mark.shared_data
@pytest.mark.parametrize("rel", ["equity_1h/AAPL.csv.gz", "crypto_5m/XMR_BTC.csv.gz"])
def test_batch_equals_streaming_on_real_data(shared_data, rel: str) -> None:
    from aitrader.data import load_bars

    df = load_bars(shared_data / rel).iloc[:3000]
    fitted = FeaturePipeline(FITTED, REGISTRY).fit(df, np.arange(60, 1800))
    batch, stream = fitted.transform(df), fitted.transform_streaming(df)
    assert np.array_equal(batch.isna().to_numpy(), stream.isna().to_numpy())
    assert np.nanmax(np.abs(batch.to_numpy() - stream.to_numpy())) <= TOL
    assert batch.iloc[100:].notna().all().all()
