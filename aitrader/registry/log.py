"""The append-only deploy log: who changed an alias, when, from which version to which, and why.

Three kinds of row, all in ``deploy_log`` (triggers abort any UPDATE or DELETE):

- ``promote`` and ``rollback``: an attempt to move an alias, with the deploy checks' results and
  status ``success`` or ``failed``. Only successful rows of these two actions moved an alias, so
  only they count for ``history --at`` and for ``--rollback``;
- ``evaluate``: a decision about a challenger that may have moved nothing (``record_decision``):
  ``to_version`` is the challenger, ``from_version`` what the alias held, ``status`` the decision
  (``promoted``, ``rejected``, ``unchanged``, ``registered``) and ``details`` the scores (JSON).
"""

from __future__ import annotations

import getpass
import json
import math
import socket
import sqlite3
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aitrader.errors import RegistryError
from aitrader.registry.names import DEFAULT_ALIAS, validate_alias, validate_name
from aitrader.registry.types import CheckResult, DeployEvent, History

if TYPE_CHECKING:
    from aitrader.registry.store import Registry

ALIAS_ACTIONS = ("promote", "rollback")  # the actions that move an alias (when status is success)
EVALUATE = "evaluate"
DECISIONS = ("promoted", "rejected", "unchanged", "registered")
MAX_DETAILS_BYTES = 64_000  # the log is read whole by `history`: keep an entry a summary, not a dump


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def who() -> tuple[str, str]:
    """(user, host) for the audit trail; never fails."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return user, socket.gethostname() or "unknown"


def append(
    conn: sqlite3.Connection,
    *,
    name: str,
    alias: str,
    action: str,
    from_version: int | None,
    to_version: int,
    status: str,
    checks: list[CheckResult],
    reason: str | None,
    details: dict[str, Any] | None = None,
) -> DeployEvent:
    """INSERT one row inside the caller's write transaction and return it as an event."""
    user, host = who()
    ts = now_iso()
    checks_list = [c.to_dict() for c in checks]
    cur = conn.execute(
        "INSERT INTO deploy_log (ts, user, host, name, alias, action, from_version, to_version, status, checks,"
        " reason, details) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            ts,
            user,
            host,
            name,
            alias,
            action,
            from_version,
            to_version,
            status,
            json.dumps(checks_list),
            reason,
            None if details is None else json.dumps(details, sort_keys=True, allow_nan=False),
        ),
    )
    return DeployEvent(
        int(cur.lastrowid or 0), ts, user, host, name, alias, action, from_version, to_version, status,
        checks_list, reason, details,
    )


def last_alias_change(conn: sqlite3.Connection, name: str, alias: str) -> sqlite3.Row | None:
    """The latest successful promote/rollback row of ``alias`` (evaluate rows never count)."""
    row: sqlite3.Row | None = conn.execute(
        "SELECT from_version, to_version FROM deploy_log WHERE name=? AND alias=? AND status='success' "
        "AND action IN (?, ?) ORDER BY id DESC LIMIT 1",
        (name, alias, *ALIAS_ACTIONS),
    ).fetchone()
    return row


def _strict(value: Any, where: str) -> Any:
    """A copy with NaN/inf as None; RegistryError naming the first value JSON cannot hold."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item):  # a numpy scalar
        return _strict(value.item(), where)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise RegistryError(f"details key {k!r} at {where} is not a string; use string keys")
            out[k] = _strict(v, f"{where}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [_strict(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise RegistryError(
        f"details value at {where} is a {type(value).__name__}, which the deploy log cannot store; "
        "pass numbers, strings, booleans, None, lists or dicts"
    )


def record_decision(
    registry: Registry,
    model_id: str,
    *,
    alias: str = DEFAULT_ALIAS,
    decision: str,
    reason: str,
    details: dict[str, Any] | None = None,
) -> DeployEvent:
    """Append an ``evaluate`` row: ``decision`` about ``model_id`` against what ``alias`` holds.

    Moves no alias. ``promoted`` is accepted only when ``alias`` already points at ``model_id``
    (record it after the deploy), so the log never claims a promotion that did not happen.
    """
    validate_alias(alias)
    if decision not in DECISIONS:
        raise RegistryError(f"unknown decision {decision!r}; expected one of {', '.join(DECISIONS)}")
    if not isinstance(reason, str) or not reason.strip():
        raise RegistryError("a decision needs a reason (why the challenger was or was not promoted); pass reason=")
    if details is not None and not isinstance(details, dict):
        raise RegistryError(f"details must be a dict of scores, got {type(details).__name__}")
    clean = _strict(details, "details") if details is not None else None
    if clean is not None and len(json.dumps(clean)) > MAX_DETAILS_BYTES:
        raise RegistryError(
            f"details are {len(json.dumps(clean))} bytes as JSON, above {MAX_DETAILS_BYTES}; record the scores "
            "and a reference to the full report, not the report itself"
        )
    info = registry.resolve(model_id)
    with registry._writer().write() as conn:
        row = conn.execute("SELECT version FROM aliases WHERE name=? AND alias=?", (info.name, alias)).fetchone()
        holder = row[0] if row else None
        if decision == "promoted" and holder != info.version:
            held = f"v{holder}" if holder else "nothing"
            raise RegistryError(
                f"cannot record {info.model_id} as promoted: {alias} holds {held}; deploy it first "
                f"(Registry.deploy / aitrader deploy --model-id {info.model_id}), then record the decision"
            )
        return append(
            conn,
            name=info.name,
            alias=alias,
            action=EVALUATE,
            from_version=holder,
            to_version=info.version,
            status=decision,
            checks=[],
            reason=reason.strip(),
            details=clean,
        )


# ---------------------------------------------------------------------- history


def parse_timestamp(text: str) -> datetime:
    """ISO-8601 date or date-time; a naive value is taken as UTC."""
    try:
        ts = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RegistryError(
            f"invalid timestamp {text!r}: expected ISO-8601 such as 2026-11-21 or 2026-11-21T10:00:00+00:00"
        ) from None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _event(r: sqlite3.Row) -> DeployEvent:
    raw = r["details"] if "details" in r.keys() else None  # a schema 1 index read before any writer migrated it
    return DeployEvent(
        r["id"],
        r["ts"],
        r["user"],
        r["host"],
        r["name"],
        r["alias"],
        r["action"],
        r["from_version"],
        r["to_version"],
        r["status"],
        json.loads(r["checks"]),
        r["reason"],
        json.loads(raw) if raw else None,
    )


def history(registry: Registry, name: str, at: str | None = None) -> History:
    """The deploy log of ``name`` (oldest first) and, with ``at``, which version held each alias then."""
    validate_name(name)
    when = parse_timestamp(at) if at is not None else None  # a bad --at fails before any read
    registry.list_versions(name)  # ModelNotFoundError for an unknown name
    index = registry._reader()
    assert index is not None
    with index.read() as conn:
        rows = conn.execute("SELECT * FROM deploy_log WHERE name=? ORDER BY id", (name,)).fetchall()
        current = {
            r[0]: r[1] for r in conn.execute("SELECT alias, version FROM aliases WHERE name=? ORDER BY alias", (name,))
        }
    events = [_event(r) for r in rows]
    result = History(name=name, events=events, current=current)
    if when is not None:
        result.at = when.isoformat()
        for alias in sorted({e.alias for e in events} | set(current)):
            held: int | None = None
            for e in events:
                moved = e.action in ALIAS_ACTIONS and e.status == "success"
                if e.alias == alias and moved and datetime.fromisoformat(e.ts) <= when:
                    held = e.to_version
            result.holders[alias] = held
    return result
