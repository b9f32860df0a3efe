"""Small helpers shared across packages; no heavy imports (the CLI's output path uses them)."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def json_clean(obj: Any) -> Any:
    """Plain JSON types only: numpy scalars/arrays converted, NaN/inf -> None, tuples -> lists,
    paths -> str, timestamps -> ISO-8601. Duck-typed so that numpy/pandas need not be imported."""
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy scalar or array
        obj = obj.tolist()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return obj


def pid_alive(pid: Any) -> bool:
    """True when a process with this pid exists (on this host); False for anything not a pid."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` (hidden ``.NAME.*.tmp``) to write; it replaces ``path`` when the
    block ends without an error and is removed otherwise, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
