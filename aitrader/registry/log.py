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
from typing import Any

from aitrader.errors import RegistryError
from aitrader.registry import journal
from aitrader.registry.catalog import Catalog
from aitrader.registry.index import rebuild_hint
from aitrader.registry.names import DEFAULT_ALIAS, parse_model_id, validate_alias, validate_name
from aitrader.registry.types import CheckResult, DeployEvent, History

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


def journal_event(event: DeployEvent) -> dict[str, Any]:
    """The ``deploy_log.jsonl`` line of a committed deploy-log row."""
    return {"event": "deploy_log", **event.to_dict()}


def copy_to_journal(catalog: Catalog, event: DeployEvent) -> None:
    """After the commit: append the row to the journal (a failure is logged, never raised)."""
    journal.append(catalog.journal_path, journal_event(event))


def alias_holders(conn: sqlite3.Connection, name: str, alias: str) -> list[int]:
    """The versions ``alias`` was moved to, oldest first (successful promote/rollback rows only)."""
    return [
        int(r[0])
        for r in conn.execute(
            "SELECT to_version FROM deploy_log WHERE name=? AND alias=? AND status='success' "
            "AND action IN (?, ?) ORDER BY id",
            (name, alias, *ALIAS_ACTIONS),
        )
    ]


def rollback_target(conn: sqlite3.Connection, name: str, alias: str) -> tuple[int | None, int | None]:
    """(current holder, the previous DIFFERENT version the alias held) from the log's real history.

    Walks the successful moves backwards and skips every one that landed on the current holder,
    so a log with a no-op row (``v2 -> v2``, written by older versions under a race) still rolls
    back to a real earlier version, and rolling back a rollback restores the version it replaced.
    """
    row = conn.execute("SELECT version FROM aliases WHERE name=? AND alias=?", (name, alias)).fetchone()
    holders = alias_holders(conn, name, alias)
    current = int(row[0]) if row is not None else (holders[-1] if holders else None)
    for version in reversed(holders):
        if version != current:
            return current, version
    return current, None


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
    catalog: Catalog,
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
    ref = parse_model_id(model_id)
    catalog.resolve(ref)  # ModelNotFoundError (with the known names) before taking the write lock
    with catalog.writer().write() as conn:
        info = catalog.resolve_in(conn, ref)  # resolved under the write lock: "latest" is current
        row = conn.execute("SELECT version FROM aliases WHERE name=? AND alias=?", (info.name, alias)).fetchone()
        holder = row[0] if row else None
        if decision == "promoted" and holder != info.version:
            held = f"v{holder}" if holder else "nothing"
            raise RegistryError(
                f"cannot record {info.model_id} as promoted: {alias} holds {held}; deploy it first "
                f"(Registry.deploy / aitrader deploy --model-id {info.model_id}), then record the decision"
            )
        event = append(
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
    copy_to_journal(catalog, event)
    return event


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


def _event(catalog: Catalog, r: sqlite3.Row) -> DeployEvent:
    def parsed(column: str) -> Any:
        raw = r[column] if column in r.keys() else None  # details: a schema 1 index read before migration
        if not raw:
            return [] if column == "checks" else None
        try:
            value = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise RegistryError(
                f"registry index {catalog.db_path}: column {column} of deploy-log row {r['id']} is not valid JSON "
                f"({exc}); {rebuild_hint(catalog.root)}"
            ) from exc
        expected = list if column == "checks" else dict
        if not isinstance(value, expected):
            raise RegistryError(
                f"registry index {catalog.db_path}: column {column} of deploy-log row {r['id']} is not a JSON "
                f"{expected.__name__}; {rebuild_hint(catalog.root)}"
            )
        return value

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
        parsed("checks"),
        r["reason"],
        parsed("details"),
    )


def history(catalog: Catalog, name: str, at: str | None = None) -> History:
    """The deploy log of ``name`` (oldest first) and, with ``at``, which version held each alias then."""
    validate_name(name)
    when = parse_timestamp(at) if at is not None else None  # a bad --at fails before any read
    catalog.list_versions(name)  # ModelNotFoundError for an unknown name
    index = catalog.reader()
    assert index is not None
    with index.read() as conn:
        rows = conn.execute("SELECT * FROM deploy_log WHERE name=? ORDER BY id", (name,)).fetchall()
        current = {
            r[0]: r[1] for r in conn.execute("SELECT alias, version FROM aliases WHERE name=? ORDER BY alias", (name,))
        }
    events = [_event(catalog, r) for r in rows]
    result = History(name=name, events=events, current=current)
    if when is not None:
        result.at = when.isoformat()
        for alias in sorted({e.alias for e in events} | set(current)):
            held: int | None = None
            for e in events:
                moved = e.action in ALIAS_ACTIONS and e.status == "success"
                if e.alias == alias and moved and _parse_ts(e.ts) <= when:
                    held = e.to_version
            result.holders[alias] = held
    return result


def _parse_ts(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return datetime.max.replace(tzinfo=UTC)  # a damaged stamp never counts as "before"
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
