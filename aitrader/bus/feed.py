"""``aitrader feed``: bars from files onto the bar streams as ``market.data.update``.

A symbol's bars always go to one shard (``crc32(symbol) % bus.shards``), in order, so the
predict-worker that holds the shard sees them in order. A bar's id is ``bar:{SYMBOL}:{index}``
(index = position in the file); the last index published per symbol is kept in
``{prefix}:feed:last`` in the same transaction as the bars, so a restarted feeder continues
after it instead of publishing a bar twice. Each symbol's calendar (asset class, periods per year)
goes to ``{prefix}:feed:meta`` before its first bar: the trader resolves costs from it as
``paper-trade`` does from the files.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from aitrader.bus.client import RETRYABLE, Bus
from aitrader.bus.events import BAR, BAR_END, fields
from aitrader.bus.settings import BusSection
from aitrader.errors import BusError, DataError


def read_data(data: list[str]) -> dict[str, Any]:
    """``--data`` items (SYMBOL=PATH, a file, a directory) as validated frames by symbol."""
    from aitrader.data import load_data_items

    frames: dict[str, Any] = load_data_items(data)[0]
    if not frames:
        raise DataError("no bars: pass --data SYMBOL=PATH (repeatable)")
    return frames


def symbol_meta(df: Any) -> dict[str, Any]:
    from aitrader.trading.summary import calendar_of
    from aitrader.training.backtest import asset_class_of

    return {"asset_class": asset_class_of(df.index), "calendar": calendar_of(df.index), "rows": len(df)}


class Feeder:
    def __init__(self, cfg: BusSection, url: str | None, *, stop: threading.Event | None = None) -> None:
        self.bus = Bus(cfg, url, role="feed", stop=stop)
        self.cfg = cfg
        self.last_key = self.bus.key("feed", "last")
        self.pending: list[tuple[str, dict[bytes, bytes], str, int]] = []
        self.published = 0
        self.skipped = 0

    def start_symbols(self, metas: dict[str, dict[str, Any]]) -> dict[str, int]:
        """Record each symbol's calendar; the last bar index already published per symbol."""
        self.bus.ping()
        meta_key = self.bus.key("feed", "meta")
        self.bus.call(lambda r: r.hset(meta_key, mapping={s: json.dumps(m) for s, m in metas.items()}))
        got = self.bus.call(lambda r: r.hmget(self.last_key, list(metas)))
        return {s: int(v) for s, v in zip(metas, got, strict=True) if v is not None}

    def add(self, sym: str, i: int, ts: str, epoch: float, vals: list[float] | tuple[float, ...]) -> None:
        o, h, lo, c, v = vals
        data = {"symbol": sym, "i": i, "ts": ts, "epoch": epoch, "o": o, "h": h, "l": lo, "c": c, "v": v}
        self.pending.append((self.bus.bar_stream(self.bus.shard_of(sym)), fields(BAR, f"bar:{sym}:{i}",
                                                                                    self.bus.name, data), sym, i))
        if len(self.pending) >= self.cfg.batch_size:
            self.flush(block=False)

    def end(self, sym: str, n: int) -> None:
        self.pending.append((self.bus.bar_stream(self.bus.shard_of(sym)),
                             fields(BAR_END, f"end:{sym}:{n}", self.bus.name, {"symbol": sym, "i": n}), sym, -1))
        self.flush()

    def flush(self, *, block: bool = True) -> None:
        """The pending bars and the per-symbol last index, in one transaction. ``block=False`` while the
        bus is down (breaker open, or a failed try): the bars wait in memory, in order, up to
        ``breaker.buffer_max``, past which the feed stops with a BusError rather than drop one."""
        if not self.pending:
            return
        last: dict[str, int] = {}
        for _, _, sym, i in self.pending:
            if i >= 0:
                last[sym] = i
        try:
            self.bus.transaction([(s, f) for s, f, _, _ in self.pending],
                                 hashes=[(self.last_key, last)],
                                 retry=block)
        except RETRYABLE:
            if len(self.pending) >= self.cfg.breaker.buffer_max:
                raise BusError(f"the bus at {self.bus.url} is unreachable and {len(self.pending)} bars wait in "
                               "memory (bus.breaker.buffer_max); stopping without dropping any: start redis-server, "
                               "then run the feed again (it continues after the last bar it published)") from None
            return
        self.published += sum(1 for *_, i in self.pending if i >= 0)
        self.pending = []

    def heartbeat(self) -> None:
        self.bus.heartbeat({"published_bars": self.published}, ttl_ms=max(3 * self.cfg.lease_ms, 3000))


def feed(cfg: BusSection, url: str | None, data: list[str], *, speed: float = 0.0, follow: bool = False,
         stop: threading.Event | None = None) -> dict[str, Any]:
    """Publish the bars of ``data`` (``follow``: then tail the one file); returns counts."""
    from aitrader.trading.sources import BarSeries, pace, replay_steps

    stop = stop or threading.Event()
    if follow and len(data) != 1:
        raise DataError("--follow tails exactly one file: pass one --data SYMBOL=PATH")
    frames = read_data(data)
    feeder = Feeder(cfg, url, stop=stop)
    t0 = time.perf_counter()
    try:
        done = feeder.start_symbols({s: symbol_meta(df) for s, df in frames.items()})
        if follow:
            sym = next(iter(frames))
            _follow(feeder, sym, Path(data[0].partition("=")[2] or data[0]), done.get(sym, -1), stop)
        else:
            series = [BarSeries.from_frame(s, df) for s, df in frames.items()]
            epoch0: float | None = None
            wall0 = 0.0
            beat = time.monotonic()
            for ts, epoch, bars in replay_steps(series):
                if stop.is_set():
                    break
                if speed > 0:
                    if epoch0 is None:
                        epoch0, wall0 = epoch, time.monotonic()
                    feeder.flush(block=False)  # a paced feed keeps its pace while the bus is down
                    pace(speed, epoch0, wall0, epoch)
                for sym, i, *vals in bars:
                    if i <= done.get(sym, -1):
                        feeder.skipped += 1
                        continue
                    feeder.add(sym, i, ts, epoch, vals)
                if time.monotonic() - beat > 1.0:
                    feeder.heartbeat()
                    beat = time.monotonic()
            if not stop.is_set():
                for s in series:
                    feeder.end(s.symbol, len(s))
        feeder.flush()
    finally:
        feeder.bus.close()
    elapsed = time.perf_counter() - t0
    return {"symbols": sorted(frames), "published": feeder.published, "skipped": feeder.skipped,
            "seconds": round(elapsed, 3), "bars_per_s": round(feeder.published / elapsed, 1) if elapsed else None,
            "url": feeder.bus.url}


def _follow(feeder: Feeder, sym: str, path: Path, done: int, stop: threading.Event) -> None:
    """Tail ``path`` (aitrader.trading.sources.FollowSource: bad lines are skipped) until ``stop``."""
    from aitrader.trading.sources import FollowSource

    source = FollowSource(path, sym, stop_event=stop)
    beat = time.monotonic()
    for _ts, epoch, bars in source.steps():
        for bar in bars:
            if bar[1] > done:
                feeder.add(sym, bar[1], _ts, epoch, bar[2:])
        feeder.flush(block=False)  # live bars go out as they come (or wait in memory while the bus is down)
        if time.monotonic() - beat > 1.0:
            feeder.heartbeat()
            beat = time.monotonic()
