"""Streaming evaluator: one bar in, one feature row out, O(1) time and bounded memory (live).

Speed in pure Python comes from generating ONE update function per pipeline: every state
(ring buffers, running means and variances, EMA and Wilder averages, rolling extremes) is a
closure variable, intermediate series shared by several features are updated once, and there is
no per-feature method call. The generated source is kept in ``StreamingFeatures.source``.

Numerics mirror :mod:`aitrader.features.batch` so both agree to float rounding after warm-up:

* EMAs use pandas' ``adjust=False`` recursion ``(ow*e + a*x) / (ow + a)``, skipped when
  ``x == e``, from the same start bar; Wilder averages are seeded with the mean of the first
  ``window`` values.
* Rolling mean/variance use the fixed-window Welford update; a run of ``window`` equal values
  gives the exact mean and a variance of 0 (as pandas does), and every 256 bars the state is
  recomputed exactly from the ring buffer so that rounding cannot drift over millions of bars.
  The Welford removal step leaves an error proportional to the squares of the values that passed
  through: after a fall of three orders of magnitude in 600 bars (a 0.1 price at 8% a bar) a
  1024-bar refresh let ``bb_pctb_20`` drift 1.2e-6 from the exact value; 256 bars bounds the
  fall between refreshes, at ~0.1 us a bar.
* Before the first bar the rings are filled with copies of it (a virtual flat history); the
  outputs that still depend on it are inside the warm-up and returned as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from aitrader.data.validate import MAX_PRICE, MAX_VOLUME, MIN_PRICE
from aitrader.errors import DataError, FeatureError
from aitrader.features.batch import FLAT_STD, M2_OF
from aitrader.features.registry import FeatureSpec

REFRESH_MASK = 255  # exact recomputation of rolling states every 256 bars (module docstring)

_SERIES = {"close": "c", "high": "h", "low": "l", "volume": "v", "ret1": "r1", "tr": "tr"}


def _window(buf: list[float], p: int, n: int) -> list[float]:
    """The last ``n`` values of a ring buffer whose newest value is at ``p``."""
    s = p - n + 1
    return buf[s : p + 1] if s >= 0 else buf[s:] + buf[: p + 1]


def _bad(i: int, ts: Any, o: float, h: float, low: float, c: float, v: float) -> None:
    raise DataError(
        f"bar {i} ({ts}): invalid values open={o!r} high={h!r} low={low!r} close={c!r} volume={v!r}; "
        f"prices must be in [{MIN_PRICE:g}, {MAX_PRICE:g}], volume in [0, {MAX_VOLUME:g}] (no NaN or inf); "
        "check the data with `aitrader data check`"
    )


class _Gen:
    """Collects state, per-bar code and output expressions, each shared primitive once."""

    def __init__(self, need_m2: set[tuple[str, int]]) -> None:
        self.need_m2 = need_m2  # (series, window) pairs whose variance some feature reads
        self.state: dict[str, str] = {}  # variable -> initial value (source)
        self.init: list[str] = []  # run on the first bar
        self.body: list[str] = []  # every bar, in order
        self.refresh: list[str] = []  # every 256 bars
        self.rings: dict[str, int] = {}  # series -> needed history
        self.runs: set[str] = set()
        self.derived: set[str] = set()
        self.plugins: list[FeatureSpec] = []  # plug-in kinds, each evaluated by its own updater PX[k]
        self._done: set[tuple[Any, ...]] = set()

    def once(self, key: tuple[Any, ...]) -> bool:
        if key in self._done:
            return False
        self._done.add(key)
        return True

    def series(self, name: str) -> str:
        """Local variable holding the current value of ``name`` (derived series computed once)."""
        if name == "ret1" and self.once(("ret1",)):
            self.derived.add("r1")
            self.body.append("r1 = c / pc - 1.0")
        if name == "tr" and self.once(("tr",)):
            self.body += ["tr = h - l", "if i:", "    t = h - pc if h > pc else pc - h",
                          "    if t > tr: tr = t", "    t = l - pc if l > pc else pc - l", "    if t > tr: tr = t"]
        return _SERIES[name]

    def ring(self, name: str, n: int) -> str:
        self.series(name)
        self.rings[name] = max(self.rings.get(name, 1), n)
        return f"B_{name}"

    def stats(self, name: str, n: int) -> tuple[str, str]:
        """Rolling (mean, M2) variables of ``name`` over ``n`` bars."""
        m, q = f"M_{name}_{n}", f"Q_{name}_{n}"
        if self.once(("stats", name, n)):
            x, b, run = self.series(name), self.ring(name, n), f"R_{name}"
            self.runs.add(name)
            self.state.update({m: "0.0", q: "0.0"})
            self.init += [f"{m} = {x}", f"{q} = 0.0"]
            if (name, n) in self.need_m2:
                update = f"d = {x} - y; m0 = {m}; {m} = m0 + d / {n}; {q} += d * ({x} - {m} + y - m0)"
            else:
                update = f"{m} += ({x} - y) / {n}"
            self.body += [f"y = {b}[p - {n}]", f"if {run} >= {n}: {m} = {x}; {q} = 0.0",
                          f"elif {x} != y: {update}"]
            self.refresh += [f"if {run} < {n}:", f"    w = _window({b}, p, {n}); {m} = fsum(w) / {n}"]
            if (name, n) in self.need_m2:
                self.refresh.append(f"    {q} = fsum([(t - {m}) * (t - {m}) for t in w])")
        return m, q

    def extreme(self, name: str, n: int, op: str) -> str:
        """Rolling max (op ``>=``) or min (op ``<=``) of ``name`` over ``n`` bars."""
        var = f"{'HI' if op == '>=' else 'LO'}_{name}_{n}"
        if self.once(("ext", name, n, op)):
            x, b = self.series(name), self.ring(name, n)
            fn = "max" if op == ">=" else "min"
            self.state[var] = "0.0"
            self.init.append(f"{var} = {x}")
            # Only when the value leaving the window was the extreme does the window need a rescan.
            self.body += [f"if {x} {op} {var}: {var} = {x}",
                          f"elif {b}[p - {n}] == {var}: {var} = {fn}(_window({b}, p, {n}))"]
        return var

    def ema(self, x: str, com: float, start: int, key: str) -> str:
        """pandas ``ewm(com, adjust=False)`` of local ``x`` from bar ``start``."""
        var = f"E_{key}"
        if self.once(("ema", key)):
            a = 1.0 / (1.0 + com)
            ow = 1.0 - a
            self.state[var] = "0.0"
            self.body += [f"if i > {start}:",
                          f"    if {x} != {var}: {var} = ({ow!r} * {var} + {a!r} * {x}) / {ow + a!r}",
                          f"elif i == {start}: {var} = {x}"]
        return var

    def wilder(self, x: str, n: int, first: int, key: str) -> str:
        """Wilder average of local ``x`` from bar ``first``, seeded with the mean of its first n."""
        var, acc = f"W_{key}", f"S_{key}"
        if self.once(("wilder", key)):
            seed = first + n - 1
            a = 1.0 / (1.0 + (n - 1.0))
            ow = 1.0 - a
            self.state.update({var: "0.0", acc: "0.0"})
            self.body += [f"if i > {seed}:",
                          f"    if {x} != {var}: {var} = ({ow!r} * {var} + {a!r} * {x}) / {ow + a!r}",
                          f"elif i >= {first}:",
                          f"    {acc} += {x}",
                          f"    if i == {seed}: {var} = {acc} / {n}"]
        return var

    def std(self, name: str, n: int, ddof: int) -> tuple[str, str]:
        m, q = self.stats(name, n)
        var = f"SD_{name}_{n}_{ddof}"
        if self.once(("std", name, n, ddof)):
            self.body.append(f"{var} = sqrt({q} / {n - ddof}) if {q} > 0.0 else 0.0")
        return m, var


def _rsi(g: _Gen, p: dict[str, Any]) -> str:
    n = p["window"]
    if g.once(("rsi_diff",)):
        g.body += ["dc = c - pc", "gain = dc if dc > 0.0 else 0.0", "loss = -dc if dc < 0.0 else 0.0"]
    ag, al = g.wilder("gain", n, 1, f"gain_{n}"), g.wilder("loss", n, 1, f"loss_{n}")
    return f"(100.0 * {ag} / ({ag} + {al}) if {ag} + {al} > 0.0 else 50.0)"


def _macd(g: _Gen, p: dict[str, Any]) -> str:
    f, s, sg = p["fast"], p["slow"], p["signal"]
    raw = f"MR_{f}_{s}"
    if g.once(("macd", f, s)):
        ef = g.ema("c", (f - 1) / 2.0, 0, f"close_{f}")
        es = g.ema("c", (s - 1) / 2.0, 0, f"close_{s}")
        g.body.append(f"{raw} = {ef} - {es}")
    # The signal EMA starts where a MACD line first exists (bar slow-1), as in batch and `ta`.
    sig = g.ema(raw, (sg - 1) / 2.0, s - 1, f"macd_{f}_{s}_{sg}")
    return {"line": f"{raw} / c", "signal": f"{sig} / c", "hist": f"({raw} - {sig}) / c"}[p["output"]]


def _bb(g: _Gen, p: dict[str, Any]) -> str:
    m, sd = g.std("close", p["window"], 0)
    k2 = 2.0 * float(p["k"])
    return f"0.5 + ((c - {m}) / ({k2!r} * {sd}) if {k2!r} * {sd} > {FLAT_STD!r} * abs({m}) else 0.0)"


def _zscore(g: _Gen, p: dict[str, Any]) -> str:
    m, sd = g.std("volume", p["window"], 0)
    return f"((v - {m}) / {sd} if {sd} > {FLAT_STD!r} * abs({m}) else 0.0)"


def _liquidity_shock(g: _Gen, p: dict[str, Any]) -> str:
    n = p["window"]
    atr = g.wilder(g.series("tr"), n, 0, f"tr_{n}")
    return f"({_zscore(g, p)} * ((h - l) / {atr} if {atr} > 0.0 else 0.0))"


def _volume_ratio(g: _Gen, p: dict[str, Any]) -> str:
    m = g.stats("volume", p["window"])[0]
    return f"(v / {m} if {m} > 0.0 else 1.0)"


def _range(template: str) -> Callable[[_Gen, dict[str, Any]], str]:
    def emit(g: _Gen, p: dict[str, Any]) -> str:
        n = p["window"]
        return template.format(hi=g.extreme("high", n, ">="), lo=g.extreme("low", n, "<="))

    return emit


_EMIT: dict[str, Callable[[_Gen, dict[str, Any]], str]] = {
    "price": lambda g, p: "c",
    "return": lambda g, p: f"c / {g.ring('close', p['window'])}[p - {p['window']}] - 1.0",
    "sma_ratio": lambda g, p: f"c / {g.stats('close', p['window'])[0]} - 1.0",
    "ema_ratio": lambda g, p: f"c / {g.ema('c', (p['span'] - 1) / 2.0, 0, 'close_' + str(p['span']))} - 1.0",
    "rsi": _rsi,
    "macd": _macd,
    "bb_pctb": _bb,
    "atr": lambda g, p: f"{g.wilder(g.series('tr'), p['window'], 0, 'tr_' + str(p['window']))} / c",
    "volatility": lambda g, p: g.std("ret1", p["window"], 1)[1],
    "volume_zscore": _zscore,
    "volume_ratio": _volume_ratio,
    "hl_range": lambda g, p: "(h - l) / c",
    "close_location": lambda g, p: "(((c - l) - (h - c)) / (h - l) if h - l > 0.0 else 0.0)",
    "stoch_k": _range("(100.0 * (c - {lo}) / ({hi} - {lo}) if {hi} - {lo} > 0.0 else 50.0)"),
    "williams_r": _range("(100.0 * (c - {hi}) / ({hi} - {lo}) if {hi} - {lo} > 0.0 else -50.0)"),
    "dist_high": _range("c / {hi} - 1.0"),
    "dist_low": _range("c / {lo} - 1.0"),
    "liquidity_shock": _liquidity_shock,
}


def _plugin(g: _Gen, spec: FeatureSpec) -> str:
    """A plug-in kind (``FeatureKind.stream``): its own stateful updater, called once per bar."""
    g.plugins.append(spec)
    return f"PX[{len(g.plugins) - 1}](o, h, l, c, v)"


def plugin_specs(specs: list[FeatureSpec]) -> list[FeatureSpec]:
    """The specs of plug-in kinds, in the order of the generated source's ``PX`` updaters."""
    from aitrader.features.kinds import is_plugin_kind

    return [s for s in specs if s.kind not in _EMIT and is_plugin_kind(s.kind)]


