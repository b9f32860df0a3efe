"""CLI of the Redis Streams pipeline: feed, predict-worker, bus status|tail|dlq (logic in aitrader.bus).

``paper-trade --bus URL`` is the trading side; its option lives in cli/trade.py and calls
:func:`run_trader` here.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import typer

from aitrader.cli._output import print_json

BUS_HELP = "Redis url: redis://HOST:PORT/DB or unix:///PATH (default: bus.url of the trading config)."
CONFIG_HELP = "Trading config with the bus: section (default: config/ml_trading_config.yaml)."
JSON_HELP = "Print exactly one JSON document on stdout."


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT/SIGTERM end the process's loop cleanly (after the current batch)."""
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _bus_config(config: str | None) -> Any:
    from aitrader.config import load_trading_config

    return load_trading_config(config)


def _render(doc: dict[str, Any], json_out: bool, title: str) -> None:
    if json_out:
        print_json(doc)
        return
    from aitrader.cli._output import console

    out = console()
    out.print(f"[bold]{title}[/bold]")
    for k, v in doc.items():
        out.print(f"  {k}: {v}")


def feed_cmd(
    data: list[str] = typer.Option(..., "--data", help="Bars as SYMBOL=PATH (or a file/directory); repeatable."),
    bus: str | None = typer.Option(None, "--bus", help=BUS_HELP),
    speed: float = typer.Option(0.0, "--speed", min=0.0, help="0: as fast as possible; K: K times the bars' cadence."),
    follow: bool = typer.Option(False, "--follow", help="Keep tailing the one --data file as bars are appended."),
    config: str | None = typer.Option(None, "--config", help=CONFIG_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Publish bars onto the bus as market.data.update events, sharded by symbol."""
    from aitrader.bus.feed import feed

    cfg = _bus_config(config)
    with _stop_on_signals() as stop:  # rendering inside: a late SIGTERM cannot cut the output short
        result = feed(cfg.bus, bus, data, speed=speed, follow=follow, stop=stop)
        _render(result, json_out, "feed")


def predict_worker_cmd(
    bus: str | None = typer.Option(None, "--bus", help=BUS_HELP),
    model: list[str] = typer.Option(None, "--model", help="Serve this registered model (NAME, NAME:vN, NAME@alias) "
                                    "instead of the config's models; repeatable."),
    config: str | None = typer.Option(None, "--config", help=CONFIG_HELP),
    registry: str | None = typer.Option(None, "--registry", envvar="AITRADER_REGISTRY", show_envvar=False,
                                        help="Registry root folder (default: $AITRADER_REGISTRY, else ./models)."),
    max_idle: float | None = typer.Option(None, "--max-idle", min=0.1,
                                          help="Exit after this many seconds without a new bar (default: run on)."),
    book: list[str] = typer.Option(None, "--book", help="Order-book snapshots for models with book features: "
                                   "SYMBOL=PATH (repeatable) or one PATH (docs/orderbook.md)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Consume bars, keep streaming features, publish ml.prediction.ready (shards leased among workers)."""
    from aitrader.bus.worker import PredictWorker
    from aitrader.features.book import parse_book_options

    cfg = _bus_config(config)
    books = parse_book_options(book)
    with _stop_on_signals() as stop:  # rendering inside: a late SIGTERM cannot cut the output short
        worker = PredictWorker(cfg, bus, registry_root=registry, models=model or None, stop=stop, books=books)
        result = worker.run(max_idle_s=max_idle)
        _render(result, json_out, "predict-worker")


def run_trader(*, bus: str, config: str | None, model: list[str] | None, run_id: str | None, resume: str | None,
               registry: str | None, runs_dir: str, state: str | None, allow_in_sample: bool) -> dict[str, Any]:
    """``paper-trade --bus``: the trading side over the bus (aitrader.bus.trader)."""
    from aitrader.bus.trader import paper_trade_bus

    return paper_trade_bus(url=bus, config_path=config, run_id=run_id, resume=resume, registry_root=registry,
                           runs_dir=runs_dir, state_dir=state, models=model, allow_in_sample=allow_in_sample)


def refuse_plain_resume(*, runs_dir: str, resume: str, state: str | None) -> None:
    """``paper-trade --resume R`` of a run that was started with ``--bus``: say to pass ``--bus``."""
    import json
    import sqlite3

    from aitrader.errors import TradingError
    from aitrader.trading.ledger import LEDGER_NAME, connect
    from aitrader.trading.service import resolve_run

    path = resolve_run(runs_dir, resume, state, "--resume") / LEDGER_NAME
    if not path.is_file():
        return  # paper-trade's own checks say what is wrong
    try:
        conn = connect(path, readonly=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'request'").fetchone()
        finally:
            conn.close()
        request = json.loads(row[0]) if row else {}
    except (sqlite3.Error, ValueError, TypeError, TradingError):
        return  # likewise
    if isinstance(request, dict) and isinstance(request.get("bus"), dict):
        raise TradingError(f"run {resume} was started with --bus (it trades the predict-workers' events, not "
                           f"--data); resume it with aitrader paper-trade --bus URL --resume {resume}")


def monitor_bus(*, bus: str | None, follow: bool, config: str | None, window: int | None, as_json: bool,
                max_idle_s: float | None = None) -> int:
    """``monitor --bus URL --follow``: live accuracy from feedback events; 3 when the last state alerted."""
    import json

    from aitrader.bus.feedback import follow_feedback
    from aitrader.errors import AitraderError

    if bus is None or not follow:
        raise AitraderError("--bus and --follow go together: aitrader monitor --bus URL --follow "
                            "(without them monitor checks a run's ledger)")
    cfg = _bus_config(config)

    def emit(row: dict[str, Any]) -> None:
        if as_json:
            typer.echo(json.dumps(row, allow_nan=False, default=str))
        else:
            flag = "  ALERT " + ", ".join(a["code"] for a in row["alerts"]) if row["alerts"] else ""
            hit = "-" if row["hit_rate"] is None else f"{row['hit_rate']:.3f}"
            mae = "-" if row["mae"] is None else f"{row['mae']:.5f}"
            typer.echo(f"{row['run_id']} {row['model_id']} {row['symbol']}: n={row['n']} hit_rate={hit} "
                       f"mae={mae}{flag}")

    with _stop_on_signals() as stop:
        result = follow_feedback(cfg, bus, emit=emit, window=window, stop=stop, max_idle_s=max_idle_s)
    return 3 if result["alerts"] else 0


def status_cmd(
    bus: str | None = typer.Option(None, "--bus", help=BUS_HELP),
    config: str | None = typer.Option(None, "--config", help=CONFIG_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Streams (length, groups, pending, lag), live processes (breaker, events/s) and shard leases."""
    from aitrader.bus.client import Bus
    from aitrader.bus.ops import status

    cfg = _bus_config(config)
    doc = status(Bus(cfg.bus, bus, role="ops"))
    if json_out:
        print_json(doc)
        return
    _status_tables(doc)


def _status_tables(doc: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    from aitrader.cli._output import console

    t = Table(title=f"bus {doc['url']} (redis {doc['redis_version']}, {doc['used_memory']} B)", box=box.SIMPLE_HEAD)
    for col in ("stream", "length", "group", "consumers", "pending", "lag"):
        t.add_column(col)
    for s in doc["streams"]:
        for g in s["groups"] or [{}]:
            t.add_row(s["stream"], str(s["length"]), g.get("group", ""), str(g.get("consumers", "")),
                      str(g.get("pending", "")), str(g.get("lag", "")))
    p = Table(title="processes", box=box.SIMPLE_HEAD)
    p.add_column("name", no_wrap=True)
    for col in ("role", "breaker", "buffered", "events/s", "consumed", "published", "dead letters", "age s"):
        p.add_column(col)
    for r in doc["processes"]:
        p.add_row(r["name"], r.get("role", ""), r.get("breaker", ""), str(r.get("buffered", "")),
                  str(r.get("events_per_s", "")), str(r.get("consumed", "")), str(r.get("published", "")),
                  str(r.get("dead_letters", "")), str(r.get("age_s", "")))
    out = console()
    out.print(t)
    out.print(p)
    out.print("leases: " + ", ".join(f"{k}={v or '-'}" for k, v in doc["leases"].items()))


def tail_cmd(
    stream: str = typer.Argument(..., help="Stream name without the prefix, e.g. predictions, bars:0, trades."),
    count: int = typer.Option(20, "--count", "-n", min=1, max=100_000, help="How many of the last entries."),
    bus: str | None = typer.Option(None, "--bus", help=BUS_HELP),
    config: str | None = typer.Option(None, "--config", help=CONFIG_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """The last entries of one stream, decoded."""
    from aitrader.bus.client import Bus
    from aitrader.bus.ops import tail

    cfg = _bus_config(config)
    rows = tail(Bus(cfg.bus, bus, role="ops"), stream, count)
    if json_out:
        print_json({"entries": rows})
        return
    for r in rows:
        typer.echo(f"{r['id']}  {r.get('type', '?')}  {r.get('event_id', '')}  "
                   f"{r.get('data', r.get('undecodable', ''))}")


def dlq_cmd(
    requeue: bool = typer.Option(False, "--requeue", help="Put every dead letter back on its stream."),
    bus: str | None = typer.Option(None, "--bus", help=BUS_HELP),
    config: str | None = typer.Option(None, "--config", help=CONFIG_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Dead letters of every stream with their reasons (--requeue: retry them)."""
    from aitrader.bus.client import Bus
    from aitrader.bus.ops import dlq

    cfg = _bus_config(config)
    doc = dlq(Bus(cfg.bus, bus, role="ops"), requeue=requeue)
    if json_out:
        print_json(doc)
        return
    for r in doc["dead_letters"]:
        typer.echo(f"{r['stream']} {r['id']}  {r.get('reason', '')}  (by {r.get('consumer', '')})")
    typer.echo(f"{doc['count']} dead letter(s), {doc['requeued']} requeued", err=True)


def register(app: typer.Typer) -> None:
    """Attach feed, predict-worker and the bus group to the root app."""
    app.command("feed")(feed_cmd)
    app.command("predict-worker")(predict_worker_cmd)
    group = typer.Typer(help="Operate the Redis Streams bus: status, tail STREAM, dlq [--requeue].",
                        no_args_is_help=True)
    group.command("status")(status_cmd)
    group.command("tail")(tail_cmd)
    group.command("dlq")(dlq_cmd)
    app.add_typer(group, name="bus")
