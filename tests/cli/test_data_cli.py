"""aitrader data check / data sample through the real CLI entry point."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app

runner = CliRunner()

BROKEN = "timestamp,open,high,low,close,volume\n2020-01-01,1,1,1,1,1\n2020-01-02,1,0.5,1,1,1\n2020-01-03,1,1,1,1,1\n"


def test_sample_default_path_then_check(in_tmp: Path) -> None:
    result = runner.invoke(app, ["data", "sample", "--symbol", "IBM", "--json"])
    assert result.exit_code == 0, result.stderr
    written = json.loads(result.stdout)
    assert written["path"] == str(Path("data") / "sample_IBM.csv")
    assert written["rows"] == 3270 and written["symbol"] == "IBM" and len(written["sha256"]) == 64
    assert (in_tmp / "data" / "sample_IBM.csv").is_file()
    assert not list((in_tmp / "data").glob(".*tmp"))

    result = runner.invoke(app, ["data", "check", "data/sample_IBM.csv", "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] and report["rows"] == 3270
    sym = report["symbols"][0]
    assert sym["interval"] == "1 days 00:00:00" and sym["market"] == "daily" and sym["problems"] == []


def test_sample_human_output_and_out(in_tmp: Path) -> None:
    result = runner.invoke(app, ["data", "sample", "--out", "x/msft.parquet"])
    assert result.exit_code == 0, result.stderr
    assert "wrote 3270 MSFT bars" not in result.stdout  # default symbol is AAPL
    assert "wrote 3270 AAPL bars (2000-03-01 .. 2013-03-01) to x/msft.parquet" in result.stdout
    assert (in_tmp / "x" / "msft.parquet").is_file()


def test_sample_unknown_symbol_is_a_usage_error(in_tmp: Path) -> None:
    result = runner.invoke(app, ["data", "sample", "--symbol", "TSLA"])
    assert result.exit_code == 2
    flat = " ".join(re.sub("[│╭╮╰╯─]", " ", result.stderr).split())  # rich may wrap the box
    assert "'TSLA' is not one of 'aapl', 'msft', 'ibm', 'goog'" in flat
    assert result.stdout == ""
    assert not (in_tmp / "data").exists()


def test_sample_symbol_choices_match_the_library(in_tmp: Path) -> None:
    from aitrader.cli.data import SampleSymbol
    from aitrader.data.sample import SAMPLE_SYMBOLS

    assert tuple(s.value for s in SampleSymbol) == SAMPLE_SYMBOLS
    result = runner.invoke(app, ["data", "sample", "--symbol", "goog", "--out", "g.csv", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["symbol"] == "GOOG"


def test_sample_unwritable_out(in_tmp: Path) -> None:
    (in_tmp / "file").write_text("not a folder")
    result = runner.invoke(app, ["data", "sample", "--out", "file/bars.csv"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot write file/bars.csv")


def test_check_invalid_file_json(in_tmp: Path) -> None:
    Path("bad.csv").write_text(BROKEN)
    result = runner.invoke(app, ["data", "check", "bad.csv", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)  # the document is still printed
    assert report["valid"] is False
    problem = report["symbols"][0]["problems"][0]
    assert problem["rule"] == "high_low" and problem["row"] == 2 and problem["timestamp"] == "2020-01-02"
    assert "error: bad.csv is invalid: 1 problem(s)" in result.stderr


def test_check_invalid_file_human_then_repair(in_tmp: Path) -> None:
    Path("bad.csv").write_text(BROKEN)
    result = runner.invoke(app, ["data", "check", "bad.csv"])
    assert result.exit_code == 1
    assert "bad.csv: row 2 (2020-01-02): high 0.5 is below max(open, close) 1.0" in result.stdout
    result = runner.invoke(app, ["data", "check", "bad.csv", "--repair", "--json"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["valid"] and report["symbols"][0]["usable_rows"] == 2
    assert report["symbols"][0]["repaired_rows"] == 1


def test_check_structural_problem_is_a_report(in_tmp: Path) -> None:
    Path("novol.csv").write_text("timestamp,open,high,low,close\n2020-01-01,1,1,1,1\n")
    result = runner.invoke(app, ["data", "check", "novol.csv", "--json"])
    assert result.exit_code == 1
    assert "missing column(s) volume" in json.loads(result.stdout)["problems"][0]["message"]


def test_check_missing_path_is_an_error(in_tmp: Path) -> None:
    result = runner.invoke(app, ["data", "check", "nope.csv"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: nope.csv: no such file or directory")
    assert result.stdout == ""


def test_check_long_file_per_symbol(in_tmp: Path) -> None:
    Path("long.csv").write_text(
        "Ticker,Date,Open,High,Low,Close,Volume\nA,2020-01-01,1,1,1,1,1\nB,2020-01-01,2,2,2,2,2\n"
        "A,2020-01-02,1,1,1,1,1\n"
    )
    result = runner.invoke(app, ["data", "check", "long.csv", "--json"])
    assert result.exit_code == 0, result.stderr
    assert [s["symbol"] for s in json.loads(result.stdout)["symbols"]] == ["A", "B"]
    result = runner.invoke(app, ["data", "check", "long.csv", "--symbol", "b", "--json"])
    assert [s["symbol"] for s in json.loads(result.stdout)["symbols"]] == ["B"]
    result = runner.invoke(app, ["data", "check", "long.csv", "--symbol", "Z"])
    assert result.exit_code == 1 and "symbol 'Z' not found; available: A, B" in result.stderr


@pytest.mark.shared_data
def test_check_shared_directory(shared_data: Path) -> None:
    result = runner.invoke(app, ["data", "check", str(shared_data / "crypto_5m"), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["symbols"]) == 10
    assert all(s["market"] == "continuous" and s["interval"] == "0 days 00:05:00" for s in report["symbols"])


def test_data_help() -> None:
    result = runner.invoke(app, ["data", "--help"])
    assert result.exit_code == 0
    assert "check" in result.stdout and "sample" in result.stdout


def test_check_says_when_bars_are_stamped_at_their_end(in_tmp: Path) -> None:
    import pandas as pd

    days = [pd.date_range(f"{d.date()} 14:31", f"{d.date()} 21:00", freq="1min", tz="UTC")
            for d in pd.bdate_range("2021-03-01", periods=5)]
    index = days[0].append(days[1:])
    frame = pd.DataFrame({"open": 10.0, "high": 10.5, "low": 9.5, "close": 10.0, "volume": 100.0}, index=index)
    frame.rename_axis("timestamp").to_csv("m.csv")
    result = runner.invoke(app, ["data", "check", "m.csv"], terminal_width=200)
    assert result.exit_code == 0, result.stderr
    assert ("m: trading days run 14:31 .. 21:00 (UTC), 4 overnight/weekend breaks (not gaps); "
            "bars look stamped at their END") in result.stdout
    doc = json.loads(runner.invoke(app, ["data", "check", "m.csv", "--json"]).stdout)
    assert doc["symbols"][0]["session"] == {"first_bar": "14:31", "last_bar": "21:00", "stamps": "end"}
