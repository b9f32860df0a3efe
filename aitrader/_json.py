"""Strict JSON text for everything aitrader prints or stores (no heavy imports).

Shared by the CLI's ``--json`` output (:mod:`aitrader.cli._output`) and the library (monitor
state): it sits below both so that no library module reaches up into the CLI package.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from aitrader._util import json_clean


def _default(obj: Any) -> Any:
    """What json_clean leaves for json.dumps: sets and datetime.timedelta."""
    if isinstance(obj, set | frozenset):
        return json_clean(sorted(obj))
    if isinstance(obj, _dt.timedelta):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any, *, indent: int | None = 2) -> str:
    """Serialise ``obj`` as strict JSON (NaN -> null; numpy, timestamps and paths converted)."""
    return json.dumps(json_clean(obj), default=_default, indent=indent, allow_nan=False)
