"""The monitor on hand-built runs: accuracy, drift and every alert rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from aitrader.config import Monitoring
from aitrader.errors import ModelError, TradingError
from aitrader.monitoring.accuracy import accuracy_metrics, rolling_metrics
from aitrader.monitoring.ledger import read_ledger
from aitrader.monitoring.monitor import monitor_ledger
from tests.unit.test_monitoring_support import MODEL, manifest_for, market, write_ledger

CFG = Monitoring()
TRAIN = market(3000, seed=0)
MANIFEST = manifest_for(TRAIN)


def run(tmp_path: Path, live: dict[str, np.ndarray], **kw: object) -> dict:
    write_ledger(tmp_path / "run", live, **kw)  # type: ignore[arg-type]
    return monitor_ledger(read_ledger(tmp_path / "run"), MANIFEST, CFG).summary


def codes(summary: dict) -> list[str]:
    return [a["code"] for a in summary["alerts"]]


def test_replay_like_training_raises_no_alert(tmp_path: Path) -> None:
    # Long enough for the autocorrelated volatility feature to cover its distribution.
    s = run(tmp_path, market(1500, seed=7))
    assert s["health"] == "ok", s["alerts"]
    assert s["drift"]["enough_samples"]
    assert max(r["psi"] for r in s["drift"]["features"]) < 0.1
    acc = s["accuracy"]
    assert acc["run"]["n"] == 1495 and acc["window"]["n"] == 100
    assert acc["window"]["mae"] == pytest.approx(acc["holdout"]["mae"], rel=0.25)
    assert s["operational"]["feature_availability"] == 1.0


def test_volume_x10_alone_is_a_warning_that_names_volume(tmp_path: Path) -> None:
    # The manifest stores no importance: every feature weighs 1/3. The model (0.3 x ret_1) does not
    # use volume, so its predictions and accuracy do not move: feature drift is reported, not alerted.
    s = run(tmp_path, market(1500, seed=7, volume_scale=10.0))
    assert s["health"] == "ok" and codes(s) == []
    assert s["drift"]["importance"] == "uniform"
    assert s["drift"]["features"][0]["name"] == "log_volume"
    assert s["drift"]["top"][0] == "log_volume"
    [warning] = s["warnings"]
    assert warning["code"] == "feature_drift"
    assert [f["feature"] for f in warning["features"]] == ["log_volume"]
    # log_volume lands in the top bin: PSI = 0.9 ln(1/0.1) + 9 (1e-4 - 0.1) ln(1e-4/0.1), weight 1/3
    top = 0.9 * np.log(10) + 9 * (1e-4 - 0.1) * np.log(1e-3)
    assert warning["value"] == pytest.approx(top / 3, rel=1e-3)
    assert "uniform weights" in warning["message"] and "log_volume (importance 0.33, PSI 8.28" in warning["message"]
    assert "a warning only" in warning["message"]


def test_drift_of_a_feature_the_model_does_not_use_does_not_alert(tmp_path: Path) -> None:
    # The model is 0.3 x ret_1 (COEF): with that importance stored, volume x10 changes nothing it uses.
    manifest = MANIFEST | {"importance": {"method": "abs_coef_standardised",
                                          "features": {"ret_1": 1.0, "volatility_20": 0.0, "log_volume": 0.0}}}
    write_ledger(tmp_path / "run", market(1500, seed=7, volume_scale=10.0))
    s = monitor_ledger(read_ledger(tmp_path / "run"), manifest, CFG).summary
    assert s["health"] == "ok", s["alerts"]
    volume = next(r for r in s["drift"]["features"] if r["name"] == "log_volume")
    assert volume["psi"] > 8 and volume["significant"] and volume["weight"] == 0.0
    assert s["drift"]["feature_score"] == 0.0 and s["drift"]["importance"] == "manifest"
    assert s["warnings"] == []


def test_volatility_regime_change_raises_drift_on_features_and_predictions(tmp_path: Path) -> None:
    s = run(tmp_path, market(1500, seed=7, vol=0.04))
    pred = next(a for a in s["alerts"] if a["code"] == "psi_prediction")
    assert {f["feature"] for f in pred["features"]} == {"ret_1", "volatility_20"}
    assert "drifted features: volatility_20 (importance 0.33, PSI 8.28, n_eff " in pred["message"]
    assert "feature_drift" in codes(s)


def test_drift_waits_for_enough_samples(tmp_path: Path) -> None:
    s = run(tmp_path, market(40, seed=7, volume_scale=10.0))
    assert not s["drift"]["enough_samples"]
    assert "feature_drift" not in codes(s) and s["warnings"] == []
    assert s["drift"]["features"][0]["psi"] > 0.2  # still measured and reported


def test_shuffled_predictions_raise_mae_alert(tmp_path: Path) -> None:
    live = market(600, seed=7)
    shuffled = np.random.default_rng(0).permutation(live["pred"])
    s = run(tmp_path, live, pred=shuffled)
    assert "mae_ratio" in codes(s)
    alert = next(a for a in s["alerts"] if a["code"] == "mae_ratio")
    # 100 outcomes of a 5-bar target hold fewer independent ones: the 1.2x limit is widened to the
    # MAE ratio chance reaches 1 time in 100 at that effective size, and this one is far past it.
    assert alert["threshold"] > 1.2 and alert["value"] > alert["threshold"]
    assert "noise-widened from 1.20x at n_eff" in alert["message"]
    assert "training holdout MAE" in alert["message"]
    assert "psi_prediction" not in codes(s)  # same values, other order: no distribution drift


def test_accuracy_alerts_wait_for_min_outcomes(tmp_path: Path) -> None:
    live = market(30, seed=7)
    s = run(tmp_path, live, pred=-live["pred"])  # sign-flipped: hit rate near 0
    assert s["accuracy"]["window"]["n"] == 25 < CFG.min_outcomes
    assert "hit_rate" not in codes(s) and "mae_ratio" not in codes(s)


def test_sign_flipped_model_raises_hit_rate_alert(tmp_path: Path) -> None:
    live = market(300, seed=7)
    s = run(tmp_path, live, pred=-live["pred"])
    assert "hit_rate" in codes(s)


def test_errors_fallbacks_and_rejections(tmp_path: Path) -> None:
    live = market(200, seed=7)
    sources = ["model"] * 180 + ["fallback_previous"] * 20
    events = ([{"type": "ML_ERROR", "reason": "timeout"}] * 15 + [{"type": "ML_ERROR", "reason": "nan_input"}] * 5
              + [{"type": "RISK_REJECTED", "reason": "max_positions", "model_id": None}] * 3)
    s = run(tmp_path, live, sources=sources, events=events)
    ops = s["operational"]
    assert ops["predictions"] == 200 and ops["fallbacks"] == 20
    assert ops["by_source"] == {"model": 180, "fallback_previous": 20}
    assert ops["errors_by_type"] == {"timeout": 15, "nan_input": 5}
    assert ops["error_rate"] == pytest.approx(20 / 200)
    assert ops["risk_rejections"] == {"max_positions": 3}
    assert ops["latency_ms_p50"] == pytest.approx(0.1745, abs=0.01)
    assert "error_rate" in codes(s)


def test_disabled_model_and_daily_loss_limit(tmp_path: Path) -> None:
    live = market(48, seed=7)
    equity = [100_000.0] * 24 + [100_000.0, 97_000.0] + [97_500.0] * 22  # -3% on day 2
    events = [{"type": "ALERT", "reason": "model_disabled", "payload": {"consecutive_errors": 5}}]
    s = run(tmp_path, live, equity=equity, events=events)
    assert {"model_disabled", "daily_loss_limit"} <= set(codes(s))
    assert s["operational"]["worst_daily_loss"] == pytest.approx(0.03)
    assert s["operational"]["worst_day"] == "2024-01-02"


def test_daily_loss_event_alone_fires(tmp_path: Path) -> None:
    events = [{"type": "RISK_REJECTED", "reason": "daily_loss_limit", "model_id": None}]
    s = run(tmp_path, market(48, seed=7), events=events)
    assert "daily_loss_limit" in codes(s)
    assert s["operational"]["risk_rejections"] == {"daily_loss_limit": 1}


def test_model_selection(tmp_path: Path) -> None:
    other = {"model_id": "other", "version": 2, "digest": "e" * 64}
    write_ledger(tmp_path / "run", market(50, seed=7), models=[MODEL, other])
    ledger = read_ledger(tmp_path / "run")
    with pytest.raises(TradingError, match="several models \\(demo, other\\); choose one with --model-id"):
        monitor_ledger(ledger, MANIFEST, CFG)
    assert monitor_ledger(ledger, MANIFEST, CFG, model_id="demo").summary["operational"]["predictions"] == 50
    assert monitor_ledger(ledger, MANIFEST, CFG, model_id="other").summary["operational"]["predictions"] == 0
    with pytest.raises(TradingError, match="'nope' did not trade"):
        monitor_ledger(ledger, MANIFEST, CFG, model_id="nope")


def test_manifest_without_baseline_is_a_clear_error(tmp_path: Path) -> None:
    write_ledger(tmp_path / "run", market(50, seed=7))
    with pytest.raises(ModelError, match="no training baseline.*retrain it"):
        monitor_ledger(read_ledger(tmp_path / "run"), {"features": {"names": ["a"]}}, CFG)


def test_accuracy_metrics_values() -> None:
    m = accuracy_metrics(np.array([0.1, -0.2, 0.3, np.nan]), np.array([0.2, -0.1, -0.1, 1.0]))
    assert m["n"] == 3
    assert m["mae"] == pytest.approx((0.1 + 0.1 + 0.4) / 3)
    assert m["rmse"] == pytest.approx(np.sqrt((0.01 + 0.01 + 0.16) / 3))
    assert m["hit_rate"] == pytest.approx(2 / 3)
    # ranks (1, 0, 2) against (2, 0.5, 0.5) with the tie averaged: centred dot product 0
    assert m["rank_ic"] == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=200), rng.normal(size=200).round(1)  # ties in b
    assert accuracy_metrics(a, a + b)["rank_ic"] == pytest.approx(spearmanr(a, a + b).statistic)
    c = accuracy_metrics(np.array([0.7, 0.2, 0.6]), np.array([0.01, -0.02, -0.01]), task="classification")
    assert c["mae"] is None and c["hit_rate"] == pytest.approx(2 / 3)
    assert accuracy_metrics(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0]))["ic"] is None


def test_rolling_metrics_length_and_last_value() -> None:
    rng = np.random.default_rng(0)
    p, y = rng.normal(size=50), rng.normal(size=50)
    r = rolling_metrics(p, y, 20)
    assert len(r["mae"]) == 31
    assert r["mae"][-1] == pytest.approx(np.mean(np.abs(p[-20:] - y[-20:])))
    assert r["ic"][-1] == pytest.approx(np.corrcoef(p[-20:], y[-20:])[0, 1])
    assert r["ic"][0] == pytest.approx(np.corrcoef(p[:20], y[:20])[0, 1])
    assert rolling_metrics(np.ones(30), y[:30], 10)["ic"] == [None] * 21
    assert len(rolling_metrics(p[:5], y[:5], 20)["mae"]) == 1
    assert rolling_metrics(p[:0], y[:0], 20)["mae"] == []


def test_trained_manifest_stores_normalised_feature_importance(tmp_path: Path) -> None:
    import joblib

    from aitrader.config import TrainConfig, build_model
    from aitrader.data.synthetic import generate_bars
    from aitrader.training.trainer import train

    cfg = build_model(TrainConfig, {"model": {"kind": "ridge"}, "onnx": {"export": False},
                                    "split": {"n_folds": 2, "holdout": 0.25, "min_train": 150}})
    bars = generate_bars(800, seed=3, signal=0.3)
    bars.attrs["symbol"] = "SYN"
    manifest = train(cfg, bars=bars, out_dir=tmp_path / "art").manifest
    imp = manifest["importance"]
    assert imp["method"] == "abs_coef_standardised"
    assert list(imp["features"]) == manifest["features"]["names"]
    # Second formula: |coefficients| of the saved scikit-learn pipeline (standardised inputs), normalised.
    pipeline = joblib.load(tmp_path / "art" / manifest["model"]["files"]["native"])["estimator"]
    coef = np.abs(np.asarray(pipeline[-1].coef_, dtype=float).ravel())
    np.testing.assert_allclose(list(imp["features"].values()), coef / coef.sum(), rtol=1e-12)
    assert sum(imp["features"].values()) == pytest.approx(1.0)
