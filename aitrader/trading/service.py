"""What the commands call: ``paper_trade``, ``run_status``, ``export_table``.

Each loads what it needs (config, registry models, bars), delegates to :mod:`session` and
returns plain data for rendering. A resumed run uses the configuration, model versions and data
recorded in its ledger, not the current files, so that it continues exactly the same run.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aitrader.config import TradingConfig, load_trading_config
from aitrader.errors import DataError, TradingError
from aitrader.trading.ledger import LEDGER_NAME, Ledger, read_table
from aitrader.trading.session import REPLAY_COMMIT_EVERY, ModelSpec, RunOptions, new_run_id, run_session
from aitrader.trading.sources import BarSeries, FollowSource, describe, replay_steps

DEFAULT_RUNS_DIR = "runs"


# ---------------------------------------------------------------------------- models
def _version_for(reg: Any, name: str, saved: dict[str, Any] | None) -> str:
    if saved is not None:
        return str(saved["model_id"])
    if ":" in name or "@" in name:
        return name
    info = reg.alias_target(name, "production")
    if info is None:
        raise TradingError(
            f"model {name} has no production version; register and deploy one first: "
            f"aitrader register ARTIFACT_DIR --name {name} && aitrader deploy --model-id {name}"
        )
    return str(info.model_id)


def load_models(
    cfg: TradingConfig, registry_root: str | None, saved: list[dict[str, Any]] | None = None
) -> list[ModelSpec]:
    """Verified models of the config's enabled entries (the production version, or the run's own on resume)."""
    from aitrader.features import FeaturePipeline
    from aitrader.registry import Registry

    ml = cfg.ml_trading
    if not ml.enabled:
        raise TradingError("ml_trading.enabled is false in the config; set it to true to paper-trade")
    entries = [m for m in ml.models if m.enabled]
    if not entries:
        raise TradingError("no enabled model in ml_trading.models; add one (model_id, symbol) to the config")
    reg = Registry(registry_root)
    by_key = {(m["name"], m["symbol"]): m for m in saved or []}
    specs = []
    for entry in entries:
        prior = by_key.get((entry.model_id, entry.symbol)) if saved is not None else None
        if saved is not None and prior is None:
            raise TradingError(f"the run's ledger has no model {entry.model_id} for {entry.symbol}")
        loaded = reg.load(_version_for(reg, entry.model_id, prior))
        if prior is not None and loaded.info.digest != prior["digest"]:
            raise TradingError(
                f"{loaded.info.model_id} has digest {loaded.info.digest[:12]} but the run started with "
                f"{str(prior['digest'])[:12]}; resume needs the same model files"
            )
        pipeline = FeaturePipeline.from_contract(loaded.manifest["features"])
        runner = loaded.runner
        try:  # first calls are slow (allocation, lazy init): keep them out of the timed loop
            runner.predict_one(np.zeros(len(pipeline.names)))
        except Exception:  # noqa: BLE001, S110 - a model that fails here fails in the loop, as an ML_ERROR
            pass
        specs.append(ModelSpec(
            model_id=loaded.info.model_id, name=entry.model_id, symbol=entry.symbol, digest=loaded.info.digest,
            predictor=runner,
            stream=pipeline.stream(ml.feature_pipeline.buffer_size), manifest=loaded.manifest,
            min_confidence=entry.min_confidence, position_size=entry.position_size, weight=entry.weight,
        ))
    return specs


# ---------------------------------------------------------------------------- data
def _unseen_start(manifest: dict[str, Any]) -> tuple[Any, int]:
    """Where a model's unseen bars begin, and how many earlier bars its features need to warm up.

    The final model is fit on the rows before the holdout (and the purge gap), so the holdout's first
    bar is the first one it never saw; older manifests without it fall back to the end of the data.
    """
    split = manifest.get("split") or {}
    start = split.get("holdout_first") or (manifest.get("data") or {}).get("last")
    return start, int((manifest.get("features") or {}).get("warmup") or 0)


def _after_training(df: pd.DataFrame, manifest: dict[str, Any], symbol: str) -> pd.DataFrame:
    """The sample's bars from the model's first unseen bar on, led by its feature warm-up bars."""
    start, warmup = _unseen_start(manifest)
    if not start:
        return df
    cut = pd.Timestamp(str(start))
    tz = getattr(df.index, "tz", None)
    if tz is not None and cut.tz is None:
        cut = cut.tz_localize(tz)
    elif tz is None and cut.tz is not None:
        cut = cut.tz_convert(None)
    unseen_from_cut = "holdout_first" in (manifest.get("split") or {})  # else cut is the last seen bar
    first = int(df.index.searchsorted(cut, side="left" if unseen_from_cut else "right"))
    if first >= len(df):
        raise DataError(
            f"the built-in sample for {symbol} has no bars after the model's training period (from {start}); "
            "pass bars to trade with --data PATH"
        )
    return df.iloc[max(0, first - warmup):]


def load_frames(data: list[str] | None, specs: list[ModelSpec]) -> dict[str, pd.DataFrame]:
    """Bars of every traded symbol: ``--data`` items (file, directory, SYMBOL=PATH) or the sample."""
    from aitrader.data import load_bars, load_sample, load_universe

    symbols = sorted({s.symbol for s in specs})
    if not data:
        manifests = {s.symbol: s.manifest for s in specs}
        return {sym: _after_training(load_sample(sym), manifests[sym], sym) for sym in symbols}
    frames: dict[str, pd.DataFrame] = {}
    explicit = False
    for item in data:
        sym, sep, path = item.partition("=")
        if sep and not Path(item).exists():
            frames[sym] = load_bars(path, symbol=sym)
            explicit = True
        else:
            frames.update(load_universe(item))
    if not explicit and len(frames) == 1 and len(symbols) == 1 and symbols[0] not in frames:
        frames = {symbols[0]: next(iter(frames.values()))}  # one file for the one traded symbol
    missing = [s for s in symbols if s not in frames]
    if missing:
        raise DataError(
            f"no bars for {', '.join(missing)} in --data (found: {', '.join(sorted(frames)) or 'none'}); "
            "pass SYMBOL=PATH for each traded symbol"
        )
    return {s: frames[s] for s in symbols}


def _follow_target(data: list[str] | None, specs: list[ModelSpec]) -> tuple[str, Path]:
    symbols = sorted({s.symbol for s in specs})
    if not data or len(data) != 1:
        raise TradingError("--follow tails exactly one file: pass --data PATH (or SYMBOL=PATH)")
    sym, sep, path = data[0].partition("=")
    if sep and not Path(data[0]).exists():
        return sym, Path(path)
    if len(symbols) != 1:
        raise TradingError(f"--follow with several traded symbols ({', '.join(symbols)}): pass --data SYMBOL=PATH")
    return symbols[0], Path(data[0])


# ---------------------------------------------------------------------------- runs
def resolve_run(runs_dir: str | Path, run_id: str | None, state_dir: str | Path | None = None) -> Path:
    """A run's folder: ``--state`` as given, ``runs_dir/RUN_ID``, or the most recently updated run."""
    if state_dir is not None:
        return Path(state_dir)
    root = Path(runs_dir)
    if run_id is not None:
        return root / run_id
    runs = [p.parent for p in root.glob(f"*/{LEDGER_NAME}")] if root.is_dir() else []
    if not runs:
        raise TradingError(f"no runs under {root}/; start one with aitrader paper-trade or pass --runs-dir")
    return max(runs, key=lambda p: ((p / LEDGER_NAME).stat().st_mtime, p.name))


