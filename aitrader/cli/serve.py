"""CLI of the prediction service: ``serve`` (the server), ``serve keygen``, ``serve call``, ``serve resend``.

The logic lives in :mod:`aitrader.serve`; these commands parse options and call it.
"""

from __future__ import annotations

import json
from typing import Any

import typer

serve_app = typer.Typer(help="The prediction service over ZeroMQ (docs/serving.md).", no_args_is_help=False,
                        invoke_without_command=True)

ENDPOINT_HELP = "Service endpoint, e.g. tcp://127.0.0.1:5555."


@serve_app.callback(invoke_without_command=True)
def serve_cmd(
    ctx: typer.Context,
    model: list[str] = typer.Option(None, "--model", help="Serve this registered model: NAME (its production "
                                    "version, reloadable), NAME@alias or NAME:vN (pinned); repeatable."),
    bind: str = typer.Option("tcp://127.0.0.1:5555", "--bind", help="ZeroMQ endpoint to bind (loopback unless "
                             "--allow-remote with CURVE)."),
    registry: str | None = typer.Option(None, "--registry", envvar="AITRADER_REGISTRY", show_envvar=False,
                                        help="Registry root folder (default: $AITRADER_REGISTRY, else ./models)."),
    runs_dir: str = typer.Option("runs", "--runs-dir", help="Feedback goes to RUNS_DIR/serve-NAME/ledger.db; "
                                 "train jobs score live outcomes from here."),
    jobs_dir: str = typer.Option("logs/serve-jobs", "--jobs-dir", help="Folder of the train jobs' output."),
    deadline_ms: float = typer.Option(1000.0, "--deadline-ms", help="Longest a model call may take before its "
                                      "request gets an error reply (a request may ask for less; a watchdog answers it "
                                      "and serves on); 0: no deadline."),
    max_bytes: int = typer.Option(64 * 1024 * 1024, "--max-bytes", help="Largest request accepted (bytes)."),
    min_confidence: float = typer.Option(0.6, "--min-confidence", help="Confidence below which a signal is NEUTRAL."),
    strong_confidence: float = typer.Option(0.85, "--strong-confidence", help="Confidence from which a signal is "
                                            "STRONG_BUY/STRONG_SELL."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a non-loopback --bind (needs CURVE)."),
    curve_secret: str | None = typer.Option(None, "--curve-secret", help="The server's .key_secret file "
                                            "(aitrader serve keygen): turns on CURVE encryption and auth."),
    curve_clients: str | None = typer.Option(None, "--curve-clients", help="Folder of the allowed clients' public "
                                             ".key files."),
) -> None:
    """Serve registered models over ZeroMQ: predict, info, health, reload, train, job, feedback."""
    if ctx.invoked_subcommand is not None:
        return
    from aitrader.serve.service import serve

    serve(models=model or [], bind=bind, registry_root=registry, runs_dir=runs_dir, jobs_dir=jobs_dir,
          deadline_ms=deadline_ms, max_bytes=max_bytes, min_confidence=min_confidence,
          strong_confidence=strong_confidence, allow_remote=allow_remote, curve_secret=curve_secret,
          curve_clients=curve_clients)


@serve_app.command("keygen")
def keygen_cmd(
    out: str = typer.Option("keys", "--out", help="Folder to write NAME.key and NAME.key_secret into."),
    name: str = typer.Option("server", "--name", help="Base name of the key pair (server, client1, ...)."),
    json_out: bool = typer.Option(False, "--json", help="Print exactly one JSON document on stdout."),
) -> None:
    """Create a CURVE key pair for the server or a client."""
    from aitrader.serve.security import keygen

    paths = keygen(out, name)
    if json_out:
        typer.echo(json.dumps(paths))
    else:
        typer.echo(f"public key: {paths['public']}\nsecret key: {paths['secret']} (keep it private)")


@serve_app.command("call")
def call_cmd(
    op: str = typer.Argument(..., help="info | health | reload | train | job."),
    endpoint: str = typer.Option("tcp://127.0.0.1:5555", "--endpoint", help=ENDPOINT_HELP),
    model: str | None = typer.Option(None, "--model", help="Served model name (reload, train)."),
    data: str | None = typer.Option(None, "--data", help="train: the bars file (parquet or CSV) on the server."),
    job: str | None = typer.Option(None, "--job", help="job: the id train returned."),
    timeout_ms: float = typer.Option(30_000.0, "--timeout-ms", help="How long to wait for the reply."),
    curve_server: str | None = typer.Option(None, "--curve-server", help="The server's public .key file (CURVE)."),
    curve_secret: str | None = typer.Option(None, "--curve-secret", help="This client's .key_secret file (CURVE)."),
) -> None:
    """Send one operation to a running service and print its reply as JSON."""
    from aitrader.serve.service import call

    reply = call(op, endpoint=endpoint, model=model, data=data, job=job, timeout_ms=timeout_ms,
                 curve_server=curve_server, curve_secret=curve_secret)
    typer.echo(json.dumps(reply, default=_plain, sort_keys=True))


@serve_app.command("resend")
def resend_cmd(
    run_id: str = typer.Argument(..., help="The paper-trade run whose outcomes to send again."),
    endpoint: str = typer.Option("tcp://127.0.0.1:5555", "--endpoint", help=ENDPOINT_HELP),
    runs_dir: str = typer.Option("runs", "--runs-dir", help="Folder holding the runs."),
) -> None:
    """Send a run's recorded predictions and outcomes to the service's feedback store (idempotent)."""
    from aitrader.serve.service import resend

    typer.echo(json.dumps(resend(run_id, endpoint=endpoint, runs_dir=runs_dir)))


def _plain(value: Any) -> Any:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def register(app: typer.Typer) -> None:
    """Attach the ``serve`` group to the root app."""
    app.add_typer(serve_app, name="serve")
