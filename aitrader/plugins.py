"""Plug-ins: feature kinds, model adapters and strategies from other installed packages.

A distribution adds them through three entry-point groups (``importlib.metadata``)::

    [project.entry-points."aitrader.features"]     name = "pkg.module:FEATURE_KIND"   (a FeatureKind)
    [project.entry-points."aitrader.models"]       name = "pkg.module:ModelClass"     (a Model subclass)
    [project.entry-points."aitrader.strategies"]   name = "pkg.module:StrategyClass"  (prediction -> Decision)

Discovery reads only the installed distributions' metadata (no plug-in is imported, so
``aitrader --help`` stays fast); a plug-in's module is imported the first time something needs
it. A plug-in that fails to import, or whose object has the wrong shape, is reported once as a
warning and skipped by listings (``features list``, the kinds a config may name), so an unrelated
command still works; the command that needs it fails with :class:`PluginError` naming it.

The versions rule: a model records, in its manifest's ``plugins`` section, every plug-in it was
trained with and the version of the distribution that provided it. Loading or deploying the
model refuses (one line, :class:`PluginError`) when one of them is not installed or is installed at
another version, since a feature kind's definition or a model's file format may have changed.
Pure Python: no numpy here.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from aitrader.errors import PluginError

log = logging.getLogger("aitrader.plugins")

__all__ = ["GROUPS", "PluginError", "PluginInfo", "check_recorded", "discover", "load", "load_all", "names",
           "provide", "reset", "section"]

#: manifest section key -> entry-point group
GROUPS = {"features": "aitrader.features", "models": "aitrader.models", "strategies": "aitrader.strategies"}
_WHAT = {"features": "feature kind", "models": "model kind", "strategies": "strategy"}


@dataclass(frozen=True)
class PluginInfo:
    """One advertised plug-in (an entry point), before it is imported."""

    group: str  # features | models | strategies
    name: str
    value: str  # "module:attribute"
    distribution: str
    version: str

    def record(self) -> dict[str, str]:
        """What a manifest keeps of it."""
        return {"distribution": self.distribution, "version": self.version, "entry_point": self.value}

    def to_dict(self) -> dict[str, str]:
        return {"group": self.group, "name": self.name, **self.record()}


_lock = threading.RLock()
_found: dict[str, dict[str, PluginInfo]] = {}
_loaded: dict[tuple[str, str], Any] = {}
_broken: dict[tuple[str, str], str] = {}
_memory: dict[tuple[str, str], tuple[PluginInfo, Any]] = {}  # provide(): in-process plug-ins


def reset() -> None:
    """Forget what was discovered and loaded (after ``sys.path`` changed; tests)."""
    with _lock:
        _found.clear()
        _loaded.clear()
        _broken.clear()


@contextlib.contextmanager
def provide(group: str, name: str, obj: Any, *, distribution: str = "<in-process>",
            version: str = "0") -> Iterator[PluginInfo]:
    """Make ``obj`` plug-in ``name`` of ``group`` inside the block, as if a distribution advertised
    it (:mod:`aitrader.testing` checks an uninstalled kind, model or strategy through the same code
    paths as an installed one). It shadows an installed plug-in of the same name."""
    info = PluginInfo(group, name, f"<in-process {type(obj).__name__}>", distribution, version)
    key = (group, name)
    with _lock:
        if key in _memory:
            raise ValueError(f"plug-in {group}/{name} is already provided in-process")
        _memory[key] = (info, obj)
        _found.pop(group, None)
        _loaded.pop(key, None)
        _broken.pop(key, None)
    try:
        yield info
    finally:
        with _lock:
            _memory.pop(key, None)
            _found.pop(group, None)
            _loaded.pop(key, None)
            _broken.pop(key, None)


def _dist_of(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?"
    return str(dist.metadata["Name"] or dist.name), str(dist.version)


def discover(group: str) -> dict[str, PluginInfo]:
    """The plug-ins advertised in ``group`` (features, models, strategies), by name; nothing imported.

    Two distributions advertising the same name: the first on ``sys.path`` wins, the other is
    reported and ignored (as Python itself resolves a module).
    """
    if group not in GROUPS:
        raise ValueError(f"unknown plug-in group {group!r}; expected one of {', '.join(GROUPS)}")
    with _lock:
        found = _found.get(group)
        if found is not None:
            return found
        found = {}
        for ep in metadata.entry_points(group=GROUPS[group]):
            dist, version = _dist_of(ep)
            if ep.name in found:
                if found[ep.name].distribution != dist:
                    log.warning("plug-in %s %r from %s %s ignored: %s %s already provides it", _WHAT[group],
                                ep.name, dist, version, found[ep.name].distribution, found[ep.name].version)
                continue
            found[ep.name] = PluginInfo(group, ep.name, ep.value, dist, version)
        for (g, name), (info, _obj) in _memory.items():
            if g == group:
                found[name] = info
        _found[group] = found
        return found


def install_hint(distribution: str, version: str | None = None) -> str:
    pin = f"=={version}" if version and version != "?" else ""
    return f"install it (pip install '{distribution}{pin}')"


def load(group: str, name: str, check: Any = None) -> Any:
    """Import plug-in ``name`` of ``group`` and return its object; PluginError (one line) when it is
    not installed or fails to import, or when ``check(obj)`` returns a problem."""
    info = discover(group).get(name)
    if info is None:
        raise PluginError(f"no {_WHAT[group]} plug-in named {name!r} is installed "
                          f"(entry-point group {GROUPS[group]}); install the package that provides it")
    key = (group, name)
    with _lock:
        if key in _loaded:
            return _loaded[key]
        if key in _broken:
            raise PluginError(_broken[key])
        if key in _memory:
            problem = check(_memory[key][1]) if check is not None else None
            if problem:
                raise PluginError(f"{_WHAT[group]} plug-in {name!r} (in-process) {problem}")
            return _memory[key][1]
        module, _, attr = info.value.partition(":")
        try:
            import importlib

            obj: Any = importlib.import_module(module.strip())
            for part in attr.strip().split(".") if attr.strip() else ():
                obj = getattr(obj, part)
            problem = check(obj) if check is not None else None
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must not crash unrelated code
            problem = f"fails to import: {type(exc).__name__}: {exc}"
        if problem:
            message = (f"{_WHAT[group]} plug-in {name!r} ({info.value}, from {info.distribution} {info.version}) "
                       f"{problem}; fix or reinstall {info.distribution}, or uninstall it")
            _broken[key] = " ".join(message.split())
            raise PluginError(_broken[key])
        _loaded[key] = obj
        return obj


def load_all(group: str, check: Any = None) -> dict[str, Any]:
    """Every loadable plug-in of ``group``; a broken one is warned about once and skipped."""
    out: dict[str, Any] = {}
    for name in discover(group):
        already = (group, name) in _broken
        try:
            out[name] = load(group, name, check)
        except PluginError as exc:
            if not already:
                log.warning("skipping %s", exc)
    return out


def names(group: str) -> list[str]:
    """Names advertised in ``group`` (metadata only: cheap, imports nothing)."""
    return sorted(discover(group))


def section(*, features: Iterable[str] = (), models: Iterable[str] = (),
            strategies: Iterable[str] = ()) -> dict[str, Any]:
    """The manifest's ``plugins`` section for the plug-in names used (empty dict when none)."""
    out: dict[str, Any] = {}
    for group, used in (("features", features), ("models", models), ("strategies", strategies)):
        found = discover(group)
        entries = {n: found[n].record() for n in sorted(set(used)) if n in found}
        if entries:
            out[group] = entries
    return out