def _saved_run(run_dir: Path) -> dict[str, Any]:
    if not (run_dir / LEDGER_NAME).is_file():
        raise TradingError(f"cannot resume: no ledger at {run_dir / LEDGER_NAME}; pass the RUN_ID of an existing run")
    ledger = Ledger(run_dir / LEDGER_NAME)
    try:
        return ledger.read_meta()
    finally:
        ledger.close()


def paper_trade(
    *,
    config_path: str | None = None,
    data: list[str] | None = None,
    state_dir: str | None = None,
    run_id: str | None = None,
    resume: str | None = None,
    speed: float = 0.0,
    follow: bool = False,
    registry_root: str | None = None,
    max_bars: int | None = None,
    runs_dir: str = DEFAULT_RUNS_DIR,
    view: str = "none",
) -> dict[str, Any]:
    """Start (or ``resume``) a paper-trading run; returns the final summary."""
    if speed < 0:
        raise TradingError(f"--speed must be >= 0 (0: as fast as possible), got {speed}")
    saved: dict[str, Any] = {}
    if resume is not None:
        run_dir = resolve_run(runs_dir, resume, state_dir)
        saved = _saved_run(run_dir)
        cfg = TradingConfig.model_validate(saved["config"])
        request = saved.get("request") or {}
        data, follow = request.get("data"), bool(request.get("follow"))
        specs = load_models(cfg, registry_root, list(saved.get("models") or []))
        rid = str(saved.get("run_id") or run_dir.name)
    else:
        cfg = load_trading_config(config_path)
        rid = run_id or new_run_id()
        run_dir = Path(state_dir) if state_dir else Path(runs_dir) / rid
        specs = load_models(cfg, registry_root)
    data = [str(Path(d).resolve()) if Path(d).exists() else d for d in data or []] or None
    opts = RunOptions(speed=speed, max_bars=max_bars, commit_every=1 if follow else REPLAY_COMMIT_EVERY)
    from aitrader.trading.view import attach_view

    attach_view(opts, view)
    meta: dict[str, Any] = {"request": {"data": data, "follow": follow}}
    if follow:
        symbol, path = _follow_target(data, specs)
        source = FollowSource(path, symbol)
        steps = source.steps()
        stop_event = source.stop_event
        indexes = _follow_index(path, symbol)
    else:
        frames = load_frames(data, specs)
        meta["data"] = describe(frames)
        # metrics helper (issue 9): the traded bars' calendar, so the summary annualises with it
        from aitrader.trading.summary import calendar_of

        meta["calendar"] = calendar_of([df.index for df in frames.values()])
        steps = replay_steps([BarSeries.from_frame(s, df) for s, df in frames.items()])
        stop_event = None
        indexes = [pd.DatetimeIndex(df.index) for df in frames.values()]
    # Costs by asset class, resolved from the traded bars and recorded in the ledger's meta (a resumed
    # run keeps its recorded costs).
    from aitrader.training.backtest import resolve_costs

    costs = saved.get("costs") or resolve_costs(cfg.ml_trading.execution, indexes).to_dict()
    meta["costs"] = costs
    summary = run_session(cfg, specs, steps, run_dir, run_id=rid, resume=resume is not None, meta=meta, opts=opts,
                          stop_event=stop_event)
    return {**summary, "costs": costs}


