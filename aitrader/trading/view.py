"""Progress of a run: a live rich view on a terminal, or plain log lines otherwise."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from aitrader.trading.engine import Engine
from aitrader.trading.events import EventBus, EventType
from aitrader.trading.session import RunOptions

log = logging.getLogger("aitrader.trading")


class _Counters:
    """Subscribes to the bus: last signals and error counts for the view."""

    def __init__(self) -> None:
        self.signals: deque[Any] = deque(maxlen=5)
        self.errors: dict[str, int] = {}
        self.rejections: dict[str, int] = {}

    def attach(self, bus: EventBus) -> None:
        bus.subscribe(EventType.SIGNAL, self.signals.append)
        bus.subscribe(EventType.ML_ERROR, lambda e: self._count(self.errors, e.reason))
        bus.subscribe(EventType.RISK_REJECTED, lambda e: self._count(self.rejections, e.reason))

    @staticmethod
    def _count(d: dict[str, int], key: str) -> None:
        d[key] = d.get(key, 0) + 1


def _render(engine: Engine, counters: _Counters) -> Any:
    from rich.table import Table

    st, broker = engine.stats, engine.broker
    table = Table(title=f"paper-trade  {st.last_ts}", show_header=False, expand=False)
    table.add_row("bars", f"{st.bars:,}")
    table.add_row("equity", f"{st.equity:,.2f}  (cash {broker.cash:,.2f}, fees {broker.fees:,.2f})")
    pos = ", ".join(f"{s} {p.quantity:g}@{p.avg_price:.4g}" for s, p in sorted(broker.positions.items()) if p.quantity)
    table.add_row("positions", pos or "flat")
    table.add_row("models", ", ".join(f"{s.model_id}{' (disabled)' if s.disabled else ''}" for s in engine.slots))
    sigs = "; ".join(f"{e.ts} {e.symbol} {e.target_fraction:+.3f} c={e.confidence:.2f}" for e in counters.signals)
    table.add_row("last signals", sigs or "-")
    table.add_row("errors", str(counters.errors or "-"))
    table.add_row("rejections", str(counters.rejections or "-"))
    return table


def attach_view(opts: RunOptions, view: str) -> None:
    """``live``: rich view (the CLI asks for it only on a TTY); ``log``: a line every ~5 s; ``none``."""
    if view == "none":
        return
    counters = _Counters()
    opts.subscribers.append(counters.attach)
    if view == "log":
        state = {"n": 0}

        def log_progress(engine: Engine) -> None:
            state["n"] += 1
            if state["n"] % 20 == 1:  # every ~5 s at the 0.25 s progress cadence
                st = engine.stats
                log.info("bar %s (%s): equity %.2f, errors %s", st.bars, st.last_ts, st.equity, counters.errors)

        opts.progress = log_progress
        return
    from rich.console import Console
    from rich.live import Live

    live = Live(console=Console(), refresh_per_second=4, transient=True)
    started = {"on": False}

    def live_progress(engine: Engine) -> None:
        if not started["on"]:
            live.start()
            started["on"] = True
        live.update(_render(engine, counters))

    opts.progress = live_progress
    opts.on_finish = lambda: live.stop() if started["on"] else None
