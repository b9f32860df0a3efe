"""SHA256-verified model registry: immutable versions, a SQLite index, aliases and a deploy log.

Importing this package loads no heavy library; numpy and the model libraries are imported only
when a version is loaded or checked.
"""

from __future__ import annotations

from aitrader.registry.names import (
    DEFAULT_ALIAS,
    ModelRef,
    parse_model_id,
    parse_tag,
    safe_text,
    validate_name,
)
from aitrader.registry.rebuild import RebuildReport
from aitrader.registry.store import ENV_ROOT, Registry, clear_cache
from aitrader.registry.types import (
    CheckResult,
    DeployEvent,
    DeployResult,
    FileProblem,
    History,
    LoadedModel,
    VerifyReport,
    VersionCheck,
    VersionInfo,
)

__all__ = [
    "DEFAULT_ALIAS",
    "ENV_ROOT",
    "CheckResult",
    "DeployEvent",
    "DeployResult",
    "FileProblem",
    "History",
    "LoadedModel",
    "ModelRef",
    "RebuildReport",
    "Registry",
    "VerifyReport",
    "VersionCheck",
    "VersionInfo",
    "clear_cache",
    "parse_model_id",
    "parse_tag",
    "safe_text",
    "validate_name",
]
