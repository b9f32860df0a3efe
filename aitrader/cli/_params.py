"""CLI values without pydantic where pydantic adds nothing: typer (0.2x) coerces every option and argument
value through a pydantic ``TypeAdapter`` that it builds on the parameter's first use, even for a value it
then does not look at (an absent option's ``None``), so every command imported pydantic and built
schemas: ~70-90 ms of a short command such as ``status``, ``export`` or ``list``
(scripts/bench/startup.py).

:func:`lazy_param_coercion` gives each parameter a runtime coercion that builds typer's own one only when a
value needs it, and passes without it:

* ``None`` (an absent option or argument): typer's base class turns it into ``None`` or ``()`` before any
  adapter is consulted, so it never needed one;
* a ``str`` value of a ``str`` parameter (no ``parser``, not a file): typer's adapter is ``str(value)``
  then pydantic's ``str`` validation, which returns a ``str`` unchanged (the very object, lone
  surrogates and NULs included), so the value is returned as it is.

Anything else (a number, a choice, a list, a path, bytes, a non-str default...) goes through typer's
adapter, built then: the same value in every case, the same errors. If typer's internals move, the hook
does nothing and typer works as before, only slower.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PATCHED = "aitrader_lazy_coercion"


def lazy_param_coercion() -> bool:
    """Install the hook on typer's parameter class (idempotent); False when typer has no such internals."""
    try:
        from typer import _coercion
        from typer.core import _TyperParameter
    except ImportError:  # another typer: its own coercion stays, only slower
        return False
    original = getattr(_TyperParameter, "get_runtime_param", None)
    if original is None:
        return False
    if getattr(original, PATCHED, False):
        return True
    deferred = _deferred_class(_coercion)
    if deferred is None:
        return False

    def get_runtime_param(self: Any) -> Any:
        desc = getattr(self, "type_descriptor", None)
        if self._runtime_param is None and desc is not None:
            try:
                self._runtime_param = deferred(parameter_info=desc.parameter_info, annotation=desc.annotation,
                                               descriptor=desc)
            except (TypeError, AttributeError):  # another typer's RuntimeParam fields: typer's own coercion
                self._runtime_param = None
        return original(self)

    setattr(get_runtime_param, PATCHED, True)
    get_runtime_param.__wrapped__ = original  # type: ignore[attr-defined]  # typer's own (tests compare)
    _TyperParameter.get_runtime_param = get_runtime_param  # type: ignore[method-assign]
    return True


def _deferred_class(coercion: Any) -> type | None:
    """A ``RuntimeParam`` of typer's ``_coercion`` module that builds typer's own one on the first value
    needing it; None when that module has no such (frozen dataclass) base."""
    base = getattr(coercion, "RuntimeParam", None)
    if base is None or not hasattr(base, "_coerce_value") or not hasattr(coercion, "build_runtime_param"):
        return None
    try:
        @dataclass(frozen=True)
        class Deferred(base):  # type: ignore[misc,valid-type]  # typer's abstract dataclass
            """typer's coercion of one parameter, built on the first value that needs it."""

            descriptor: Any = None
            built: list[Any] = field(default_factory=list)

            def _typer(self) -> Any:
                if not self.built:
                    self.built.append(coercion.build_runtime_param(self.descriptor))
                return self.built[0]

            def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
                if value is None or (type(value) is str and _plain_str(self.descriptor)):
                    return super().coerce(value, param, ctx)  # None/(), or _coerce_value below
                return self._typer().coerce(value, param=param, ctx=ctx)

            def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
                if type(value) is str and _plain_str(self.descriptor):
                    return value
                return self._typer()._coerce_value(value, param=param, ctx=ctx)
    except TypeError:  # not a frozen dataclass in this typer
        return None
    return Deferred


def _plain_str(desc: Any) -> bool:
    """A ``str`` parameter whose typer adapter is ``str(value)`` + pydantic's ``str``: no parser, no file."""
    return (desc.annotation is str and desc.file_annotation is None
            and getattr(desc.parameter_info, "parser", None) is None)
