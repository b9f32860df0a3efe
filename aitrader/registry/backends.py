"""Which runner backend a version predicts with, and the cache of its compiled libraries.

Modes (``deploy --backend``, ``paper-trade --backend``):

- ``auto`` (the default): at deploy, compile the model (:data:`aitrader.models.compiled.DEFAULT_ORDER`:
  lleaves, then treelite) and keep the library when it matches the native model on the manifest's
  holdout sample within the ONNX parity tolerance; else (not installed, not a tree model, parity off)
  the ONNX runner stays, with a warning naming why. At load, a version with a verified library in
  the cache runs on it; one without runs on ONNX (or native when it has no ``model.onnx``).
- ``compiled``: the same, but a version that cannot run compiled is an error, not a fallback.
- ``onnx`` / ``native``: that runner (``ModelRunner.from_artifact(prefer=...)``); at deploy, also
  drops the version's compiled libraries, so later ``auto`` loads follow the deploy's choice.

The cache lives outside the hashed artifacts, under the registry root::

    .compiled/<digest16>-<backend>-<versions>-<arch>/model.so, compiled.json

The folder name carries everything that decides the bytes (artifact digest, compiler and library
versions, CPU tag), so an upgrade or another machine sharing the registry looks for another folder:
a stale one is never used. ``compiled.json`` records the library's SHA256; a library whose bytes
differ is refused (IntegrityError) and only a deploy replaces it. A missing library of a version the
deploy compiled (its folder for other versions/CPU remains) is compiled again at load, with the
same parity check.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aitrader.errors import AitraderError, ModelError

MODES = ("auto", "compiled", "onnx", "native")
CACHE_DIR = ".compiled"
DEFAULT_MODE = "auto"
ENV_BACKEND = "AITRADER_BACKEND"  # the default mode of deploy and paper-trade when --backend is not given


@dataclass
class BackendChoice:
    """The runner a version got, and why (the deploy check's detail, a warning when it fell back)."""

    runner: Any  # aitrader.models.runner.ModelRunner
    backend: str  # the runner's backend: lleaves | treelite | onnx | lightgbm | xgboost | sklearn
    detail: str
    warning: str | None = None
    failed: bool = False  # mode "compiled" and no compiled backend worked
    parity: dict[str, Any] = field(default_factory=dict)


def default_mode() -> str:
    """``$AITRADER_BACKEND`` when set (e.g. ``onnx`` to never compile), else ``auto``."""
    return validate_mode(os.environ.get(ENV_BACKEND) or DEFAULT_MODE)


def validate_mode(mode: str) -> str:
    if mode not in MODES:
        raise ModelError(f"unknown --backend {mode!r} (or ${ENV_BACKEND}); expected one of {', '.join(MODES)}")
    return mode


def cache_root(registry_root: Path) -> Path:
    return Path(registry_root) / CACHE_DIR


def entry_dir(registry_root: Path, digest: str, backend: str) -> Path:
    """The cache folder of ``digest`` compiled by ``backend`` with the installed versions on this CPU."""
    from aitrader.models.compiled import arch_tag, backend_version

    return cache_root(registry_root) / f"{digest[:16]}-{backend}-{backend_version(backend)}-{arch_tag()}"


def entries(registry_root: Path, digest: str) -> list[Path]:
    """Every cache folder of ``digest`` (any backend, version or CPU)."""
    root = cache_root(registry_root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob(f"{digest[:16]}-*") if p.is_dir())


def drop(registry_root: Path, digest: str) -> int:
    """Remove every cache folder of ``digest``; how many."""
    found = entries(registry_root, digest)
    for p in found:
        shutil.rmtree(p, ignore_errors=True)
    return len(found)


# ---------------------------------------------------------------------- parity


def _sample(manifest: dict[str, Any]) -> Any:
    import numpy as np

    rows = (manifest.get("sample") or {}).get("rows")
    if not rows:
        raise ModelError("the manifest has no holdout sample rows to check a compiled model against; re-train it")
    return np.asarray([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)


def parity(reference: Any, got: Any, tolerance: float) -> dict[str, Any]:
    """The ONNX parity figures (``aitrader.models.onnx.onnx_parity``) for two prediction vectors:
    max_abs_diff, max_rel_diff (of :func:`~aitrader.models.onnx.parity_scale`), scale, tolerance_rel,
    tolerance_abs, rows, rows_off. A NaN on one side only counts as an infinite difference."""
    import numpy as np

    from aitrader.models.onnx import parity_scale

    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    out = np.asarray(got, dtype=np.float64).reshape(-1)
    if ref.shape != out.shape or not ref.size:
        raise ModelError(f"parity: {out.size} predictions for {ref.size} reference values")
    both_nan = np.isnan(ref) & np.isnan(out)
    diff = np.where(both_nan, 0.0, np.abs(out - ref))
    diff = np.where(np.isnan(diff), np.inf, diff)
    scale = parity_scale(ref)
    return {"max_abs_diff": float(diff.max()), "max_rel_diff": float(diff.max() / scale), "scale": scale,
            "tolerance_rel": tolerance, "tolerance_abs": tolerance * scale, "rows": int(diff.size),
            "rows_off": int(np.count_nonzero(diff > tolerance * scale))}


def _tolerance(manifest: dict[str, Any]) -> float:
    from aitrader.models.onnx import DEFAULT_TOLERANCE_REL

    value = (manifest.get("onnx") or {}).get("tolerance_rel")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 \
        else DEFAULT_TOLERANCE_REL


def _native_reference(path: Path, manifest: dict[str, Any], X: Any) -> Any:
    """The native library's predictions on ``X``: the independent reference of the parity check."""
    from aitrader.models import load_model

    return load_model(path, manifest.get("model") or {}).predict_score(X)


# ---------------------------------------------------------------------- building runners


def _runner(predictor: Any, manifest: dict[str, Any]) -> Any:
    from aitrader.models.runner import ModelRunner

    meta = manifest.get("model") or {}
    return ModelRunner.from_compiled(predictor, task=str(meta.get("task")),
                                     feature_names=list((manifest.get("features") or {}).get("names") or []))


def _load_entry(folder: Path, digest: str, n_features: int) -> Any:
    """The verified library of a cache folder (IntegrityError when its bytes changed; ModelError
    when its record does not describe ``digest``)."""
    from aitrader.models.compiled import load_library, read_record

    record = read_record(folder)
    if record.get("digest") != digest:
        raise ModelError(f"{folder / 'compiled.json'} records digest {str(record.get('digest'))[:12]}, not "
                         f"{digest[:12]}; delete {folder} and deploy the model again")
    return load_library(folder, record, n_features)


def _checked(predictor: Any, path: Path, manifest: dict[str, Any], X: Any, backend: str) -> dict[str, Any]:
    """Parity of ``predictor`` against the native model on the sample rows ``X``; ModelError when off."""
    tol = _tolerance(manifest)
    figures = parity(_native_reference(path, manifest, X), predictor.predict_batch(X), tol)
    if figures["max_rel_diff"] > tol:
        kind = (manifest.get("model") or {}).get("kind")
        raise ModelError(
            f"{backend} differs from the native {kind} model on {figures['rows_off']} of {figures['rows']} holdout "
            f"sample rows (max |diff| {figures['max_abs_diff']:.3g} = {figures['max_rel_diff']:.3g} x the "
            f"predictions' spread {figures['scale']:.3g} > tolerance {tol:g})")
    return figures


def _describe(backend: str, figures: dict[str, Any], record: dict[str, Any], how: str) -> str:
    return (f"{backend}: parity max_rel_diff {figures['max_rel_diff']:.2g} of the predictions' spread on "
            f"{figures['rows']} holdout sample rows (tolerance {figures['tolerance_rel']:g}); library sha256 "
            f"{record['sha256'][:12]}, {record['bytes']:,} bytes, {how}")


def _compile_checked(registry_root: Path, path: Path, digest: str, manifest: dict[str, Any], backend: str,
                     *, keep: bool) -> tuple[Any, dict[str, Any], str]:
    """The library of ``backend`` for this version, parity-checked against the native model.

    A verified library already in the cache is reused; a missing, unreadable or tampered one is
    compiled again (into a staging folder, moved into the cache only with ``keep`` and parity).
    Returns (predictor, parity figures, detail); raises ModelError/CompilerUnavailable otherwise."""
    from aitrader.models.compiled import check_supported, compile_model, load_library, read_record

    meta = manifest.get("model") or {}
    kind, task = meta.get("kind"), meta.get("task")
    check_supported(backend, kind, task)
    X = _sample(manifest)
    final = entry_dir(registry_root, digest, backend)
    if final.is_dir():
        try:
            predictor = _load_entry(final, digest, X.shape[1])
            record = read_record(final)
        except AitraderError:  # tampered or damaged: rebuilt below, never loaded
            pass
        else:
            figures = _checked(predictor, path, manifest, X, backend)
            return predictor, figures, _describe(backend, figures, record, "verified cached build")
    native = (meta.get("files") or {}).get("native")
    if not native:
        raise ModelError(f"{path}: the manifest names no native model file to compile")
    staging = final.with_name(f".staging-{os.getpid()}-{final.name}")  # per process: concurrent deploys
    shutil.rmtree(staging, ignore_errors=True)
    record = compile_model(backend, str(kind), str(task), path / native, staging, extra={"digest": digest})
    try:
        predictor = load_library(staging, record, X.shape[1])
        figures = _checked(predictor, path, manifest, X, backend)
        if keep:
            shutil.rmtree(final, ignore_errors=True)  # a tampered or damaged library of the same key
            try:
                staging.rename(final)
            except OSError:
                if not final.is_dir():
                    raise
                # A concurrent deploy put its own build there first; a load verifies it against its record.
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return predictor, figures, _describe(backend, figures, record, f"compiled in {record['compile_seconds']:.1f} s")


def _fallback(path: Path, manifest: dict[str, Any], trust_pickle: bool) -> Any:
    from aitrader.models.runner import ModelRunner

    return ModelRunner.from_artifact(path, manifest, prefer="onnx", trust_pickle=trust_pickle)


def _compiled_order(manifest: dict[str, Any]) -> list[str]:
    from aitrader.models.compiled import DEFAULT_ORDER, KINDS

    kind = (manifest.get("model") or {}).get("kind")
    return [b for b in DEFAULT_ORDER if kind in KINDS[b]]


def _compile_first(registry_root: Path, path: Path, digest: str, manifest: dict[str, Any], mode: str,
                   trust_pickle: bool, keep: bool, why: str) -> BackendChoice:
    """Compile with the first backend that installs and matches; else fall back (auto) or fail (compiled)."""
    reasons = []
    order = _compiled_order(manifest)
    for backend in order:
        try:
            predictor, figures, detail = _compile_checked(registry_root, path, digest, manifest, backend, keep=keep)
        except AitraderError as exc:
            reasons.append(f"{backend}: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - a compiler's own error (LLVM, treelite, OS): fall back, say why
            reasons.append(f"{backend}: {type(exc).__name__}: {exc}")
            continue
        skipped = f" (not {'; '.join(reasons)})" if reasons else ""
        return BackendChoice(_runner(predictor, manifest), backend, why + detail + skipped, parity=figures)
    kind = (manifest.get("model") or {}).get("kind")
    if not order:
        reasons.append(f"no compiled backend handles {kind} models (lleaves: lightgbm; treelite: lightgbm, xgboost)")
    why_not = "; ".join(reasons)
    if mode == "compiled":
        return BackendChoice(None, "none", f"--backend compiled: {why_not}", failed=True)
    runner = _fallback(path, manifest, trust_pickle)
    return BackendChoice(runner, runner.backend, f"{runner.backend} (compiled backend not used: {why_not})",
                         warning=f"compiled backend not used ({why_not}); the runner stays on {runner.backend}")


def for_deploy(registry_root: Path, path: Path, digest: str, manifest: dict[str, Any], mode: str, *,
               trust_pickle: bool = False, commit: bool = True) -> BackendChoice:
    """The runner a deploy chooses for a verified version (compiling it with ``auto``/``compiled``).

    ``commit`` False (a dry run): compile and measure, but leave the cache as it was."""
    from aitrader.models.runner import ModelRunner

    validate_mode(mode)
    if mode in ("onnx", "native"):
        if commit:
            drop(registry_root, digest)
        runner = ModelRunner.from_artifact(path, manifest, prefer=mode, trust_pickle=trust_pickle)
        return BackendChoice(runner, runner.backend, f"{runner.backend} (--backend {mode})")
    return _compile_first(registry_root, path, digest, manifest, mode, trust_pickle, commit, "")


def for_load(registry_root: Path, path: Path, digest: str, manifest: dict[str, Any], mode: str, *,
             trust_pickle: bool = False) -> BackendChoice:
    """The runner of a verified version at load (paper-trade): see the module docstring."""
    from aitrader.models.compiled import CompilerUnavailable
    from aitrader.models.runner import ModelRunner

    validate_mode(mode)
    if mode in ("onnx", "native"):
        runner = ModelRunner.from_artifact(path, manifest, prefer=mode, trust_pickle=trust_pickle)
        return BackendChoice(runner, runner.backend, f"{runner.backend} (--backend {mode})")
    n = len((manifest.get("features") or {}).get("names") or [])
    reasons = []
    for backend in _compiled_order(manifest):
        try:
            folder = entry_dir(registry_root, digest, backend)
        except CompilerUnavailable as exc:
            reasons.append(f"{backend}: {exc}")
            continue
        if folder.is_dir():  # IntegrityError (tampered) propagates: refused, never run
            return BackendChoice(_runner(_load_entry(folder, digest, n), manifest), backend,
                                 f"{backend}: verified library {folder.name}")
    if mode == "compiled" or entries(registry_root, digest):
        # Asked for, or compiled at deploy for other versions/another CPU: compile for this one.
        return _compile_first(registry_root, path, digest, manifest, mode, trust_pickle, True,
                              "compiled at load (no library for these versions on this CPU): ")
    runner = _fallback(path, manifest, trust_pickle)
    return BackendChoice(runner, runner.backend, f"{runner.backend} (the deploy did not compile this version)")
