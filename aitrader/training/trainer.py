"""``aitrader train`` as a library call: bars -> features + target -> purged walk-forward -> artifact.

One call of :func:`train` loads the bars (a file or the built-in sample), builds the features
and the h-bar forward-return target, scores ``n_folds`` purged walk-forward folds, fits the final
model on the whole selection period, scores it and the naive baselines on the untouched holdout,
judges it (``metrics.verdict``, see :mod:`aitrader.training.verdict`), exports ONNX (kept only
when its parity on the holdout is within tolerance, else dropped with a warning in
``manifest.onnx``) and writes the artifact folder atomically: every file goes into a temporary
sibling folder that is renamed into place only when complete.

The symbol recorded in the manifest (one rule for the library and ``aitrader train``):
``data.symbol`` is exactly what :func:`aitrader.data.load_bars` gets as ``symbol=``. Unset (the
default), the bars name themselves: the sample is AAPL, a file its one ``symbol`` column value or
else its file name, a folder its one file's name. Set, it picks that symbol from the sample, a
multi-symbol file or a folder, or names a file without a ``symbol`` column (as ``SYMBOL=PATH`` does
in ``aitrader paper-trade``). Bars passed to :func:`train` keep their ``attrs["symbol"]``; a set
``data.symbol`` that disagrees with it is a ConfigError rather than a silent relabel.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aitrader.config import TradingConfig, TrainConfig, build_model, load_trading_config
from aitrader.errors import ConfigError, DataError
from aitrader.training import metrics as M
from aitrader.training.artifact import build_manifest, holdout_sample
from aitrader.training.backtest import replay_frame, resolve_costs, signal_backtest_kwargs
from aitrader.training.manifest import write_manifest
from aitrader.training.splits import min_rows, purged_walk_forward
from aitrader.training.stats import baseline_stats

log = logging.getLogger(__name__)

FIT_THREADS_ENV = "AITRADER_FIT_THREADS"  # at most this many fits side by side (unset: the cores)
ProgressFn = Callable[[int, int, str], None]
"""``progress(done, total, label)``: called once before the first fit and after every fit."""


@dataclass(frozen=True)
class TrainResult:
    """Where the artifact was written, its manifest, and wall times (kept out of the manifest)."""

    out_dir: Path
    manifest: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    # The executed holdout backtest's replays ("model" and each baseline): fills, equity marks,
    # per-step returns (the manifest keeps only their figures).
    backtest: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Dataset:
    """Model-ready rows: features ``X``, targets and the returns the backtest and baselines need."""

    bars: pd.DataFrame
    X: pd.DataFrame  # rows after warm-up with a known target and finite features
    fwd: np.ndarray  # h-bar forward return (the regression target)
    ret1: np.ndarray  # 1-bar forward return (the backtest's P&L)
    prev: np.ndarray  # previous h-bar return (the prev_sign baseline)
    pipeline: Any
    symbol: str
    #: Fitted features only: the base evaluation (``FeaturePipeline.base_matrix``) the fits read, and
    #: each row of ``X``'s bar position. ``X``'s fitted columns are placeholders until :func:`fit_features`.
    base: np.ndarray | None = None
    positions: np.ndarray | None = None


def fit_features(data: Dataset, jobs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[Dataset, list[pd.DataFrame]]:
    """Fit the pipeline's fitted features once per job on that job's training rows only, and give
    each job its feature matrix; the last job (the final model) becomes the dataset's ``X`` and
    pipeline (written to the artifact). A fold's test rows and the holdout never reach a fit."""
    from dataclasses import replace

    assert data.base is not None and data.positions is not None
    out: list[pd.DataFrame] = []
    fitted = data.pipeline
    for train_rows, _ in jobs:
        fitted = data.pipeline.fit_matrix(data.base, data.positions[train_rows])
        values = fitted.assemble(data.base)[data.positions]
        if not np.isfinite(values).all():
            raise DataError("a fitted feature has no value on a usable row; this is a bug, please report it")
        out.append(pd.DataFrame(values, index=data.X.index, columns=data.X.columns, dtype="float64"))
    return replace(data, X=out[-1], pipeline=fitted), out


