"""``aitrader retrain``: champion/challenger retraining that is safe to run from cron.

1. An exclusive OS lock (``logs/retrain.lock``): a second run fails at once with LockHeldError.
2. ``--if-alert``: run only when the last persisted monitor state of this model has alerts.
3. The challenger is trained on the config's data window (``split.window`` most recent bars).
4. Unchanged data: an artifact identical to a registered version (same files; the manifest equal
   but for ``created_at``) is not registered again, so a nightly rerun on the same data is a no-op.
5. Champion (``NAME@production``) and challenger predict the SAME rows, each through its own
   feature contract, and are scored with the training metrics (``ic``, ``sharpe`` higher is
   better; ``mae`` lower is better). The scoring window holds only rows NEITHER model was trained
   on: the challenger's holdout rows whose bar lies strictly after
   ``max(position(final_train_last) + target.horizon)`` over both manifests (bar positions in the
   retrain bars, not calendar time), so a champion whose training reached into the challenger's
   holdout is never scored in-sample. With fewer than ``min_scoring_rows`` such rows (default
   100) there is no fair comparison: status ``insufficient``, the challenger is registered but
   not promoted, and the deploy log records ``rejected`` with that reason. The deploy log's
   details record the window (``scoring_first``, ``scoring_last``, ``scoring_rows``).
6. The challenger is registered (tags: role=challenger, both scores, the decision); with
   ``--promote-if-better`` it is deployed when it beats the champion by at least
   ``min_improvement`` (absolute, in the metric's units). With no champion yet, the first model
   is promoted when its deploy checks pass. Every outcome is appended to the registry's deploy
   log as an ``evaluate`` entry (``Registry.record_decision``) with both scores in its details:
   ``promoted``, ``rejected`` (lost to the champion, or failed the deploy checks), ``registered``
   (better or first, but ``--promote-if-better`` not given) or ``unchanged`` (same artifact).
7. Feedback: outcomes recorded by paper-trade runs of this model are scored for the champion (its
   logged predictions) and the challenger (re-predicted from the logged feature vectors) and
   reported beside the holdout scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from aitrader.errors import AitraderError, ConfigError, DeployCheckError, LockHeldError, ModelNotFoundError
from aitrader.monitoring.check import latest_state, load_state
from aitrader.monitoring.lock import DEFAULT_LOCK, FileLock

log = logging.getLogger("aitrader.retrain")
# Records meant for logs/retrain.log only: the CLI already prints the failure as its one
# `error: ...` line on stderr, so the final failure/lock records must not reach stderr again.
file_log = logging.getLogger("aitrader.retrain.file")
file_log.propagate = False
file_log.addHandler(logging.NullHandler())  # no "last resort" stderr output when logging is off

METRICS = {"ic": True, "sharpe": True, "mae": False}  # metric -> higher is better
DEFAULT_LOG = Path("logs") / "retrain.log"
DEFAULT_MIN_SCORING_ROWS = 100
_IGNORED = {"manifest.json", "checksums.sha256"}


@contextmanager
def _log_to(path: Path | None) -> Iterator[None]:
    """Also log this retrain to ``path`` (cron keeps a history there)."""
    if path is None:
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise AitraderError(f"cannot open the retrain log {path}: {exc.strerror or exc}; it must be a writable file "
                            "(remove or rename what is there)") from exc
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("aitrader")
    old_level, old_file_level = root.level, file_log.level
    root.addHandler(handler)
    file_log.addHandler(handler)
    file_log.setLevel(logging.INFO)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        file_log.removeHandler(handler)
        root.setLevel(old_level)
        file_log.setLevel(old_file_level)
        handler.close()


def artifact_fingerprint(directory: Path) -> str:
    """SHA256 over every file but the manifest, plus the manifest without ``created_at``."""
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel in _IGNORED:
            continue
        # model.onnx is byte-deterministic at export (aitrader.models.onnx sorts the opset imports)
        h.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    manifest.pop("created_at", None)
    h.update(json.dumps(manifest, sort_keys=True).encode())
    return h.hexdigest()


def _improvement(metric: str, champion: float, challenger: float) -> float:
    return challenger - champion if METRICS[metric] else champion - challenger


def _score(task: str, fwd: np.ndarray, pred: np.ndarray, ret1: np.ndarray, bt: dict[str, Any]) -> dict[str, float]:
    from aitrader.training import metrics as M

    return M.evaluate(task, fwd, pred, ret1, backtest_kwargs=bt)


def _holdout(cfg: Any, bars: Any) -> dict[str, Any]:
    """The challenger's holdout rows, rebuilt exactly as the trainer splits them."""
    import pandas as pd

    from aitrader.training.splits import purged_walk_forward
    from aitrader.training.trainer import build_dataset

    data = build_dataset(cfg, bars)
    sp = cfg.split
    plan = purged_walk_forward(len(data.X), n_folds=sp.n_folds, horizon=cfg.target.horizon,
                               embargo=sp.embargo, holdout=sp.holdout, min_train=sp.min_train)
    hold = plan.holdout
    # The trading config's costs (train.yaml no longer has any), by the bars' asset class.
    from aitrader.config import load_trading_config
    from aitrader.training.backtest import resolve_costs, signal_backtest_kwargs

    index = pd.DatetimeIndex(bars.index)
    costs = resolve_costs(load_trading_config().ml_trading.execution, [index])
    bt = signal_backtest_kwargs(costs, index, short=cfg.backtest.short)
    return {"X": data.X.iloc[hold], "fwd": data.fwd[hold], "ret1": data.ret1[hold], "bt": bt}


