"""Data selection of a run: the sample after the training period, --data forms."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from trading_helpers import MANIFEST, bars, spec  # noqa: E402

from aitrader.errors import DataError  # noqa: E402
from aitrader.trading.service import load_frames  # noqa: E402


def with_manifest(symbol: str, *, last: str, holdout_first: str | None = None, warmup: int = 0):
    s = spec(symbol)
    s.manifest = {**MANIFEST, "data": {"symbol": symbol, "last": last},
                  "features": {**MANIFEST.get("features", {}), "warmup": warmup}}
    if holdout_first is not None:
        s.manifest["split"] = {"holdout_first": holdout_first}
    return s


def test_default_replays_the_sample_after_the_training_period() -> None:
    frames = load_frames(None, [with_manifest("AAPL", last="2012-06-29T00:00:00")])
    df = frames["AAPL"]
    assert df.index[0] > pd.Timestamp("2012-06-29") and len(df) > 100
    with pytest.raises(DataError, match="no bars after the model's training period"):
        load_frames(None, [with_manifest("AAPL", last="2099-01-01")])


def test_default_replay_starts_at_the_holdout_led_by_the_warm_up_bars() -> None:
    """The final model never saw the holdout; the features need `warmup` bars before it."""
    full = load_frames(None, [with_manifest("AAPL", last="2000-01-01")])["AAPL"]
    start = full.index[2000]
    df = load_frames(None, [with_manifest("AAPL", last=str(full.index[-1]), holdout_first=start.isoformat(),
                                          warmup=105)])["AAPL"]
    assert df.index[0] == full.index[2000 - 105]
    assert df.index[-1] == full.index[-1]
    assert len(df) == len(full) - 2000 + 105


def test_data_forms(tmp_path: Path) -> None:
    bars(30).to_csv(tmp_path / "whatever.csv")
    assert list(load_frames([str(tmp_path / "whatever.csv")], [spec("AAA")])) == ["AAA"]
    (tmp_path / "dir").mkdir()
    bars(30).to_csv(tmp_path / "dir" / "AAA.csv")
    bars(20, seed=2).to_csv(tmp_path / "dir" / "BBB.csv")
    frames = load_frames([str(tmp_path / "dir")], [spec("AAA"), spec("BBB")])
    assert {k: len(v) for k, v in frames.items()} == {"AAA": 30, "BBB": 20}
    frames = load_frames([f"BBB={tmp_path / 'whatever.csv'}", f"AAA={tmp_path / 'dir' / 'AAA.csv'}"],
                         [spec("AAA"), spec("BBB")])
    assert sorted(frames) == ["AAA", "BBB"]
