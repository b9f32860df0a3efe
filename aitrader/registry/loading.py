"""Loading a version: verify every file, check trust, then build a runner (cached per process by digest
and backend mode; which backend: ``aitrader.registry.backends``)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from aitrader.errors import ModelError, RegistryError, TrustError
from aitrader.registry.catalog import Catalog
from aitrader.registry.manifest_check import MANIFEST_NAME
from aitrader.registry.names import parse_model_id
from aitrader.registry.types import LoadedModel, VersionInfo
from aitrader.registry.verify import verify_or_raise

_RUNNER_CACHE: dict[tuple[str, str], Any] = {}  # (digest, backend mode) -> runner; per process
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget every loaded runner of this process."""
    with _CACHE_LOCK:
        _RUNNER_CACHE.clear()


def forget(digest: str) -> None:
    """Forget this process's runners of one version (a deploy changed its compiled library)."""
    with _CACHE_LOCK:
        for key in [k for k in _RUNNER_CACHE if k[0] == digest]:
            del _RUNNER_CACHE[key]


def load(catalog: Catalog, model_id: str, *, backend: str = "onnx") -> LoadedModel:
    """Verify every file's SHA256, check trust, then build a runner (``backend``: a mode of
    ``aitrader.registry.backends``; ``auto`` runs a version on the library its deploy compiled)."""
    info = catalog.resolve(parse_model_id(model_id))
    verify_or_raise(catalog, info)  # before anything is deserialised
    return load_verified(info, backend=backend, root=catalog.root)


def load_verified(info: VersionInfo, *, backend: str = "onnx", root: Path | None = None) -> LoadedModel:
    """Load a version whose files were verified just now by the caller (deploy checks).

    ``root``: the registry root holding the compiled-library cache (default: two levels above the
    version folder, ``ROOT/NAME/vN``)."""
    try:
        manifest = json.loads((info.path / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelError(f"cannot read {info.path / MANIFEST_NAME} of {info.model_id}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ModelError(f"{info.path / MANIFEST_NAME} of {info.model_id} is not a JSON object")
    from aitrader import plugins

    # A plug-in the model was trained with, missing or at another version: refused before the runner builds.
    plugins.check_recorded(manifest.get("plugins"), info.model_id)
    model = manifest.get("model")
    pickle_based = info.pickle_based or bool(model.get("pickle_based") if isinstance(model, dict) else False)
    if pickle_based and not info.trusted:
        raise TrustError(
            f"{info.model_id} is pickle-based and was registered without --trust-pickle: loading a pickle "
            "runs code from the file. If you trust its source, re-register it: aitrader register "
            f"{info.path} --name {info.name} --trust-pickle"
        )
    from aitrader.registry import backends

    backends.validate_mode(backend)
    key = (info.digest, backend)
    with _CACHE_LOCK:
        cached = _RUNNER_CACHE.get(key)
    if cached is None:
        try:
            cached = backends.for_load(root if root is not None else info.path.parent.parent, info.path,
                                       info.digest, manifest, backend, trust_pickle=info.trusted)
        except (RegistryError, ModelError):
            raise
        except Exception as exc:  # a verified file that still fails to load: report, do not crash
            raise ModelError(f"cannot load {info.model_id} from {info.path}: {type(exc).__name__}: {exc}") from exc
        if cached.failed:
            raise ModelError(f"{info.model_id}: {cached.detail}; run it with --backend auto (ONNX when the trees "
                             "cannot run compiled) or install the 'compiled' extra")
        with _CACHE_LOCK:
            _RUNNER_CACHE[key] = cached
    warnings = [f"{info.model_id}: {cached.warning}"] if cached.warning else []
    return LoadedModel(info=info, manifest=manifest, runner=cached.runner, path=info.path, backend=cached.detail,
                       warnings=warnings)
