"""`aitrader features build --book`: book features written in both modes, refused cleanly without snapshots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.data import write_bars
from aitrader.data.book import load_book, write_book
from aitrader.data.synthetic import generate_bars, generate_book
from aitrader.features import FeaturePipeline

NAMES = "ret_1,book_imbalance_5,book_depth_change_5,book_spread_bps"


def test_features_build_with_and_without_book(tmp_path: Path) -> None:
    bars = generate_bars(300, seed=2, freq="1h")
    write_bars(bars, tmp_path / "SYN.csv")
    write_book(generate_book(bars, seed=3, missing=0.1), tmp_path / "SYN.parquet")
    runner = CliRunner()
    result = runner.invoke(app, ["features", "build", "--data", str(tmp_path / "SYN.csv"), "--out",
                                 str(tmp_path / "none.parquet"), "--features", NAMES])
    assert result.exit_code == 1 and not (tmp_path / "none.parquet").exists()
    assert result.stderr == ("error: order-book features (book_imbalance_5, book_depth_change_5, book_spread_bps) need "
                             "depth-of-market snapshots for SYN; pass --book SYN=PATH (docs/orderbook.md)\n")
    frames = {}
    for mode in ("batch", "streaming"):
        out = tmp_path / f"{mode}.parquet"
        result = runner.invoke(app, ["features", "build", "--data", str(tmp_path / "SYN.csv"), "--out", str(out),
                                     "--features", NAMES, "--book", f"SYN={tmp_path / 'SYN.parquet'}", "--mode", mode])
        assert result.exit_code == 0, result.output
        frames[mode] = pd.read_parquet(out)
    pipe = FeaturePipeline(NAMES.split(",")).with_book(load_book(tmp_path / "SYN.parquet"))
    expected = pipe.transform(bars).to_numpy()
    for frame in frames.values():
        assert list(frame.columns) == NAMES.split(",")
        np.testing.assert_allclose(frame.to_numpy(), expected, rtol=0, atol=1e-7)
    assert 10 <= int(np.isnan(expected[:, 3]).sum()) <= 60  # ~10% of the 300 bars have no fresh snapshot