def _indent(lines: list[str], n: int) -> str:
    return "".join(" " * n + line + "\n" for line in lines)


def generate_source(specs: list[FeatureSpec]) -> tuple[str, dict[str, int]]:
    """Python source of the factory for ``specs``, and the ring lengths it needs."""
    g = _Gen({(M2_OF[s.kind], s.params["window"]) for s in specs if s.kind in M2_OF})
    from aitrader.features.kinds import is_plugin_kind

    outputs = [_plugin(g, s) if s.kind not in _EMIT and is_plugin_kind(s.kind) else _EMIT[s.kind](g, s.params)
               for s in specs]
    rings = [f"B_{name}" for name in g.rings]
    runs = [f"R_{name}" for name in sorted(g.runs)]
    state = list(g.state) + runs
    init = [f"{b}[:] = [{_SERIES[name]}] * L" for name, b in zip(g.rings, rings, strict=True)]
    init += [f"{r} = L" for r in runs] + g.init
    pre = [f"{b}[p] = {_SERIES[name]}" for name, b in zip(g.rings, rings, strict=True)]
    # Length of the run of equal values ending at this bar (exact flat windows, like pandas).
    for name in sorted(g.runs):
        pre += [f"if {_SERIES[name]} == B_{name}[p - 1]: R_{name} += 1", f"else: R_{name} = 1"]
    src = ["def factory(L, out, WU, WMAX, K, nan, sqrt, fsum, _window, _bad, PX):",
           "    i = 0; p = 0; pc = 0.0"]
    src += [f"    {b} = [0.0] * L" for b in rings] + [f"    {v} = {g.state.get(v, '0')}" for v in state]
    nonlocal_vars = ", ".join(["i", "p", "pc", *rings, *state]) if state else "i, p, pc"
    src += ["    def update(ts, o, h, l, c, v):",
            f"        nonlocal {nonlocal_vars}",
            # Comparisons are False for NaN, and the upper bounds refuse inf: one test covers all.
            f"        if not ({MIN_PRICE!r} <= o <= {MAX_PRICE!r} and {MIN_PRICE!r} <= h <= {MAX_PRICE!r}"
            f" and {MIN_PRICE!r} <= l <= {MAX_PRICE!r} and {MIN_PRICE!r} <= c <= {MAX_PRICE!r}"
            f" and 0.0 <= v <= {MAX_VOLUME!r}):",
            "            _bad(i, ts, o, h, l, c, v)",
            "        if i == 0: pc = c",
            "        else:",
            "            p += 1",
            "            if p == L: p = 0"]
    # r1 first: the first bar's ring fill and state seeds may need it.
    body = [line for line in g.body if not line.startswith("r1 =")]
    src.append(_indent(["r1 = c / pc - 1.0"] if "r1" in g.derived else [], 8).rstrip("\n"))
    if init:
        src += ["        if i == 0:", _indent(init, 12).rstrip("\n")]
    src.append(_indent(pre, 8).rstrip("\n"))
    src.append(_indent(body, 8).rstrip("\n"))
    if g.refresh:
        src += [f"        if (i & {REFRESH_MASK}) == {REFRESH_MASK}:", _indent(g.refresh, 12).rstrip("\n")]
    src += [f"        out[{k}] = {expr}" for k, expr in enumerate(outputs)]
    src += ["        if i < WMAX:",
            "            for k in range(K):",
            "                if i < WU[k]: out[k] = nan",
            "        pc = c",
            "        i += 1",
            "        return out",
            "    def count():",
            "        return i",
            "    return update, count"]
    text = "\n".join(line for line in src if line) + "\n"
    return text, dict(g.rings)


