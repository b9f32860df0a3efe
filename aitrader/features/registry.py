"""The feature registry: ``features.yaml`` validated into :class:`FeatureSpec` objects.

Resolution of the file follows the config files (``aitrader.config``): an explicit path, else
``./config/features.yaml``, else the packaged default. Every problem in the file is reported with
its path (``features[3] (sma_ratio_20).group: must be one of ...``). Pure Python: no numpy.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aitrader.config import FEATURES_CONFIG, read_yaml, resolve_config_path
from aitrader.errors import FeatureError
from aitrader.features.kinds import Kind, all_kinds, check_params, get_kind, plugin_kinds

GROUPS = ("price", "volume", "indicator", "signal", "ml", "book")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_FIELDS = {"name", "description", "group", "kind", "aliases", "params", "warmup", "metadata", "default"}
_REQUIRED = ("name", "description", "group", "kind", "params", "warmup", "metadata")


@dataclass(frozen=True)
class FeatureSpec:
    """One validated feature definition."""

    name: str
    description: str
    group: str
    kind: str
    params: dict[str, Any]
    warmup: int
    aliases: tuple[str, ...] = ()
    unit: str = ""
    dtype: str = "float64"
    default: bool = False

    @property
    def version(self) -> int:
        """Implementation version of the kind (part of the spec hash)."""
        return _kind(self.kind).version

    @property
    def history(self) -> int:
        """Bars of history the streaming evaluator needs for this feature."""
        return _kind(self.kind).history(self.params)

    def identity(self) -> dict[str, Any]:
        """What defines the values: hashed into the pipeline's ``spec_hash``."""
        return {"name": self.name, "kind": self.kind, "params": self.params, "warmup": self.warmup,
                "version": self.version}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "group": self.group, "kind": self.kind,
                "aliases": list(self.aliases), "params": dict(self.params), "warmup": self.warmup,
                "unit": self.unit, "dtype": self.dtype, "default": self.default}


def _kind(name: str) -> Kind:
    found = get_kind(name)
    if found is None:
        raise FeatureError(f"feature kind {name!r} is neither built in nor provided by an installed plug-in; "
                            "install the plug-in that provides it")
    return found


