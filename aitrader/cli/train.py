"""CLI command: ``aitrader train`` (purged walk-forward evaluation, then the artifact folder)."""

from __future__ import annotations

from typing import Any

import typer

from aitrader.cli._output import console, err_console, print_json

_TABLE_METRICS = ("mae", "rmse", "r2", "hit_rate", "ic", "rank_ic", "accuracy", "log_loss", "auc",
                  "total_return", "sharpe", "max_drawdown", "turnover")


def train_command(
    config: str | None = typer.Option(None, "--config", "-c", help="Training config file "
                                      "(default: ./config/train.yaml, else the packaged defaults)."),
    data: str | None = typer.Option(None, "--data", help="Bars file (CSV/Parquet/...); default: the built-in "
                                    "sample."),
    symbol: str | None = typer.Option(None, "--symbol", help="Symbol: picks it from a multi-symbol file, "
                                      "or the sample (AAPL, MSFT, IBM, GOOG)."),
    model: str | None = typer.Option(None, "--model", help="Model kind: lightgbm, xgboost, ridge or "
                                     "random_forest."),
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
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as one JSON document."),
) -> None:
    """Train a model with purged walk-forward evaluation and write its artifact folder."""
    from aitrader.config import load_train_config
    from aitrader.training.trainer import override_config, train

    if trust_pickle and not register_name:
        from aitrader.errors import ConfigError

        raise ConfigError("--trust-pickle only applies with --register NAME; add --register or drop --trust-pickle")
    names = [n.strip() for n in features.split(",") if n.strip()] if features is not None else None
    cfg = override_config(load_train_config(config), data=data, symbol=symbol, model=model, features=names,
                          horizon=horizon, task=task)
    with _progress(enabled=not as_json) as progress:
        result = train(cfg, out_dir=out, progress=progress, overwrite=force)
    registered = None
    if register_name:
        from aitrader.registry import Registry

        registered = Registry(registry).register(result.out_dir, register_name, trust_pickle=trust_pickle).to_dict()
    summary = _summary(result, registered)
    if as_json:
        print_json(summary)
    else:
        _render(summary)


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
    }


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def _render(summary: dict[str, Any]) -> None:
    from rich.table import Table

    metrics = summary["metrics"]
    holdout, cv, base = metrics["holdout"], metrics["cv_mean"], metrics["baselines"]
    table = Table(title=f"{summary['model']} on {summary['symbol']} -> {summary['target']} "
                  f"(holdout {summary['split']['holdout_rows']} rows)")
    for col in ("metric", "model", "cv mean", *base):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name in (k for k in _TABLE_METRICS if k in holdout):
        table.add_row(name, _fmt(holdout[name]), _fmt(cv.get(name)), *(_fmt(b.get(name)) for b in base.values()))
    out = console()
    out.print(table)
    onnx = summary["onnx"]
    if onnx:
        out.print(f"ONNX parity: max_rel_diff {onnx['max_rel_diff']:.2g} (tolerance {onnx['tolerance_rel']:g})")
    out.print(f"artifact: {summary['out_dir']}")
    reg = summary["registered"]
    if reg:
        note = ""
        if reg.get("pickle_based") and not reg.get("trusted"):
            note = " (pickle-based and untrusted: deploy refuses it; train with --trust-pickle if you trust it)"
        out.print(f"registered: {reg['model_id']}{note}")


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("train", help="Train a model with purged walk-forward evaluation; write model files, "
                "model.onnx and manifest.json.")(train_command)