def _updater(spec: FeatureSpec) -> Callable[[float, float, float, float, float], float]:
    """A fresh streaming state of a plug-in kind for ``spec`` (``FeatureKind.stream(params)``)."""
    from aitrader.features.kinds import FeatureKind, get_kind

    kind = get_kind(spec.kind)
    assert isinstance(kind, FeatureKind) and kind.stream is not None  # a spec's kind was validated
    update = kind.stream(dict(spec.params))
    if not callable(update):
        raise FeatureError(f"feature {spec.name}: the {spec.kind} plug-in's stream(params) returned "
                           f"{type(update).__name__}, not an update(o, h, low, c, v) function")
    return update


class StreamingFeatures:
    """Bar-by-bar evaluator of one pipeline's features (create it with ``FeaturePipeline.stream``).

    ``update(ts, o, h, l, c, v) -> np.ndarray`` returns the row in ``names`` order, NaN while a
    feature warms up. The returned array is reused by the next call: copy it to keep it.
    """

    def __init__(self, specs: list[FeatureSpec], buffer_size: int = 500) -> None:
        if not specs:
            raise FeatureError("a streaming evaluator needs at least one feature")
        self.names = [s.name for s in specs]
        self.warmups = [s.warmup for s in specs]
        self.warmup = max(self.warmups)
        self.source, rings = generate_source(specs)
        need = max([n + 1 for n in rings.values()] + [2])
        if buffer_size < need:
            raise FeatureError(f"buffer_size {buffer_size} is too small for features {', '.join(self.names)}: "
                               f"they need {need} bars of history; use buffer_size >= {need}")
        self.buffer_size = buffer_size
        self._out = np.full(len(specs), np.nan)
        updaters = tuple(_updater(s) for s in plugin_specs(specs))
        namespace: dict[str, Any] = {}
        # The source is generated from validated integer/float parameters only, never from user text.
        exec(compile(self.source, "<aitrader.features.streaming>", "exec"), namespace)  # noqa: S102
        self.update, self._count = namespace["factory"](
            buffer_size, self._out, tuple(self.warmups), self.warmup, len(specs),
            math.nan, math.sqrt, math.fsum, _window, _bad, updaters)

    @property
    def bars_seen(self) -> int:
        """Number of bars passed to ``update`` so far."""
        return int(self._count())

    @property
    def ready(self) -> bool:
        """True once every feature is past its warm-up (the row has no NaN)."""
        return self.bars_seen > self.warmup

    def run(self, o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray,
            index: Any = None) -> np.ndarray:
        """Feed every bar of the arrays through ``update``; return the matrix of rows."""
        n = len(c)
        rows = np.empty((n, len(self.names)))
        update = self.update
        ts_list = list(index) if index is not None else range(n)
        for k, (ts, a, b, x, y, z) in enumerate(zip(ts_list, o.tolist(), h.tolist(), low.tolist(), c.tolist(),
                                                    v.tolist(), strict=True)):
            rows[k] = update(ts, a, b, x, y, z)
        return rows
