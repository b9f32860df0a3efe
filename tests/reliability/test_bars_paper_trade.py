"""Poisoned bars in ``paper-trade`` (issue 10, "Bars"): an inf bar used to finish with exit 0 and
NaN equity, a 1e300 bar with a ZeroDivisionError traceback from the streaming features. Both are
now refused when the bars are loaded (one ``error:`` line, exit 1, no run finished), and a bar
that reaches the model runner without ``load_bars`` is refused by the streaming evaluator."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.errors import DataError
from tests.model_world import deploy_small_model

runner = CliRunner()
CONFIG = """
ml_trading:
  models:
    - {model_id: syn, symbol: SYN, min_confidence: 0.5, position_size: 0.02}
  errors: {prediction_timeout_ms: 5000}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from aitrader.data.synthetic import generate_bars

    base = tmp_path_factory.mktemp("poisoned_trade")
    bars = generate_bars(1300, seed=5, signal=0.3)
    registry = deploy_small_model(base, bars, name="syn", n_estimators=5)
    config = base / "trading.yaml"
    config.write_text(CONFIG)
    return {"registry": registry, "config": config, "base": base}


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ("100,100,100,inf,1000", "close inf is not finite"),
        ("1e300,1e300,1e300,1e300,1000", "open 1e+300 is implausibly large"),
        ("100,100,100,100,inf", "volume inf is not finite"),
        ("100,100,100,100,1e300", "volume 1e+300 is implausibly large"),
    ],
    ids=["inf close", "1e300 close", "inf volume", "1e300 volume"],
)
def test_paper_trade_refuses_a_poisoned_bar(in_tmp: Path, world: dict[str, Path], values: str, fragment: str) -> None:
    from aitrader.data.synthetic import generate_bars

    bars = generate_bars(1300, seed=5, signal=0.3).iloc[1000:].rename_axis("timestamp")
    lines = bars.to_csv().splitlines()
    stamp = lines[150].split(",")[0]
    lines[150] = f"{stamp},{values}"
    data = in_tmp / "SYN.csv"
    data.write_text("\n".join(lines) + "\n")
    # The bars are refused when loaded, before any question of which bars to trade.
    args = ["paper-trade", "--config", str(world["config"]), "--registry", str(world["registry"]), "--data", str(data),
            "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines_err = result.stderr.strip().splitlines()
    assert lines_err[-1].startswith("error: ") and fragment in result.stderr, result.stderr
    assert "Traceback" not in result.output and "ZeroDivisionError" not in result.output
    assert result.stdout.strip() == ""  # no summary of a run that should not have happened


def test_a_poisoned_bar_reaching_the_runner_is_a_data_error(world: dict[str, Path]) -> None:
    """Bars handed to the streaming features directly (as --follow does) are refused there too."""
    from aitrader.features import FeaturePipeline

    stream = FeaturePipeline().stream()
    for k in range(30):
        stream.update(k, 100.0 + k, 101.0 + k, 99.0 + k, 100.5 + k, 1000.0)
    for poison in ((1e300, 1e300, 1e300, 1e300, 1.0), (100.0, 101.0, 99.0, float("inf"), 1.0)):
        with pytest.raises(DataError, match=r"bar 30 .*no NaN or inf"):
            stream.update(30, *poison)
    assert stream.bars_seen == 30
