"""Helpers for the registry tests: hand-built artifact folders (no tests in this module).

``make_artifact`` writes a manifest that follows the format_version 1 schema plus dummy model
files; ``make_real_artifact`` fits a tiny real model so that load and deploy run end to end.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

DEFAULT_FEATURES = ["ret_1", "ret_5"]


def _distribution() -> dict[str, Any]:
    return {"quantiles": [0.0] * 101, "bin_edges": [0.0, 1.0], "counts": [0, 1, 0]}


def make_manifest(
    model_files: dict[str, str],
    *,
    kind: str = "lightgbm",
    task: str = "regression",
    pickle_based: bool = False,
    features: list[str] | None = None,
    contract: dict[str, Any] | None = None,
    rows: list[list[float]] | None = None,
    predictions: list[float] | None = None,
    onnx_file: str | None = None,
    metrics: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A complete manifest (format_version 1) naming ``model_files``."""
    names = list(contract["names"]) if contract else list(features or DEFAULT_FEATURES)
    rows = rows if rows is not None else [[0.1 * (i + j) for j in range(len(names))] for i in range(3)]
    predictions = predictions if predictions is not None else [0.0] * len(rows)
    files = dict(model_files)
    if onnx_file:
        files["onnx"] = onnx_file
    return {
        "format_version": 1,
        "created_at": "2026-11-21T10:00:00+00:00",
        "model": {
            "kind": kind,
            "library": kind,
            "task": task,
            "format": "test",
            "files": files,
            "pickle_based": pickle_based,
            "hyperparameters": {},
            "random_state": 42,
        },
        "versions": {"aitrader": "0.1.0", "python": "3.11"},
        "target": {"name": "fwd_return_5", "horizon": 5, "task": task},
        "features": contract or {"names": names, "params": {}, "warmup": 5, "spec_hash": "0" * 64},
        "data": {
            "sha256": "0" * 64,
            "symbol": "TEST",
            "first": "2020-01-01",
            "last": "2020-12-31",
            "rows": 250,
            "interval": "1 days",
        },
        "split": {},
        "metrics": {
            "folds": [],
            "cv_mean": {},
            "baselines": {},
            "holdout": metrics if metrics is not None else {"ic": 0.05, "hit_rate": 0.53, "sharpe": 1.1},
        },
        "onnx": (
            {"file": onnx_file, "max_abs_diff": 1e-7, "max_rel_diff": 1e-5, "tolerance_rel": 1e-3}
            if onnx_file
            else None
        ),
        "baseline": {
            "features": {n: _distribution() for n in names},
            "prediction": _distribution(),
            "holdout_mae": 0.01,
            "residual_std": 0.01,
            "holdout_hit_rate": 0.5,
            "holdout_ic": 0.0,
        },
        "sample": {
            "timestamps": [f"2020-12-{i + 1:02d}" for i in range(len(rows))],
            "columns": names,
            "rows": rows,
            "predictions": predictions,
        },
    }


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")


def make_artifact(
    directory: Path, *, payload: bytes = b"tree model v1\n", extra: dict[str, bytes] | None = None, **manifest_kw: Any
) -> Path:
    """manifest.json + model.txt (+ ``extra`` files, relative paths allowed)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.txt").write_bytes(payload)
    for rel, data in (extra or {}).items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_bytes(data)
    write_manifest(directory, make_manifest({"native": "model.txt"}, **manifest_kw))
    return directory


def make_real_artifact(
    directory: Path,
    *,
    kind: str = "lightgbm",
    onnx: bool = False,
    seed: int = 0,
    contract: dict[str, Any] | None = None,
    n_features: int = 3,
) -> Path:
    """A tiny fitted model saved with its real native file and matching sample predictions."""
    import numpy as np
    import pandas as pd

    from aitrader.models import create_model

    names = list(contract["names"]) if contract else [f"feat_{i}" for i in range(n_features)]
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(120, len(names))), columns=names)
    y = pd.Series(X.to_numpy() @ rng.normal(size=len(names)) * 0.01 + rng.normal(scale=0.001, size=120))
    params = {"n_estimators": 5, "num_leaves": 4, "min_child_samples": 5, "n_jobs": 1} if kind == "lightgbm" else None
    if kind == "xgboost":
        params = {"n_estimators": 5, "max_depth": 2, "n_jobs": 1}
    model = create_model(kind, params=params).fit(X, y)
    directory.mkdir(parents=True, exist_ok=True)
    meta = model.save(directory)
    rows = X.iloc[:8]
    preds = model.predict(rows)
    onnx_file = None
    if onnx:
        from aitrader.models.onnx import export_onnx

        export_onnx(model, directory / "model.onnx")
        onnx_file = "model.onnx"
    manifest = make_manifest(
        meta["files"],
        kind=kind,
        pickle_based=meta["pickle_based"],
        contract=contract,
        features=names,
        rows=rows.to_numpy().tolist(),
        predictions=[float(p) for p in preds],
        onnx_file=onnx_file,
    )
    manifest["model"].update({k: v for k, v in meta.items() if k != "files"})
    manifest["model"]["files"] = {**meta["files"], **({"onnx": onnx_file} if onnx_file else {})}
    write_manifest(directory, manifest)
    return directory


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Flip one byte of ``path`` in place (middle byte by default), even when it is read-only."""
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def deploy_log_rows(registry: Any) -> list[sqlite3.Row]:
    """Every deploy-log row of ``registry``, oldest first, read straight from the index."""
    conn = sqlite3.connect(registry.db_path)
    conn.row_factory = sqlite3.Row
    rows = conn.execute("SELECT * FROM deploy_log ORDER BY id").fetchall()
    conn.close()
    return rows
