"""Live model swaps: a ``paper-trade --follow`` run picks up a newly deployed version between two bars.

Each configured model watches an alias: ``production`` for a bare ``NAME`` (or the alias of
``NAME@alias``); ``NAME:vN`` is pinned, and so is every model of a run started with ``--pin``.
:class:`SwapWatcher` wraps the run's bar source; before the engine processes a new bar (a bar
boundary: the previous bar is done and committed) it looks at the registry, cheaply:

* the index files (``registry.db``, its WAL, ``deploy_log.jsonl``) are stat'ed at most every
  ``stat_every_s`` seconds; the aliases are read only when their size, mtime or inode changed, or
  at least every ``poll_s`` seconds (a file system with coarse mtimes);
* a version the alias now points at that differs from the running one gets the same checks as
  ``deploy`` (``aitrader.registry.deploy.run_checks``: hashes, loads, sample reproduced, feature
  contract), then its feature stream is re-warmed from the last ``buffer_size`` bars of the
  symbol, which the watcher keeps in a bounded buffer. When the stream is warm the version takes
  over at this very bar; when it needs more history than the buffer holds, the running version
  keeps trading while the new stream is fed live bars, and the switch happens at the first bar
  after it is warm;
* a version that fails a check is refused: the run keeps its model and records an ALERT
  ``swap_refused`` naming the check and why (once per refused version).

The switch is one transaction in the ledger: a ``MODEL_SWAPPED`` event (old and new model id and
digest, the bar index, the alias), the engine state with the slot under its new model id and
``meta.models`` naming the new version, so a resumed run loads the version that was trading.
Positions, cash, pending orders and the slot's vote carry over unchanged. Replays never swap
(the service only wraps ``--follow`` sources), so nothing here runs on the replay hot path.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from aitrader.errors import AitraderError
from aitrader.trading.engine import Engine
from aitrader.trading.events import Alert, ModelSwapped
from aitrader.trading.model_runner import FeatureStream, ModelSlot, Predictor, warm_up
from aitrader.trading.sources import Step

DEFAULT_ALIAS = "production"
STAT_EVERY_S = 0.05
POLL_S = 5.0


@dataclass
class Offer:
    """The version an alias points at now."""

    model_id: str  # NAME:vN
    digest: str
    info: Any = None  # the registry's VersionInfo (RegistrySource)


@dataclass
class Prepared:
    """A checked, loaded version ready to trade once its stream is warm."""

    model_id: str
    digest: str
    predictor: Predictor
    stream: FeatureStream
    manifest: dict[str, Any]
    pipeline: Any = None  # the FeaturePipeline the stream came from (fitted parameters attached)


class SwapRefused(Exception):
    """A version that failed a check: ``check`` (hashes, loads, reproduces_sample, feature_contract, ...)."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.detail = detail


class ModelSource(Protocol):
    """Where the watcher learns about deployments (the registry, or a fake in tests)."""

    def changed(self) -> bool:
        """Cheap: may an alias have moved since the last call?"""
        ...

    def target(self, name: str, alias: str) -> Offer | None: ...

    def prepare(self, offer: Offer, buffer_size: int) -> Prepared:
        """Check and load ``offer``; a fresh (cold) feature stream. SwapRefused when a check fails."""
        ...


@dataclass
class SwapSettings:
    source: ModelSource
    stat_every_s: float = STAT_EVERY_S
    poll_s: float = POLL_S
    clock: Callable[[], float] = time.monotonic


def watched_alias(name: str) -> str | None:
    """The alias a configured model follows: ``production`` for NAME, ``alias`` for NAME@alias, None for NAME:vN."""
    if "@" in name:
        return name.partition("@")[2]
    if ":" in name:
        return None
    return DEFAULT_ALIAS


def registry_name(name: str) -> str:
    return name.partition("@")[0].partition(":")[0]