def _as_index_time(ts: Any, index: Any) -> Any:
    """``ts`` (a manifest ISO string) as a Timestamp comparable with ``index`` (tz matched, UTC assumed)."""
    import pandas as pd

    t = pd.Timestamp(ts)
    tz = getattr(index, "tz", None)
    if tz is None and t.tzinfo is not None:
        return t.tz_convert("UTC").tz_localize(None)
    if tz is not None and t.tzinfo is None:
        return t.tz_localize("UTC").tz_convert(tz)
    return t


def last_seen_position(manifest: dict[str, Any], index: Any) -> tuple[int, str]:
    """Bar position (in ``index``) of the last bar whose information a model trained on: the bar of
    ``split.final_train_last`` plus ``target.horizon`` bars (its label reaches that far).

    ``final_train_last`` names the last training row; a stamp between bars counts from the last
    bar at or before it. An old manifest without it falls back to ``data.last`` (everything the
    artifact saw, the safe side). Returns the position and the stamp used.
    """
    split, data = manifest.get("split") or {}, manifest.get("data") or {}
    stamp = split.get("final_train_last") or data.get("last")
    if stamp is None:
        raise AitraderError(
            "the champion's manifest has neither split.final_train_last nor data.last, so the rows it was "
            "trained on are unknown; retrain it with the current `aitrader train`"
        )
    horizon = int((manifest.get("target") or {}).get("horizon") or 0)
    pos = int(index.searchsorted(_as_index_time(stamp, index), side="right")) - 1
    return pos + horizon, str(stamp)


def scoring_rows(bars_index: Any, hold_index: Any, manifests: list[dict[str, Any]]) -> tuple[np.ndarray, int]:
    """Mask over the challenger's holdout rows that no model in ``manifests`` was trained on.

    A row qualifies when its bar position is strictly after every model's
    ``position(final_train_last) + horizon``; returns the mask and the first allowed position.
    """
    first = max(last_seen_position(m, bars_index)[0] for m in manifests) + 1
    positions = bars_index.get_indexer(hold_index)
    return positions >= first, first