def _follow_index(path: Path, symbol: str) -> list[pd.DatetimeIndex]:
    """The bars already in a followed file (for the asset class); none when it cannot be read yet."""
    from aitrader.data import load_bars
    from aitrader.errors import AitraderError

    try:
        return [pd.DatetimeIndex(load_bars(path, symbol=symbol).index)]
    except (AitraderError, OSError, ValueError):
        return []


def _existing_run(runs_dir: str, run_id: str | None, state_dir: str | None) -> Path:
    run_dir = resolve_run(runs_dir, run_id, state_dir)
    if not (run_dir / LEDGER_NAME).is_file():
        raise TradingError(
            f"run {run_id!r} not found: no {run_dir / LEDGER_NAME}; pass an existing RUN_ID or --runs-dir"
        )
    return run_dir


def run_status(run_id: str | None = None, runs_dir: str = DEFAULT_RUNS_DIR, state_dir: str | None = None) -> dict:
    from aitrader.trading.summary import summarise

    run_dir = _existing_run(runs_dir, run_id, state_dir)
    return summarise(run_dir)


def export_table(run_id: str, table: str, out: str | None = None, runs_dir: str = DEFAULT_RUNS_DIR,
                 state_dir: str | None = None) -> str | None:
    """CSV text of a ledger table when ``out`` is None; else write CSV or parquet (by extension) atomically."""
    run_dir = _existing_run(runs_dir, run_id, state_dir)
    cols, rows = read_table(run_dir / LEDGER_NAME, table)
    df = pd.DataFrame.from_records(rows, columns=cols)
    if out is None:
        return df.to_csv(index=False, lineterminator="\n")
    dest = Path(out)
    suffix = "".join(dest.suffixes[-2:]).lower() if dest.suffix.lower() == ".gz" else dest.suffix.lower()
    if suffix not in (".csv", ".csv.gz", ".parquet"):
        raise TradingError(f"--out {out}: unknown extension {suffix or '(none)'}; use .csv, .csv.gz or .parquet")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False, compression="gzip" if suffix == ".csv.gz" else None)
        Path(tmp).replace(dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return None
