"""Benchmark: `Registry.verify` throughput next to `sha256sum` on the same 200 MB artifact.

    .venv/bin/python scripts/bench/registry.py [--mb 200] [--repeat 3]

Builds an artifact (manifest.json + one random payload file) in a temporary folder, registers
it, then times `Registry.verify` and `sha256sum` on the registered payload in the same run.
Each figure is the best of --repeat runs, with the median beside it (a first verify warms the
page cache for both), as wall time and as CPU time (user + system; fairer when other work shares
the machine). The 1-minute load average is printed too: on a shared machine read the figures
against it.
Also reports how long the register itself took (copy + hash + fsync + index).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from aitrader.registry import Registry  # noqa: E402
from tests.unit.test_registry_support import make_manifest  # noqa: E402


def _write_payload(path: Path, mb: int) -> None:
    chunk = 1 << 20
    with path.open("wb") as f:
        for _ in range(mb):
            f.write(os.urandom(chunk))


def _cpu() -> float:
    """CPU seconds of this process plus its finished children (robust when the machine is busy)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn, repeat: int) -> dict[str, float]:
    """Best and median wall seconds, and best CPU seconds, over ``repeat`` runs."""
    wall, cpu = [], []
    for _ in range(repeat):
        c0, start = _cpu(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(_cpu() - c0)
    return {"best": min(wall), "median": statistics.median(wall), "cpu": min(cpu)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=200, help="payload size in MiB (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool; the best is reported")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    if shutil.which("sha256sum") is None:
        sys.exit("sha256sum not found: install coreutils to compare")

    with tempfile.TemporaryDirectory(prefix="aitrader-bench-registry-") as tmp:
        base = Path(tmp)
        art = base / "artifact"
        art.mkdir()
        _write_payload(art / "model.bin", args.mb)
        manifest = make_manifest({"native": "model.bin"})
        (art / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        reg = Registry(base / "models")
        start = time.perf_counter()
        info = reg.register(art, "bench")
        register_s = time.perf_counter() - start
        payload = info.path / "model.bin"
        size = payload.stat().st_size + (info.path / "manifest.json").stat().st_size

        def run_verify() -> None:
            report = reg.verify(info.model_id)
            if not report.ok:
                raise SystemExit(f"verify failed: {report.mismatches}")

        def run_sha256sum() -> None:
            subprocess.run(["sha256sum", str(payload)], check=True, stdout=subprocess.DEVNULL)

        run_verify()  # warm the page cache once, so both tools read from memory
        ver = _timed(run_verify, args.repeat)
        sha = _timed(run_sha256sum, args.repeat)
        payload_mb = payload.stat().st_size / 1e6
        verify_s, sha_s = ver["best"], sha["best"]
        result = {
            "payload_mb": round(payload_mb, 1),
            "register_s": round(register_s, 3),
            "register_mb_s": round(size / 1e6 / register_s, 1),
            "verify_s": round(verify_s, 3),
            "verify_mb_s": round(size / 1e6 / verify_s, 1),
            "verify_median_mb_s": round(size / 1e6 / ver["median"], 1),
            "sha256sum_s": round(sha_s, 3),
            "sha256sum_mb_s": round(payload_mb / sha_s, 1),
            "sha256sum_median_mb_s": round(payload_mb / sha["median"], 1),
            "verify_cpu_s": round(ver["cpu"], 3),
            "sha256sum_cpu_s": round(sha["cpu"], 3),
            "verify_vs_sha256sum": round((size / verify_s) / (payload.stat().st_size / sha_s), 3),
            "repeat": args.repeat,
            "load_1min": round(os.getloadavg()[0], 2),
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"artifact: {result['payload_mb']} MB payload + manifest (best of {args.repeat}, median beside it; "
        f"load average {result['load_1min']})"
    )
    print(f"register (copy+hash+fsync+index): {result['register_s']:.3f} s  {result['register_mb_s']:8.1f} MB/s")
    print(
        f"Registry.verify:                  {result['verify_s']:.3f} s  {result['verify_mb_s']:8.1f} MB/s"
        f"  (median {result['verify_median_mb_s']:.1f} MB/s, cpu {result['verify_cpu_s']:.3f} s)"
    )
    print(
        f"sha256sum (coreutils):            {result['sha256sum_s']:.3f} s  {result['sha256sum_mb_s']:8.1f} MB/s"
        f"  (median {result['sha256sum_median_mb_s']:.1f} MB/s, cpu {result['sha256sum_cpu_s']:.3f} s)"
    )
    print(f"verify / sha256sum throughput:    {result['verify_vs_sha256sum']:.2f}x")


if __name__ == "__main__":
    main()