def _champion_predictions(loaded: Any, bars: Any, X_hold: Any, cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """The champion's predictions on the holdout timestamps, through its own feature contract. A
    champion with order-book features reads the snapshots the retrain config names (``data.book``),
    the same ones the challenger is trained with."""
    from aitrader.features import FeaturePipeline

    contract = loaded.manifest["features"]
    pipeline = FeaturePipeline.from_contract(contract, folder=loaded.path)
    if pipeline.needs_book:
        from aitrader.features.book import training_book
        from aitrader.training.trainer import training_symbol

        pipeline.with_book(training_book(cfg.data.book, training_symbol(cfg, bars), pipeline.book_features))
    feats = pipeline.transform(bars).reindex(X_hold.index)[list(contract["names"])]
    matrix = feats.to_numpy(dtype=np.float64)
    ok = np.isfinite(matrix).all(axis=1)
    pred = np.full(len(matrix), np.nan)
    if ok.any():
        pred[ok] = loaded.runner.predict_batch(matrix[ok])
    return pred, ok


def _insufficient_text(n_rows: int, n_fair: int, needed: int, holdout_rows: int, first_pos: int, index: Any,
                       champion: Any) -> str:
    """Why there is no fair comparison, naming the counts and the fix."""
    after = f"after {index[first_pos - 1].isoformat()}" if 0 < first_pos <= len(index) else "in the window"
    champ = champion.info.model_id if champion is not None else "the champion"
    lost = (f" ({n_fair - n_rows} of them without {champ}'s features)" if n_fair > n_rows else "")
    return (f"only {n_rows} of the challenger's {holdout_rows} holdout rows lie {after}, past the rows either "
            f"model was trained on{lost}, need at least {needed} (--min-scoring-rows); retrain on data that "
            f"extends further past {champ}'s training period, or lower --min-scoring-rows")


def _finite_scores(scores: dict[str, Any] | None) -> dict[str, float] | None:
    """The numeric scores only (the deploy log stores a summary; NaN becomes null there)."""
    if scores is None:
        return None
    return {k: float(v) for k, v in scores.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _record(registry: Any, model_id: str, decision: str, reason: str, details: dict[str, Any]) -> dict[str, Any] | None:
    """Append the decision to the deploy log; the registration already happened, so a failure to
    log is reported (retrain.log and the result's ``logged: null``) rather than undoing it."""
    from aitrader.errors import RegistryError

    try:
        event = registry.record_decision(model_id, decision=decision, reason=reason[:1000], details=details)
    except RegistryError as exc:
        log.error("could not record the %s decision for %s in the deploy log: %s", decision, model_id, exc)
        return None
    return {"id": event.id, "action": event.action, "status": event.status, "ts": event.ts}


TEMP_PREFIX = "aitrader-retrain-"


def _remove_stale_temp() -> None:
    """Delete ``aitrader-retrain-PID-*`` temp folders whose process is gone (a killed retrain's)."""
    import shutil

    from aitrader._util import pid_alive

    for folder in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        pid = folder.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if folder.is_dir() and not folder.is_symlink() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alert_gate(name: str, state_path: Path | None, runs_dir: Path = Path("runs")) -> str | None:
    """None when a retrain should run, else why it is skipped. The state read is ``state_path`` when
    given, else the newest monitor check of ``name`` among the runs under ``runs_dir``."""
    if state_path is not None:
        state = load_state(state_path)
        if state is None:
            return f"no monitor state at {state_path}: run `aitrader monitor` first"
    else:
        _, state = latest_state(runs_dir, name)
        if state is None:
            return f"no monitor check of {name} under {runs_dir}/: run `aitrader monitor` first (same --runs-dir)"
    model = (state.get("model") or {}).get("model_id")
    if model not in (None, name):
        return f"the last monitor check ({state.get('checked_at')}) was of model {model}, not {name}"
    if not state.get("alerts"):
        return f"the last monitor check ({state.get('checked_at')}) found no alert"
    return None


def decide(metric: str, challenger: float, champion: float | None, min_improvement: float,
           promote: bool) -> tuple[float | None, bool, str]:
    """(improvement, better, decision text): better means beats the champion by the margin."""
    if champion is None:
        text = "promote: no champion yet" if promote else "keep: no champion, --promote-if-better not given"
        return None, True, text
    gain = _improvement(metric, champion, challenger)
    scores = f"{metric} {challenger:.4f} vs champion {champion:.4f} ({gain:+.4f}"
    if gain > 0 and gain >= min_improvement:
        text = f"promote: {scores} >= {min_improvement:g})" if promote else \
            f"keep: better ({scores}) but --promote-if-better not given"
        return gain, True, text
    return gain, False, f"keep champion: {scores} < margin {min_improvement:g} or not better)"


def _check_args(metric: str, min_improvement: float, min_scoring_rows: int = DEFAULT_MIN_SCORING_ROWS) -> None:
    if metric not in METRICS:
        import difflib

        close = difflib.get_close_matches(metric.lower(), list(METRICS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"--metric {metric!r} is not supported; {hint}expected one of {', '.join(METRICS)}")
    if min_improvement < 0:
        raise ConfigError(f"--min-improvement must be >= 0, got {min_improvement}")
    if isinstance(min_scoring_rows, bool) or not isinstance(min_scoring_rows, int) or min_scoring_rows < 1:
        raise ConfigError(
            f"--min-scoring-rows must be a whole number >= 1, got {min_scoring_rows!r}; the default is "
            f"{DEFAULT_MIN_SCORING_ROWS}"
        )


def retrain(
    name: str,
    *,
    config: str | Path | None = None,
    data: str | Path | None = None,
    promote_if_better: bool = False,
    metric: str = "ic",
    min_improvement: float = 0.0,
    min_scoring_rows: int = DEFAULT_MIN_SCORING_ROWS,
    if_alert: bool = False,
    registry_root: str | Path | None = None,
    runs_dir: str | Path = "runs",
    state_path: str | Path | None = None,
    lock_path: str | Path = DEFAULT_LOCK,
    log_path: str | Path | None = DEFAULT_LOG,
) -> dict[str, Any]:
    """Train, compare, register and maybe promote; returns the JSON-ready result."""
    _check_args(metric, min_improvement, min_scoring_rows)
    from aitrader.registry import validate_name

    validate_name(name)
    with _log_to(Path(log_path) if log_path else None):
        try:
            lock = FileLock(lock_path).acquire()
        except LockHeldError as exc:
            file_log.info("retrain %s not started: %s", name, exc)  # stderr gets the error line once
            raise
        try:
            return _retrain_logged(name, config, data, promote_if_better, metric, min_improvement, if_alert,
                                   registry_root, Path(runs_dir), Path(state_path) if state_path else None,
                                   min_scoring_rows)
        finally:
            lock.release()


def _retrain_logged(name: str, config: str | Path | None, data: str | Path | None, promote_if_better: bool,
                    metric: str, min_improvement: float, if_alert: bool, registry_root: str | Path | None,
                    runs_dir: Path, state_path: Path | None, min_scoring_rows: int) -> dict[str, Any]:
    log.info("retrain %s started (metric %s, min improvement %g, promote %s)", name, metric,
             min_improvement, promote_if_better)
    try:
        result = _retrain_locked(name, config, data, promote_if_better, metric, min_improvement, if_alert,
                                 registry_root, runs_dir, state_path, min_scoring_rows)
    except AitraderError as exc:
        file_log.error("retrain %s failed: %s", name, exc)  # stderr gets the error line once
        raise
    log.info("retrain %s: %s", name, result["message"])
    return result


def _retrain_locked(name: str, config: str | Path | None, data: str | Path | None, promote: bool, metric: str,
                    min_improvement: float, if_alert: bool, registry_root: str | Path | None, runs_dir: Path,
                    state_path: Path | None, min_scoring_rows: int) -> dict[str, Any]:
    from aitrader.config import load_train_config
    from aitrader.registry import Registry
    from aitrader.training.trainer import load_training_bars, override_config, train

    base = {"name": name, "metric": metric, "min_improvement": min_improvement}
    if if_alert:
        why = _alert_gate(name, state_path, runs_dir)
        if why is not None:
            return {**base, "status": "skipped", "message": f"skipped: {why}"}
    cfg = load_train_config(config)
    if data is not None:
        cfg = override_config(cfg, data=str(data))
    bars = load_training_bars(cfg)
    registry = Registry(registry_root)
    _remove_stale_temp()
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}-") as tmp:
        trained = train(cfg, bars=bars, out_dir=Path(tmp) / "challenger")
        return settle_challenger(registry, name, cfg, bars, trained, promote=promote, metric=metric,
                                 min_improvement=min_improvement, min_scoring_rows=min_scoring_rows,
                                 runs_dir=runs_dir, base=base)


def settle_challenger(registry: Any, name: str, cfg: Any, bars: Any, trained: Any, *, promote: bool, metric: str,
                      min_improvement: float, min_scoring_rows: int, runs_dir: Path, base: dict[str, Any],
                      extra_tags: dict[str, str] | None = None) -> dict[str, Any]:
    """The single-model rule for a trained challenger (``trained.out_dir``, ``trained.manifest``):
    unchanged, or compared with the champion, registered and maybe promoted. The universe retrain
    (:mod:`aitrader.monitoring.universe`) calls it once per symbol in its parent process;
    ``extra_tags`` are added to the registered version's tags."""
    out = trained.out_dir
    fingerprint = artifact_fingerprint(out)
    try:
        known = registry.list_versions(name)
    except ModelNotFoundError:
        known = []
    same = next((v for v in known if artifact_fingerprint(v.path) == fingerprint), None)
    window = {"bars": len(bars), "first": bars.index[0], "last": bars.index[-1],
              "data_sha256": trained.manifest["data"]["sha256"]}
    if same is not None:
        message = f"unchanged: the same data and config give {same.model_id}; nothing registered"
        logged = _record(registry, same.model_id, "unchanged", f"retrain: {message}",
                         {"metric": metric, "data_sha256": window["data_sha256"], "bars": window["bars"]})
        return {**base, "status": "unchanged", "window": window, "version": same.model_id,
                "logged": logged, "message": message}
    return _compare_and_register(registry, name, cfg, bars, trained, promote, metric, min_improvement,
                                 min_scoring_rows, runs_dir, base | {"window": window}, extra_tags)


def _compare_and_register(registry: Any, name: str, cfg: Any, bars: Any, trained: Any, promote: bool, metric: str,
                          min_improvement: float, min_scoring_rows: int, runs_dir: Path,
                          base: dict[str, Any], extra_tags: dict[str, str] | None = None) -> dict[str, Any]:
    from aitrader.models.runner import ModelRunner

    manifest, task = trained.manifest, cfg.target.task
    hold = _holdout(cfg, bars)
    # We trained this artifact ourselves in this process, so a pickle-based one is trusted.
    own_pickle = bool(manifest["model"].get("pickle_based"))
    challenger = ModelRunner.from_artifact(trained.out_dir, manifest, trust_pickle=own_pickle)
    champion_info = registry.alias_target(name, "production")
    loaded = registry.load(champion_info.model_id) if champion_info is not None else None
    # Only rows neither model was trained on (nor saw through a training label).
    seen = [manifest] + ([loaded.manifest] if loaded is not None else [])
    fair, first_pos = scoring_rows(bars.index, hold["X"].index, seen)
    ok = fair.copy()
    champ_pred, champ_task = None, task
    if loaded is not None:
        champ_task = str(loaded.manifest["target"]["task"])
        champ_pred, computable = _champion_predictions(loaded, bars, hold["X"], cfg)
        ok &= computable
    n_rows = int(ok.sum())
    window_rows = hold["X"].index[ok]
    scoring: dict[str, Any] = {"first": window_rows[0] if n_rows else None, "last": window_rows[-1] if n_rows else None,
               "rows": n_rows, "min_rows": min_scoring_rows,
               "after": bars.index[first_pos - 1] if 0 < first_pos <= len(bars) else None}
    insufficient = champion_info is not None and n_rows < min_scoring_rows
    if n_rows == 0 and not insufficient:
        raise AitraderError(
            f"the challenger has no holdout row to be scored on for {name}; use a longer data window (split.window)"
        )
    ch_scores: dict[str, Any] | None = None
    cp_scores = None
    if n_rows:
        X = hold["X"].to_numpy(dtype=np.float64)[ok]
        fwd, ret1 = hold["fwd"][ok], hold["ret1"][ok]
        ch_scores = _score(task, fwd, challenger.predict_batch(X), ret1, hold["bt"])
        if champ_pred is not None:
            cp_scores = _score(champ_task, fwd, champ_pred[ok], ret1, hold["bt"])
    ch = ch_scores[metric] if ch_scores else None
    cp = cp_scores[metric] if cp_scores else None
    if insufficient:
        why = _insufficient_text(n_rows, int(fair.sum()), min_scoring_rows, int(fair.size), first_pos, bars.index,
                                 loaded)
        improvement, better, decision = None, False, f"not compared: {why}"
    else:
        assert ch is not None
        improvement, better, decision = decide(metric, ch, cp, min_improvement, promote)
    tags = {"role": "challenger", "metric": metric, "challenger_score": "none" if ch is None else f"{ch:.6g}",
            "champion_score": "none" if cp is None else f"{cp:.6g}",
            "champion": champion_info.model_id if champion_info else "none", "decision": decision[:200],
            "scoring_rows": str(n_rows)} | dict(extra_tags or {})
    info = registry.register(trained.out_dir, name, tags=tags, trust_pickle=own_pickle)
    from aitrader.monitoring.feedback import live_feedback  # streamed: one ledger block at a time

    feedback = live_feedback(name, runs_dir, champion_info.digest if champion_info else None, challenger,
                             list(manifest["features"]["names"]), task)
    promoted, status, deploy = False, "insufficient" if insufficient else "registered", None
    champ_text = "none" if cp is None else f"{champion_info.model_id if champion_info else ''} {metric}={cp:.6g}"
    ch_text = "n/a" if ch is None else f"{ch:.6g}"
    span = f" ({scoring['first']} .. {scoring['last']})" if n_rows else ""
    scores_text = (f"challenger {info.model_id} {metric}={ch_text} vs champion {champ_text} on the same "
                   f"{n_rows} rows neither was trained on{span}")
    # The deploy log's verdict: rejected = lost to the champion, too few fair rows to compare, or
    # failed the deploy checks; registered = better (or first) but promotion was not asked for.
    verdict = "registered" if better else "rejected"
    if promote and better:
        try:
            deploy = registry.deploy(info.model_id, reason=f"retrain: {scores_text}; {decision}").to_dict()
            promoted, status, verdict = True, "promoted", "promoted"
        except DeployCheckError as exc:
            status, decision, verdict = "registered", f"not promoted: {exc}", "rejected"
    details = {
        "metric": metric, "challenger_score": ch, "champion_score": cp,
        "champion": champion_info.model_id if champion_info else None, "improvement": improvement,
        "min_improvement": min_improvement, "holdout_rows": n_rows,
        "holdout_first": str(hold["X"].index[0]), "holdout_last": str(hold["X"].index[-1]),
        "scoring_first": None if scoring["first"] is None else scoring["first"].isoformat(),
        "scoring_last": None if scoring["last"] is None else scoring["last"].isoformat(),
        "scoring_rows": n_rows, "min_scoring_rows": min_scoring_rows,
        "challenger_scores": _finite_scores(ch_scores), "champion_scores": _finite_scores(cp_scores),
        "feedback_outcomes": feedback["outcomes"],
    }
    logged = _record(registry, info.model_id, verdict, f"retrain: {scores_text}; {decision}", details)
    return {
        **base, "status": status, "promoted": promoted, "decision": decision, "logged": logged,
        "challenger": {"model_id": info.model_id, "digest": info.digest, "reused": info.reused, "scores": ch_scores},
        "champion": None if champion_info is None else {"model_id": champion_info.model_id, "scores": cp_scores},
        "improvement": improvement, "holdout_rows": n_rows, "scoring": scoring,
        "holdout": {"first": hold["X"].index[0], "last": hold["X"].index[-1]},
        "feedback": feedback, "deploy": deploy,
        "message": f"{status} {info.model_id}: {decision}" + (
            f" [scored on {n_rows} rows neither model was trained on{span}]" if n_rows and not insufficient else ""),
    }
