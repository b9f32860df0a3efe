"""Train or retrain a whole universe: one model per symbol, in a process pool or on a Dask cluster.

A universe is a YAML or CSV file, or a folder with one bar file per symbol.

YAML::

    name: "{symbol}_lgbm"        # registry name template ({symbol}, {model}); default {symbol}_{model}
    config: train.yaml           # optional; default: --config, else config/train.yaml
    data: bars/                  # optional: every bar file of this folder is a symbol
    symbols:                     # optional when `data` is a folder
      - {symbol: AAPL, data: bars/AAPL.csv.gz}
      - {symbol: BTC, data: crypto/, name: btc_fast, overrides: {model.kind: xgboost, target.horizon: 3}}

CSV: columns ``symbol, data`` and optionally ``name``; any other column is an override
(``model.kind``, ``target.horizon``, ...; an empty cell overrides nothing; cells are read as YAML
scalars). Relative data paths are relative to the universe file. ``data`` may be a folder: the
symbol then picks its file, as ``load_bars(folder, symbol=...)`` does.

Each task is keyed by (model name, config hash, data fingerprint, aitrader version), the key
stored in the registered version's tag ``universe_key``: a key already registered under the
name is skipped in the worker before any fit, so a rerun after a kill continues where it
stopped and an unchanged universe trains nothing. Workers load the bars, train into a temporary
folder and return the artifact as tar bytes with the bars they used; only the parent registers,
one model at a time, through the single-model rule
(:func:`aitrader.monitoring.retrain.settle_challenger`: unchanged, or champion vs challenger on
the rows neither trained on, register, promote if better). A failed symbol is reported with its
error and the batch goes on. Exit codes: 0 all ok, 3 some rejected (lost to the champion, or too
few fair rows), 1 any task failed; 4 when another retrain holds the lock.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import resource
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aitrader.errors import AitraderError, ConfigError

KEY_TAG = "universe_key"
DEFAULT_TEMPLATE = "{symbol}_{model}"
MAX_UNIVERSE_BYTES = 10_000_000
EXIT_OK, EXIT_FAILED, EXIT_REJECTED = 0, 1, 3
FLAG_KEYS = {"model": "model.kind", "horizon": "target.horizon", "task": "target.task", "features": "features.names"}
REJECTED = ("rejected", "insufficient")

ProgressFn = Callable[[int, int, int], None]
"""``progress(done, total, failures)``: called once before the first result and after each one."""


@dataclass(frozen=True)
class Entry:
    """One symbol of a universe: its bars, registry name and config overrides (dotted keys)."""

    symbol: str
    data: str
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """What a worker needs: picklable, paths absolute (a Dask worker runs in another folder)."""

    symbol: str
    name: str
    config: dict[str, Any]
    trading: dict[str, Any]
    config_hash: str
    known_keys: frozenset[str]


# ----------------------------------------------------------------------------- the universe file


def _read_text(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_UNIVERSE_BYTES:
            raise ConfigError(f"{path}: a universe file is at most {MAX_UNIVERSE_BYTES} bytes")
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the universe file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason}); a universe is a YAML or CSV file") from exc


def _scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _resolve(base: Path, data: Any, where: str) -> str:
    if not isinstance(data, str) or not data.strip():
        raise ConfigError(f"{where}: `data` must be a bars file or folder path, got {data!r}")
    p = Path(data).expanduser()
    return str((p if p.is_absolute() else base / p).resolve())


def _symbols_of_folder(folder: str) -> list[tuple[str, str]]:
    from aitrader.data._read import file_symbol
    from aitrader.data.loader import bar_files

    return [(file_symbol(f), str(f.resolve())) for f in bar_files(Path(folder))]


def _entry(raw: Any, base: Path, template: str, where: str) -> Entry:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with `symbol` and `data`, got {raw!r}")
    unknown = set(raw) - {"symbol", "data", "name", "overrides"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; expected symbol, data, "
                          "name, overrides")
    symbol = raw.get("symbol")
    if not isinstance(symbol, str) or not symbol.strip():
        raise ConfigError(f"{where}: `symbol` must be a non-empty name, got {symbol!r}")
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: `overrides` must be a mapping like {{model.kind: xgboost}}, got {overrides!r}")
    return Entry(symbol.strip(), _resolve(base, raw.get("data"), where), str(raw.get("name") or template),
                 {str(k): v for k, v in overrides.items()})


def _from_yaml(text: str, path: Path, template: str | None) -> tuple[list[Entry], str | None]:
    import yaml

    from aitrader.config import _load_yaml, _Refused  # the config loader's safe YAML (no aliases, no duplicates)

    try:
        doc = _load_yaml(text)
    except (_Refused, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if isinstance(doc, list):
        doc = {"symbols": doc}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a universe is a mapping with `symbols` (or `data: FOLDER`), or a list of symbols")
    unknown = set(doc) - {"name", "config", "data", "symbols"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; expected name, config, "
                          "data, symbols")
    tmpl = str(doc.get("name") or template or DEFAULT_TEMPLATE)
    base = path.parent
    entries = []
    if doc.get("data") is not None:
        folder = _resolve(base, doc["data"], f"{path}: data")
        entries = [Entry(sym, file, tmpl) for sym, file in _symbols_of_folder(folder)]
    for k, raw in enumerate(doc.get("symbols") or []):
        entries.append(_entry(raw, base, tmpl, f"{path}: symbols[{k}]"))
    config = doc.get("config")
    return entries, None if config is None else _resolve(base, config, f"{path}: config")


def _from_csv(text: str, path: Path, template: str | None) -> list[Entry]:
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or not {"symbol", "data"} <= set(rows[0]):
        raise ConfigError(f"{path}: a CSV universe needs a header with the columns symbol and data (and at least "
                          "one row)")
    entries = []
    for k, row in enumerate(rows, start=2):
        overrides = {c: _scalar(v) for c, v in row.items() if c not in ("symbol", "data", "name") and c and v}
        raw = {"symbol": row["symbol"], "data": row["data"], "name": row.get("name") or None, "overrides": overrides}
        entries.append(_entry(raw, path.parent, template or DEFAULT_TEMPLATE, f"{path}: line {k}"))
    return entries


def read_universe(path: str | Path, *, template: str | None = None) -> tuple[list[Entry], str | None]:
    """The entries of a universe (file or folder) and the config file it names (or None)."""
    path = Path(path)
    if path.is_dir():
        return [Entry(sym, file, template or DEFAULT_TEMPLATE) for sym, file in _symbols_of_folder(str(path))], None
    if not path.exists():
        raise ConfigError(f"universe {path} does not exist; pass a YAML/CSV universe file or a folder of bar files")
    text = _read_text(path)
    if path.suffix.lower() == ".csv":
        entries, config = _from_csv(text, path, template), None
    else:
        entries, config = _from_yaml(text, path, template)
    if not entries:
        raise ConfigError(f"{path}: the universe lists no symbol")
    seen: dict[str, str] = {}
    for e in entries:
        if e.symbol in seen:
            raise ConfigError(f"{path}: symbol {e.symbol} is listed twice; keep one entry per symbol")
        seen[e.symbol] = e.data
    return entries, config


def is_universe_folder(path: str | Path | None) -> bool:
    """``--data DIR`` with several bar files is a universe (one bar file: the single-model path)."""
    if path is None or not Path(path).is_dir():
        return False
    from aitrader.data._read import is_bar_file

    return sum(1 for p in Path(path).iterdir() if is_bar_file(p)) > 1


# ----------------------------------------------------------------------------- keys and tasks


def _apply(raw: dict[str, Any], key: str, value: Any, symbol: str) -> None:
    dotted = FLAG_KEYS.get(key, key)
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"universe {symbol}: override {key!r} names no config section; use dotted keys such as "
                              "model.kind, model.params, target.horizon, split.window")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"universe {symbol}: override {key!r} is not a train.yaml setting")
    node[parts[-1]] = value


def entry_config(base_cfg: Any, entry: Entry) -> Any:
    """The TrainConfig of one symbol: the base config, its overrides, then its data and symbol."""
    from aitrader.config import TrainConfig, build_model

    raw = base_cfg.model_dump()
    for key, value in entry.overrides.items():
        _apply(raw, key, value, entry.symbol)
    raw["data"]["path"], raw["data"]["symbol"] = entry.data, entry.symbol
    if "model.kind" in {FLAG_KEYS.get(k, k) for k in entry.overrides} and "model.params" not in entry.overrides \
            and entry.overrides.get("model.kind", entry.overrides.get("model")) != base_cfg.model.kind:
        raw["model"]["params"] = {}  # params written for another library (as override_config does)
    return build_model(TrainConfig, raw, f"universe entry {entry.symbol}")


def model_name(template: str, symbol: str, kind: str) -> str:
    from aitrader.config import check_out_template
    from aitrader.registry import validate_name

    try:
        check_out_template(template)
    except ValueError as exc:
        raise ConfigError(f"model name template: {exc}") from None
    name = template.format(symbol=symbol.lower(), model=kind)
    validate_name(name)
    return name


def config_hash(cfg_dump: dict[str, Any], trading_dump: dict[str, Any]) -> str:
    """SHA256 of everything that shapes the artifact but the bars: train config and trading costs."""
    blob = json.dumps({"train": {k: v for k, v in cfg_dump.items() if k != "out"}, "trading": trading_dump},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def task_key(name: str, cfg_hash: str, data_fingerprint: str) -> str:
    """The task key (model name, config hash, data fingerprint, aitrader version), as one SHA256."""
    from aitrader import __version__

    return hashlib.sha256("\0".join((name, cfg_hash, data_fingerprint, __version__)).encode()).hexdigest()


def _tar(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name, recursive=True)
    return buf.getvalue()


def _untar(blob: bytes, target: Path) -> Path:
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        tar.extractall(target, filter="data")
    return target


#: A worker's training folder: ``aitrader-universe-<pid>-<random>`` in the temporary directory.
WORK_PREFIX = "aitrader-universe-"


def sweep_dead_workers_dirs(root: str | Path | None = None) -> list[Path]:
    """Remove the training folders of workers that no longer run (a worker killed mid-fit, e.g. when the
    parent stops the cluster, never reaches its ``TemporaryDirectory`` clean-up); returns them. Only
    folders named with a pid that no process has on this host are removed."""
    import shutil

    from aitrader._util import pid_alive

    removed: list[Path] = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{WORK_PREFIX}*-*"):
        pid = path.name[len(WORK_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and path.is_dir() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def fit_task(task: Task) -> dict[str, Any]:
    """Worker side: load the bars, skip a registered key, else train and return the artifact as tar bytes."""
    started, cpu0 = time.perf_counter(), time.process_time()
    from aitrader.config import TradingConfig, TrainConfig, build_model
    from aitrader.data import bars_fingerprint
    from aitrader.training.trainer import load_training_bars, train

    cfg = build_model(TrainConfig, task.config, f"universe entry {task.symbol}")
    bars = load_training_bars(cfg)
    key = task_key(task.name, task.config_hash, bars_fingerprint(bars))
    base = {"key": key, "pid": os.getpid()}
    if key in task.known_keys:
        return {**base, "status": "skipped", "wall_s": time.perf_counter() - started,
                "cpu_s": time.process_time() - cpu0}
    sweep_dead_workers_dirs()
    with tempfile.TemporaryDirectory(prefix=f"{WORK_PREFIX}{os.getpid()}-") as tmp:
        result = train(cfg, bars=bars, out_dir=Path(tmp) / "artifact",
                       trading=build_model(TradingConfig, task.trading, "trading config"))
        blob = _tar(result.out_dir)
    return {**base, "status": "trained", "artifact": blob, "bars": bars, "wall_s": time.perf_counter() - started,
            "cpu_s": time.process_time() - cpu0, "fit_s": result.timings.get("total_s"),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ----------------------------------------------------------------------------- the parent


@dataclass
class Options:
    """What the parent does with each trained artifact (``mode``: train = register; retrain = the rule)."""

    mode: str = "retrain"
    promote_if_better: bool = False
    metric: str = "ic"
    min_improvement: float = 0.0
    min_scoring_rows: int = 100
    runs_dir: Path = Path("runs")
    trust_pickle: bool = False


def _known_keys(registry: Any, name: str) -> frozenset[str]:
    from aitrader.errors import ModelNotFoundError

    try:
        return frozenset(v.tags[KEY_TAG] for v in registry.list_versions(name) if v.tags.get(KEY_TAG))
    except ModelNotFoundError:
        return frozenset()


def build_tasks(entries: list[Entry], base_cfg: Any, trading: Any, registry: Any) -> list[Task]:
    trading_dump = trading.model_dump(mode="json")
    tasks: list[Task] = []
    names: dict[str, str] = {}
    for e in entries:
        cfg = entry_config(base_cfg, e)
        name = model_name(e.name, e.symbol, cfg.model.kind)
        if name in names:
            raise ConfigError(f"symbols {names[name]} and {e.symbol} both map to model name {name}; put {{symbol}} "
                              "in the name template or give one of them its own `name`")
        names[name] = e.symbol
        dump = cfg.model_dump(mode="json")
        tasks.append(Task(e.symbol, name, dump, trading_dump, config_hash(dump, trading_dump),
                          _known_keys(registry, name)))
    return tasks


def _row(task: Task, outcome: str, **extra: Any) -> dict[str, Any]:
    return {"symbol": task.symbol, "name": task.name, "outcome": outcome, "model_id": None, "metric": None,
            "challenger_score": None, "champion_score": None, "message": "", "error": None, "duration_s": None,
            "cpu_s": None, "key": None, **extra}


def _outcome(res: dict[str, Any]) -> str:
    status = res["status"]
    if status in ("promoted", "unchanged", "insufficient"):
        return str(status)
    logged = (res.get("decision") or "")
    return "rejected" if logged.startswith(("keep champion", "not promoted")) else "registered"


def _settle(registry: Any, task: Task, result: dict[str, Any], opts: Options) -> dict[str, Any]:
    """Register one worker's artifact in the parent (the only registry writer)."""
    from aitrader.config import TrainConfig, build_model
    from aitrader.monitoring.retrain import TEMP_PREFIX, settle_challenger
    from aitrader.training.manifest import read_manifest
    from aitrader.training.trainer import TrainResult

    timing = {"duration_s": result.get("wall_s"), "cpu_s": result.get("cpu_s"), "key": result["key"]}
    if result["status"] == "skipped":
        return _row(task, "skipped", message="already registered (same name, config, data, aitrader version)",
                    **timing)
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}-") as tmp:
        out = _untar(result["artifact"], Path(tmp) / "challenger")
        trained = TrainResult(out_dir=out, manifest=read_manifest(out))
        tags = {KEY_TAG: result["key"]}
        if opts.mode == "train":
            own_pickle = opts.trust_pickle and bool(trained.manifest["model"].get("pickle_based"))
            info = registry.register(out, task.name, tags={"role": "initial", **tags}, trust_pickle=own_pickle)
            return _row(task, "registered", model_id=info.model_id, message=f"registered {info.model_id}", **timing)
        cfg = build_model(TrainConfig, task.config, f"universe entry {task.symbol}")
        base = {"name": task.name, "metric": opts.metric, "min_improvement": opts.min_improvement}
        res = settle_challenger(registry, task.name, cfg, result["bars"], trained, promote=opts.promote_if_better,
                                metric=opts.metric, min_improvement=opts.min_improvement,
                                min_scoring_rows=opts.min_scoring_rows, runs_dir=opts.runs_dir, base=base,
                                extra_tags=tags)
    ch, cp = res.get("challenger") or {}, res.get("champion") or {}
    return _row(task, _outcome(res), model_id=ch.get("model_id") or res.get("version"), metric=opts.metric,
                challenger_score=((ch.get("scores") or {}).get(opts.metric)),
                champion_score=((cp.get("scores") or {}).get(opts.metric)), message=res["message"], **timing)