class RegistrySource:
    """Deployments as the registry at ``root`` records them; checks are the deploy checks."""

    def __init__(self, root: str | Path | None, *, backend: str = "onnx") -> None:
        from aitrader.registry import Registry

        reg = Registry(root)
        self.root = reg.root
        self.backend = backend  # the run's runner mode (aitrader.registry.backends)
        self.paths = (reg.catalog.db_path, Path(f"{reg.catalog.db_path}-wal"), reg.catalog.journal_path)
        reg.close()
        self._signature = self._stat()

    def _stat(self) -> tuple[Any, ...]:
        out: list[Any] = []
        for p in self.paths:
            try:
                st = p.stat()
                out.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    def changed(self) -> bool:
        now = self._stat()
        if now == self._signature:
            return False
        self._signature = now
        return True

    def target(self, name: str, alias: str) -> Offer | None:
        from aitrader.registry import Registry

        reg = Registry(self.root)  # opened per query: a rebuilt index is a new file
        try:
            info = reg.alias_target(registry_name(name), alias)
        finally:
            reg.close()
        return None if info is None else Offer(info.model_id, info.digest, info)

    def prepare(self, offer: Offer, buffer_size: int) -> Prepared:
        from aitrader.features import FeaturePipeline
        from aitrader.registry import Registry
        from aitrader.registry.deploy import run_checks

        reg = Registry(self.root)
        try:
            # commit=False: a trading run checks the deployed choice, it does not change the compiled cache
            checks = run_checks(reg.catalog, offer.info, backend=self.backend, commit=False)
            bad = next((c for c in checks if not c.passed), None)
            if bad is not None:
                raise SwapRefused(bad.name, bad.detail)
            # verified by the hashes check just now; runner cached
            loaded = reg.load_verified(offer.info, backend=self.backend)
        finally:
            reg.close()
        try:
            pipeline = FeaturePipeline.from_contract(loaded.manifest["features"], folder=loaded.path)
            stream = pipeline.stream(buffer_size)
        except (AitraderError, KeyError, TypeError) as exc:
            raise SwapRefused("feature_contract", str(exc)) from exc
        runner = loaded.runner
        warm_up(runner, len(pipeline.names))
        return Prepared(loaded.info.model_id, loaded.info.digest, runner, stream, loaded.manifest, pipeline)


@dataclass
class _Watch:
    slot: ModelSlot
    name: str  # the config's model id
    alias: str
    min_confidence: float
    position_size: float
    strategy: str = "ml_regression"


@dataclass
class _Candidate:
    prepared: Prepared
    strategy: Any
    fed: int = -1  # bar index of the last buffered bar fed to the stream
    row: np.ndarray | None = None


