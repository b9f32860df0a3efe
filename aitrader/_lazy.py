"""A module imported on its first use, for modules whose light readers must not pay for a heavy import.

``np = lazy_module("numpy", globals(), "np")`` at the top of a module: the name stands for numpy,
and the first attribute read (``np.asarray``) imports numpy and puts the real module in the
caller's namespace under that name, so every later lookup is the plain global (no indirection on a
hot path). Type checkers see the real import (``if TYPE_CHECKING: import numpy as np``).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for module ``name`` in ``namespace[alias]`` until an attribute of it is read."""

    __slots__ = ("_name", "_namespace", "_alias")

    def __init__(self, name: str, namespace: dict[str, Any], alias: str) -> None:
        self._name = name
        self._namespace = namespace
        self._alias = alias

    def _load(self) -> ModuleType:
        module = importlib.import_module(self._name)
        if self._namespace.get(self._alias) is self:  # from now on the name is the module itself
            self._namespace[self._alias] = module
        return module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy_module(name: str, namespace: dict[str, Any], alias: str) -> Any:
    """A stand-in for module ``name`` bound as ``alias`` in ``namespace`` (a module's ``globals()``)."""
    return LazyModule(name, namespace, alias)
