"""The registry: immutable, SHA256-verified version folders plus a SQLite index.

Layout under the root (``./models`` unless ``root`` or ``$AITRADER_REGISTRY`` says otherwise)::

    registry.db                 the index (WAL mode)
    deploy_log.jsonl            append-only copy of registrations and deploy-log rows (for rebuild)
    NAME/vN/...                 the artifact's files, byte for byte
    NAME/vN/checksums.sha256    sha256sum-format list; its SHA256 is the version digest
    NAME/.tmp-*                 a register in progress (or killed); never listed
    NAME/.orphan-vN-*           a folder renamed into place by a register killed before its commit

``Registry`` is the public face, on top of the layers (see ``catalog``): the operations
``register``, ``verify``, ``loading``, ``deploy``, ``log`` and ``rebuild`` each take a ``Catalog``
(the index opened and checked against the disk), never a ``Registry``, so nothing below this
module imports it. The index is the source of truth for what is registered; a version folder on
disk without a row is reported by ``verify`` and recovered by ``rebuild``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aitrader.registry import deploy as _deploy
from aitrader.registry import log as _log
from aitrader.registry import rebuild as _rebuild
from aitrader.registry import register as _register
from aitrader.registry import verify as _verify
from aitrader.registry.catalog import ENV_ROOT, Catalog
from aitrader.registry.loading import clear_cache, load, load_verified
from aitrader.registry.log import now_iso, who
from aitrader.registry.names import DEFAULT_ALIAS, parse_model_id
from aitrader.registry.rebuild import RebuildReport
from aitrader.registry.types import (
    DeployEvent,
    DeployResult,
    History,
    LoadedModel,
    VerifyReport,
    VersionCheck,
    VersionInfo,
)

__all__ = ["DEFAULT_ROOT", "ENV_ROOT", "Registry", "clear_cache", "now_iso", "who"]

DEFAULT_ROOT = "models"


class Registry:
    """A model registry rooted at ``root`` (see the module docstring for the layout)."""

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            root = os.environ.get(ENV_ROOT) or DEFAULT_ROOT
        self.root = Path(root)
        self.catalog = Catalog(self.root)
        self.db_path = self.catalog.db_path

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    def close(self) -> None:
        self.catalog.close()

    def integrity_ok(self) -> bool:
        """SQLite's own integrity check of the index (True when there is no index yet)."""
        return self.catalog.integrity_ok()

    def rebuild(self) -> RebuildReport:
        """Recover the index from the version folders (and ``deploy_log.jsonl``); see ``registry.rebuild``."""
        return _rebuild.rebuild(self.catalog)

    def unindexed(self, name: str | None = None) -> list[str]:
        """``NAME/vN`` folders on disk with no row in the index (``aitrader registry rebuild`` indexes them)."""
        return [f"{n}/v{v}" for n, v in self.catalog.unindexed(name)]

    # ------------------------------------------------------------------ register

    def register(
        self, artifact_dir: str | Path, name: str, *, tags: dict[str, str] | None = None, trust_pickle: bool = False
    ) -> VersionInfo:
        """Copy an artifact folder into ``NAME/vN`` atomically and index it.

        The same digest registered twice under one name returns the existing version
        (``reused=True``); ``trust_pickle`` and new tags are then added to it.
        """
        return _register.register(self.catalog, artifact_dir, name, tags=tags, trust_pickle=trust_pickle)

    # ------------------------------------------------------------------ queries

    def resolve(self, model_id: str) -> VersionInfo:
        """``NAME`` (latest), ``NAME:vN`` or ``NAME@alias`` -> VersionInfo, or ModelNotFoundError."""
        return self.catalog.resolve(parse_model_id(model_id))

    def alias_target(self, name: str, alias: str) -> VersionInfo | None:
        """The version ``alias`` points to, or None when the alias is not set."""
        return self.catalog.alias_target(name, alias)

    def list_versions(self, name: str | None = None) -> list[VersionInfo]:
        """Every indexed version (of one model when ``name`` is given), by name then version."""
        return self.catalog.list_versions(name)

    # ------------------------------------------------------------------ verification and loading

    def check_version(self, info: VersionInfo) -> VersionCheck:
        """Re-hash every file of one version against the index; collect every problem."""
        return _verify.check_version(self.catalog, info)

    def verify(self, model_id: str | None = None) -> VerifyReport:
        """Re-hash every file of every version (or of ``model_id``; a bare NAME means all its versions)."""
        return _verify.verify(self.catalog, model_id)

    def verify_or_raise(self, info: VersionInfo) -> VersionCheck:
        """IntegrityError naming the first bad file unless every hash matches."""
        return _verify.verify_or_raise(self.catalog, info)

    def load(self, model_id: str, *, backend: str = "onnx") -> LoadedModel:
        """Verify every file's SHA256, check trust, then build a runner (cached per process by digest).

        ``backend``: auto | compiled | onnx | native (``aitrader.registry.backends``)."""
        return load(self.catalog, model_id, backend=backend)

    def load_verified(self, info: VersionInfo, *, backend: str = "onnx") -> LoadedModel:
        """Load a version whose files were verified just now by the caller (deploy checks)."""
        return load_verified(info, backend=backend, root=self.root)

    # ------------------------------------------------------------------ deploy (aitrader.registry.deploy)

    def deploy(
        self, model_id: str, alias: str = DEFAULT_ALIAS, dry_run: bool = False, reason: str | None = None,
        require_edge: bool = False, backend: str | None = _deploy.DEFAULT_BACKEND,
    ) -> DeployResult:
        """Run the deploy checks on ``model_id`` and point ``alias`` at it; every attempt is logged.

        ``require_edge``: also fail unless the training verdict says edge (else only a warning).
        ``backend``: the runner backend check (auto compiles the trees when it can; see
        ``aitrader.registry.backends``)."""
        return _deploy.deploy(self.catalog, model_id, alias, dry_run=dry_run, reason=reason, require_edge=require_edge,
                              backend=backend)

    def deploy_from_file(
        self,
        artifact_dir: str | Path,
        name: str,
        alias: str = DEFAULT_ALIAS,
        *,
        dry_run: bool = False,
        reason: str | None = None,
        trust_pickle: bool = False,
        tags: dict[str, str] | None = None,
        require_edge: bool = False,
        backend: str | None = _deploy.DEFAULT_BACKEND,
    ) -> DeployResult:
        """Register ``artifact_dir`` under ``name`` then deploy that version."""
        return _deploy.deploy_from_file(
            self.catalog,
            artifact_dir,
            name,
            alias,
            dry_run=dry_run,
            reason=reason,
            trust_pickle=trust_pickle,
            tags=tags,
            require_edge=require_edge,
            backend=backend,
        )

    def rollback(
        self, name: str, alias: str = DEFAULT_ALIAS, reason: str | None = None, dry_run: bool = False,
        backend: str | None = _deploy.DEFAULT_BACKEND,
    ) -> DeployResult:
        """Restore the previous different version ``alias`` held, from the deploy log (checks run first)."""
        return _deploy.rollback(self.catalog, name, alias, reason=reason, dry_run=dry_run, backend=backend)

    def history(self, name: str, at: str | None = None) -> History:
        """The append-only deploy log of ``name`` and, with ``at``, which version held each alias then."""
        return _log.history(self.catalog, name, at)

    def record_decision(
        self,
        model_id: str,
        *,
        alias: str = DEFAULT_ALIAS,
        decision: str,
        reason: str,
        details: dict[str, Any] | None = None,
    ) -> DeployEvent:
        """Log an evaluation of ``model_id`` against ``alias``'s holder that may have promoted nothing.

        ``decision``: ``promoted`` (only once ``alias`` points at ``model_id``), ``rejected``,
        ``unchanged`` or ``registered``; ``details``: the scores (JSON; NaN stored as null). Appends
        one ``evaluate`` row to the deploy log and moves no alias; ``history`` shows it.
        """
        return _log.record_decision(
            self.catalog, model_id, alias=alias, decision=decision, reason=reason, details=details
        )