def override_config(cfg: TrainConfig, **flags: Any) -> TrainConfig:
    """Apply command-line flags (``None`` = not given) and re-validate like the config file.

    Keys: data, symbol, model, features (list of names), horizon, task, out, onnx (``onnx.export``).
    A ``data`` flag without
    a ``symbol`` flag clears ``data.symbol`` (a symbol in the config was written for the config's
    data, not this file): the file then supplies its own symbol (its ``symbol`` column or its name).
    A ``model`` flag that
    changes the kind drops ``model.params`` (they were written for the other library and would be
    rejected as unknown parameters): the new kind trains with its defaults.
    """
    raw = cfg.model_dump()
    if flags.get("model") is not None and flags["model"] != cfg.model.kind:
        raw["model"]["params"] = {}
    if flags.get("data") is not None and flags.get("symbol") is None:
        raw["data"]["symbol"] = None
    if flags.get("data") is not None and flags.get("book") is None:
        raw["data"]["book"] = None  # the config's snapshots were written for the config's bars
    paths = {
        "data": ("data", "path"), "symbol": ("data", "symbol"), "model": ("model", "kind"),
        "features": ("features", "names"), "horizon": ("target", "horizon"), "task": ("target", "task"),
        "onnx": ("onnx", "export"), "book": ("data", "book"),
    }
    for key, value in flags.items():
        if value is None:
            continue
        if key == "out":
            raw["out"] = value
        elif key in paths:
            section, name = paths[key]
            raw[section][name] = value
        else:
            raise ConfigError(f"unknown override {key!r}; expected one of {', '.join([*paths, 'out'])}")
    return build_model(TrainConfig, raw)


def load_training_bars(cfg: TrainConfig) -> pd.DataFrame:
    """The bars named by ``data.path`` (or the built-in sample), cut to ``split.window``."""
    if cfg.data.path:
        from aitrader.data import load_bars

        bars = load_bars(cfg.data.path, symbol=cfg.data.symbol, repair=cfg.data.repair)
    else:
        from aitrader.data.sample import load_sample

        bars = load_sample(cfg.data.symbol or "AAPL")
    if cfg.split.window is not None and len(bars) > cfg.split.window:
        attrs = dict(bars.attrs)
        bars = bars.iloc[-cfg.split.window :].copy()
        bars.attrs.update(attrs)
    return bars


def training_symbol(cfg: TrainConfig, bars: pd.DataFrame) -> str:
    """The symbol the manifest records for ``bars`` (see the module docstring for the rule)."""
    own = bars.attrs.get("symbol")
    wanted = cfg.data.symbol
    if own and wanted and str(own).upper() != wanted.upper():
        raise ConfigError(
            f"data.symbol is {wanted!r} but the bars passed in are {own!r}; set data.symbol to {own!r} "
            "or leave it unset so the bars name themselves"
        )
    return str(own or wanted or "unknown")


def build_dataset(cfg: TrainConfig, bars: pd.DataFrame) -> Dataset:
    """Features, targets and returns, restricted to rows usable for training and scoring."""
    from aitrader.features import FeaturePipeline
    from aitrader.features.targets import forward_return

    pipeline = FeaturePipeline(cfg.features.names or None)
    if pipeline.needs_book:
        from aitrader.features.book import training_book

        pipeline.with_book(training_book(cfg.data.book, training_symbol(cfg, bars), pipeline.book_features))
    h = cfg.target.horizon
    base = None
    if pipeline.fitted_specs:  # placeholders mark the rows the fits will give values (fit_features)
        base = pipeline.base_matrix(bars)
        features = pd.DataFrame(pipeline.assemble(base, placeholder=True), index=bars.index,
                                columns=pipeline.names, dtype="float64")
    else:
        features = pipeline.transform(bars)
    close = bars["close"]
    fwd = forward_return(close, h)
    usable = fwd.notna() & np.isfinite(features.to_numpy(dtype=np.float64)).all(axis=1)
    usable.iloc[: pipeline.warmup] = False
    symbol = training_symbol(cfg, bars)
    n_rows = int(usable.sum())
    needed = min_rows(n_folds=cfg.split.n_folds, horizon=h, holdout=cfg.split.holdout,
                      min_train=cfg.split.min_train)
    if n_rows < needed:
        # Each extra clean bar adds one usable row, so the shortfall in rows is the shortfall in bars.
        raise DataError(
            f"too few bars for {symbol}: {len(bars)} bars give {n_rows} usable rows after the "
            f"{pipeline.warmup}-bar feature warm-up and the {h}-bar target; need at least "
            f"{len(bars) + needed - n_rows} bars ({needed} rows) for {cfg.split.n_folds} folds, "
            f"min_train {cfg.split.min_train} and holdout {cfg.split.holdout:g}; use more data or "
            "lower split.n_folds / split.min_train / split.holdout"
        )
    prev = close / close.shift(h) - 1.0
    return Dataset(
        bars=bars,
        X=features.loc[usable],
        fwd=fwd[usable].to_numpy(dtype=np.float64),
        ret1=forward_return(close, 1)[usable].to_numpy(dtype=np.float64),
        prev=prev[usable].to_numpy(dtype=np.float64),
        pipeline=pipeline,
        symbol=symbol,
        base=base,
        positions=np.flatnonzero(usable.to_numpy()) if base is not None else None,
    )