def _error_text(exc: BaseException) -> str:
    """One line: an aitrader error's own message (its lines joined), else the exception type and first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if isinstance(exc, AitraderError):
        return "; ".join(lines) or type(exc).__name__
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def run_tasks(tasks: list[Task], executor: Any, registry: Any, opts: Options,
              progress: ProgressFn | None = None) -> list[dict[str, Any]]:
    """Run every task on ``executor`` and settle each result in this process, in completion order."""
    import logging

    log = logging.getLogger("aitrader.universe")
    report = progress or (lambda done, total, failures: None)
    rows: list[dict[str, Any] | None] = [None] * len(tasks)
    failures = 0
    report(0, len(tasks), 0)
    for done, (i, result, error) in enumerate(executor.run(fit_task, tasks), start=1):
        task = tasks[i]
        if error is None:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                rows[i] = _settle(registry, task, result, opts)
                # The parent's own cost per model (serial: it bounds the throughput of many workers).
                rows[i]["settle_s"] = time.perf_counter() - t0  # type: ignore[index]
                rows[i]["settle_cpu_s"] = time.thread_time() - c0  # type: ignore[index]
                rows[i]["peak_rss_mb"] = result.get("peak_rss_mb")  # type: ignore[index]
                rows[i]["pid"] = result.get("pid")  # type: ignore[index]
            except Exception as exc:  # one symbol's failure never stops the batch
                error = exc
        if error is not None:
            failures += 1
            rows[i] = _row(task, "failed", error=_error_text(error), message=_error_text(error))
            log.error("universe %s (%s) failed: %s", task.symbol, task.name, _error_text(error))
        else:
            log.info("universe %s (%s): %s", task.symbol, task.name, rows[i]["message"])  # type: ignore[index]
        report(done, len(tasks), failures)
    return [r for r in rows if r is not None]


def exit_code(rows: list[dict[str, Any]]) -> int:
    """0 all ok, 1 any task failed, 3 none failed but some challenger was rejected or not comparable."""
    if any(r["outcome"] == "failed" for r in rows):
        return EXIT_FAILED
    return EXIT_REJECTED if any(r["outcome"] in REJECTED for r in rows) else EXIT_OK


def run_universe(
    universe: str | Path,
    *,
    mode: str = "retrain",
    template: str | None = None,
    config: str | Path | None = None,
    flags: dict[str, Any] | None = None,
    trading_config: str | Path | None = None,
    executor: str = "process",
    jobs: int | None = None,
    scheduler: str | None = None,
    registry_root: str | Path | None = None,
    options: Options | None = None,
    lock_path: str | Path | None = None,
    log_path: str | Path | None = Path("logs") / "retrain.log",
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Train (``mode="train"``) or retrain every symbol of ``universe``; returns the JSON-ready summary
    (``results``: one row per symbol, ``counts``, ``exit_code``). Retrain holds the retrain lock.

    ``config``: the train config (default: the universe file's ``config``, else config/train.yaml);
    ``flags``: command-line overrides for every symbol (``trainer.override_config`` keys)."""
    from aitrader.config import load_trading_config, load_train_config
    from aitrader.monitoring.executors import make_executor
    from aitrader.monitoring.lock import DEFAULT_LOCK, FileLock
    from aitrader.monitoring.retrain import _check_args, _log_to, _remove_stale_temp
    from aitrader.registry import Registry

    if mode not in ("train", "retrain"):
        raise ConfigError(f"mode must be train or retrain, got {mode!r}")
    opts = options or Options(mode=mode)
    opts.mode = mode
    _check_args(opts.metric, opts.min_improvement, opts.min_scoring_rows)
    runner = make_executor(executor, jobs=jobs, scheduler=scheduler)
    entries, own_config = read_universe(universe, template=template)
    base_cfg = load_train_config(config if config is not None else own_config)
    if flags:
        from aitrader.training.trainer import override_config

        base_cfg = override_config(base_cfg, **flags)
    trading = load_trading_config(trading_config)
    lock = FileLock(lock_path or DEFAULT_LOCK).acquire() if mode == "retrain" else None
    try:
        # Retrain keeps its history in logs/retrain.log, as the single-model retrain does.
        with _log_to(Path(log_path) if mode == "retrain" and log_path else None):
            registry = Registry(registry_root)
            _remove_stale_temp()  # a killed run's aitrader-retrain-PID-* folders
            tasks = build_tasks(entries, base_cfg, trading, registry)
            started = time.perf_counter()
            rows = run_tasks(tasks, runner, registry, opts, progress)
            elapsed = time.perf_counter() - started
    finally:
        if lock is not None:
            lock.release()
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    code = exit_code(rows)
    return {"mode": mode, "universe": str(universe), **runner.describe(), "total": len(rows), "counts": counts,
            "exit_code": code, "elapsed_s": elapsed, "results": rows}
