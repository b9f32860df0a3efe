"""Progress of a run: a live rich view on a terminal, or plain log lines otherwise.

The live view is a progress bar (bars done of the replay's total, percent, elapsed, ETA and bars/s;
a ``--follow`` run has no total and shows the rate only) above a table of the run's state. Rich
redraws it on its own timer (4 times a second) from the engine's current state, so it never stays
stale between steps: after a burst of appended bars in ``--follow`` it shows the last of them even
when no further bar arrives.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from aitrader.trading.engine import Engine
from aitrader.trading.events import EventBus, EventType
from aitrader.trading.session import RunOptions

log = logging.getLogger("aitrader.trading")

REFRESH_PER_SECOND = 4


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


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {n:,}" for k, n in sorted(d.items())) or "-"


def _render(engine: Engine, counters: _Counters) -> Any:
    from rich import box
    from rich.table import Table

    st, broker = engine.stats, engine.broker
    table = Table(title=f"paper-trade  {st.last_ts}", title_justify="left", show_header=False,
                  box=box.SIMPLE, expand=False)
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("bars", f"{st.bars:,}")
    table.add_row("equity", f"{st.equity:,.2f}  (cash {broker.cash:,.2f}, fees {broker.fees:,.2f})")
    pos = ", ".join(f"{s} {p.quantity:g} @ {p.avg_price:,.4g}"
                    for s, p in sorted(list(broker.positions.items())) if p.quantity)
    table.add_row("positions", pos or "flat")
    table.add_row("models", ", ".join(f"{s.model_id}{' (disabled)' if s.disabled else ''}" for s in engine.slots))
    sigs = "; ".join(f"{e.ts} {e.symbol} {e.target_fraction:+.3f} c={e.confidence:.2f}" for e in list(counters.signals))
    table.add_row("last signals", sigs or "-")
    table.add_row("errors", _counts(counters.errors))
    table.add_row("rejections", _counts(counters.rejections))
    return table


def progress_columns() -> list[Any]:
    """Description, bar, percent, done/total, elapsed, ETA and rate: the columns of a replay's progress."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return [TextColumn("[bold]{task.description}"), BarColumn(bar_width=30), TaskProgressColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("{task.fields[rate]}")]


class LiveView:
    """What rich's Live draws on each of its timer ticks: progress, then the run's state table."""

    def __init__(self, opts: RunOptions, counters: _Counters) -> None:
        from rich.progress import Progress

        self.opts = opts
        self.counters = counters
        self.engine: Engine | None = None
        self.progress = Progress(*progress_columns(), auto_refresh=False, expand=False)
        self.task = self.progress.add_task("replay", total=None, rate="")
        self.first: tuple[int, float] | None = None  # (bars, monotonic time) at the first sight of the engine
        self._last: Any = None

    def total(self) -> int | None:
        total = self.opts.total_bars
        if total is None:
            return None
        if self.opts.max_bars is not None and self.first is not None:
            total = min(total, self.first[0] + self.opts.max_bars)
        return int(total)

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        engine = self.engine
        if engine is None:
            return Text("waiting for the first bars ...", style="dim")
        try:  # drawn from rich's refresh thread while the engine runs: a dict may change under us
            bars = engine.stats.bars
            now = time.monotonic()
            if self.first is None:
                self.first = (bars, now)
            done, since = bars - self.first[0], now - self.first[1]
            rate = f"{done / since:,.0f} bars/s" if since > 0.5 and done else ""
            total = self.total()
            self.progress.update(self.task, completed=bars, total=total, rate=rate,
                                 description="follow" if self.opts.live else "replay")
            self._last = Group(self.progress, _render(engine, self.counters))
        except RuntimeError:  # "dictionary changed size during iteration": keep the last frame
            pass
        return self._last if self._last is not None else Text("")


def attach_view(opts: RunOptions, view: str) -> None:
    """``live``: rich view (the CLI asks for it only on a TTY); ``log``: a line every ~5 s; ``none``."""
    if view == "none":
        return
    counters = _Counters()
    opts.subscribers.append(counters.attach)
    if view == "log":
        state: dict[str, Any] = {"n": 0, "t0": None}

        def log_progress(engine: Engine) -> None:
            state["n"] += 1
            st = engine.stats
            if state["t0"] is None:
                state["t0"] = (st.bars, time.monotonic())
            if state["n"] % 20 == 1:  # every ~5 s at the 0.25 s progress cadence
                total = opts.total_bars
                done = f"{st.bars:,}/{total:,} ({st.bars / total:.0%})" if total else f"{st.bars:,}"
                elapsed = time.monotonic() - state["t0"][1]
                rate = (st.bars - state["t0"][0]) / elapsed if elapsed > 0 else 0.0
                log.info("bar %s (%s): equity %.2f, %.0f bars/s, errors %s", done, st.last_ts, st.equity, rate,
                         _counts(counters.errors))

        opts.progress = log_progress
        return
    from rich.console import Console
    from rich.live import Live

    screen = LiveView(opts, counters)
    live = Live(screen, console=Console(), refresh_per_second=REFRESH_PER_SECOND, transient=True,
                auto_refresh=True)
    started = {"on": False}

    def live_progress(engine: Engine) -> None:
        screen.engine = engine
        if not started["on"]:
            live.start()
            started["on"] = True

    def start_early(bus: EventBus) -> None:  # a --follow run shows "waiting" before its first bar
        if opts.live and not started["on"]:
            live.start()
            started["on"] = True

    opts.subscribers.append(start_early)
    opts.progress = live_progress

    def finish() -> None:
        if started["on"]:
            live.refresh()
            live.stop()

    opts.on_finish = finish
