"""``run_monitor``: the one library call behind ``aitrader monitor``.

Resolves the run, reads its ledger, finds the traded model's manifest in the registry (files
verified against their SHA256 first, and the digest checked against the one the run recorded),
evaluates it, optionally writes the HTML report, and persists the outcome to the monitor state
file that ``aitrader retrain --if-alert`` reads: ``RUN_FOLDER/monitor_state.json``, beside the run's
ledger, so a command writes only under the folders it was given (``--runs-dir``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aitrader._json import to_json  # strict JSON (NaN -> null)
from aitrader.config import load_trading_config
from aitrader.errors import AitraderError, IntegrityError, ModelError, ModelNotFoundError
from aitrader.monitoring.files import write_text_atomic
from aitrader.monitoring.ledger import DEFAULT_RUNS_DIR, read_ledger, resolve_run
from aitrader.monitoring.monitor import MonitorResult, model_name, monitor_ledger, select_model

STATE_NAME = "monitor_state.json"  # beside the run's ledger: RUNS_DIR/RUN_ID/monitor_state.json
MANIFEST_NAME = "manifest.json"


def _version_id(entry: Mapping[str, Any]) -> str | None:
    name, version = model_name(entry), entry.get("version")
    if not name:
        return None
    if isinstance(version, int) or (isinstance(version, str) and version.isdigit()):
        return f"{name}:v{int(version)}"
    return str(entry.get("model_id") or name)


def manifest_from_registry(entry: Mapping[str, Any], registry_root: str | Path | None) -> dict[str, Any]:
    """The manifest of the exact version a run traded, after verifying its files' hashes."""
    from aitrader.registry import Registry

    registry = Registry(registry_root)
    digest = entry.get("digest")
    name = model_name(entry)
    info = None
    if digest and name:
        try:  # the digest identifies the version even if the run recorded no version number
            info = next((v for v in registry.list_versions(str(name)) if v.digest == digest), None)
        except ModelNotFoundError:
            info = None
    if info is None:
        model_id = _version_id(entry)
        if model_id is None:
            raise ModelError(f"the run's model entry {dict(entry)} names no model; pass --manifest")
        info = registry.resolve(model_id)
        if digest and info.digest != digest:
            raise IntegrityError(
                f"{info.model_id} in registry {registry.root} has digest {info.digest[:12]}..., but the run "
                f"traded digest {str(digest)[:12]}...; point --registry at the registry the run used or pass "
                "--manifest"
            )
    registry.verify_or_raise(info)
    return dict(json.loads((info.path / MANIFEST_NAME).read_text(encoding="utf-8")))


def manifest_from_path(path: str | Path) -> dict[str, Any]:
    """A manifest given directly: an artifact folder or its manifest.json."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"cannot read manifest {p}: {exc.strerror}; pass an artifact folder or its manifest.json") \
            from exc
    except (ValueError, RecursionError) as exc:
        raise ModelError(f"{p} is not valid JSON ({type(exc).__name__}); pass an artifact's manifest.json") from exc
    if not isinstance(doc, dict):
        raise ModelError(f"{p} is not a manifest (a JSON {type(doc).__name__}, not an object); pass an artifact's "
                         "manifest.json")
    return doc


def save_state(summary: Mapping[str, Any], path: str | Path) -> Path:
    """Persist the alert state atomically (``retrain --if-alert`` and cron scripts read it)."""
    target = Path(path)
    state = {
        "checked_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "run_id": summary.get("run_id"),
        "model": summary.get("model"),
        "health": summary.get("health"),
        "alerts": summary.get("alerts") or [],
    }
    try:
        write_text_atomic(target, to_json(state) + "\n")
    except OSError as exc:
        raise AitraderError(f"cannot write monitor state {target}: {exc.strerror}; check permissions of "
                            f"{target.parent}") from exc
    return target


def load_state(path: str | Path) -> dict[str, Any] | None:
    """The last persisted monitor state, or None when monitor never ran here."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        state = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise AitraderError(f"cannot read monitor state {p}: {type(exc).__name__}: {exc}; delete it and run "
                            "`aitrader monitor`") from exc
    if not isinstance(state, dict) or not isinstance(state.get("alerts") or [], list) \
            or not isinstance(state.get("model") or {}, dict):
        raise AitraderError(f"monitor state {p} is damaged (expected a JSON object with a model object and an "
                            "alerts list); delete it and run `aitrader monitor`")
    return state


def latest_state(runs_dir: str | Path, name: str) -> tuple[Path | None, dict[str, Any] | None]:
    """The newest monitor state of model ``name`` among the runs under ``runs_dir`` (by check time),
    as ``(path, state)``; ``(None, None)`` when no run there was monitored for it."""
    root = Path(runs_dir)
    best: tuple[str, Path, dict[str, Any]] | None = None
    for path in sorted(root.glob(f"*/{STATE_NAME}")) if root.is_dir() else []:
        state = load_state(path)
        if state is None:
            continue
        model = state.get("model") or {}
        if model and model_name(model) != name:
            continue
        key = str(state.get("checked_at") or "")
        if best is None or key >= best[0]:
            best = (key, path, state)
    return (best[1], best[2]) if best else (None, None)


def run_monitor(
    *,
    run_id: str | None = None,
    runs_dir: str | Path = DEFAULT_RUNS_DIR,
    model_id: str | None = None,
    window: int | None = None,
    config: str | Path | None = None,
    registry_root: str | Path | None = None,
    manifest: str | Path | None = None,
    report: str | Path | None = None,
    state_path: str | Path | None = "",
) -> MonitorResult:
    """Monitor one run (``run_id`` or the latest) and return the result; see the module docstring."""
    cfg = load_trading_config(config)
    if window is not None and window < 5:
        raise AitraderError(f"--window must be at least 5 predictions, got {window}")
    run_dir = resolve_run(runs_dir, run_id)
    limit = cfg.ml_trading.risk_limits.daily_ml_loss_limit
    if report is None:  # one streamed pass in bounded memory (aitrader.monitoring.stream)
        from aitrader.monitoring.stream import monitor_run, read_meta

        info = read_meta(run_dir)
        entry = select_model(info, model_id)
        man = manifest_from_path(manifest) if manifest is not None else manifest_from_registry(entry, registry_root)
        result = monitor_run(run_dir, man, cfg.monitoring, model_id=model_id, window=window,
                             daily_loss_limit=limit, info=info)
    else:  # the report draws every prediction: the in-memory reader
        ledger = read_ledger(run_dir, features=False)  # feature vectors streamed by monitor_ledger
        entry = select_model(ledger, model_id)
        man = manifest_from_path(manifest) if manifest is not None else manifest_from_registry(entry, registry_root)
        result = monitor_ledger(ledger, man, cfg.monitoring, model_id=model_id, window=window,
                                daily_loss_limit=limit, series=True)
    result.summary["report"] = None
    if report is not None:
        from aitrader.monitoring.report import write_report

        result.summary["report"] = str(write_report(result, report, manifest=man))
    if state_path is not None:  # "": beside the run; None: not saved
        target = Path(state_path) if state_path else run_dir / STATE_NAME
        result.summary["state"] = str(save_state(result.summary, target))
    return result
