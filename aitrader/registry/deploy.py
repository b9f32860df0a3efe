"""Deploy checks, promotion to an alias, rollback and the append-only deploy log.

Checks run in order and stop at the first failure (the rest are reported as skipped):

1. ``hashes``: every file's SHA256 matches the index (nothing is deserialised before this);
2. ``loads``: the runner builds (a pickle-based artifact needs the trust flag);
3. ``reproduces_sample``: the runner reproduces the manifest's sample predictions (native within
   1e-9 relative, ONNX within the manifest's ``onnx.tolerance_abs``, the trainer's parity bound;
   older manifests: ``onnx.tolerance_rel`` relative);
4. ``feature_contract``: the configured feature pipeline can produce the manifest's contract;
5. ``backend``: the runner backend paper-trade will use (``--backend``, ``aitrader.registry.backends``):
   with ``auto`` the trees are compiled (lleaves, else treelite) into the registry's ``.compiled/``
   cache and kept when they match the native model on the holdout sample (the ONNX tolerance); a
   backend that is missing or off falls back to ONNX, passed with a warning naming why. Fails only
   with ``--backend compiled``. Its detail (parity, library sha256) is in the deploy log.

A promotion or a rollback, successful or failed, is one INSERT in ``deploy_log``
(``aitrader.registry.log``); a dry run runs the checks and records nothing.

Races: the checks run outside the write lock (they hash and load the model); then, inside one
``BEGIN IMMEDIATE`` transaction, the target is resolved again (``NAME`` = latest, ``NAME@alias``,
or for a rollback the previous different holder from the log) and compared with what the alias
holds. If the target moved while the checks ran, nothing is written and the deploy starts over
with the new target; if the alias already holds it, nothing is written either. So concurrent
deploys never log a no-op row (``v2 -> v2``) and never move an alias backwards.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aitrader.errors import AitraderError, DeployCheckError, RegistryError
from aitrader.registry import log
from aitrader.registry.catalog import Catalog
from aitrader.registry.loading import load_verified
from aitrader.registry.log import now_iso
from aitrader.registry.names import DEFAULT_ALIAS, ModelRef, parse_model_id, validate_alias
from aitrader.registry.register import register
from aitrader.registry.types import CheckResult, DeployResult, LoadedModel, VersionInfo
from aitrader.registry.verify import check_version, integrity_message

CHECKS = ("hashes", "loads", "reproduces_sample", "feature_contract", "backend")
MAX_ATTEMPTS = 25  # a deploy whose target keeps moving under it (other deploys/registers) gives up after this
NATIVE_TOLERANCE = 1e-9
DEFAULT_BACKEND: str | None = None  # $AITRADER_BACKEND, else auto (aitrader.registry.backends.default_mode)
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
    return _worst(got, expected, lambda g, e: abs(g - e) / max(abs(e), scale))


def sample_max_abs_diff(got: list[float], expected: list[float]) -> float:
    """Largest |got - expected|; NaN must match NaN (else inf)."""
    return _worst(got, expected, lambda g, e: abs(g - e))


def _worst(got: list[float], expected: list[float], diff: Callable[[float, float], float]) -> float:
    """The largest ``diff`` over the pairs; a NaN on one side only is inf (NaN must match NaN)."""
    worst = 0.0
    for g, e in zip(got, expected, strict=True):
        if math.isnan(e) or math.isnan(g):
            if not (math.isnan(e) and math.isnan(g)):
                return math.inf
            continue
        worst = max(worst, diff(g, e))
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

    pipeline = FeaturePipeline.from_contract(contract, folder=loaded.path)
    return CheckResult(
        "feature_contract",
        "passed",
        f"{len(pipeline.names)} features (warm-up {pipeline.warmup} bars) available from the configured pipeline",
    )


def _check_backend(catalog: Catalog, loaded: LoadedModel, mode: str, commit: bool, notes: list[str]) -> CheckResult:
    from aitrader.registry import backends
    from aitrader.registry.loading import forget

    info = loaded.info
    choice = backends.for_deploy(catalog.root, info.path, info.digest, loaded.manifest, mode,
                                 trust_pickle=info.trusted, commit=commit)
    if commit:
        forget(info.digest)  # this process's runners of the version follow the new choice
    if choice.warning:
        notes.append(f"{info.model_id}: {choice.warning}")
    return CheckResult("backend", "failed" if choice.failed else "passed", choice.detail)


def run_checks(catalog: Catalog, info: VersionInfo, *, backend: str | None = None, commit: bool = True,
               notes: list[str] | None = None) -> list[CheckResult]:
    """Run the five deploy checks in order; after a failure the rest are skipped.

    ``backend``: the mode of the backend check (default ``$AITRADER_BACKEND``, else auto); ``commit``
    False (a dry run) leaves the compiled cache as it was; ``notes`` collects warnings."""
    from aitrader.registry.backends import default_mode, validate_mode

    mode = validate_mode(backend) if backend is not None else default_mode()
    notes = notes if notes is not None else []
    results: list[CheckResult] = []
    check = check_version(catalog, info)
    if check.problems:
        results.append(CheckResult("hashes", "failed", integrity_message(check.problems[0])))
    else:
        results.append(CheckResult("hashes", "passed", f"{check.files} files, {check.bytes} bytes match the index"))
    loaded: LoadedModel | None = None
    if results[-1].passed:
        try:
            loaded = load_verified(info)
            results.append(
                CheckResult("loads", "passed", f"runner built on the {getattr(loaded.runner, 'backend', '?')} backend")
            )
        except Exception as exc:  # any failure to load is a failed check, reported with its reason
            results.append(CheckResult("loads", "failed", _describe(exc)))
    steps: tuple[tuple[str, Callable[[LoadedModel], CheckResult]], ...] = (
        ("reproduces_sample", _check_sample), ("feature_contract", _check_features),
        ("backend", lambda m: _check_backend(catalog, m, mode, commit, notes)))
    for name, fn in steps:
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

_RETRY = object()  # the target moved while the checks ran: start over


def _commit_move(
    catalog: Catalog,
    info: VersionInfo,
    alias: str,
    action: str,
    checks: list[CheckResult],
    reason: str | None,
    target_now: Callable[[sqlite3.Connection], int | None],
) -> Any:
    """Inside the write transaction: re-resolve, skip a no-op, log the attempt and move the alias.

    Returns a DeployResult, or ``_RETRY`` (nothing written) when ``target_now`` no longer names
    the version that was checked. Raises DeployCheckError (after logging) when a check failed.
    """
    ok = all(c.passed for c in checks)
    with catalog.writer().write() as conn:
        if target_now(conn) != info.version:
            return _RETRY
        row = conn.execute("SELECT version FROM aliases WHERE name=? AND alias=?", (info.name, alias)).fetchone()
        current = int(row[0]) if row else None
        if ok and current == info.version:
            return DeployResult(
                info.model_id, info.name, alias, action, current, info.version, checks, False, False,
                f"{info.model_id} already holds {alias}; checks passed, nothing changed",
            )
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
    log.copy_to_journal(catalog, event)
    if not ok:
        failed = next(c for c in checks if c.status == "failed")
        raise DeployCheckError(
            f"deploy check {failed.name} failed for {info.model_id}: {failed.detail}; nothing was promoted "
            f"({alias} stays on {f'v{current}' if current else 'nothing'})"
        )
    frm = f"v{current}" if current else "nothing"
    return DeployResult(
        info.model_id, info.name, alias, action, current, info.version, checks, True, False,
        f"{alias}: {frm} -> v{info.version}", event.id,
    )


def _gave_up(what: str) -> RegistryError:
    return RegistryError(
        f"{what} changed {MAX_ATTEMPTS} times while its deploy checks ran (other deploys or registers are "
        "running); nothing was promoted: retry, or deploy an explicit version (--model-id NAME:vN)"
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
    catalog: Catalog, model_id: str, alias: str = DEFAULT_ALIAS, *, dry_run: bool = False, reason: str | None = None,
    require_edge: bool = False, backend: str | None = DEFAULT_BACKEND,
) -> DeployResult:
    """Check ``model_id`` and point ``alias`` at it; DeployCheckError (logged) when a check fails.

    ``.warnings`` carries a warning when the model's training verdict is not "edge" (or it has
    none), and when ``backend`` auto fell back to ONNX; ``require_edge`` turns the first into a
    failed ``edge`` check. ``backend`` None: ``$AITRADER_BACKEND``, else auto."""
    validate_alias(alias)
    ref = parse_model_id(model_id)
    for _ in range(MAX_ATTEMPTS):
        info = catalog.resolve(ref)
        notes: list[str] = []
        checks = run_checks(catalog, info, backend=backend, commit=not dry_run, notes=notes)
        warnings, edge = edge_check(info, checks, require_edge)
        warnings = notes + warnings
        if require_edge:
            checks.append(edge)
        if dry_run:
            current = catalog.alias_target(info.name, alias)
            failed = [c.name for c in checks if c.status == "failed"]
            note = f"dry run: check {failed[0]} failed" if failed else "dry run: all checks passed"
            dry = DeployResult(
                info.model_id, info.name, alias, "promote", current.version if current else None, info.version,
                checks, False, True, note + "; nothing promoted or logged",
            )
            dry.warnings = warnings
            return dry
        result = _commit_move(
            catalog, info, alias, "promote", checks, reason, lambda conn: catalog.version_of(conn, ref)
        )
        if result is not _RETRY:
            assert isinstance(result, DeployResult)
            result.warnings = warnings
            return result
    raise _gave_up(f"{model_id!r} (resolved to a different version each time)")


def rollback(
    catalog: Catalog, name: str, alias: str = DEFAULT_ALIAS, *, reason: str | None = None, dry_run: bool = False,
    backend: str | None = DEFAULT_BACKEND,
) -> DeployResult:
    """Point ``alias`` back at the previous different version it held (from the deploy log's history)."""
    ref = parse_model_id(name)
    if ref.version is not None or ref.alias is not None:
        raise RegistryError(f"--rollback takes a model name, got {name!r}; pass --model-id {ref.name}")
    validate_alias(alias)
    catalog.list_versions(ref.name)  # ModelNotFoundError for an unknown name
    for _ in range(MAX_ATTEMPTS):
        index = catalog.reader()
        assert index is not None
        with index.read() as conn:
            current, target = log.rollback_target(conn, ref.name, alias)
        if target is None:
            raise RegistryError(
                f"no previous {alias} version of {ref.name} to roll back to (the deploy log has no earlier "
                f"promotion to another version); deploy a version explicitly: aitrader deploy --model-id "
                f"{ref.name}:vN"
            )
        info = catalog.resolve(ModelRef(ref.name, version=target))
        checks = run_checks(catalog, info, backend=backend, commit=not dry_run)
        if dry_run:
            return DeployResult(
                info.model_id, info.name, alias, "rollback", current, info.version, checks, False, True,
                "dry run: rollback checks only; nothing promoted or logged",
            )

        def target_now(conn: sqlite3.Connection, seen: int | None = current, want: int = info.version) -> int | None:
            now, target = log.rollback_target(conn, ref.name, alias)
            if now == seen:  # nobody moved the alias meanwhile: the same rollback stands
                return target
            # another process moved it: already on our target (a concurrent rollback) -> a no-op;
            # anywhere else -> start over from the new holder (None never equals a version)
            return want if now == want else None

        result = _commit_move(catalog, info, alias, "rollback", checks, reason, target_now)
        if result is not _RETRY:
            assert isinstance(result, DeployResult)
            return result
    raise _gave_up(f"the rollback target of {ref.name}@{alias}")


def deploy_from_file(
    catalog: Catalog,
    artifact_dir: str | Path,
    name: str,
    alias: str = DEFAULT_ALIAS,
    *,
    dry_run: bool = False,
    reason: str | None = None,
    trust_pickle: bool = False,
    tags: dict[str, str] | None = None,
    require_edge: bool = False,
    backend: str | None = DEFAULT_BACKEND,
) -> DeployResult:
    """Register an artifact folder (idempotent by digest) and deploy the version it became."""
    ref = parse_model_id(name)
    if ref.version is not None or ref.alias is not None:
        raise RegistryError(f"--from-file needs a model name for --model-id, got {name!r}; pass --model-id {ref.name}")
    info = register(catalog, artifact_dir, ref.name, tags=tags, trust_pickle=trust_pickle)
    result = deploy(catalog, info.model_id, alias, dry_run=dry_run, reason=reason, require_edge=require_edge,
                    backend=backend)
    result.registered = info
    return result
