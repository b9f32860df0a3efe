"""Rendering helpers shared by the commands: one JSON document on stdout, rich on the terminal.

Kept free of heavy imports: numpy/pandas values are converted by duck typing.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from typing import Any

from rich.console import Console

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


def print_json(obj: Any) -> None:
    """Print exactly one JSON document on stdout."""
    sys.stdout.write(to_json(obj) + "\n")
    sys.stdout.flush()


def console() -> Console:
    """Console for human output (stdout)."""
    return Console(highlight=False)


def err_console() -> Console:
    """Console for progress bars and notes (stderr), so stdout stays clean for pipes."""
    return Console(stderr=True, highlight=False)
