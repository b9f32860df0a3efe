"""CLI commands of paper trading: paper-trade, status, export (logic in aitrader.trading.service)."""

from __future__ import annotations

import sys
from typing import Any

import typer

from aitrader.cli._exit import skip_final_collections  # a few lines, no imports: --help loads it too
from aitrader.cli._output import print_json

JSON_HELP = "Print exactly one JSON document on stdout."
RUNS_HELP = "Folder holding the runs (runs/RUN_ID/ledger.db)."
MODEL_HELP = ("Trade this registered model (NAME: its production version, NAME:vN, NAME@alias) instead of the "
              "config's models; repeatable. Its symbol: --data SYMBOL=PATH, else the one it was trained on.")
MISMATCH_HELP = "Let a model trade another symbol than the one it was trained on."
WORKERS_HELP = ("Threads for a replay's batch predictions: N >= 1 (1: none; 2 uses a second core) or auto "
                "(2 when a core is free, else 1).")
BACKEND_HELP = ("Runner backend: auto (the compiled trees its deploy made, else ONNX), compiled, onnx or native. "
                "Default: $AITRADER_BACKEND, else auto.")


def paper_trade_cmd(
    config: str | None = typer.Option(None, "--config", help="Trading config (default: config/ml_trading_config.yaml).",
    ),
    model: list[str] = typer.Option(None, "--model", help=MODEL_HELP),
    data: list[str] = typer.Option(
        None, "--data", help="Bars: a file, a directory (one file per symbol) or SYMBOL=PATH; repeatable. "
        "Default: the built-in sample after the model's training period."),
    state: str | None = typer.Option(None, "--state", help="Run folder (default: RUNS_DIR/RUN_ID)."),
    run_id: str | None = typer.Option(None, "--run-id", help="Name of a new run (default: time-stamped)."),
    resume: str | None = typer.Option(None, "--resume", help="Continue this stopped or killed run."),
    speed: float = typer.Option(0.0, "--speed", help="0: as fast as possible; K: K times the bars' own cadence."),
    follow: bool = typer.Option(
        False, "--follow", help="Tail the --data file as bars are appended, until SIGINT/SIGTERM."
    ),
    registry: str | None = typer.Option(
        None, "--registry", envvar="AITRADER_REGISTRY", show_envvar=False,
        help="Registry root folder (default: $AITRADER_REGISTRY, else ./models)."),
    max_bars: int | None = typer.Option(None, "--max-bars", min=1, help="Stop after this many new bars."),
    runs_dir: str = typer.Option("runs", "--runs-dir", help=RUNS_HELP),
    start: str | None = typer.Option(
        None, "--from", help="Trade from this date/time on (default: the model's first unseen bar)."),
    end: str | None = typer.Option(None, "--to", help="Trade up to this date/time (a date: the whole day)."),
    allow_in_sample: bool = typer.Option(
        False, "--allow-in-sample", help="Allow trading bars the model was trained on (monitor flags the run)."),
    pin: bool = typer.Option(
        False, "--pin", help="With --follow: keep the versions the run started with (no live model swaps)."),
    allow_symbol_mismatch: bool = typer.Option(False, "--allow-symbol-mismatch", help=MISMATCH_HELP),
    model_endpoint: str | None = typer.Option(
        None, "--model-endpoint", help="Predict through this aitrader serve (tcp://HOST:PORT) instead of in-process."),
    book: list[str] = typer.Option(None, "--book", help="Order-book snapshots for models with book features: "
                                   "SYMBOL=PATH (repeatable) or one PATH (docs/orderbook.md)."),
    bus: str | None = typer.Option(
        None, "--bus", help="Trade the predictions of predict-workers over Redis Streams (redis://HOST:PORT/DB or "
        "unix:///PATH; docs/bus.md) instead of replaying --data."),
    backend: str | None = typer.Option(None, "--backend", help=BACKEND_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    workers: str = typer.Option("auto", "--workers", help=WORKERS_HELP),
    ledger_thread: bool = typer.Option(False, "--ledger-thread", help=(
        "A replay at --speed 0 commits its ledger on a writer thread (the same ledger; docs/trading.md).")),
) -> None:
    """Paper-trade the production models on replayed or live bars into a resumable SQLite ledger."""
    from aitrader._memory import settle_for_long_run
    from aitrader.trading.service import paper_trade

    settle_for_long_run()

    if bus is not None:  # the trading side of the Redis Streams pipeline (aitrader/cli/bus.py)
        from aitrader.cli.bus import run_trader
        from aitrader.errors import ConfigError

        ignored = [name for name, given in (
            ("--data", bool(data)), ("--speed", speed != 0.0), ("--follow", follow), ("--max-bars", max_bars),
            ("--from", start), ("--to", end), ("--pin", pin), ("--allow-symbol-mismatch", allow_symbol_mismatch),
            ("--model-endpoint", model_endpoint), ("--book", bool(book)), ("--backend", backend),
            ("--workers", workers != "auto"), ("--ledger-thread", ledger_thread)) if given]
        if ignored:  # silently dropping them would trade something else than the user asked for
            raise ConfigError(f"paper-trade --bus takes its bars and predictions from the bus, so {', '.join(ignored)} "
                              "would be ignored; drop them (bars go to `aitrader feed`, model options to "
                              "`aitrader predict-worker`; docs/bus.md)")

        return _render(run_trader(bus=bus, config=config, model=model or None, run_id=run_id, resume=resume,
                                  registry=registry, runs_dir=runs_dir, state=state,
                                  allow_in_sample=allow_in_sample), json_out, "paper-trade --bus")
    if resume is not None:  # a run started with --bus resumes only with --bus
        from aitrader.cli.bus import refuse_plain_resume

        refuse_plain_resume(runs_dir=runs_dir, resume=resume, state=state)
    view = "live" if sys.stdout.isatty() and not json_out else "log"
    books: str | dict[str, str] | None = None  # the book modules load only for --book (none: None, as parsed)
    if book:
        from aitrader.features.book import parse_book_options

        books = parse_book_options(book)
    summary = paper_trade(config_path=config, data=data or None, state_dir=state, run_id=run_id, resume=resume,
                          speed=speed, follow=follow, registry_root=registry, max_bars=max_bars, runs_dir=runs_dir,
                          view=view, start=start, end=end, allow_in_sample=allow_in_sample, models=model or None,
                          allow_symbol_mismatch=allow_symbol_mismatch, pin=pin, model_endpoint=model_endpoint,
                          books=books, backend=backend,
                          workers=workers, ledger_thread=ledger_thread)
    _render(summary, json_out, "paper-trade")
    for warning in summary.get("warnings") or []:  # a compiled backend that fell back to ONNX
        typer.echo(f"warning: {warning}", err=True)
    if not follow and resume is None:  # a new replay closed its ledger, registry and bar files (cli/_exit.py);
        skip_final_collections()  # a resumed run may be a --follow one (recorded in its ledger): full exit


def status_cmd(
    run_id: str | None = typer.Argument(None, help="Run to show (default: the most recently updated run)."),
    runs_dir: str = typer.Option("runs", "--runs-dir", help=RUNS_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """State of a run: running/stopped/finished, cursor, equity, positions, enabled models."""
    from aitrader.trading.service import run_status

    _render(run_status(run_id, runs_dir), json_out, "status")
    skip_final_collections()  # the ledger is closed (cli/_exit.py)


def export_cmd(
    run_id: str = typer.Argument(..., help="Run to export from."),
    table: str = typer.Argument(
        ..., help="fills | orders | equity | predictions | events | positions | trades (round trips)."),
    out: str | None = typer.Option(None, "--out", help="Write .csv, .csv.gz or .parquet here (default: CSV on stdout).",
    ),
    runs_dir: str = typer.Option("runs", "--runs-dir", help=RUNS_HELP),
) -> None:
    """Export one ledger table as CSV or parquet."""
    from aitrader.trading.service import export_table

    text = export_table(run_id, table, out, runs_dir)
    if text is not None:
        sys.stdout.write(text)
    else:
        typer.echo(f"wrote {out}", err=True)
    skip_final_collections()  # the ledger and the written file are closed (cli/_exit.py)


def _render(summary: dict[str, Any], json_out: bool, title: str) -> None:
    if json_out:
        print_json(summary)
        return
    from aitrader.cli._output import render_run_summary

    render_run_summary(summary, title)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("paper-trade")(paper_trade_cmd)
    app.command("status")(status_cmd)
    app.command("export")(export_cmd)