def spec_hash(specs: list[FeatureSpec]) -> str:
    """SHA256 of the canonical JSON of the specs' identities, in order."""
    doc = json.dumps([s.identity() for s in specs], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(doc.encode("utf-8")).hexdigest()


def _definition_problems(kind: Kind | None, params: Any, warmup: Any, has_warmup: bool) -> list[str]:
    """Problems with an entry's params and warm-up for its kind."""
    if not isinstance(params, dict):
        return [f"params: must be a mapping, got {params!r}"]
    problems = [f"params.{p}" for p in check_params(kind, params)] if kind is not None else []
    if has_warmup and (isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0):
        problems.append(f"warmup: must be an integer >= 0, got {warmup!r}")
    elif has_warmup and kind is not None and not problems:
        least = kind.min_warmup(params)
        if warmup < least:
            problems.append(f"warmup: must be >= {least} for kind {kind.name} with these params, got {warmup}")
    return problems


def _hint(value: Any, choices: Any) -> str:
    """`` (did you mean 'momentum'?)`` for a near miss of a string choice, else nothing."""
    close = difflib.get_close_matches(value, list(choices), n=1) if isinstance(value, str) else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def _parse_entry(raw: Any, where: str) -> FeatureSpec:
    """Validate one entry; raises FeatureError naming every problem with its path."""
    if not isinstance(raw, dict):
        raise FeatureError(f"{where}: expected a mapping with {', '.join(_REQUIRED)}, got {type(raw).__name__}")
    name = raw.get("name")
    label = f"{where} ({name})" if isinstance(name, str) else where
    problems = [f"{key}: is required" for key in _REQUIRED if key not in raw]
    problems += [f"{key}: unknown key; expected one of {', '.join(sorted(_FIELDS))}" for key in raw
                 if key not in _FIELDS]
    if "name" in raw and not (isinstance(name, str) and _NAME.match(name)):
        problems.append(f"name: must be lower_snake_case, got {name!r}")
    if "description" in raw and not (isinstance(raw["description"], str) and raw["description"].strip()):
        problems.append("description: must be a non-empty string")
    if "group" in raw and raw["group"] not in GROUPS:
        problems.append(f"group: must be one of {', '.join(GROUPS)}, got {raw['group']!r}{_hint(raw['group'], GROUPS)}")
    kind = get_kind(raw["kind"]) if isinstance(raw.get("kind"), str) else None
    if "kind" in raw and kind is None:
        known = sorted(all_kinds())
        problems.append(f"kind: must be one of {', '.join(known)}, got {raw['kind']!r}{_hint(raw['kind'], known)}")
    params = raw.get("params") if raw.get("params") is not None else {}
    warmup = raw.get("warmup")
    problems += _definition_problems(kind, params, warmup, "warmup" in raw)
    aliases = raw.get("aliases") or []
    if not (isinstance(aliases, list) and all(isinstance(a, str) and _NAME.match(a) for a in aliases)):
        problems.append(f"aliases: must be a list of lower_snake_case names, got {aliases!r}")
    meta = raw.get("metadata")
    if "metadata" in raw and not (isinstance(meta, dict) and set(meta) <= {"unit", "dtype"}
                                  and meta.get("dtype", "float64") == "float64"):
        problems.append(f"metadata: expected {{unit: <text>, dtype: float64}}, got {meta!r}")
    default = raw.get("default", False)
    if not isinstance(default, bool):
        problems.append(f"default: must be true or false, got {default!r}")
    if problems:
        raise FeatureError("; ".join(f"{label}.{p}" for p in problems))
    assert isinstance(name, str) and kind is not None and isinstance(meta, dict)  # narrowed above
    assert isinstance(params, dict) and isinstance(warmup, int)
    return FeatureSpec(name=name, description=raw["description"].strip(), group=raw["group"], kind=kind.name,
                       params=dict(params), warmup=int(warmup), aliases=tuple(aliases),
                       unit=str(meta.get("unit", "")), dtype="float64", default=default)


def plugin_features(specs: list[FeatureSpec]) -> list[FeatureSpec]:
    """The features installed plug-in kinds define (``FeatureKind.features``), after the file's.

    A definition that is invalid, or whose name or alias the file (or an earlier plug-in) already
    uses, is warned about and skipped: the file wins, and a broken plug-in breaks nothing else.
    """
    from aitrader import plugins

    taken = {n for s in specs for n in (s.name, *s.aliases)}
    out: list[FeatureSpec] = []
    for name, kind in plugin_kinds().items():
        for i, entry in enumerate(kind.features):
            where = f"plug-in {name}: features[{i}]"
            try:
                spec = _parse_entry({**entry, "kind": name} if isinstance(entry, dict) else entry, where)
            except FeatureError as exc:
                plugins.log.warning("skipping %s", exc)
                continue
            clash = sorted(taken & {spec.name, *spec.aliases})
            if clash:
                plugins.log.warning("skipping %s (%s): %s already defined", where, spec.name, ", ".join(clash))
                continue
            taken |= {spec.name, *spec.aliases}
            out.append(spec)
    return out


class FeatureRegistry:
    """All feature definitions of one ``features.yaml``, with alias resolution."""

    def __init__(self, specs: list[FeatureSpec], source: str = "<memory>") -> None:
        self.source = source
        self._specs: dict[str, FeatureSpec] = {}
        self._lookup: dict[str, str] = {}
        for i, spec in enumerate(specs):
            where = f"{source}: features[{i}] ({spec.name})"
            if spec.name in self._lookup:
                other = self._lookup[spec.name]
                raise FeatureError(f"{where}.name: {spec.name!r} is already defined "
                                   f"({'as an alias of ' + other if other != spec.name else 'earlier'}); "
                                   "names and aliases must be unique")
            self._specs[spec.name] = spec
            self._lookup[spec.name] = spec.name
        for i, spec in enumerate(specs):
            for alias in spec.aliases:
                owner = self._lookup.get(alias)
                if owner is not None:
                    raise FeatureError(f"{source}: features[{i}] ({spec.name}).aliases: {alias!r} is already "
                                       f"used by {owner}; names and aliases must be unique")
                self._lookup[alias] = spec.name

    @classmethod
    def load(cls, path: str | Path | None = None) -> FeatureRegistry:
        """Read and validate ``features.yaml`` (explicit path, ./config/, or the packaged copy)."""
        from aitrader.errors import ConfigError

        try:
            file = resolve_config_path(FEATURES_CONFIG, path)
            raw = read_yaml(file)
        except ConfigError as exc:
            raise FeatureError(str(exc)) from exc
        entries = raw.get("features")
        if not isinstance(entries, list) or not entries:
            raise FeatureError(f"{file}: features: expected a non-empty list of feature definitions")
        unknown = sorted(set(raw) - {"version", "features"})
        if unknown:
            raise FeatureError(f"{file}: {unknown[0]}: unknown top-level key; expected version, features")
        specs = [_parse_entry(entry, f"{file}: features[{i}]") for i, entry in enumerate(entries)]
        return cls(specs + plugin_features(specs), source=str(file))

    def resolve(self, name: str) -> str:
        """Canonical name for a name or alias; FeatureError with the closest names otherwise."""
        key = name.strip().lower()
        found = self._lookup.get(key)
        if found is not None:
            return found
        close = difflib.get_close_matches(key, list(self._lookup), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see `aitrader features list`"
        raise FeatureError(f"unknown feature {name!r}; {hint}")

    def spec(self, name: str) -> FeatureSpec:
        return self._specs[self.resolve(name)]

    def names(self, group: str | None = None) -> list[str]:
        """Canonical names in file order, optionally of one group (FeatureError for an unknown group)."""
        if group is not None and group not in GROUPS:
            raise FeatureError(f"unknown feature group {group!r}; expected one of {', '.join(GROUPS)}")
        return [n for n, s in self._specs.items() if group is None or s.group == group]

    def default_names(self) -> list[str]:
        """The default model feature set: entries flagged ``default: true``, in file order."""
        return [n for n, s in self._specs.items() if s.default]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._lookup

    def __len__(self) -> int:
        return len(self._specs)
