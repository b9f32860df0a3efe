"""Rendering helpers shared by the commands: one JSON document on stdout, rich on the terminal.

Kept free of heavy imports: numpy/pandas values are converted by duck typing.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import sys
from pathlib import Path
from typing import Any

from rich.console import Console


def _default(obj: Any) -> Any:
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return _clean(obj.item())
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy array
        return _clean(obj.tolist())
    if hasattr(obj, "isoformat"):  # datetime, pandas Timestamp
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, _dt.timedelta) or type(obj).__name__ == "Timedelta":
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean(obj: Any) -> Any:
    """Replace NaN/inf by None so that the output is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def to_json(obj: Any, *, indent: int | None = 2) -> str:
    """Serialise ``obj`` as strict JSON (NaN -> null; numpy, timestamps and paths converted)."""
    return json.dumps(_clean(obj), default=_default, indent=indent, allow_nan=False)


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
