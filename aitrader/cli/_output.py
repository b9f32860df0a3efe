"""Rendering helpers shared by the commands: one JSON document on stdout, rich on the terminal.

Kept free of heavy imports: numpy/pandas values are converted by duck typing.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console

from aitrader._json import to_json

__all__ = ["console", "err_console", "print_json", "to_json"]


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
