"""`aitrader features list` and `aitrader features build` through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.data.synthetic import generate_bars

runner = CliRunner()


@pytest.fixture
def bars_csv(in_tmp: Path) -> Path:
    path = in_tmp / "bars.csv"
    generate_bars(400, seed=3).to_csv(path)
    return path


def test_list_json(in_tmp: Path) -> None:
    result = runner.invoke(app, ["features", "list", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    names = [f["name"] for f in doc["features"]]
    assert "current_price" in names and len(doc["default"]) >= 20
    rsi = next(f for f in doc["features"] if f["name"] == "rsi_14")
    assert rsi["params"] == {"window": 14} and rsi["group"] == "indicator" and rsi["warmup"] == 42


def test_list_group_and_table(in_tmp: Path) -> None:
    result = runner.invoke(app, ["features", "list", "--group", "volume", "--json"])
    assert [f["name"] for f in json.loads(result.stdout)["features"]] == ["volume_zscore_20", "volume_ratio_5"]
    table = runner.invoke(app, ["features", "list", "--group", "signal"])
    assert table.exit_code == 0 and "stoch_k_14" in table.stdout and "rsi_14" not in table.stdout


def test_list_unknown_group_is_a_usage_error(in_tmp: Path) -> None:
    result = runner.invoke(app, ["features", "list", "--group", "magic"])
    assert result.exit_code == 2 and result.stdout == ""
    flat = " ".join(re.sub("[│╭╮╰╯─]", " ", result.stderr).split())  # rich may wrap the box
    assert "'magic' is not one of 'price', 'volume', 'indicator', 'signal', 'ml', 'book'" in flat


def test_cli_choices_match_the_library() -> None:
    from aitrader.cli.features import Group, Mode
    from aitrader.features.build import Mode as LibraryMode
    from aitrader.features.registry import GROUPS

    assert tuple(g.value for g in Group) == GROUPS
    assert tuple(m.value for m in Mode) == LibraryMode.__args__  # type: ignore[attr-defined]


def test_build_batch_and_streaming_write_the_same(bars_csv: Path) -> None:
    for mode in ("batch", "streaming"):
        result = runner.invoke(app, ["features", "build", "--data", str(bars_csv), "--out", f"{mode}.parquet",
                                     "--mode", mode, "--json"])
        assert result.exit_code == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["rows"] == 400 and doc["mode"] == mode and doc["out"] == f"{mode}.parquet"
        assert len(doc["features"]) >= 20 and doc["seconds"] >= 0
    a, b = pd.read_parquet("batch.parquet"), pd.read_parquet("streaming.parquet")
    assert list(a.columns) == list(b.columns) and a.index.name == "timestamp"
    assert np.array_equal(a.isna().to_numpy(), b.isna().to_numpy())
    assert np.nanmax(np.abs(a.to_numpy() - b.to_numpy())) <= 1e-7
    assert a.iloc[:100].isna().any(axis=1).all() and a.iloc[110:].notna().all().all()


def test_build_selected_features_with_aliases(bars_csv: Path) -> None:
    result = runner.invoke(app, ["features", "build", "--data", str(bars_csv), "--out", "f.parquet",
                                 "--features", "price, rsi,ret_5"])
    assert result.exit_code == 0, result.stderr
    assert "wrote 400 rows x 3 features to f.parquet" in result.stdout
    assert list(pd.read_parquet("f.parquet").columns) == ["current_price", "rsi_14", "ret_5"]


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--features", "rsi_41"], 1, "error: unknown feature 'rsi_41'; did you mean"),
    (["--mode", "fast"], 2, "Invalid value for '--mode'"),  # a usage error: Typer's exit 2
])
def test_build_errors(bars_csv: Path, args: list[str], code: int, message: str) -> None:
    result = runner.invoke(app, ["features", "build", "--data", str(bars_csv), "--out", "x.parquet", *args])
    assert result.exit_code == code
    assert message in result.stderr, result.stderr
    assert result.stdout == ""
    assert not Path("x.parquet").exists()


def test_build_bad_output_leaves_nothing(bars_csv: Path) -> None:
    result = runner.invoke(app, ["features", "build", "--data", str(bars_csv), "--out", "x.csv"])
    assert result.exit_code == 1 and "must end in .parquet" in result.stderr
    result = runner.invoke(app, ["features", "build", "--data", str(bars_csv), "--out", "no/such/x.parquet"])
    assert result.exit_code == 1 and "does not exist" in result.stderr
    assert sorted(p.name for p in Path().iterdir()) == ["bars.csv"]


def test_build_missing_data(in_tmp: Path) -> None:
    result = runner.invoke(app, ["features", "build", "--data", "absent.csv", "--out", "x.parquet"])
    assert result.exit_code == 1 and result.stderr.startswith("error: ")


def test_build_refuses_invalid_bars_then_repairs(bars_csv: Path) -> None:
    lines = bars_csv.read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ",-3"  # negative volume on data row 5
    bars_csv.write_text("\n".join(lines) + "\n")
    args = ["features", "build", "--data", "bars.csv", "--out", "f.parquet", "--json"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and refused.stdout == "" and not Path("f.parquet").exists()
    assert refused.stderr.startswith("error: bars.csv: row 5 (") and "volume -3.0 is negative" in refused.stderr
    repaired = runner.invoke(app, [*args, "--repair"])
    assert repaired.exit_code == 0, repaired.stderr
    doc = json.loads(repaired.stdout)
    assert (doc["rows"], doc["repaired_rows"]) == (399, 1)
    assert "repaired 1 row(s)" in repaired.stderr  # the loader's warning
