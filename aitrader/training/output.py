"""Where ``aitrader train`` may write, and what ``--force`` may replace.

``--force`` replaces an existing artifact folder; it must never delete anything else. So:

* a folder that is the working directory, an ancestor of it, the home folder or ``/`` is never an
  output folder (moving it aside would take everything under it);
* nothing is written inside a registry (the configured ``$AITRADER_REGISTRY`` or ``./models``, or
  any folder with a ``registry.db`` above the target): only ``aitrader register`` writes there,
  and a version folder overwritten in place would no longer match its recorded hashes;
* an existing, non-empty folder is replaced only when it IS an aitrader artifact: a readable
  ``manifest.json`` with a ``format_version``, the model files it names and nothing else. Any
  other entry is named in the error as the file that would be lost.

The check runs when the output folder is resolved and again right before the swap (training takes
a while; a file may have appeared in between).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from aitrader.errors import ConfigError

MANIFEST_NAME = "manifest.json"  # aitrader.training.manifest.MANIFEST_NAME (a test keeps them equal)
# The registry's own names (aitrader.registry: ENV_ROOT, the default root, its index file); kept
# here rather than imported so training does not depend on the registry package.
REGISTRY_ENV = "AITRADER_REGISTRY"
REGISTRY_DEFAULT_ROOT = "models"
REGISTRY_INDEX = "registry.db"


def _resolved(path: Path) -> Path:
    try:
        return path.expanduser().resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return path.absolute()


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def registry_roots() -> list[Path]:
    """The configured registry roots: ``$AITRADER_REGISTRY`` (when set) and ``./models``."""
    roots = [Path(REGISTRY_DEFAULT_ROOT)]
    env = os.environ.get(REGISTRY_ENV)
    if env:
        roots.insert(0, Path(env))
    return [_resolved(r) for r in roots]


def registry_containing(path: Path) -> Path | None:
    """The registry root that ``path`` is inside of (or is), if any."""
    target = _resolved(path)
    for root in registry_roots():
        if _is_within(target, root):
            return root
    for folder in (target, *target.parents):
        try:
            if (folder / REGISTRY_INDEX).exists():
                return folder
        except OSError:
            continue
    return None


def _protected(target: Path) -> str | None:
    """Why ``target`` may never be an output folder, or None."""
    cwd = _resolved(Path.cwd())
    if _is_within(cwd, target):
        return "it is the working directory or one of its parents"
    home = _resolved(Path.home())
    if _is_within(home, target):
        return "it is the home folder or one of its parents"
    return None


def artifact_problem(folder: Path) -> str | None:
    """None when ``folder`` is an aitrader artifact (manifest + its model files, nothing else);
    otherwise the reason, naming the first entry that is not part of one."""
    manifest_path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        manifest = None
    if not isinstance(manifest, dict) or "format_version" not in manifest:
        try:
            first = next((p for p in sorted(folder.iterdir()) if p.name != MANIFEST_NAME), manifest_path)
        except OSError:
            first = manifest_path
        return (f"it has no readable {MANIFEST_NAME} with a format_version, so {first} (and anything "
                "else in it) would be lost")
    model = manifest.get("model")
    files = model.get("files") if isinstance(model, dict) else None
    expected = {MANIFEST_NAME}
    if isinstance(files, dict):
        expected.update(str(v) for v in files.values() if isinstance(v, str))
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        return f"it cannot be listed ({exc.strerror or exc})"
    for entry in entries:
        if entry.name not in expected or entry.is_symlink() or not entry.is_file():
            return f"{entry} is not part of an aitrader artifact and would be lost"
    return None


def check_out_dir(path: Path, *, overwrite: bool) -> None:
    """Refuse an output folder that ``train`` must not write to or replace (see the module docstring)."""
    target = _resolved(path)
    why = _protected(target)
    if why is not None:
        raise ConfigError(f"refusing to write the artifact to {path}: {why}; pass --out with a new folder "
                          "such as artifacts/NAME")
    registry = registry_containing(path)
    if registry is not None:
        raise ConfigError(
            f"refusing to write the artifact to {path}: it is inside the model registry {registry}, where "
            "only `aitrader register` writes; train to a folder outside it (e.g. artifacts/NAME), then "
            "register it"
        )
    existing = next((p for p in (path, *path.parents) if os.path.lexists(p)), None)
    if existing is not None and existing != path and not existing.is_dir():
        raise ConfigError(f"output path {path}: {existing} is not a folder; choose another --out")
    if not os.path.lexists(path):
        return
    if not path.is_dir():
        raise ConfigError(f"output path {path} exists and is not a folder; choose another --out")
    if not any(path.iterdir()):
        return
    if not overwrite:
        raise ConfigError(
            f"output folder {path} already exists and is not empty; pass --force to replace it "
            "or choose another --out"
        )
    problem = artifact_problem(path)
    if problem is not None:
        raise ConfigError(
            f"--force replaces only an aitrader artifact folder, and {path} is not one: {problem}; "
            "move what you want to keep or choose another --out"
        )
