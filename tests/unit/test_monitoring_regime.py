"""The monitor's regime-shift alert: live regime mix (vol_regime, hmm_regime_p) against the training baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aitrader.config import Monitoring
from aitrader.monitoring.drift import make_baseline
from aitrader.monitoring.ledger import read_ledger
from aitrader.monitoring.monitor import monitor_ledger
from tests.unit.test_monitoring_support import manifest_for, market, write_ledger

NAMES = ["ret_1", "vol_regime", "hmm_regime_p"]


def regime_market(n: int, seed: int, *, wild_share: float, edges: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Returns from calm (1%) and wild (3%) blocks of 50 bars, a fraction ``wild_share`` of them wild;
    vol_regime = tercile of the 20-bar volatility against ``edges`` (the training terciles when None),
    hmm_regime_p = 0.9 in wild blocks and 0.1 in calm ones."""
    rng = np.random.default_rng(seed)
    wild = np.repeat(rng.random(n // 50 + 2) < wild_share, 50)[: n + 20]
    ret = rng.normal(0, np.where(wild, 0.03, 0.01))
    vol = pd.Series(ret).rolling(20).std().to_numpy()[20:]
    if edges is None:
        edges = np.quantile(vol, [1 / 3, 2 / 3])
    x = np.column_stack([ret[20:], (vol[:, None] > edges[None, :]).sum(axis=1), np.where(wild[20:], 0.9, 0.1)])
    pred = 0.3 * x[:, 0]
    return {"x": x, "pred": pred, "outcome": pred + rng.normal(0, 0.001, n), "edges": edges}


def regime_manifest(train: dict[str, np.ndarray]) -> dict:
    manifest = manifest_for(market(500, seed=1))
    manifest["features"] = {"names": NAMES, "params": {}, "warmup": 20, "spec_hash": "x"}
    manifest["baseline"] = dict(manifest["baseline"])
    manifest["baseline"]["features"] = {n: make_baseline(train["x"][:, j]) for j, n in enumerate(NAMES)}
    manifest["baseline"]["prediction"] = make_baseline(train["pred"])
    x = train["x"]
    manifest["baseline"]["regimes"] = {  # by hand: bincount of the training labels
        "vol_regime": {"kind": "vol_regime", "rule": "bin", "regimes": 3,
                       "shares": (np.bincount(x[:, 1].astype(int), minlength=3) / len(x)).tolist(), "rows": len(x)},
        "hmm_regime_p": {"kind": "hmm_regime_p", "rule": "above_half", "regimes": 2,
                         "shares": [float(np.mean(x[:, 2] <= 0.5)), float(np.mean(x[:, 2] > 0.5))], "rows": len(x)},
    }
    return manifest


TRAIN = regime_market(3000, seed=0, wild_share=0.3)
MANIFEST = regime_manifest(TRAIN)


def monitor(tmp_path: Path, live: dict[str, np.ndarray], cfg: Monitoring | None = None) -> dict:
    write_ledger(tmp_path / "run", live)
    return monitor_ledger(read_ledger(tmp_path / "run"), MANIFEST, cfg or Monitoring()).summary


def test_steady_regimes_raise_no_regime_alert(tmp_path: Path) -> None:
    s = monitor(tmp_path, regime_market(1500, seed=7, wild_share=0.3, edges=TRAIN["edges"]))
    assert "regime_shift" not in [a["code"] for a in s["alerts"]]
    rows = {r["name"]: r for r in s["drift"]["regimes"]}
    assert set(rows) == {"vol_regime", "hmm_regime_p"}
    assert all(not r["shifted"] and r["tvd"] < 0.15 for r in rows.values()), rows


def test_shifted_regime_raises_the_alert_with_its_distance(tmp_path: Path) -> None:
    live = regime_market(600, seed=7, wild_share=0.95, edges=TRAIN["edges"])
    s = monitor(tmp_path, live)
    alerts = {a["feature"]: a for a in s["alerts"] if a["code"] == "regime_shift"}
    assert set(alerts) == {"vol_regime", "hmm_regime_p"}
    # Independent TVD: the live labels counted here against the training shares stored by hand.
    x = live["x"]
    live_hmm = np.array([np.mean(x[:, 2] <= 0.5), np.mean(x[:, 2] > 0.5)])
    want = 0.5 * np.abs(live_hmm - MANIFEST["baseline"]["regimes"]["hmm_regime_p"]["shares"]).sum()
    assert alerts["hmm_regime_p"]["value"] == pytest.approx(want, abs=1e-12)
    assert want > 0.5
    assert "regime shift on hmm_regime_p" in alerts["hmm_regime_p"]["message"]
    assert "regime_shift_max 0.3" in alerts["hmm_regime_p"]["message"]
    assert s["health"] == "alert"
    # The threshold is the config's: above the distance, no alert.
    relaxed = monitor(tmp_path / "b", live, Monitoring(regime_shift_max=0.99))
    assert "regime_shift" not in [a["code"] for a in relaxed["alerts"]]


def test_too_few_live_values_wait(tmp_path: Path) -> None:
    live = regime_market(60, seed=7, wild_share=1.0, edges=TRAIN["edges"])
    s = monitor(tmp_path, live)
    assert "regime_shift" not in [a["code"] for a in s["alerts"]]
    assert all(r["tvd"] > 0.3 and r["n"] == 60 for r in s["drift"]["regimes"])


def test_a_manifest_without_regimes_has_no_regime_rows(tmp_path: Path) -> None:
    write_ledger(tmp_path / "run", market(200, seed=3))
    s = monitor_ledger(read_ledger(tmp_path / "run"), manifest_for(market(500, seed=1)), Monitoring()).summary
    assert s["drift"]["regimes"] == []
