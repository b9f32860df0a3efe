"""Result types of the registry (plain dataclasses with ``to_dict`` for ``--json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class VersionInfo:
    """One registered version, as recorded in the index."""

    name: str
    version: int
    model_id: str
    digest: str
    path: Path
    created_at: str
    kind: str | None
    task: str | None
    metrics: dict[str, float]
    tags: dict[str, str]
    trusted: bool
    aliases: list[str]
    pickle_based: bool = False
    size_bytes: int = 0
    reused: bool = False  # register() found the same digest under this name and returned it

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


@dataclass
class FileProblem:
    """One mismatch found by verification."""

    model_id: str
    path: str
    problem: str  # changed | missing | unexpected | checksum_file | index
    expected: str | None = None
    found: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VersionCheck:
    model_id: str
    digest: str
    files: int
    bytes: int
    problems: list[FileProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "digest": self.digest,
            "ok": self.ok,
            "files": self.files,
            "bytes": self.bytes,
            "problems": [p.to_dict() for p in self.problems],
        }


@dataclass
class VerifyReport:
    versions: list[VersionCheck]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.versions)

    @property
    def mismatches(self) -> list[FileProblem]:
        return [p for v in self.versions for p in v.problems]

    def to_dict(self) -> dict[str, Any]:
        total = sum(v.bytes for v in self.versions)
        return {
            "ok": self.ok,
            "versions_checked": len(self.versions),
            "files_checked": sum(v.files for v in self.versions),
            "bytes_checked": total,
            "seconds": round(self.seconds, 6),
            "mismatches": [p.to_dict() for p in self.mismatches],
            "versions": [v.to_dict() for v in self.versions],
        }


@dataclass
class LoadedModel:
    """A verified, deserialised version: its index record, manifest and a prediction runner."""

    info: VersionInfo
    manifest: dict[str, Any]
    runner: Any  # aitrader.models.runner.ModelRunner (imported lazily: it pulls in numpy)
    path: Path
    backend: str = ""  # how the runner's backend was chosen (aitrader.registry.backends)
    warnings: list[str] = field(default_factory=list)  # e.g. a compiled backend that fell back to ONNX


@dataclass
class CheckResult:
    name: str  # hashes | loads | reproduces_sample | feature_contract
    status: str  # passed | failed | skipped
    detail: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DeployResult:
    model_id: str
    name: str
    alias: str
    action: str  # promote | rollback
    from_version: int | None
    to_version: int
    checks: list[CheckResult]
    promoted: bool
    dry_run: bool
    note: str
    log_id: int | None = None
    registered: VersionInfo | None = None  # set by deploy --from-file
    warnings: list[str] = field(default_factory=list)  # e.g. the training verdict says no edge

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["checks"] = [c.to_dict() for c in self.checks]
        out["registered"] = self.registered.to_dict() if self.registered else None
        return out


@dataclass
class DeployEvent:
    """One row of the append-only deploy log.

    ``action`` is ``promote`` or ``rollback`` (an alias change, attempted) or ``evaluate`` (a
    challenger compared with the alias holder; ``to_version`` is the challenger, ``from_version``
    the holder, ``status`` the decision). Only successful promote/rollback rows move an alias.
    """

    id: int
    ts: str
    user: str
    host: str
    name: str
    alias: str
    action: str
    from_version: int | None
    to_version: int
    status: str  # success | failed (promote, rollback); promoted | rejected | unchanged | registered (evaluate)
    checks: list[dict[str, Any]]
    reason: str | None
    details: dict[str, Any] | None = None  # evaluate entries: the scores behind the decision

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class History:
    name: str
    events: list[DeployEvent]
    at: str | None = None
    holders: dict[str, int | None] = field(default_factory=dict)  # alias -> version held at `at`
    current: dict[str, int] = field(default_factory=dict)  # alias -> version now

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "at": self.at,
            "holders": self.holders,
            "current": self.current,
            "events": [e.to_dict() for e in self.events],
        }