def _target(task: str, fwd: np.ndarray) -> np.ndarray:
    return (fwd > 0).astype(np.float64) if task == "classification" else fwd


def _fit(cfg: TrainConfig, X: pd.DataFrame, y: np.ndarray) -> Any:
    from aitrader.models import create_model

    model = create_model(cfg.model.kind, task=cfg.target.task, random_state=cfg.model.random_state,
                         params=dict(cfg.model.params))
    return model.fit(X, _target(cfg.target.task, y))


def _fit_and_score(
    cfg: TrainConfig, data: Any, train_rows: np.ndarray, score_rows: np.ndarray, X: pd.DataFrame | None = None
) -> tuple[Any, np.ndarray]:
    X = data.X if X is None else X  # a job's own features when fitted features were fitted per job
    model = _fit(cfg, X.iloc[train_rows], data.fwd[train_rows])
    return model, model.predict_score(X.iloc[score_rows])


def _fit_all(
    cfg: TrainConfig, data: Any, jobs: list[tuple[np.ndarray, np.ndarray]], report: ProgressFn,
    job_X: list[pd.DataFrame] | None = None,
) -> list[tuple[Any, np.ndarray]]:
    """Fit one model per (train rows, score rows) job and predict its score rows, concurrently.

    The walk-forward folds and the final model are independent, each single-threaded with its own
    seed, so running them side by side on the machine's cores changes no byte of any model (the
    byte-identity tests hold it), only the wall time. LightGBM, XGBoost and scikit-learn release the
    GIL while they fit and predict."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    # A universe retrain runs one training per worker process: it sets this to 1 so that N
    # workers use N cores, not N x cores threads (aitrader.monitoring.executors).
    cap = os.environ.get(FIT_THREADS_ENV, "").strip()
    if cap.isdigit() and int(cap) >= 1:
        cores = min(cores, int(cap))
    total = len(jobs)
    # Largest training sets first (longest-processing-time order): the pool does not end waiting
    # on one big fit started last. Results come back in the jobs' own order.
    order = sorted(range(total), key=lambda i: -len(jobs[i][0]))
    with ThreadPoolExecutor(max_workers=max(1, min(cores, total))) as pool:
        futures = {i: pool.submit(_fit_and_score, cfg, data, *jobs[i], job_X[i] if job_X else None)
                   for i in order}
        for done, future in enumerate(as_completed(futures.values()), start=1):
            future.result()  # an error in any fit surfaces here, at once
            report(done, total, "fitting" if done < total else "scoring")
        return [futures[i].result() for i in range(total)]


def resolve_out_dir(cfg: TrainConfig, symbol: str, out_dir: str | Path | None, overwrite: bool) -> Path:
    """The artifact folder (``out`` template when not given); refuses a non-empty one unless told,
    and even then anything but an artifact, a registry folder or a parent of the working directory
    (see :mod:`aitrader.training.output`)."""
    from aitrader.config import format_out_template
    from aitrader.training.output import check_out_dir

    if out_dir is None:
        out_dir = format_out_template(cfg.out, symbol=symbol, model=cfg.model.kind)
    path = Path(out_dir)
    check_out_dir(path, overwrite=overwrite)
    return path


def _normal_permissions(folder: Path) -> None:
    # mkdtemp/mkstemp create private (0700/0600) entries; the published artifact should get the
    # permissions of any file the user creates (the umask), so others can read what they deploy.
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _swap_into_place(tmp: Path, target: Path) -> None:
    _normal_permissions(tmp)
    # Rename the finished folder into place; an old artifact is moved aside first and removed
    # only after the new one is in place, so a failure never leaves the target half-written.
    old = None
    if os.path.lexists(target):
        from aitrader.training.output import check_out_dir

        check_out_dir(target, overwrite=True)  # again: files may have appeared while training
        old = target.with_name(f".{target.name}.old-{time.time_ns()}")
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def train(
    cfg: TrainConfig,
    *,
    bars: pd.DataFrame | None = None,
    out_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
    overwrite: bool = False,
    trading: TradingConfig | None = None,
) -> TrainResult:
    """Train, evaluate and write the artifact folder; see the module docstring.

    ``trading``: the trading config whose execution (costs, position size, confidence gate, risk
    limits) the holdout backtest uses; None loads the default one (``load_trading_config()``)."""
    started = time.perf_counter()
    report = progress or (lambda done, total, label: None)
    if bars is None:
        bars = load_training_bars(cfg)
    elif cfg.split.window is not None and len(bars) > cfg.split.window:
        bars = bars.iloc[-cfg.split.window :]
    symbol = training_symbol(cfg, bars)
    target_dir = resolve_out_dir(cfg, symbol, out_dir, overwrite)
    data = build_dataset(cfg, bars)
    t_features = time.perf_counter()
    sp = cfg.split
    plan = purged_walk_forward(len(data.X), n_folds=sp.n_folds, horizon=cfg.target.horizon,
                               embargo=sp.embargo, holdout=sp.holdout, min_train=sp.min_train)
    if trading is None:
        trading = load_trading_config()
    # One set of costs: the trading config's, by the asset class of the bars the backtest replays.
    holdout_first = data.X.index[plan.holdout[0]]
    costs = resolve_costs(trading.ml_trading.execution,
                          [pd.DatetimeIndex(replay_frame(bars, holdout_first, data.pipeline.warmup).index)])
    bt = signal_backtest_kwargs(costs, pd.DatetimeIndex(bars.index), short=cfg.backtest.short)
    task, total = cfg.target.task, sp.n_folds + 1
    index = data.X.index
    folds: list[dict[str, Any]] = []
    report(0, total, "fitting")
    jobs = [(f.train, f.test) for f in plan.folds] + [(plan.final_train, plan.holdout)]
    job_X = None
    if data.base is not None:  # fitted features: learned per job on its training rows only
        data, job_X = fit_features(data, jobs)
    *fold_results, (model, hold_pred) = _fit_all(cfg, data, jobs, report, job_X)
    for k, (fold, (_, pred)) in enumerate(zip(plan.folds, fold_results, strict=True)):
        scores = M.evaluate(task, data.fwd[fold.test], pred, data.ret1[fold.test], backtest_kwargs=bt)
        folds.append({"fold": k + 1, "train_rows": int(fold.train.size), "test_rows": int(fold.test.size),
                      "test_first": index[fold.test[0]], "test_last": index[fold.test[-1]], **scores})
    X_hold = data.X.iloc[plan.holdout]
    holdout = M.evaluate(task, data.fwd[plan.holdout], hold_pred, data.ret1[plan.holdout], backtest_kwargs=bt)
    naive = M.baseline_predictions(task, data.fwd[plan.final_train], data.prev[plan.holdout])
    baselines = {name: M.evaluate(task, data.fwd[plan.holdout], p, data.ret1[plan.holdout], backtest_kwargs=bt)
                 for name, p in naive.items()}
    oof_pred = np.concatenate([pred for _, pred in fold_results])
    baseline = baseline_stats(data.X.iloc[plan.final_train], hold_pred, holdout, data.fwd[plan.holdout], task,
                              oof_pred=oof_pred)
    if data.pipeline.fitted_specs:  # the monitor's regime-shift alert compares live regimes with these
        from aitrader.features.fitted import regime_baseline

        baseline["regimes"] = regime_baseline(data.pipeline.fitted_specs, data.X.iloc[plan.final_train])
    report(total, total, "writing artifact")
    t_fit = time.perf_counter()

    target_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.tmp-", dir=target_dir.parent))
    try:
        model_meta = model.save(tmp)
        data.pipeline.save_fitted(tmp)  # fitted features' parameters (hashed in manifest.features.fitted)
        onnx_meta = None
        if cfg.onnx.export:  # an export that does not match the native model is dropped, not fatal
            from aitrader.models.onnx import export_checked

            onnx_meta = export_checked(model, tmp, X_hold, tolerance=cfg.onnx.tolerance_rel, reference=hold_pred)
            if onnx_meta["file"]:
                model_meta["files"]["onnx"] = onnx_meta["file"]
            else:
                log.info("ONNX fallback: %s", onnx_meta["warning"])
        t_bt = time.perf_counter()
        executed, runs = _holdout_backtest(cfg, trading, data, tmp, model_meta, baseline, holdout_first,
                                           data.fwd[plan.final_train], costs)
        t_bt = time.perf_counter() - t_bt
        # metrics.holdout / metrics.baselines: signal metrics (mae.. ic, from the predictions) and the
        # executed backtest's total_return, sharpe, max_drawdown, turnover (metrics.holdout_backtest
        # has the full picture); the folds keep their signal backtest (sign, full notional, 1-bar).
        holdout.update({k: executed["model"][k] for k in EXECUTED_KEYS})
        for name, scores in baselines.items():
            scores.update({k: executed["baselines"][name][k] for k in EXECUTED_KEYS})
        # The verdict bootstraps the executed holdout backtest's per-step returns (the same series, warm-up
        # steps included, whose Sharpe metrics.holdout reports, as a paper-trade summary would) and
        # compares its Sharpe with the baselines' executed Sharpe.
        verdict = _verdict(cfg, data, plan, hold_pred, runs["model"].returns,
                           executed["periods_per_year"], baselines, folds)
        manifest = build_manifest(
            cfg, data, model_meta=model_meta, onnx_meta=onnx_meta, split=plan.describe(),
            metrics={"folds": folds, "cv_mean": M.mean_metrics([_numeric(f) for f in folds]),
                     "holdout": holdout, "baselines": baselines, "holdout_backtest": executed,
                     "verdict": verdict,
                     "backtest": {"fees_bps": bt["fees_bps"], "slippage_bps": bt["slippage_bps"],
                                  "short": bt["short"], "periods_per_year": bt["periods"],
                                  "applies_to": "folds (signal backtest)"}},
            baseline=baseline,
            sample=holdout_sample(X_hold, hold_pred),
            importance=model.feature_importance(),
        )
        write_manifest(tmp, manifest)
        _swap_into_place(tmp, target_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    done = time.perf_counter()
    timings = {"features_s": t_features - started, "fit_s": t_fit - t_features, "write_s": done - t_fit,
               "backtest_s": t_bt, "total_s": done - started}
    log.info("trained %s on %s in %.2fs -> %s", cfg.model.kind, data.symbol, timings["total_s"], target_dir)
    return TrainResult(out_dir=target_dir, manifest=manifest, timings=timings, backtest=runs)


EXECUTED_KEYS = ("total_return", "sharpe", "max_drawdown", "turnover")


def _holdout_backtest(
    cfg: TrainConfig, trading: TradingConfig, data: Dataset, folder: Path, model_meta: dict[str, Any],
    baseline: dict[str, Any], holdout_first: Any, y_train: np.ndarray, costs: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The holdout through the trading engine with the predictor paper-trade would load from ``folder``."""
    from aitrader.models.runner import ModelRunner
    from aitrader.training.backtest import holdout_backtest

    task = cfg.target.task
    manifest = {"model": model_meta, "features": {"names": list(data.pipeline.names)},
                "target": {"horizon": cfg.target.horizon, "task": task}, "baseline": baseline}
    # model.onnx when exported (what the registry's runner prefers), else the native model.
    runner = ModelRunner.from_artifact(folder, manifest, trust_pickle=True)
    return holdout_backtest(trading, data.bars, symbol=data.symbol, holdout_first=holdout_first,
                            pipeline=data.pipeline, predictor=runner, manifest=manifest, task=task,
                            y_train=y_train, costs=costs)


def _verdict(cfg: TrainConfig, data: Dataset, plan: Any, pred: np.ndarray, returns: np.ndarray, periods: float,
             baselines: dict[str, Any], folds: list[dict[str, Any]]) -> dict[str, Any]:
    """``metrics.verdict``: holdout IC and Sharpe with block-bootstrap intervals vs the best baseline.

    ``returns``: the per-bar returns of the holdout backtest whose Sharpe ``metrics.holdout``
    reports, annualised with ``periods``; ``baselines``: their Sharpe from the same backtest."""
    from aitrader.training.verdict import holdout_verdict

    rows = plan.holdout
    return holdout_verdict(pred=pred, fwd=data.fwd[rows], returns=returns, periods_per_year=periods,
                           baselines=baselines, horizon=cfg.target.horizon, bar_returns=data.ret1[rows],
                           fold_ics=[f["ic"] for f in folds]).to_dict()


def _numeric(fold: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in fold.items() if k in M.CLASSIFICATION_METRICS}
