"""What the registry needs from an artifact's ``manifest.json`` before it accepts the folder.

The registry reads the manifest as data (JSON, never code). At registration it checks the
manifest is format_version 1 and that every file it names is in the folder; the index keeps the
model kind, task, pickle flag and headline holdout metrics for ``aitrader list``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath
from typing import Any

from aitrader.errors import ModelError, RegistryError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
HEADLINE_METRICS = (
    "mae",
    "rmse",
    "r2",
    "hit_rate",
    "ic",
    "rank_ic",
    "total_return",
    "sharpe",
    "max_drawdown",
    "turnover",
    "accuracy",
    "log_loss",
    "auc",
)


def _safe_rel(value: object, where: str, directory: Path) -> str:
    if not isinstance(value, str) or not value:
        raise RegistryError(f"{directory / MANIFEST_NAME}: {where} must be a file name, got {value!r}")
    rel = PurePosixPath(value)
    if rel.is_absolute() or ".." in rel.parts or "\\" in value:
        raise RegistryError(
            f"{directory / MANIFEST_NAME}: {where} {value!r} must be a path inside the artifact folder "
            "(no absolute paths or '..'); fix the manifest"
        )
    return rel.as_posix()


def referenced_files(manifest: dict[str, Any], directory: Path) -> list[str]:
    """The relative paths the manifest says the artifact contains."""
    model = manifest.get("model")
    if not isinstance(model, dict):
        raise RegistryError(f"{directory / MANIFEST_NAME}: 'model' section missing; expected the training manifest")
    files = model.get("files")
    if not isinstance(files, dict) or not files:
        raise RegistryError(
            f"{directory / MANIFEST_NAME}: model.files must map roles to file names "
            '(e.g. {"native": "model.txt"}); fix the manifest'
        )
    out = [_safe_rel(v, f"model.files.{k}", directory) for k, v in files.items() if v is not None]
    onnx = manifest.get("onnx")
    if isinstance(onnx, dict) and onnx.get("file") is not None:
        out.append(_safe_rel(onnx["file"], "onnx.file", directory))
    return sorted(set(out))


def read_artifact_manifest(directory: Path) -> dict[str, Any]:
    """Read and check an artifact folder's manifest; RegistryError says what is wrong and the fix."""
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise RegistryError(
            f"no {MANIFEST_NAME} in {directory}: expected an artifact folder written by `aitrader train`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RegistryError(f"{path} is not readable JSON ({type(exc).__name__}: {exc}); re-export the artifact") \
            from exc
    if not isinstance(manifest, dict):
        raise RegistryError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise RegistryError(
            f"{path}: format_version {manifest.get('format_version')!r} is not supported (expected "
            f"{FORMAT_VERSION}); re-train with this aitrader version"
        )
    from aitrader.training.manifest import validate_manifest

    try:
        validate_manifest(manifest, path)  # the full format_version 1 schema (training's definition)
    except ModelError as exc:
        raise RegistryError(f"cannot register {directory}: {exc}") from exc
    for rel in referenced_files(manifest, directory):
        if not (directory / rel).is_file():
            raise RegistryError(
                f"{path} names {rel!r} but {directory / rel} does not exist: the manifest does not match "
                "its files; re-export the artifact"
            )
    if not isinstance(manifest["model"].get("pickle_based", False), bool):
        raise RegistryError(f"{path}: model.pickle_based must be true or false")
    return manifest


def headline_metrics(manifest: dict[str, Any]) -> dict[str, float]:
    """The holdout headline metrics (finite numbers only) for the index."""
    holdout = (manifest.get("metrics") or {}).get("holdout") or {}
    if not isinstance(holdout, dict):
        return {}
    out: dict[str, float] = {}
    for key in HEADLINE_METRICS:
        value = holdout.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = float(value)
    return out


def summary(manifest: dict[str, Any]) -> dict[str, Any]:
    model = manifest.get("model") or {}
    target = manifest.get("target") or {}
    return {
        "kind": model.get("kind"),
        "task": model.get("task") or target.get("task"),
        "pickle_based": bool(model.get("pickle_based", False)),
        "metrics": headline_metrics(manifest),
    }