def check_recorded(recorded: Any, where: str) -> None:
    """Refuse (PluginError, one line) unless every plug-in in a manifest's ``plugins`` section is
    installed at the recorded distribution version and imports."""
    if not recorded:
        return
    if not isinstance(recorded, dict):
        raise PluginError(f"{where}: manifest 'plugins' must be an object, got {type(recorded).__name__}; retrain it")
    for group, entries in sorted(recorded.items()):
        if group not in GROUPS or not isinstance(entries, dict):
            raise PluginError(f"{where}: manifest plugins.{group}: unknown plug-in group; expected one of "
                              f"{', '.join(GROUPS)}; retrain the model with this aitrader")
        for name, rec in sorted(entries.items()):
            dist = str((rec or {}).get("distribution", "?"))
            want = str((rec or {}).get("version", "?"))
            info = discover(group).get(name)
            if info is None:
                raise PluginError(f"{where} needs the {_WHAT[group]} plug-in {name!r} from {dist} {want}, which "
                                  f"is not installed; {install_hint(dist, want)}")
            if info.distribution != dist or info.version != want:
                raise PluginError(f"{where} was trained with the {_WHAT[group]} plug-in {name!r} from {dist} {want}, "
                                  f"but {info.distribution} {info.version} is installed; "
                                  f"{install_hint(dist, want)} or retrain the model")
            load(group, name)


def _shape_check(group: str) -> Any:
    """The shape check of ``group``'s objects (each lives beside what it checks)."""
    if group == "features":
        from aitrader.features.kinds import plugin_kind_problem

        return plugin_kind_problem
    if group == "models":
        from aitrader.models import plugin_model_problem

        return plugin_model_problem
    from aitrader.trading.strategy import plugin_strategy_problem

    return plugin_strategy_problem


def report() -> list[dict[str, Any]]:
    """Every advertised plug-in, imported and checked: ``to_dict()`` plus ``status`` (ok | broken)
    and ``error`` (the one-line reason, or None). What ``aitrader plugins`` prints."""
    rows = []
    for group in GROUPS:
        for name, info in sorted(discover(group).items()):
            shape = _shape_check(group)
            try:
                obj = load(group, name, shape)
                own = getattr(obj, "kind" if group == "models" else "name", name) if group != "strategies" else name
                error = None if own == name else (f"{_WHAT[group]} plug-in {name!r} provides {own!r}; the entry point "
                                                  "and the object must have the same name")
            except PluginError as exc:
                error = str(exc)
            rows.append({**info.to_dict(), "status": "ok" if error is None else "broken", "error": error})
    return rows
