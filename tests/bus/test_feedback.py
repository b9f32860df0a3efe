"""``monitor --bus URL --follow``: rolling accuracy from feedback.prediction.outcome events."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from aitrader.cli.main import app
from tests.bus.conftest import RedisServer

runner = CliRunner()
# hand-computed: signs agree on rows 0 and 3 of 4 -> hit rate 0.5; MAE (0.01 + 0.03 + 0.04 + 0.005) / 4
PAIRS = [(0.01, 0.02), (-0.02, 0.01), (0.03, -0.01), (0.01, 0.005)]


def test_outcomes_give_rolling_accuracy_and_a_hit_rate_alert(tmp_path: Path, redis_server: RedisServer,
                                                            prefix: str) -> None:
    from aitrader.bus.client import Bus
    from aitrader.bus.events import FIELD, OUTCOME
    from aitrader.bus.feedback import follow_feedback
    from aitrader.config import TradingConfig

    cfg = TradingConfig.model_validate({"bus": {"prefix": prefix, "block_ms": 20},
                                        "monitoring": {"min_outcomes": 2, "hit_rate_min": 0.6}})
    bus = Bus(cfg.bus, redis_server.url, role="test")
    stream = bus.key("feedback")
    for i, (pred, out) in enumerate(PAIRS):
        data = {"run_id": "r", "symbol": "SYN", "model_id": "m:v1", "i": i, "outcome": out, "ts": "t",
                "prediction": pred}
        bus.publish(stream, OUTCOME, f"r:outcome:SYN:m:v1:{i}", data)
        if i == 1:  # a trader resumed after a crash repeats an event with the same id
            bus.publish(stream, OUTCOME, f"r:outcome:SYN:m:v1:{i}", data)
    r = redis.Redis.from_url(redis_server.url)
    r.xadd(stream, {FIELD: b"garbage"})
    rows: list[dict] = []
    result = follow_feedback(cfg, redis_server.url, emit=rows.append, max_idle_s=0.3)
    final = result["models"][0]
    assert final["n"] == 4 and final["hit_rate"] == 0.5
    assert final["mae"] == pytest.approx((0.01 + 0.03 + 0.04 + 0.005) / 4, abs=1e-15)
    assert final["alerts"] == [{"code": "hit_rate", "value": 0.5, "limit": 0.6}] and result["alerts"] == 1
    assert r.xlen(f"{stream}:dlq") == 1
    bus.close()
    r.close()


def test_follow_needs_a_bus() -> None:
    result = runner.invoke(app, ["monitor", "--follow"])
    assert result.exit_code == 1 and "--bus and --follow go together" in result.stderr
