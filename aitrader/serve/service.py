"""What the ``serve`` commands call: ``serve`` (run a server until SIGTERM), ``call``, ``resend``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from aitrader.errors import ConfigError


def serve(*, models: list[str], bind: str, registry_root: str | None, runs_dir: str, jobs_dir: str,
          deadline_ms: float, max_bytes: int, min_confidence: float, strong_confidence: float,
          allow_remote: bool, curve_secret: str | None, curve_clients: str | None) -> int:
    """Check the options, load and verify every model, then serve until SIGTERM/SIGINT (returns 0)."""
    from aitrader.serve.models import load_served
    from aitrader.serve.security import CurveSetup, check_bind
    from aitrader.serve.server import Server, ServerOptions

    if not models:
        raise ConfigError("serve needs at least one --model NAME (NAME@alias, NAME:vN)")
    if not 0 <= deadline_ms <= 3_600_000:
        raise ConfigError(f"--deadline-ms must be between 0 (no deadline) and 3600000, got {deadline_ms}")
    if max_bytes < 1024:
        raise ConfigError(f"--max-bytes must be at least 1024, got {max_bytes}")
    if not 0 <= min_confidence <= strong_confidence <= 1:
        raise ConfigError(f"need 0 <= --min-confidence ({min_confidence}) <= --strong-confidence "
                          f"({strong_confidence}) <= 1")
    if (curve_secret is None) != (curve_clients is None):
        raise ConfigError("CURVE needs both --curve-secret (the server's .key_secret) and --curve-clients (the "
                          "folder of allowed client .key files)")
    curve = CurveSetup(Path(curve_secret), Path(curve_clients)) if curve_secret and curve_clients else None
    check_bind(bind, allow_remote=allow_remote, curve=curve)
    served = [load_served(registry_root, ref) for ref in models]
    opts = ServerOptions(bind=bind, registry_root=registry_root, runs_dir=runs_dir, jobs_dir=jobs_dir,
                         max_bytes=max_bytes, deadline_ms=deadline_ms, min_confidence=min_confidence,
                         strong_confidence=strong_confidence, curve=curve)
    server = Server(served, opts)

    def ready(endpoint: str) -> None:
        names = ", ".join(f"{m.model_id} ({m.digest[:12]})" for m in served)
        sys.stderr.write(f"serving {names} on {endpoint}{' with CURVE' if curve else ''}\n")
        sys.stderr.flush()

    return server.run(ready=ready)


def _client(endpoint: str, timeout_ms: float, curve_server: str | None, curve_secret: str | None) -> Any:
    from aitrader.serve.client import ServiceClient
    from aitrader.serve.security import CurveClient

    if (curve_server is None) != (curve_secret is None):
        raise ConfigError("a CURVE client needs both --curve-server (the server's .key) and --curve-secret "
                          "(this client's .key_secret)")
    curve = CurveClient(Path(curve_server), Path(curve_secret)) if curve_server and curve_secret else None
    return ServiceClient(endpoint, timeout_ms=timeout_ms, curve=curve)


def call(op: str, *, endpoint: str, model: str | None, data: str | None, job: str | None, timeout_ms: float,
         curve_server: str | None = None, curve_secret: str | None = None) -> dict[str, Any]:
    """One operation; the reply header (errors included, as ``ok: false``); ConfigError when unreachable."""
    from aitrader.serve.client import ServiceError

    ops = ("info", "health", "reload", "train", "job")
    if op not in ops:
        import difflib

        close = difflib.get_close_matches(op, ops, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"op {op!r} is not supported; {hint}use one of {', '.join(ops)} (predict and feedback "
                          "come from the client library or paper-trade)")
    fields: dict[str, Any] = {k: v for k, v in (("model", model), ("job", job)) if v is not None}
    if op == "train":
        if model is None or data is None:
            raise ConfigError("train needs --model NAME and --data PATH")
        fields = {"name": model, "data": data}
    client = _client(endpoint, timeout_ms, curve_server, curve_secret)
    try:
        return client.call(op, **fields)
    except ServiceError as exc:
        if exc.code in ("timeout", "unreachable"):
            raise ConfigError(f"{exc}; is aitrader serve running on {endpoint}?") from exc
        return {"ok": False, "code": exc.code, "error": str(exc)}
    finally:
        client.close()


def resend(run_id: str, *, endpoint: str, runs_dir: str) -> dict[str, int]:
    from aitrader.serve.client import ServiceError, resend_feedback
    from aitrader.trading.ledger import validate_run_id

    client = _client(endpoint, 10_000.0, None, None)
    try:
        return resend_feedback(Path(runs_dir) / validate_run_id(run_id, "RUN_ID"), client)
    except ServiceError as exc:
        raise ConfigError(f"feedback not sent: {exc}; start aitrader serve on {endpoint} and run this again") \
            from exc
    finally:
        client.close()
