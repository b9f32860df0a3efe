"""Model names, aliases, tags and model ids (``NAME``, ``NAME:vN``, ``NAME@alias``).

A name becomes a folder under the registry root, so it is validated before anything touches the
disk: ``[a-z0-9][a-z0-9_.-]{0,63}`` and never ``.``/``..``-like. Everything else (slashes,
absolute paths, upper case, empty) is refused with the rule and an example. A model name also
never collides with a file the registry keeps at its root (``registry.db`` and its ``-wal``,
``-shm``, ``-journal`` companions, ``deploy_log.jsonl``, lock files, ...): see ``RESERVED_PREFIXES``.

``safe_text`` makes stored text (reasons, tags, user names) safe to print on a terminal.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from aitrader.errors import RegistryError

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_VERSION_RE = re.compile(r"v?([0-9]+)")
_TAG_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_TAG_VALUE = 256

DEFAULT_ALIAS = "production"
# Versions are SQLite INTEGERs (64-bit); a larger N could never exist and would overflow the query.
MAX_VERSION = 2**63 - 1
# A model name is a folder beside the registry's own files: none of these may be a name's prefix
# or suffix (registry.db, registry.db-wal/-shm/-journal, registry.db.replaced-*, deploy_log.jsonl).
RESERVED_PREFIXES = ("registry.", "deploy_log")
RESERVED_SUFFIXES = (".db", "-wal", "-shm", "-journal", ".jsonl", ".lock")


def reserved_reason(name: str) -> str | None:
    """Why ``name`` cannot be a model name (it looks like one of the registry's own files), or None."""
    for prefix in RESERVED_PREFIXES:
        if name.startswith(prefix):
            return f"names starting with {prefix!r} are reserved for the registry's own files"
    for suffix in RESERVED_SUFFIXES:
        if name.endswith(suffix):
            return f"names ending in {suffix!r} are reserved for the registry's own files"
    return None


def safe_text(value: object) -> str:
    """``str(value)`` with every control character escaped, so stored text cannot forge output lines.

    Newlines, carriage returns, tabs, ANSI escape sequences (ESC), other C0/C1 controls, DEL and
    Unicode format characters (bidirectional overrides, zero-width characters) become ``\\n``,
    ``\\x1b``, ``\\u202e``..., so one stored value always prints as one visible line.
    """
    text = str(value)
    if text.isprintable():  # the common case: nothing to escape
        return text
    out = []
    for ch in text:
        if ch.isprintable() or unicodedata.category(ch) == "Zs":  # spaces print as themselves
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def validate_name(name: str, *, what: str = "model name") -> str:
    """Return ``name`` when it is a safe registry name, else raise RegistryError explaining the rule."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        raise RegistryError(
            f"invalid {what} {safe_text(repr(name))}: expected 1-64 characters of a-z, 0-9, '_', '.', '-' "
            "starting with a letter or digit, no '..' (e.g. 'aapl_lgbm'); choose another name"
        )
    if what == "model name":
        why = reserved_reason(name)
        if why is not None:
            raise RegistryError(f"invalid model name {name!r}: {why}; choose another name (e.g. 'aapl_lgbm')")
    return name


def validate_alias(alias: str) -> str:
    return validate_name(alias, what="alias")


@dataclass(frozen=True)
class ModelRef:
    """A parsed model id: exactly one of ``version`` and ``alias`` is set, or neither (latest)."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:v{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def parse_model_id(model_id: str) -> ModelRef:
    """Parse ``NAME`` (latest), ``NAME:vN`` (or ``NAME:N``) and ``NAME@alias``."""
    if not isinstance(model_id, str) or not model_id:
        raise RegistryError("empty model id: expected NAME, NAME:vN or NAME@alias (e.g. 'aapl_lgbm:v3')")
    if "@" in model_id:
        name, _, alias = model_id.partition("@")
        return ModelRef(validate_name(name), alias=validate_alias(alias))
    if ":" in model_id:
        name, _, ver = model_id.partition(":")
        match = _VERSION_RE.fullmatch(ver)
        if not match or not 1 <= int(match.group(1)) <= MAX_VERSION:
            raise RegistryError(
                f"invalid version {safe_text(repr(ver))} in model id {safe_text(repr(model_id))}: expected vN "
                f"with 1 <= N <= {MAX_VERSION} (e.g. '{safe_text(name)}:v1'); `aitrader list` shows the versions"
            )
        return ModelRef(validate_name(name), version=int(match.group(1)))
    return ModelRef(validate_name(model_id))


def validate_tags(tags: dict[str, str] | None) -> dict[str, str]:
    """Tags are short ``key=value`` strings stored in the index (never on disk as paths)."""
    clean: dict[str, str] = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not _TAG_KEY_RE.fullmatch(key):
            raise RegistryError(
                f"invalid tag key {key!r}: expected 1-64 characters of letters, digits, '_', '.', '-' "
                "(e.g. --tag source=demo)"
            )
        text = str(value)
        if len(text) > MAX_TAG_VALUE or any(ch in text for ch in "\n\r\x00"):
            raise RegistryError(
                f"invalid value for tag {key!r}: expected at most {MAX_TAG_VALUE} characters on one line"
            )
        clean[key] = text
    return clean


def parse_tag(text: str) -> tuple[str, str]:
    """``k=v`` -> (k, v); used by the CLI's --tag."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise RegistryError(f"invalid tag {text!r}: expected KEY=VALUE (e.g. --tag source=demo)")
    validate_tags({key: value})
    return key, value