@dataclass
class SwapWatcher:
    """Wraps a live source's steps; swaps models at bar boundaries (see the module docstring)."""

    engine: Engine
    watches: list[_Watch]
    settings: SwapSettings
    models: list[dict[str, Any]]  # meta.models, kept up to date
    buffer_size: int = 500
    buffers: dict[str, deque[tuple[Any, ...]]] = field(default_factory=dict)
    pending: dict[int, _Candidate] = field(default_factory=dict)
    refused: set[tuple[int, str]] = field(default_factory=set)
    errors: dict[int, str] = field(default_factory=dict)
    swaps: int = 0
    _last_stat: float = -math.inf
    _last_query: float = -math.inf

    @classmethod
    def create(cls, engine: Engine, specs: list[Any], settings: SwapSettings, models: list[dict[str, Any]],
               buffer_size: int) -> SwapWatcher:
        """A watcher over the engine's slots (built in the order of ``specs``); pinned models are left out."""
        watches = []
        for slot, spec in zip(engine.slots, specs, strict=True):
            name = spec.name or spec.model_id
            alias = watched_alias(name)
            if alias is not None:
                watches.append(_Watch(slot, name, alias, spec.min_confidence, spec.position_size,
                                      getattr(spec, "strategy", "ml_regression")))
        return cls(engine, watches, settings, [dict(m) for m in models], buffer_size)

    # ------------------------------------------------------------------ the source wrapper
    def wrap(self, steps: Iterable[Step]) -> Iterator[Step]:
        if not self.watches:  # every model pinned: nothing to watch
            yield from steps
            return
        engine = self.engine
        for step in steps:
            ts, _, bars = step
            first = bars[0]
            saved = engine.cursors.get(first[0])
            if saved is None or first[1] > saved[0]:  # a new bar, not a resumed run's catch-up
                self.boundary(ts, bars)
            for sym, i, o, h, lo, c, v in bars:
                buf = self.buffers.get(sym)
                if buf is None:
                    buf = self.buffers[sym] = deque(maxlen=self.buffer_size)
                buf.append((i, ts, o, h, lo, c, v))
            yield step

    def boundary(self, ts: str, bars: Any) -> None:
        """Before the engine processes ``bars`` (stamped ``ts``): look for new versions, switch warm ones."""
        s = self.settings
        now = s.clock()
        if now - self._last_stat >= s.stat_every_s:
            self._last_stat = now
            if s.source.changed() or now - self._last_query >= s.poll_s:
                self._last_query = now
                for k in range(len(self.watches)):
                    self._consider(k, ts)
        for k in list(self.pending):
            self._advance(k, ts, bars)

    # ------------------------------------------------------------------ steps of a swap
    def _alert(self, k: int, ts: str, model_id: str, reason: str, payload: dict[str, Any]) -> None:
        w = self.watches[k]
        self.engine.bus.publish(Alert(ts, w.slot.symbol, model_id, reason,
                                      {"alias": w.alias, "running": w.slot.model_id, **payload}))

    def _consider(self, k: int, ts: str) -> None:
        from aitrader.trading.strategy import make_strategy

        w = self.watches[k]
        try:
            offer = self.settings.source.target(w.name, w.alias)
        except Exception as exc:  # noqa: BLE001 - an unreadable registry never stops a live run
            detail = str(exc) if isinstance(exc, AitraderError) else f"{type(exc).__name__}: {exc}"
            if self.errors.get(k) != detail:
                self.errors[k] = detail
                self._alert(k, ts, w.slot.model_id, "swap_check_failed", {"detail": detail})
            return
        self.errors.pop(k, None)
        if offer is None or offer.digest == w.slot.digest:  # alias unset, or back on the running version
            self.pending.pop(k, None)
            return
        cand = self.pending.get(k)
        if (cand is not None and cand.prepared.digest == offer.digest) or (k, offer.digest) in self.refused:
            return
        self.pending.pop(k, None)
        try:
            prepared = self.settings.source.prepare(offer, self.buffer_size)
            strategy = make_strategy(w.strategy, prepared.manifest, min_confidence=w.min_confidence,
                                     position_size=w.position_size)
        except Exception as exc:  # noqa: BLE001 - a bad deploy never stops a live run
            if isinstance(exc, SwapRefused):
                check, detail = exc.check, exc.detail
            else:
                check, detail = "loads", str(exc) if isinstance(exc, AitraderError) else f"{type(exc).__name__}: {exc}"
            self.refused.add((k, offer.digest))
            self._alert(k, ts, offer.model_id, "swap_refused",
                        {"refused": offer.model_id, "digest": offer.digest, "check": check, "detail": detail})
            return
        self.pending[k] = _Candidate(prepared, strategy)

    def _advance(self, k: int, ts: str, bars: Any) -> None:
        """Feed the candidate the buffered bars it has not seen; switch when its stream is warm."""
        cand = self.pending[k]
        w = self.watches[k]
        for entry in self.buffers.get(w.slot.symbol, ()):
            if entry[0] > cand.fed:
                cand.row = cand.prepared.stream.update(*entry[1:])
                cand.fed = entry[0]
        if _is_warm(cand):
            del self.pending[k]
            self._switch(k, cand, ts, bars)

    def _switch(self, k: int, cand: _Candidate, ts: str, bars: Any) -> None:
        from aitrader.trading.session import horizon_of, training_span

        w = self.watches[k]
        slot, p = w.slot, cand.prepared
        old_id, old_digest = slot.model_id, slot.digest
        saved = self.engine.cursors.get(slot.symbol)
        index = next((b[1] for b in bars if b[0] == slot.symbol), saved[0] + 1 if saved else 0)
        slot.replace_model(model_id=p.model_id, digest=p.digest, predictor=p.predictor, stream=p.stream,
                           strategy=cand.strategy, horizon=horizon_of(p.manifest), train_span=training_span(p.manifest))
        for m in self.models:
            if m.get("name") == w.name and m.get("symbol") == slot.symbol:
                m.update(model_id=p.model_id, digest=p.digest, version=_version(p.model_id))
        self.swaps += 1
        self.engine.bus.publish(ModelSwapped(ts, slot.symbol, p.model_id, w.alias, {
            "old_model_id": old_id, "old_digest": old_digest, "new_model_id": p.model_id, "new_digest": p.digest,
            "bar_index": index, "alias": w.alias,
        }))
        # One transaction: the event, the state with the slot under its new id, meta.models.
        self.engine.checkpoint(meta={"models": self.models})


def _is_warm(cand: _Candidate) -> bool:
    ready = getattr(cand.prepared.stream, "ready", None)
    if isinstance(ready, bool):
        return ready
    return cand.row is not None and not bool(np.isnan(cand.row).any())


def _version(model_id: str) -> int | None:
    _, _, v = model_id.rpartition(":v")
    return int(v) if v.isdigit() else None
