"""Manifest write/read/validation and the baseline statistics it carries."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from aitrader.errors import ModelError
from aitrader.training.manifest import MANIFEST_NAME, dumps, read_manifest, validate_manifest, write_manifest
from aitrader.training.stats import baseline_stats, distribution


def minimal_manifest() -> dict:
    dist = distribution(np.arange(100.0))
    return {
        "format_version": 1,
        "created_at": "2026-11-21T10:00:00+00:00",
        "model": {"kind": "lightgbm", "library": "lightgbm", "task": "regression", "format": "lightgbm-text",
                  "files": {"native": "model.txt"}, "pickle_based": False, "hyperparameters": {},
                  "random_state": 42},
        "versions": {"aitrader": "0.1.0", "python": "3.11"},
        "target": {"name": "fwd_return_5", "horizon": 5, "task": "regression"},
        "features": {"names": ["a", "b"], "params": {}, "warmup": 3, "spec_hash": "abc"},
        "data": {"sha256": "0" * 64, "symbol": "X", "first": "2020", "last": "2021", "rows": 10,
                 "interval": "1 days"},
        "split": {},
        "metrics": {"folds": [], "cv_mean": {}, "holdout": {"mae": float("nan")}, "baselines": {}},
        "onnx": None,
        "baseline": {"features": {"a": dist, "b": dist}, "prediction": dist, "holdout_mae": 0.1,
                     "residual_std": 0.2, "holdout_hit_rate": 0.5, "holdout_ic": 0.0},
        "sample": {"timestamps": ["t"], "columns": ["a", "b"], "rows": [[1.0, 2.0]], "predictions": [np.float64(0.1)]},
    }


def test_round_trip_is_strict_sorted_json(tmp_path):
    path = write_manifest(tmp_path, minimal_manifest())
    assert path == tmp_path / MANIFEST_NAME
    text = path.read_text()
    assert "NaN" not in text and '"mae": null' in text
    assert text == dumps(json.loads(text))  # sorted keys, indent 2: stable text
    back = read_manifest(tmp_path)
    assert back["sample"]["predictions"] == [0.1]
    assert read_manifest(path)["format_version"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name != MANIFEST_NAME]  # no temp files left


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("baseline"), "missing key 'baseline'"),
        (lambda m: m["features"].pop("spec_hash"), "missing key 'features.spec_hash'"),
        (lambda m: m.__setitem__("model", []), "key 'model' must be dict"),
        (lambda m: m.__setitem__("format_version", 2), "format_version 2 is newer"),
        (lambda m: m.__setitem__("format_version", 0), "format_version must be 1"),
        (lambda m: m["baseline"]["features"].pop("b"), "baseline.features.b must have quantiles"),
        (lambda m: m["baseline"]["prediction"]["counts"].pop(), "counts must have len"),
        (lambda m: m["sample"].__setitem__("columns", ["b", "a"]), "sample.columns"),
        (lambda m: m["features"].__setitem__("names", []), "non-empty list"),
    ],
)
def test_invalid_manifest_names_key_and_file(tmp_path, edit, message):
    m = copy.deepcopy(minimal_manifest())
    edit(m)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(m, default=float))
    with pytest.raises(ModelError, match=message) as info:
        read_manifest(tmp_path)
    assert str(tmp_path / MANIFEST_NAME) in str(info.value)


def test_write_refuses_an_invalid_manifest(tmp_path):
    m = minimal_manifest()
    del m["sample"]
    with pytest.raises(ModelError, match="missing key 'sample'"):
        write_manifest(tmp_path, m)
    assert not list(tmp_path.iterdir())


def test_read_errors(tmp_path):
    with pytest.raises(ModelError, match="no manifest.json in"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ModelError, match="invalid JSON at line 1"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("[]")
    with pytest.raises(ModelError, match="JSON object"):
        validate_manifest(json.loads("[]"), "x.json")


def test_distribution_bins_match_searchsorted():
    rng = np.random.default_rng(3)
    x = rng.normal(size=1000)
    d = distribution(np.r_[x, np.nan])
    assert len(d["quantiles"]) == 101 and len(d["bin_edges"]) == 9 and len(d["counts"]) == 10
    assert d["quantiles"][0] == x.min() and d["quantiles"][-1] == x.max()
    assert sum(d["counts"]) == 1000  # NaN ignored
    assert all(95 <= c <= 105 for c in d["counts"])  # deciles of itself: ~10% each
    live = np.array([-100.0, 100.0])
    bins = np.searchsorted(d["bin_edges"], live, side="right")
    assert bins.tolist() == [0, 9]  # outer bins are open-ended
    discrete = distribution([1.0] * 50 + [2.0] * 50)
    assert sum(discrete["counts"]) == 100
    empty = distribution([np.nan])
    assert empty["counts"] == [0] * 10


def test_baseline_stats_sections():
    X = pd.DataFrame({"a": np.arange(50.0), "b": np.ones(50)})
    target = np.linspace(-0.01, 0.01, 20)
    pred = target * 0.5
    out = baseline_stats(X, pred, {"mae": 0.1, "hit_rate": 0.6, "ic": 0.2}, target, "regression")
    assert set(out["features"]) == {"a", "b"}
    assert out["holdout_mae"] == 0.1 and out["holdout_ic"] == 0.2
    assert out["residual_std"] == pytest.approx(np.std(pred - target, ddof=1))
    cls = baseline_stats(X, np.full(20, 0.6), {"mae": 0.1, "hit_rate": 0.6, "ic": 0.2}, target, "classification")
    assert cls["residual_std"] == pytest.approx(np.std(0.6 - (target > 0), ddof=1))
