"""The artifact manifest (``manifest.json``): write, read and validate (format_version 1).

The schema is the one in docs/architecture.md. Writing is atomic (temp file + rename), keys are
sorted and indented by 2 so that two trainings of the same data differ only in ``created_at``.
NaN and infinities are written as ``null`` (strict JSON).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from aitrader._util import json_clean
from aitrader.errors import ModelError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1

# key -> (type(s), required sub-keys). ``None`` allowed only where listed in _NULLABLE.
_SCHEMA: dict[str, tuple[type | tuple[type, ...], tuple[str, ...]]] = {
    "format_version": (int, ()),
    "created_at": (str, ()),
    "model": (dict, ("kind", "library", "task", "format", "files", "pickle_based", "hyperparameters",
                     "random_state")),
    "versions": (dict, ("aitrader", "python")),
    "target": (dict, ("name", "horizon", "task")),
    "features": (dict, ("names", "params", "warmup", "spec_hash")),
    "data": (dict, ("sha256", "symbol", "first", "last", "rows", "interval")),
    "split": (dict, ()),
    "metrics": (dict, ("folds", "cv_mean", "holdout", "baselines")),
    "onnx": (dict, ("file", "max_abs_diff", "max_rel_diff", "tolerance_rel")),
    "baseline": (dict, ("features", "prediction", "holdout_mae", "residual_std", "holdout_hit_rate",
                        "holdout_ic")),
    "sample": (dict, ("timestamps", "columns", "rows", "predictions")),
}
_NULLABLE = {"onnx"}  # null when ONNX export is disabled (onnx.export: false)
_DISTRIBUTION_KEYS = ("quantiles", "bin_edges", "counts")


def dumps(manifest: dict[str, Any]) -> str:
    """The manifest as the exact text written to disk."""
    return json.dumps(json_clean(manifest), sort_keys=True, indent=2, allow_nan=False) + "\n"


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> Path:
    """Validate and write ``directory/manifest.json`` atomically; returns its path."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    text = dumps(manifest)
    validate_manifest(json.loads(text), path)
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _check_distribution(stats: Any, where: str, source: Path | str) -> None:
    if not isinstance(stats, dict) or any(k not in stats for k in _DISTRIBUTION_KEYS):
        raise ModelError(f"{source}: {where} must have {', '.join(_DISTRIBUTION_KEYS)}; retrain the model")
    if len(stats["counts"]) != len(stats["bin_edges"]) + 1:
        raise ModelError(
            f"{source}: {where}.counts must have len(bin_edges) + 1 = {len(stats['bin_edges']) + 1} "
            f"entries, got {len(stats['counts'])}; the manifest was edited or corrupted"
        )


def _check_sections(manifest: dict[str, Any], source: str | Path) -> None:
    for key, (kind, required) in _SCHEMA.items():
        if key not in manifest:
            raise ModelError(f"{source}: missing key {key!r}; the artifact is incomplete, retrain it")
        value: Any = manifest[key]
        if value is None and key in _NULLABLE:
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ModelError(
                f"{source}: key {key!r} must be {getattr(kind, '__name__', kind)}, got {type(value).__name__}"
            )
        section: dict[str, Any] = value if isinstance(value, dict) else {}
        for sub in required:
            if sub not in section:
                raise ModelError(f"{source}: missing key '{key}.{sub}'; the artifact is incomplete, retrain it")


def _check_features(manifest: dict[str, Any], source: str | Path) -> None:
    names = manifest["features"]["names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelError(f"{source}: 'features.names' must be a non-empty list of feature names")
    per_feature = manifest["baseline"]["features"]
    for name in names:
        stats = per_feature.get(name) if isinstance(per_feature, dict) else None
        _check_distribution(stats, f"baseline.features.{name}", source)
    _check_distribution(manifest["baseline"]["prediction"], "baseline.prediction", source)
    sample = manifest["sample"]
    if sample["columns"] != names:
        raise ModelError(f"{source}: 'sample.columns' must equal 'features.names'; retrain the model")
    if not (len(sample["timestamps"]) == len(sample["rows"]) == len(sample["predictions"])):
        raise ModelError(f"{source}: 'sample' timestamps, rows and predictions differ in length")


def validate_manifest(manifest: Any, source: str | Path = MANIFEST_NAME) -> dict[str, Any]:
    """Check the manifest against format_version 1; ``ModelError`` names the key and the file."""
    if not isinstance(manifest, dict):
        raise ModelError(f"{source}: expected a JSON object at the top level, got {type(manifest).__name__}")
    version = manifest.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ModelError(
            f"{source}: format_version {version} is newer than this aitrader supports ({FORMAT_VERSION}); "
            "upgrade aitrader"
        )
    _check_sections(manifest, source)
    if version != FORMAT_VERSION:
        raise ModelError(f"{source}: format_version must be {FORMAT_VERSION}, got {version!r}")
    _check_features(manifest, source)
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Read and validate ``directory/manifest.json`` (or a path to the file itself)."""
    path = Path(directory)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ModelError(f"no {MANIFEST_NAME} in {path.parent}; point at a folder written by `aitrader train`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}; retrain the model") from exc
    except RecursionError as exc:
        raise ModelError(f"{path}: JSON nested too deeply to be a manifest; retrain the model") from exc
    return validate_manifest(manifest, path)
