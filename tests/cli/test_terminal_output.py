"""Human output readable at 100 columns: run summaries, history, the live view (issue 12)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from aitrader.cli import _output
from aitrader.cli.main import app

runner = CliRunner()

SUMMARY = {  # the shape of a paper-trade --json summary (values written out by hand)
    "run_id": "r1", "state_dir": "runs/r1", "status": "finished", "bars": 500, "predictions": 395,
    "in_sample_predictions": 0, "signals": 89, "orders": 88, "fills": 87, "rejections": {"max_positions": 3},
    "errors": {}, "alerts": {}, "initial_cash": 100000.0, "final_equity": 99986.20050293926,
    "total_return": -0.0001379949706074024, "sharpe": -0.06480256301003748, "sortino": -0.09653029242554241,
    "max_drawdown": -0.0025034365242021517, "turnover": 0.003484356258609007, "calendar": "crypto",
    "periods_per_year": 365.25, "fees": 174.12381571113573,
    "cursor": {"SYN": {"bar_index": 499, "ts": "2023-10-31T00:00:00"}},
    "positions": [{"symbol": "SYN", "quantity": 6.39856996, "avg_price": 312.1754334052096,
                   "realised_pnl": 179.45948072197982}],
    "models": [{"key": "syn_lgbm:v1@SYN", "enabled": True, "consecutive_errors": 0}],
    "first_ts": "2022-06-19T00:00:00", "last_ts": "2023-10-31T00:00:00",
    "costs": {"asset_class": "crypto", "commission_bps": 10.0, "slippage_bps": 5.0, "source": "class default"},
}


def test_number_formats() -> None:
    assert _output.fmt_money(99986.20050293926) == "99,986.20"
    assert _output.fmt_pct(-0.0025034365242021517) == "-0.25%"
    assert _output.fmt_pct(0.1234) == "+12.34%"
    assert _output.fmt_num(-0.06480256301003748, 2) == "-0.06"
    assert _output.fmt_count(1234567) == "1,234,567"
    assert _output.fmt_price(0.000123456) == "0.0001235" and _output.fmt_price(312.1754) == "312.18"
    assert _output.fmt_counts({"max_positions": 3, "stale": 1}) == "max_positions 3, stale 1"
    for f in (_output.fmt_money, _output.fmt_pct, _output.fmt_num, _output.fmt_count):
        assert f(None) == "-" and f(float("nan")) == "-" and f("x") == "-"


def test_run_summary_is_tables_of_rounded_numbers_at_100_columns(monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    _output.render_run_summary(SUMMARY, "paper-trade")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 100
    assert "{'" not in out and "[{" not in out  # no Python reprs
    assert not re.search(r"\d\.\d{6,}", out)  # no unrounded floats (6.39856996 shows as 6.39857)
    assert lines[0].startswith("paper-trade: run r1 (finished)")
    rows = {tuple(line.split()[:2]) for line in lines}
    assert ("final", "equity") in rows and "99,986.20" in out and "-0.25%" in out and "-0.01%" in out
    assert "15 bps (crypto)" in out and "max_positions 3" in out
    position = next(line for line in lines if line.strip().startswith("SYN "))
    assert position.split() == ["SYN", "6.39857", "312.18", "179.46", "499", "2023-10-31T00:00:00"]


def test_status_renders_the_same_summary(monkeypatch, capsys) -> None:
    import aitrader.trading.service as service

    monkeypatch.setattr(service, "run_status", lambda run_id, runs_dir: SUMMARY)
    result = runner.invoke(app, ["status"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("status: run r1 (finished)") and "{'" not in result.stdout


@pytest.fixture
def registry(in_tmp: Path) -> Path:
    from aitrader.registry import Registry
    from tests.unit.test_registry_support import make_artifact

    reg = Registry(in_tmp / "models")
    reg.register(make_artifact(in_tmp / "art"), "syn")
    details = {"metric": "ic", "challenger_score": 0.012345678901, "champion_score": 0.04561234567,
               "improvement": -0.0332987654, "holdout_first": "2023-01-01 00:00:00",
               "challenger_scores": {"ic": 0.012345678, "sharpe": 1.23456789, "mae": 0.0041234567},
               "champion_scores": {"ic": 0.0456123, "sharpe": 1.9876543, "mae": 0.0039876},
               "scoring_first": "2023-01-01T00:00:00+00:00", "scoring_last": "2023-06-01T00:00:00+00:00"}
    reg.record_decision("syn:v1", decision="rejected", reason="retrain: keep champion", details=details)
    return in_tmp / "models"


def test_history_fits_100_columns_with_rounded_details(registry: Path) -> None:
    result = runner.invoke(app, ["history", "syn", "--registry", str(registry)], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100, lines
    text = " ".join(line.strip() for line in lines)
    assert "challenger_scores={ic: 0.01235, mae: 0.004123, sharpe: 1.235}" in text  # 4 significant digits
    assert "0.012345678" not in text and '"ic"' not in text  # no full precision, no JSON quoting
    assert lines[0].endswith("rejected  reason: retrain: keep champion")
    assert lines[1].startswith("    details: ") and all(line.startswith(" " * 13) for line in lines[2:-1])


class _Stats:
    def __init__(self) -> None:
        self.bars, self.equity, self.last_ts = 0, 100_000.0, "2024-01-01T00:00:00"


def _engine() -> SimpleNamespace:
    broker = SimpleNamespace(cash=100_000.0, fees=0.0, positions={})
    return SimpleNamespace(stats=_Stats(), broker=broker, slots=[SimpleNamespace(model_id="syn:v1", disabled=False)])


def _draw(view) -> str:
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=100, force_terminal=False, color_system=None).print(view)
    return buf.getvalue()


def test_live_view_shows_total_percent_eta_and_draws_the_current_state() -> None:
    from aitrader.trading.session import RunOptions
    from aitrader.trading.view import LiveView, _Counters

    opts = RunOptions(total_bars=400)
    view = LiveView(opts, _Counters())
    assert "waiting for the first bars" in _draw(view)
    engine = _engine()
    view.engine = engine  # what the engine's progress callback does
    engine.stats.bars = 100
    first = _draw(view)
    assert "25%" in first and "100/400" in first and "ETA" in first
    # bars processed after the last progress callback (the end of a --follow burst): the next timer
    # tick draws them, with no further callback
    engine.stats.bars, engine.stats.last_ts = 200, "2024-01-09T00:00:00"
    second = _draw(view)
    assert "50%" in second and "200/400" in second and "2024-01-09T00:00:00" in second


def test_live_view_of_a_follow_run_has_no_total() -> None:
    from aitrader.trading.session import RunOptions
    from aitrader.trading.view import LiveView, _Counters

    view = LiveView(RunOptions(live=True), _Counters())
    view.engine = _engine()
    view.engine.stats.bars = 7
    out = _draw(view)
    assert "follow" in out and "%" not in out.split("\n")[0]


def test_retrain_scores_are_one_aligned_table(monkeypatch, capsys) -> None:
    from aitrader.cli.monitor import _render_retrain

    monkeypatch.setenv("COLUMNS", "100")
    _render_retrain({"message": "keep champion: ic 0.0100 vs champion 0.0200 (-0.0100 < margin 0 or not better)",
                     "champion": {"model_id": "syn:v1",
                                  "scores": {"ic": 0.0200123, "sharpe": 1.23456, "mae": 0.0123456}},
                     "challenger": {"model_id": "syn:v2", "scores": {"ic": 0.0100456, "sharpe": -0.5, "mae": 0.013}}})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("keep champion:")
    rows = {line.split()[0]: line.split() for line in lines if line.strip().startswith(("champion", "challenger"))}
    assert rows["champion"] == ["champion", "syn:v1", "0.0200", "1.23", "0.01235"]
    assert rows["challenger"] == ["challenger", "syn:v2", "0.0100", "-0.50", "0.01300"]
