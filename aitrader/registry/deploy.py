"""Deploy checks, promotion to an alias, rollback and the append-only deploy log.

Checks run in order and stop at the first failure (the rest are reported as skipped):

1. ``hashes``: every file's SHA256 matches the index (nothing is deserialised before this);
2. ``loads``: the runner builds (a pickle-based artifact needs the trust flag);
3. ``reproduces_sample``: the runner reproduces the manifest's sample predictions (native within
   1e-9 relative, ONNX within the manifest's ``onnx.tolerance_abs``, the trainer's parity bound;
   older manifests: ``onnx.tolerance_rel`` relative);
4. ``feature_contract``: the configured feature pipeline can produce the manifest's contract.

A promotion or a rollback, successful or failed, is one INSERT in ``deploy_log``
(``aitrader.registry.log``); a dry run runs the checks and records nothing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from aitrader.errors import AitraderError, DeployCheckError, RegistryError
from aitrader.registry import log
from aitrader.registry.log import now_iso
from aitrader.registry.names import DEFAULT_ALIAS, parse_model_id, validate_alias
from aitrader.registry.types import CheckResult, DeployResult, LoadedModel, VersionInfo
from aitrader.registry.verify import integrity_message

if TYPE_CHECKING:
    from aitrader.registry.store import Registry

CHECKS = ("hashes", "loads", "reproduces_sample", "feature_contract")
NATIVE_TOLERANCE = 1e-9
DEFAULT_ONNX_TOLERANCE = 1e-3


# ---------------------------------------------------------------------- the checks


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, AitraderError) else f"{type(exc).__name__}: {exc}"


def sample_max_rel_diff(got: list[float], expected: list[float]) -> float:
    """Largest |got - expected| / max(|expected|, spread); NaN must match NaN.

    The spread (std of the expected predictions, else their largest magnitude, else 1) is the
    floor ``aitrader.models.onnx.onnx_parity`` uses too: return-sized predictions sit near zero,
    where a plain relative error turns harmless float32 rounding into a huge number.
    """
    finite = [e for e in expected if math.isfinite(e)]
    scale = 0.0
    if finite:
        mean = sum(finite) / len(finite)
        scale = math.sqrt(sum((e - mean) ** 2 for e in finite) / len(finite))
        if scale == 0.0 or not math.isfinite(scale):
            scale = max(abs(e) for e in finite)
    scale = scale if scale > 0.0 else 1.0
    worst = 0.0
    for g, e in zip(got, expected, strict=True):
        if math.isnan(e) or math.isnan(g):
            if not (math.isnan(e) and math.isnan(g)):
                return math.inf
            continue
        worst = max(worst, abs(g - e) / max(abs(e), scale))
    return worst


def sample_max_abs_diff(got: list[float], expected: list[float]) -> float:
    """Largest |got - expected|; NaN must match NaN (else inf)."""
    worst = 0.0
    for g, e in zip(got, expected, strict=True):
        if math.isnan(e) or math.isnan(g):
            if not (math.isnan(e) and math.isnan(g)):
                return math.inf
            continue
        worst = max(worst, abs(g - e))
    return worst


def _check_sample(loaded: LoadedModel) -> CheckResult:
    import numpy as np

    manifest = loaded.manifest
    sample = manifest.get("sample") or {}
    rows, preds = sample.get("rows"), sample.get("predictions")
    if not rows or not isinstance(preds, list) or len(rows) != len(preds):
        return CheckResult(
            "reproduces_sample", "failed", "the manifest has no sample rows with predictions; re-train to record them"
        )
    names = (manifest.get("features") or {}).get("names")
    columns = sample.get("columns")
    if columns is not None and names is not None and list(columns) != list(names):
        return CheckResult(
            "reproduces_sample",
            "failed",
            "sample.columns differ from features.names in the manifest; re-export the artifact",
        )
    x = np.asarray([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)
    got = [float(v) for v in np.asarray(loaded.runner.predict_batch(x), dtype=np.float64).ravel()]
    expected = [math.nan if v is None else float(v) for v in preds]
    if len(got) != len(expected):
        return CheckResult(
            "reproduces_sample", "failed", f"runner returned {len(got)} predictions for {len(expected)} rows"
        )
    backend = str(getattr(loaded.runner, "backend", "native"))
    tol = NATIVE_TOLERANCE
    if "onnx" in backend.lower():
        onnx = manifest.get("onnx") or {}
        tol = float(onnx.get("tolerance_rel") or DEFAULT_ONNX_TOLERANCE)
        tol_abs = onnx.get("tolerance_abs")  # the trainer's parity bound (tolerance x spread of predictions)
        if isinstance(tol_abs, int | float) and not isinstance(tol_abs, bool) and tol_abs > 0:
            worst = sample_max_abs_diff(got, expected)
            detail = (f"{len(got)} rows on the {backend} backend: max difference {worst:.3g} (tolerance "
                      f"{tol_abs:.3g} = onnx.tolerance_abs)")
            return CheckResult("reproduces_sample", "passed" if worst <= tol_abs else "failed", detail)
    worst = sample_max_rel_diff(got, expected)
    detail = f"{len(got)} rows on the {backend} backend: max relative difference {worst:.3g} (tolerance {tol:g})"
    return CheckResult("reproduces_sample", "passed" if worst <= tol else "failed", detail)


def _check_features(loaded: LoadedModel) -> CheckResult:
    contract = loaded.manifest.get("features")
    if not isinstance(contract, dict) or not contract.get("names"):
        return CheckResult("feature_contract", "failed", "the manifest has no feature contract; re-train the model")
    from aitrader.features import FeaturePipeline

    pipeline = FeaturePipeline.from_contract(contract)
    return CheckResult(
        "feature_contract",
        "passed",
        f"{len(pipeline.names)} features (warm-up {pipeline.warmup} bars) available from the configured pipeline",
    )


def run_checks(registry: Registry, info: VersionInfo) -> list[CheckResult]:
    """Run the four deploy checks in order; after a failure the rest are skipped."""
    results: list[CheckResult] = []
    check = registry.check_version(info)
    if check.problems:
        results.append(CheckResult("hashes", "failed", integrity_message(check.problems[0])))
    else:
        results.append(CheckResult("hashes", "passed", f"{check.files} files, {check.bytes} bytes match the index"))
    loaded: LoadedModel | None = None
    if results[-1].passed:
        try:
            loaded = registry.load_verified(info)
            results.append(
                CheckResult("loads", "passed", f"runner built on the {getattr(loaded.runner, 'backend', '?')} backend")
            )
        except Exception as exc:  # any failure to load is a failed check, reported with its reason
            results.append(CheckResult("loads", "failed", _describe(exc)))
    for name, fn in (("reproduces_sample", _check_sample), ("feature_contract", _check_features)):
        if loaded is None or not results[-1].passed:
            break
        try:
            results.append(fn(loaded))
        except Exception as exc:
            results.append(CheckResult(name, "failed", _describe(exc)))
    done = {r.name for r in results}
    results += [CheckResult(n, "skipped", "an earlier check failed") for n in CHECKS if n not in done]
    return results


# ---------------------------------------------------------------------- promotion and the log


def _promote(
    registry: Registry, info: VersionInfo, alias: str, action: str, checks: list[CheckResult], reason: str | None
) -> DeployResult:
    ok = all(c.passed for c in checks)
    index = registry._writer()
    with index.write() as conn:
        row = conn.execute("SELECT version FROM aliases WHERE name=? AND alias=?", (info.name, alias)).fetchone()
        current = row[0] if row else None
        event = log.append(
            conn,
            name=info.name,
            alias=alias,
            action=action,
            from_version=current,
            to_version=info.version,
            status="success" if ok else "failed",
            checks=checks,
            reason=reason,
        )
        if ok:
            conn.execute(
                "INSERT INTO aliases VALUES (?,?,?,?) ON CONFLICT(name, alias) DO UPDATE "
                "SET version=excluded.version, updated_at=excluded.updated_at",
                (info.name, alias, info.version, now_iso()),
            )
    if not ok:
        failed = next(c for c in checks if c.status == "failed")
        raise DeployCheckError(
            f"deploy check {failed.name} failed for {info.model_id}: {failed.detail}; nothing was promoted "
            f"({alias} stays on {f'v{current}' if current else 'nothing'})"
        )
    frm = f"v{current}" if current else "nothing"
    return DeployResult(
        info.model_id,
        info.name,
        alias,
        action,
        current,
        info.version,
        checks,
        True,
        False,
        f"{alias}: {frm} -> v{info.version}",
        event.id,
    )


def edge_check(info: VersionInfo, checks: list[CheckResult], require_edge: bool) -> tuple[list[str], CheckResult]:
    """The training verdict (``metrics.verdict``): a warning unless it says edge, and the ``edge`` check.

    The check fails only with ``require_edge`` (``deploy --require-edge``); the manifest is read
    only once the other checks passed (its hash among them)."""
    if not all(c.passed for c in checks):
        return [], CheckResult("edge", "skipped", "an earlier check failed")
    import json

    from aitrader.training.manifest import MANIFEST_NAME
    from aitrader.training.verdict import recorded_verdict

    edge, text = recorded_verdict(json.loads((info.path / MANIFEST_NAME).read_text(encoding="utf-8")))
    if edge:
        return [], CheckResult("edge", "passed", f"training verdict: {text}")
    if not require_edge:
        had = "" if edge is None else " has no edge by its training verdict"  # None: no verdict recorded
        warning = f"{info.model_id}{had}: {text}"
        return [f"{warning}; deploy --require-edge refuses such a model"], CheckResult("edge", "passed", warning)
    # Refused: the failed check's detail is the one error line, so no separate warning.
    return [], CheckResult("edge", "failed", f"training verdict: {text}; deploy a model whose verdict says edge, "
                           "or deploy without --require-edge")


def deploy(
    registry: Registry, model_id: str, alias: str = DEFAULT_ALIAS, *, dry_run: bool = False, reason: str | None = None,
    require_edge: bool = False,
) -> DeployResult:
    """Check ``model_id`` and point ``alias`` at it; DeployCheckError (logged) when a check fails.

    ``.warnings`` carries a warning when the model's training verdict is not "edge" (or it has
    none); ``require_edge`` turns that into a failed ``edge`` check."""
    validate_alias(alias)
    info = registry.resolve(model_id)
    current = registry.alias_target(info.name, alias)
    checks = run_checks(registry, info)
    warnings, edge = edge_check(info, checks, require_edge)
    if require_edge:
        checks.append(edge)
    result = _deploy_checked(registry, info, alias, current, checks, dry_run=dry_run, reason=reason)
    result.warnings = warnings
    return result


def _deploy_checked(
    registry: Registry, info: VersionInfo, alias: str, current: VersionInfo | None, checks: list[CheckResult], *,
    dry_run: bool, reason: str | None,
) -> DeployResult:
    cur_v = current.version if current else None
    if dry_run:
        failed = [c.name for c in checks if c.status == "failed"]
        note = f"dry run: check {failed[0]} failed" if failed else "dry run: all checks passed"
        return DeployResult(
            info.model_id,
            info.name,
            alias,
            "promote",
            cur_v,
            info.version,
            checks,
            False,
            True,
            note + "; nothing promoted or logged",
        )
    if cur_v == info.version and all(c.passed for c in checks):
        return DeployResult(
            info.model_id,
            info.name,
            alias,
            "promote",
            cur_v,
            info.version,
            checks,
            False,
            False,
            f"{info.model_id} already holds {alias}; checks passed, nothing changed",
        )
    return _promote(registry, info, alias, "promote", checks, reason)


def rollback(
    registry: Registry, name: str, alias: str = DEFAULT_ALIAS, *, reason: str | None = None, dry_run: bool = False
) -> DeployResult:
    """Point ``alias`` back at the version it held before its latest successful change."""
    ref = parse_model_id(name)
    if ref.version is not None or ref.alias is not None:
        raise RegistryError(f"--rollback takes a model name, got {name!r}; pass --model-id {ref.name}")
    validate_alias(alias)
    registry.list_versions(ref.name)  # ModelNotFoundError for an unknown name
    index = registry._reader()
    assert index is not None
    with index.read() as conn:
        row = log.last_alias_change(conn, ref.name, alias)
    if row is None or row[0] is None:
        raise RegistryError(
            f"no previous {alias} version of {ref.name} to roll back to (the deploy log has no earlier "
            f"promotion); deploy a version explicitly: aitrader deploy --model-id {ref.name}:vN"
        )
    info = registry.resolve(f"{ref.name}:v{row[0]}")
    checks = run_checks(registry, info)
    if dry_run:
        return DeployResult(
            info.model_id,
            info.name,
            alias,
            "rollback",
            row[1],
            info.version,
            checks,
            False,
            True,
            "dry run: rollback checks only; nothing promoted or logged",
        )
    return _promote(registry, info, alias, "rollback", checks, reason)


def deploy_from_file(
    registry: Registry,
    artifact_dir: str | Path,
    name: str,
    alias: str = DEFAULT_ALIAS,
    *,
    dry_run: bool = False,
    reason: str | None = None,
    trust_pickle: bool = False,
    tags: dict[str, str] | None = None,
    require_edge: bool = False,
) -> DeployResult:
    """Register an artifact folder (idempotent by digest) and deploy the version it became."""
    ref = parse_model_id(name)
    if ref.version is not None or ref.alias is not None:
        raise RegistryError(f"--from-file needs a model name for --model-id, got {name!r}; pass --model-id {ref.name}")
    info = registry.register(artifact_dir, ref.name, tags=tags, trust_pickle=trust_pickle)
    result = deploy(registry, info.model_id, alias, dry_run=dry_run, reason=reason, require_edge=require_edge)
    result.registered = info
    return result
