"""The models a server holds: loaded as paper-trade loads them, reloaded as a live swap checks them.

``load_served(root, ref)``: the version ``ref`` names (``NAME`` = its production version,
``NAME@alias``, ``NAME:vN``) through ``Registry.load`` (every file's SHA256 verified before anything
is deserialised; the runner built on ONNX when the artifact has it, else natively), its feature
pipeline rebuilt from the manifest's contract and the artifact folder (``FeaturePipeline.from_contract``,
which reads fitted features' parameters from it) and one throw-away
prediction (``trading.model_runner.warm_up``).

``reload(served)``: the alias read again; a version that differs from the served one gets the
deploy checks (``aitrader.trading.swap.RegistrySource.prepare``: hashes, loads, sample reproduced,
feature contract) before it replaces the old one. A ``NAME:vN`` reference is pinned. A refused
version leaves the old model serving and the reply says which check failed and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aitrader.errors import AitraderError, ConfigError

#: Bars of history a served model's streaming features keep (paper-trade's default buffer_size).
STREAM_BUFFER = 500


@dataclass
class ServedModel:
    """One served version: immutable once built (a reload builds a new one and swaps the reference)."""

    ref: str  # as given to --model
    name: str  # registry name
    alias: str | None  # the alias a reload re-reads; None: pinned NAME:vN
    model_id: str
    digest: str
    runner: Any
    manifest: dict[str, Any]
    pipeline: Any  # FeaturePipeline
    confidence: Any  # trading.strategy.ConfidenceModel
    names: list[str] = field(default_factory=list)
    loaded_at: float = 0.0

    def contract(self) -> dict[str, Any]:
        return dict(self.manifest.get("features") or {})

    def describe(self) -> dict[str, Any]:
        return {"ref": self.ref, "name": self.name, "model_id": self.model_id, "digest": self.digest,
                "alias": self.alias, "backend": getattr(self.runner, "backend", None),
                "task": (self.manifest.get("target") or {}).get("task"),
                "features": self.contract(), "horizon": (self.manifest.get("target") or {}).get("horizon"),
                "symbol": (self.manifest.get("data") or {}).get("symbol"), "loaded_at": self.loaded_at}


def parse_ref(ref: str) -> tuple[str, str | None]:
    """(registry name, watched alias or None) of a --model reference."""
    from aitrader.trading.swap import registry_name, watched_alias

    if not ref or ref.strip() != ref:
        raise ConfigError(f"--model {ref!r} is not a model reference; use NAME, NAME@alias or NAME:vN")
    return registry_name(ref), watched_alias(ref)


def _build(ref: str, info: Any, manifest: dict[str, Any], runner: Any, pipeline: Any) -> ServedModel:
    """``pipeline``: built from the contract with the artifact folder (fitted parameters), runner warmed."""
    import time

    from aitrader.trading.strategy import ConfidenceModel

    name, alias = parse_ref(ref)
    return ServedModel(ref=ref, name=name, alias=alias, model_id=info.model_id, digest=info.digest, runner=runner,
                       manifest=manifest, pipeline=pipeline, confidence=ConfidenceModel.from_manifest(manifest),
                       names=list(pipeline.names), loaded_at=time.time())


def load_served(root: str | Path | None, ref: str) -> ServedModel:
    """The verified version ``ref`` names, ready to serve (see the module docstring)."""
    from aitrader.registry import Registry

    name, alias = parse_ref(ref)
    reg = Registry(root)
    try:
        if alias is not None:
            info = reg.alias_target(name, alias)
            if info is None:
                raise ConfigError(f"model {name} has no {alias} version in {reg.root}; deploy one first "
                                  f"(aitrader deploy --model-id {name}) or pass --model {name}:vN")
            model_id = info.model_id
        else:
            model_id = ref
        loaded = reg.load(model_id)
    finally:
        reg.close()
    from aitrader.features import FeaturePipeline
    from aitrader.trading.model_runner import warm_up

    pipeline = FeaturePipeline.from_contract(loaded.manifest["features"], folder=loaded.path)
    warm_up(loaded.runner, len(pipeline.names))
    return _build(ref, loaded.info, loaded.manifest, loaded.runner, pipeline)


@dataclass
class ReloadResult:
    swapped: bool
    model: ServedModel  # the model serving after the reload
    reason: str  # why nothing changed, or "swapped"
    check: str | None = None  # the failed deploy check, when refused


def reload(root: str | Path | None, served: ServedModel) -> ReloadResult:
    """Re-read ``served``'s alias; check and load a new version (the old one stays on any failure)."""
    from aitrader.trading.swap import RegistrySource, SwapRefused

    if served.alias is None:
        return ReloadResult(False, served, f"{served.ref} is pinned to a version; nothing to reload")
    source = RegistrySource(root)
    try:
        offer = source.target(served.name, served.alias)
    except AitraderError as exc:
        return ReloadResult(False, served, f"cannot read the registry: {exc}", "registry")
    if offer is None:
        return ReloadResult(False, served, f"{served.name}@{served.alias} is not set; kept {served.model_id}",
                            "alias")
    if offer.digest == served.digest:
        return ReloadResult(False, served, f"{served.name}@{served.alias} still points at {served.model_id}")
    try:
        prepared = source.prepare(offer, STREAM_BUFFER)
        # prepare() built the pipeline from the artifact and warmed the runner already
        new = _build(served.ref, offer.info, prepared.manifest, prepared.predictor, prepared.pipeline)
    except SwapRefused as exc:
        return ReloadResult(False, served, f"{offer.model_id} refused by the {exc.check} check: {exc.detail}; "
                            f"kept {served.model_id}", exc.check)
    except Exception as exc:  # noqa: BLE001 - a bad version never takes the server down
        detail = str(exc) if isinstance(exc, AitraderError) else f"{type(exc).__name__}: {exc}"
        return ReloadResult(False, served, f"{offer.model_id} failed to load: {detail}; kept {served.model_id}",
                            "loads")
    return ReloadResult(True, new, "swapped")
