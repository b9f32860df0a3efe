"""``aitrader monitor --bus URL --follow``: live accuracy from ``feedback.prediction.outcome`` events.

The trader publishes, for every prediction whose horizon has passed, the prediction and the
realised forward return. This consumer (group ``{consumer_group}:monitor`` on ``{prefix}:feedback``,
from the stream's start) keeps the last ``window`` pairs per (run, model, symbol), recomputes the
accuracy with :func:`aitrader.monitoring.accuracy.accuracy_metrics` after each batch, and reports a
``hit_rate`` alert when the rate falls below ``monitoring.hit_rate_min`` with at least
``monitoring.min_outcomes`` outcomes (the ledger-based ``monitor`` stays the full check: drift,
MAE against the training holdout, errors). Repeated events (same id) are counted once.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from aitrader.bus.client import Bus, BusStopped
from aitrader.bus.events import OUTCOME, BadEvent, decode

SEEN_MAX = 200_000  # event ids remembered for de-duplication


def follow_feedback(cfg: Any, url: str | None, *, emit: Callable[[dict[str, Any]], None],
                    window: int | None = None, stop: threading.Event | None = None,
                    max_idle_s: float | None = None) -> dict[str, Any]:
    """Consume outcomes until stopped (or ``max_idle_s`` without one); returns the last state per key."""
    mon = cfg.monitoring
    size = int(window or mon.window)
    bus = Bus(cfg.bus, url, role="monitor", stop=stop)
    bus.ping()
    stream, group = bus.key("feedback"), f"{cfg.bus.consumer_group}:monitor"
    bus.ensure_group(stream, group, "0")
    pairs: dict[tuple[str, str, str], deque[tuple[float, float]]] = {}
    seen: OrderedDict[str, None] = OrderedDict()
    last: dict[tuple[str, str, str], dict[str, Any]] = {}
    idle_since = time.monotonic()
    try:
        while True:
            entries = bus.read({stream: ">"}, group)
            if not entries:
                if max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                    break
                continue
            idle_since = time.monotonic()
            changed = set()
            ids = []
            for s, eid, flds in entries:
                try:
                    ev = decode(flds, max_bytes=cfg.bus.max_event_bytes)
                    if ev.type != OUTCOME:
                        raise BadEvent(f"the feedback stream carries {OUTCOME}, not {ev.type}")
                except BadEvent as exc:
                    bus.dead_letter(s, group, eid, flds, exc.reason)
                    continue
                ids.append(eid)
                d = ev.data
                if ev.id in seen or not isinstance(d.get("prediction"), int | float):
                    continue
                seen[ev.id] = None
                if len(seen) > SEEN_MAX:
                    seen.popitem(last=False)
                key = (d["run_id"], d["model_id"], d["symbol"])
                pairs.setdefault(key, deque(maxlen=size)).append((float(d["prediction"]), float(d["outcome"])))
                changed.add(key)
            for key in sorted(changed):
                last[key] = _row(key, pairs[key], size, mon)
                emit(last[key])
            if ids:
                bus.call(lambda r, ids=ids: r.xack(stream, group, *ids))
    except BusStopped:
        pass
    finally:
        bus.close()
    return {"models": list(last.values()), "alerts": sum(len(r["alerts"]) for r in last.values())}


def _row(key: tuple[str, str, str], pairs: deque[tuple[float, float]], size: int, mon: Any) -> dict[str, Any]:
    import numpy as np

    from aitrader.monitoring.accuracy import accuracy_metrics

    arr = np.asarray(pairs)
    metrics = accuracy_metrics(arr[:, 0], arr[:, 1])
    alerts = []
    if metrics["n"] >= mon.min_outcomes and metrics["hit_rate"] is not None and metrics["hit_rate"] < mon.hit_rate_min:
        alerts.append({"code": "hit_rate", "value": metrics["hit_rate"], "limit": mon.hit_rate_min})
    return {"run_id": key[0], "model_id": key[1], "symbol": key[2], "window": size, **metrics, "alerts": alerts}
