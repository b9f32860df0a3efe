"""The monitor's HTML report: the run's tearsheet with the monitor's findings on top.

``monitor --report`` and ``backtest --report`` write the same page (:mod:`aitrader.monitoring.tearsheet`):
one self-contained file (PNG charts embedded as base64 data URIs) that opens offline and can be
mailed or archived. The monitor adds its health, alerts, operations, accuracy and drift table.
The page is written to a temporary file in the target folder and renamed, so a crash never leaves
half a report.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aitrader.monitoring.monitor import MonitorResult


def write_report(result: MonitorResult, path: str | Path, *, manifest: Mapping[str, Any] | None = None) -> Path:
    """Write the run's tearsheet with ``result``'s findings to ``path`` atomically; return the path.

    ``manifest``: the monitored model's (feature importance, holdout references).
    """
    from aitrader.monitoring.tearsheet import write_tearsheet

    s = result.summary
    model = s.get("model") or {}
    title = f"aitrader monitor: run {s.get('run_id')}, model {model.get('model_id')} v{model.get('version')}"
    return write_tearsheet(Path(path), run_dir=Path(s["run_dir"]), manifest=dict(manifest) if manifest else None,
                           monitor_summary=s, title=title)
