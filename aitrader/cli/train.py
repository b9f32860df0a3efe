"""CLI command: ``aitrader train`` (purged walk-forward evaluation, then the artifact folder)."""

from __future__ import annotations

from typing import Any

import typer

from aitrader.cli._output import console, err_console, print_json
from aitrader.cli._universe import EXECUTOR_HELP, JOBS_HELP, SCHEDULER_HELP, UNIVERSE_HELP

_SIGNAL_METRICS = ("mae", "rmse", "r2", "hit_rate", "ic", "rank_ic", "accuracy", "log_loss", "auc")
_BACKTEST_METRICS = ("total_return", "sharpe", "max_drawdown", "turnover", "fills", "final_equity", "fees")


def train_command(
    config: str | None = typer.Option(None, "--config", "-c", help="Training config file "
                                      "(default: ./config/train.yaml, else the packaged defaults)."),
    data: str | None = typer.Option(None, "--data", help="Bars file (CSV/Parquet/...); default: the built-in "
                                    "sample. A folder of bar files (no --symbol, no --out) trains each symbol."),
    universe: str | None = typer.Option(None, "--universe", help=UNIVERSE_HELP + " Registers each model "
                                        "under the --register template (default {symbol}_{model})."),
    executor: str = typer.Option("process", "--executor", help=EXECUTOR_HELP),
    jobs: int | None = typer.Option(None, "--jobs", help=JOBS_HELP),
    scheduler: str | None = typer.Option(None, "--scheduler", help=SCHEDULER_HELP),
    symbol: str | None = typer.Option(None, "--symbol", help="Symbol: picks it from a multi-symbol file, "
                                      "or the sample (AAPL, MSFT, IBM, GOOG)."),
    model: str | None = typer.Option(None, "--model", help="Model kind: lightgbm, xgboost, ridge, "
                                     "random_forest, or an installed plug-in's (docs/plugins.md)."),
    features: str | None = typer.Option(None, "--features", help="Comma-separated feature names "
                                        "(default: the default feature set)."),
    horizon: int | None = typer.Option(None, "--horizon", help="Target horizon in bars (forward return)."),
    task: str | None = typer.Option(None, "--task", help="regression (forward return) or classification "
                                    "(its sign)."),
    out: str | None = typer.Option(None, "--out", "-o", help="Artifact folder (default: the config's `out` "
                                   "template, artifacts/{symbol}_{model})."),
    force: bool = typer.Option(False, "--force", help="Replace an existing aitrader artifact "
                               "folder at --out (nothing else is ever replaced)."),
    register_name: str | None = typer.Option(None, "--register", help="Also register the artifact under "
                                             "this model name."),
    registry: str | None = typer.Option(None, "--registry", help="Registry root for --register "
                                        "(default: $AITRADER_REGISTRY or ./models)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="With --register: mark a pickle-based "
                                      "artifact (ridge, random_forest) as trusted, so it can be deployed."),
    onnx: bool | None = typer.Option(None, "--onnx/--no-onnx", help="Export model.onnx (kept only if it "
                                     "matches the native model on the holdout; default: train.yaml onnx.export)."),
    book: list[str] = typer.Option(None, "--book", help="Order-book snapshots for book features: PATH, or "
                                   "SYMBOL=PATH (docs/orderbook.md); default: data.book of the config."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as one JSON document."),
    trading_config: str | None = typer.Option(None, "--trading-config", help="Trading config whose execution "
                                              "(costs, position_size, min_confidence, risk limits) the holdout "
                                              "backtest uses (default: ./config/ml_trading_config.yaml, else "
                                              "the packaged one)."),
) -> None:
    """Train a model with purged walk-forward evaluation and write its artifact folder."""
    from aitrader.config import load_trading_config, load_train_config
    from aitrader.monitoring.universe import is_universe_folder
    from aitrader.training.trainer import override_config, train

    if trust_pickle and not register_name and universe is None:
        from aitrader.errors import ConfigError

        raise ConfigError("--trust-pickle only applies with --register NAME; add --register or drop --trust-pickle")
    names = [n.strip() for n in features.split(",") if n.strip()] if features is not None else None
    if universe is not None or (symbol is None and out is None and is_universe_folder(data)):
        _train_universe(universe or str(data), out=out, template=register_name, config=config, as_json=as_json,
                        flags={"model": model, "features": names, "horizon": horizon, "task": task, "onnx": onnx},
                        trading_config=trading_config, executor=executor, jobs=jobs, scheduler=scheduler,
                        registry_root=registry, trust_pickle=trust_pickle)
        return
    from aitrader.features.book import parse_book_options

    cfg = override_config(load_train_config(config), data=data, symbol=symbol, model=model, features=names,
                          horizon=horizon, task=task, onnx=onnx, book=parse_book_options(book))
    if cfg.features.names:  # cheap checks first: a feature typo is named before the data or --out is looked at
        from aitrader.features.registry import FeatureRegistry

        feature_registry = FeatureRegistry.load()
        for feature in cfg.features.names:
            feature_registry.resolve(feature)
    with _progress(enabled=not as_json) as progress:
        result = train(cfg, out_dir=out, progress=progress, overwrite=force,
                       trading=load_trading_config(trading_config))
    registered = None
    if register_name:
        from aitrader.registry import Registry

        registered = Registry(registry).register(result.out_dir, register_name, trust_pickle=trust_pickle).to_dict()
    summary = _summary(result, registered)
    if as_json:
        print_json(summary)
    else:
        _render(summary)
    _print_verdict(summary, as_json)


def _train_universe(universe: str, *, out: str | None, trust_pickle: bool, **kwargs: Any) -> None:
    """First fit of every symbol of a universe, each registered (``aitrader.monitoring.universe``)."""
    from aitrader.cli._universe import run
    from aitrader.monitoring.universe import Options

    if out is not None:
        from aitrader.errors import ConfigError

        raise ConfigError("--out names one artifact folder; a universe registers each model (drop --out)")
    run(universe, mode="train", options=Options(mode="train", trust_pickle=trust_pickle), **kwargs)


class _progress:
    """A rich progress bar over the folds on stderr (off for --json and when not a terminal)."""

    def __init__(self, enabled: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        errc = err_console()
        self.bar = Progress(TextColumn("training {task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=errc, transient=True,
                            disable=not (enabled and errc.is_terminal))
        self.task: Any = None

    def __enter__(self) -> Any:
        self.bar.__enter__()

        def update(done: int, total: int, label: str) -> None:
            if self.task is None:
                self.task = self.bar.add_task(label, total=total)
            self.bar.update(self.task, completed=done, description=label)

        return update

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)  # type: ignore[arg-type]


def _summary(result: Any, registered: dict[str, Any] | None) -> dict[str, Any]:
    m = result.manifest
    return {
        "out_dir": str(result.out_dir),
        "model": m["model"]["kind"],
        "task": m["target"]["task"],
        "target": m["target"]["name"],
        "symbol": m["data"]["symbol"],
        "data": m["data"],
        "features": m["features"]["names"],
        "split": m["split"],
        "metrics": m["metrics"],
        "onnx": m["onnx"],
        "registered": registered,
        "timings": result.timings,
        "warnings": _warnings(m),
    }


def _warnings(manifest: dict[str, Any]) -> list[str]:
    """The ONNX fallback and the verdict's implausibility warnings (``warning:`` lines on stderr)."""
    onnx = manifest.get("onnx") or {}
    verdict = manifest["metrics"].get("verdict") or {}
    return ([onnx["warning"]] if onnx.get("warning") else []) + list(verdict.get("warnings") or [])


def _fmt(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return "-" if value is None else f"{value:.4g}"


def backtest_label(executed: dict[str, Any]) -> str:
    """The executed backtest's one-line description: fills, costs, sizing, confidence gate."""
    c = executed["costs"]
    return (f"holdout backtest, next-open fills, costs {c['commission_bps'] + c['slippage_bps']:g} bps "
            f"({c['asset_class']}: commission {c['commission_bps']:g} + slippage {c['slippage_bps']:g}), "
            f"position_size {executed['position_size']:g}, min_confidence {executed['min_confidence']:g}")


def _render(summary: dict[str, Any]) -> None:
    from rich.table import Table

    metrics = summary["metrics"]
    holdout, cv, base = metrics["holdout"], metrics["cv_mean"], metrics["baselines"]
    table = Table(title=f"{summary['model']} on {summary['symbol']} -> {summary['target']}: signal metrics "
                  f"(predictions vs realised returns; holdout {summary['split']['holdout_rows']} rows)")
    for col in ("metric", "model", "cv mean", *base):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name in (k for k in _SIGNAL_METRICS if k in holdout):
        table.add_row(name, _fmt(holdout[name]), _fmt(cv.get(name)), *(_fmt(b.get(name)) for b in base.values()))
    out = console()
    out.print(table)
    executed = metrics.get("holdout_backtest")
    if executed:
        out.print(backtest_label(executed) + ":", soft_wrap=True)
        bt = Table()
        for col in ("metric", "model", *executed["baselines"]):
            bt.add_column(col, justify="left" if col == "metric" else "right")
        runs = [executed["model"], *executed["baselines"].values()]
        for name in _BACKTEST_METRICS:
            cash = name in ("final_equity", "fees")
            bt.add_row(name, *(f"{r[name]:,.2f}" if cash and name in r else _fmt(r.get(name)) for r in runs))
        out.print(bt)
        out.print(f"backtest bars: {executed['holdout_first']} .. {executed['last_bar']} "
                  f"(+{executed['warmup_bars']} warm-up bars); baselines trade with min_confidence 0")
    onnx = summary["onnx"]
    if onnx and onnx.get("file"):
        out.print(f"ONNX parity: max_rel_diff {onnx['max_rel_diff']:.2g} of the predictions' spread "
                  f"(tolerance {onnx['tolerance_rel']:g})")
    elif onnx:
        out.print("ONNX: dropped (see the warning); the artifact runs on the native model")
    out.print(f"artifact: {summary['out_dir']}")
    reg = summary["registered"]
    if reg:
        note = ""
        if reg.get("pickle_based") and not reg.get("trusted"):
            note = " (pickle-based and untrusted: deploy refuses it; train with --trust-pickle if you trust it)"
        out.print(f"registered: {reg['model_id']}{note}")


def _print_verdict(summary: dict[str, Any], as_json: bool) -> None:
    """``warning:`` lines on stderr (ONNX fallback, implausible results), then the verdict line last."""
    for message in summary["warnings"]:
        typer.echo(f"warning: {message}", err=True)
    verdict = summary["metrics"].get("verdict") or {}
    if verdict.get("text") and not as_json:
        console().print(f"verdict: {verdict['text']}", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("train", help="Train a model with purged walk-forward evaluation; write model files, "
                "model.onnx and manifest.json.")(train_command)
