"""Benchmark: what a plug-in feature kind costs in the live loop, beside the built-in kinds.

The streaming evaluator generates one update function for the built-in kinds; a plug-in kind is
a call from it into the plug-in's own ``update(o, h, low, c, v)`` closure (docs/plugins.md). On the
same seeded bars (``generate_bars``), per bar (best of ``--repeat`` runs, with the load average):

* ``rsi_14`` alone, and the default 25-feature set: built-in generated code (the peers);
* ``efficiency_ratio_10`` (examples/plugin, Kaufman efficiency ratio, an O(window) ``math.fsum`` per
  bar), alone and added to the default set;
* ``noop`` plug-in (returns the close): the fixed cost of the call into a plug-in.

Also the batch evaluator over the whole series for the same sets. The example plug-in is imported
from ``examples/plugin/src`` and provided in-process (``aitrader.plugins.provide``), so nothing is
installed. Usage: .venv/bin/python scripts/bench/plugins.py [--bars 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples" / "plugin" / "src"))

from aitrader import plugins  # noqa: E402
from aitrader.data.synthetic import generate_bars  # noqa: E402
from aitrader.features import FeaturePipeline  # noqa: E402
from aitrader.features.kinds import FeatureKind  # noqa: E402


def _noop_stream(params: dict) -> object:
    def update(o: float, h: float, low: float, c: float, v: float) -> float:
        return c

    return update


NOOP = FeatureKind(name="noop", summary="the close (benchmark)", batch=lambda o, h, low, c, v, p: c.copy(),
                   stream=_noop_stream,
                   features=({"name": "noop", "description": "close", "group": "price", "params": {},
                              "warmup": 0, "metadata": {}},))


def _best(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from aitrader_example_plugin.features import EFFICIENCY_RATIO

    bars = generate_bars(args.bars, seed=0)
    with plugins.provide("features", "efficiency_ratio", EFFICIENCY_RATIO), plugins.provide("features", "noop", NOOP):
        default = FeaturePipeline().names
        sets = {"rsi_14 (built-in)": ["rsi_14"], "noop (plug-in)": ["noop"],
                "efficiency_ratio_10 (plug-in)": ["efficiency_ratio_10"],
                f"default {len(default)} (built-in)": default,
                "default + efficiency_ratio_10": [*default, "efficiency_ratio_10"]}
        print(f"{args.bars:,} bars, best of {args.repeat}; load average {os.getloadavg()[0]:.2f} "
              f"on {os.cpu_count()} cores")
        print(f"{'features':34} {'stream us/bar':>14} {'batch ns/bar':>13}")
        rows = {}
        for label, names in sets.items():
            pipeline = FeaturePipeline(names)
            stream = _best(lambda p=pipeline: p.transform_streaming(bars), args.repeat) / args.bars * 1e6
            batch = _best(lambda p=pipeline: p.transform(bars), args.repeat) / args.bars * 1e9
            rows[label] = stream
            print(f"{label:34} {stream:14.2f} {batch:13.1f}")
        base, extra = rows[f"default {len(default)} (built-in)"], rows["default + efficiency_ratio_10"]
        print(f"efficiency_ratio_10 adds {extra - base:.2f} us/bar to the default set's {base:.2f} "
              f"(x{extra / base:.2f}); the plug-in call itself (noop) costs "
              f"{rows['noop (plug-in)']:.2f} us/bar against rsi_14's {rows['rsi_14 (built-in)']:.2f}")
        print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
