"""aitrader._lazy: a module imported on first use, then bound in place of its stand-in."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from aitrader._lazy import LazyModule, lazy_module


def test_the_first_attribute_read_imports_and_rebinds_the_name() -> None:
    namespace: dict[str, object] = {}
    namespace["fr"] = lazy_module("fractions", namespace, "fr")
    assert isinstance(namespace["fr"], LazyModule) and repr(namespace["fr"]) == "<lazy module 'fractions'>"
    half = namespace["fr"].Fraction(1, 2)  # type: ignore[attr-defined]
    import fractions

    assert half == fractions.Fraction(1, 2)  # oracle: the real class
    assert namespace["fr"] is fractions  # the stand-in replaced itself: later lookups are the module


def test_a_rebound_name_is_left_alone() -> None:
    namespace: dict[str, object] = {}
    stand_in = lazy_module("fractions", namespace, "fr")
    namespace["fr"] = "something else"  # the module rebound the name meanwhile
    assert stand_in.Fraction(3, 4).denominator == 4
    assert namespace["fr"] == "something else"


def test_a_missing_module_fails_on_first_use_not_before() -> None:
    namespace: dict[str, object] = {}
    namespace["nope"] = lazy_module("aitrader_no_such_module", namespace, "nope")
    with pytest.raises(ModuleNotFoundError, match="aitrader_no_such_module"):
        namespace["nope"].anything  # type: ignore[attr-defined]  # noqa: B018


def test_the_ledger_imports_numpy_only_when_a_block_is_decoded() -> None:
    """Importing the ledger module (what `export fills` does) leaves numpy out; packing a block brings it
    in and gives the bytes numpy itself writes (oracle: zstandard's own decompression of the blob, then the
    byte-shuffled little-endian array numpy writes)."""
    code = textwrap.dedent(
        """
        import sys, zstandard
        import aitrader.trading.ledger as ledger
        before = "numpy" in sys.modules
        blob = ledger.pack_f8([1.5, -2.0, 3.25])
        import numpy as np
        raw = np.array([1.5, -2.0, 3.25], dtype="<f8").view(np.uint8).reshape(3, 8).T.tobytes()
        same = zstandard.ZstdDecompressor().decompress(blob) == raw
        print(before, ledger.np is np, same, ledger.unpack_f8(blob, 3).tolist())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split(maxsplit=3) == ["False", "True", "True", "[1.5, -2.0, 3.25]\n"]
