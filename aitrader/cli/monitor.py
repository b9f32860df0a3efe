"""CLI commands: ``monitor`` (health, accuracy, drift, alerts of a run) and ``retrain``.

Exit codes for cron: monitor 0 healthy, 3 an alert fired, 1 error; retrain 0 done (promoted,
kept, unchanged or skipped), 1 error, 4 another retrain holds the lock; a universe retrain 0 all
ok, 3 some challenger rejected, 1 any symbol failed (``aitrader.cli._universe``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from aitrader.cli._universe import EXECUTOR_HELP, JOBS_HELP, SCHEDULER_HELP, UNIVERSE_HELP

ALERT_EXIT = 3


def _f(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _alert_count(alerts: list[dict[str, Any]]) -> str:
    """'20 alert(s): mae_ratio, hit_rate, psi_feature x18': the count the ALERT lines add up to."""
    counts: dict[str, int] = {}
    for a in alerts:
        counts[a["code"]] = counts.get(a["code"], 0) + 1
    parts = ", ".join(code if n == 1 else f"{code} x{n}" for code, n in counts.items())
    return f"{len(alerts)} alert(s): {parts}"


def _alert_lines(alerts: list[dict[str, Any]], max_each: int = 3) -> list[str]:
    """One line per alert, except that more than ``max_each`` drifted features share one line
    (worst first, prefixed ``psi_feature xN``) so a broad drift does not bury the other alerts."""
    drifted = [a for a in alerts if a["code"] == "psi_feature"]
    lines: list[str] = []
    for a in alerts:
        if a["code"] != "psi_feature" or len(drifted) <= max_each:
            lines.append(f"{a['code']}: {a['message']}")
        elif a is drifted[0]:  # the shared line takes the place of the first (worst) one
            worst = ", ".join(f"{d['feature']} {d['value']:.2f}" for d in drifted[:5])
            more = f", and {len(drifted) - 5} more (--json lists each)" if len(drifted) > 5 else ""
            lines.append(f"psi_feature x{len(drifted)}: {len(drifted)} features drifted past PSI "
                         f"{a['threshold']}: {worst}{more}")
    return lines


def _render_monitor(s: dict[str, Any]) -> None:
    from rich.table import Table

    from aitrader.cli._output import console

    out = console()
    m, ops, acc, drift = s["model"], s["operational"], s["accuracy"], s["drift"]
    state = "[green]healthy[/green]" if not s["alerts"] else f"[red]{_alert_count(s['alerts'])}[/red]"
    out.print(f"run [bold]{s['run_id']}[/bold] ({s.get('run_status')}), model {m['model_id']} v{m.get('version')}: "
              f"{state}")
    t = Table(title="Operations")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for key in ("predictions", "in_sample_predictions", "fallbacks", "latency_ms_p50", "latency_ms_p99",
                "errors_total", "error_rate", "feature_availability", "worst_daily_loss"):
        t.add_row(key, _f(ops.get(key)))
    for key, n in {**ops["errors_by_type"], **{f"rejected: {k}": v for k, v in ops["risk_rejections"].items()}}.items():
        t.add_row(key, str(n))
    out.print(t)
    t = Table(title=f"Accuracy (outcomes: run {acc['run']['n']}, window {acc['window']['n']})")
    for col in ("metric", "run", f"last {acc['window_size']}", "training holdout"):
        t.add_column(col, justify="right")
    for key in ("mae", "rmse", "hit_rate", "ic", "rank_ic"):
        t.add_row(key, _f(acc["run"][key]), _f(acc["window"][key]), _f(acc["holdout"].get(key)))
    out.print(t)
    t = Table(title=f"Drift (live n={drift['n']}, alerts from n>={drift['min_samples']}; "
                    f"importance-weighted score {_f(drift.get('feature_score'), 3)})")
    for col in ("rank", "feature", "importance", "PSI", "limit", "n_eff", "KS"):
        t.add_column(col, justify="right")
    for r in [*drift["features"][:10], {"rank": "-", "name": "prediction", **drift["prediction"]}]:
        t.add_row(str(r["rank"]), r["name"], _f(r.get("weight"), 3), _f(r["psi"], 3), _f(r.get("threshold"), 3),
                  _f(r.get("n_eff"), 0), _f(r["ks"], 3))
    out.print(t)
    for line in _alert_lines(s["alerts"]):
        out.print(f"[red]ALERT[/red] {line}", highlight=False)
    for w in s.get("warnings") or []:
        out.print(f"[yellow]WARNING[/yellow] {w['code']}: {w['message']}", highlight=False)
    if s.get("report"):
        out.print(f"report: {s['report']}")


def monitor(
    run: str | None = typer.Option(None, "--run", help="Run id (folder name under --runs-dir)."),
    latest: bool = typer.Option(False, "--latest", help="Monitor the most recently updated run (the default)."),
    model_id: str | None = typer.Option(None, "--model-id", help="Model to monitor when the run traded several."),
    window: int | None = typer.Option(None, "--window", help="Rolling window in outcomes (default: config)."),
    report: str | None = typer.Option(
        None, "--report", help="Also write the run's tearsheet (one self-contained HTML file) to this path."
    ),
    runs_dir: str = typer.Option("runs", "--runs-dir", help="Folder holding the runs."),
    registry: str | None = typer.Option(
        None, "--registry", help="Registry root (default: $AITRADER_REGISTRY or ./models)."
    ),
    manifest: str | None = typer.Option(
        None, "--manifest", help="Use this artifact folder's manifest instead of the registry's."
    ),
    config: str | None = typer.Option(None, "--config", help="Trading config (monitoring: thresholds)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    bus: str | None = typer.Option(None, "--bus", help="With --follow: consume the live feedback events of "
                                   "paper-trade --bus runs from this Redis url (docs/bus.md)."),
    follow: bool = typer.Option(False, "--follow", help="With --bus: report rolling accuracy as outcomes arrive, "
                                "until SIGINT/SIGTERM (--json: one JSON document per line)."),
) -> None:
    """Check a paper-trading run: operations, accuracy, drift, alerts. Exit 3 when an alert fires."""
    if bus is not None or follow:  # the live variant over Redis Streams (aitrader/cli/bus.py)
        from aitrader.cli.bus import monitor_bus

        code = monitor_bus(bus=bus, follow=follow, config=config, window=window, as_json=as_json)
        if code:
            raise typer.Exit(code)
        return
    from aitrader.cli._output import print_json
    from aitrader.errors import AitraderError
    from aitrader.monitoring.check import run_monitor

    if run is not None and latest:
        raise AitraderError("pass either --run RUN_ID or --latest, not both")
    from aitrader.cli._output import status

    with status(f"monitoring {'run ' + run if run else 'the latest run'} under {runs_dir}/ ..."):
        result = run_monitor(run_id=run, runs_dir=runs_dir, model_id=model_id, window=window, config=config,
                             registry_root=registry, manifest=manifest, report=report)
    if as_json:
        print_json(result.summary)
    else:
        _render_monitor(result.summary)
    if result.alerts:
        raise typer.Exit(ALERT_EXIT)


def retrain(
    name: str | None = typer.Option(None, "--name", help="Registry name of the model to retrain; for a universe "
                                    "a template with {symbol} and {model} (default {symbol}_{model})."),
    config: str | None = typer.Option(None, "--config", help="Training config (default: config/train.yaml)."),
    data: str | None = typer.Option(None, "--data", help="Bars file (overrides data.path of the config); a "
                                    "folder of several bar files retrains each symbol (a universe)."),
    universe: str | None = typer.Option(None, "--universe", help=UNIVERSE_HELP),
    executor: str = typer.Option("process", "--executor", help=EXECUTOR_HELP),
    jobs: int | None = typer.Option(None, "--jobs", help=JOBS_HELP),
    scheduler: str | None = typer.Option(None, "--scheduler", help=SCHEDULER_HELP),
    promote_if_better: bool = typer.Option(
        False, "--promote-if-better", help="Deploy the challenger when it beats the champion by the margin."
    ),
    metric: str = typer.Option("ic", "--metric", help="Comparison metric: ic | sharpe | mae."),
    min_improvement: float = typer.Option(
        0.0, "--min-improvement", help="Margin the challenger must win by, in the metric's units."
    ),
    min_scoring_rows: int = typer.Option(
        100, "--min-scoring-rows", help="Fewest rows neither model was trained on for a comparison; else no promotion."
    ),
    if_alert: bool = typer.Option(False, "--if-alert", help="Only retrain when the last monitor check alerted."),
    registry: str | None = typer.Option(
        None, "--registry", help="Registry root (default: $AITRADER_REGISTRY or ./models)."
    ),
    runs_dir: str = typer.Option("runs", "--runs-dir", help="Paper-trade runs used as extra evaluation data."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Train a challenger, compare it with the production champion, register it, promote if better."""
    import math

    from aitrader.cli._output import print_json
    from aitrader.cli._universe import run as run_universe_cli
    from aitrader.errors import AitraderError
    from aitrader.monitoring.retrain import retrain as run_retrain
    from aitrader.monitoring.universe import Options, is_universe_folder

    if not math.isfinite(min_improvement):
        raise AitraderError(f"--min-improvement must be a finite number >= 0, got {min_improvement}")
    if universe is not None or is_universe_folder(data):
        if if_alert:
            raise AitraderError("--if-alert applies to one model; drop it for a universe retrain")
        opts = Options(promote_if_better=promote_if_better, metric=metric, min_improvement=min_improvement,
                       min_scoring_rows=min_scoring_rows, runs_dir=Path(runs_dir))
        run_universe_cli(universe or str(data), mode="retrain", as_json=as_json, template=name, config=config,
                         executor=executor, jobs=jobs, scheduler=scheduler, registry_root=registry, options=opts)
        return
    if name is None:
        raise AitraderError("--name is required: the registry name of the model to retrain (or pass --universe)")

    from aitrader.cli._output import status

    with status(f"retraining {name}: training a challenger and scoring it against the champion ..."):
        result = run_retrain(name, config=config, data=data, promote_if_better=promote_if_better, metric=metric,
                             min_improvement=min_improvement, min_scoring_rows=min_scoring_rows, if_alert=if_alert,
                             registry_root=registry, runs_dir=runs_dir)
    if as_json:
        print_json(result)
        return
    _render_retrain(result)


def _render_retrain(result: dict[str, Any]) -> None:
    """The decision line, then champion and challenger scores side by side in one aligned table."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from aitrader.cli._output import console, fmt_num

    out = console()
    out.print(Text(str(result["message"])), soft_wrap=False)
    rows = [(role, result[role]) for role in ("champion", "challenger")
            if isinstance(result.get(role), dict) and result[role].get("scores")]
    if not rows:
        return
    table = Table(box=box.SIMPLE_HEAD)
    for col in ("role", "model", "IC", "Sharpe", "MAE"):
        table.add_column(col, justify="left" if col in ("role", "model") else "right", no_wrap=True)
    for role, entry in rows:
        sc = entry["scores"]
        table.add_row(role, Text(str(entry.get("model_id"))), fmt_num(sc.get("ic"), 4), fmt_num(sc.get("sharpe"), 2),
                      fmt_num(sc.get("mae"), 5))
    out.print(table)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("monitor")(monitor)
    app.command("retrain")(retrain)
