"""The streamed monitor without pandas (issue 11, start-up): each piece that replaced a pandas call gives
what the pandas call gave, checked against pandas itself (the reference library) or against the
in-memory monitor's pandas formula.

* :class:`aitrader.monitoring.stream._DailyLoss` (stamps read by numpy in the forms paper-trade writes,
  by pandas otherwise) against :func:`aitrader.monitoring.monitor._daily_losses` (pandas groupby over
  the whole curve);
* :func:`aitrader.monitoring.stream._utc_micros` against ``pd.to_datetime(utc=True, format="ISO8601")``;
* :func:`aitrader.monitoring.monitor.event_metrics` on plain rows against the frame formula it replaced
  (written out below);
* ``stream._numeric`` against ``pd.to_numeric``; ``metrics._ranks`` against ``Series.rank``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest

from aitrader.monitoring import stream
from aitrader.monitoring.monitor import (
    ALERT_EVENT,
    ERROR_EVENT,
    RISK_EVENT,
    _daily_losses,
    _model_rows,
    _text,
    event_metrics,
    event_rows,
    model_events,
)
from aitrader.training.metrics import _ranks


def _curve(n: int, seed: int, freq: str = "37min") -> tuple[pd.DatetimeIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2023-03-24 21:00", periods=n, freq=freq, tz="UTC")
    return idx, 100_000 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))


def _pandas_daily(stamps: list[Any], equity: np.ndarray) -> tuple[float | None, str | None]:
    """The in-memory monitor's daily loss (read_ledger's typing, then _daily_losses)."""
    df = pd.DataFrame({"ts": pd.to_datetime(pd.Series(stamps, dtype=object), utc=True, format="ISO8601"),
                       "equity": equity})
    return _daily_losses(df.sort_values("ts").reset_index(drop=True))


def _streamed(stamps: list[Any], equity: np.ndarray, piece: int) -> tuple[float | None, str | None]:
    acc = stream._DailyLoss()
    for lo in range(0, len(stamps), piece):
        assert acc.add(stamps[lo:lo + piece], equity[lo:lo + piece])
    return acc.result()


FORMS = {
    "naive seconds": lambda idx: [t.strftime("%Y-%m-%dT%H:%M:%S") for t in idx],
    "utc seconds": lambda idx: [t.strftime("%Y-%m-%dT%H:%M:%S+00:00") for t in idx],
    "naive micros": lambda idx: [t.strftime("%Y-%m-%dT%H:%M:%S.%f") for t in idx],
    "utc micros": lambda idx: [t.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00") for t in idx],
    "other zone (pandas reads)": lambda idx: [t.tz_convert("America/New_York").isoformat() for t in idx],
    "space, Z (pandas reads)": lambda idx: [t.strftime("%Y-%m-%d %H:%M:%SZ") for t in idx],
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("piece", [1, 7, 100, 10_000])
def test_streamed_daily_loss_equals_the_pandas_groupby(form: str, piece: int) -> None:
    idx, equity = _curve(700, seed=3)
    stamps = FORMS[form](idx)
    equity[[5, 300]] = np.nan  # unmarked bars are skipped by both
    want = _pandas_daily(stamps, equity)
    assert want[0] is not None and want[0] > 0.0
    assert _streamed(stamps, equity, piece) == want


def test_forms_mixed_between_pieces_and_null_stamps_equal_the_pandas_groupby() -> None:
    idx, equity = _curve(400, seed=5, freq="2h")
    stamps: list[Any] = FORMS["naive seconds"](idx)[:150] + FORMS["utc micros"](idx)[150:300] \
        + FORMS["other zone (pandas reads)"](idx)[300:]
    stamps[42] = None  # an unreadable (NULL) stamp: its bar is skipped
    want = _pandas_daily(stamps, equity)
    for piece in (13, 150, 400):
        assert _streamed(stamps, equity, piece) == want


def test_stamps_going_back_in_time_hand_the_curve_to_the_whole_read() -> None:
    idx, equity = _curve(50, seed=1)
    stamps = FORMS["naive seconds"](idx)
    acc = stream._DailyLoss()
    assert acc.add(stamps[:20], equity[:20])
    assert not acc.add(stamps[10:30], equity[10:30])  # starts before the last stamp seen
    swapped = stamps[:]
    swapped[3], swapped[4] = swapped[4], swapped[3]
    assert not stream._DailyLoss().add(swapped, equity)


def test_a_curve_without_marks_has_no_daily_loss() -> None:
    idx, _ = _curve(10, seed=2)
    acc = stream._DailyLoss()
    assert acc.add(FORMS["utc seconds"](idx), np.full(10, np.nan))
    assert acc.result() == (None, None)


@pytest.mark.parametrize("stamps", [
    ["2021-06-01T10:00:00", "1969-12-31T23:59:59", "2262-04-11T23:47:16"],
    ["2021-06-01T10:00:00.000001+00:00", "1900-01-01T00:00:00.500000+00:00"],
    ["2021-06-01T10:00:00.123456"],
])
def test_utc_micros_reads_the_paper_trade_forms_as_pandas_does(stamps: list[str]) -> None:
    got = stream._utc_micros(stamps)
    assert got is not None
    want = pd.to_datetime(pd.Series(stamps), utc=True, format="ISO8601").dt.tz_convert(None)
    assert got.tolist() == want.to_numpy().astype("datetime64[us]").astype(np.int64).tolist()


@pytest.mark.parametrize("stamps", [
    ["2021-06-01 10:00:00"], ["2021-06-01T10:00:00Z"], ["2021-06-01T10:00:00+01:00"], ["2021-06-01"],
    ["2021-06-01T10:00"], ["NaT", "2021-06-01T10:00:00"], ["today", "2021-06-01T10:00:00"],
    ["2021-06-01T10:00:00", None], ["2021-06-01T10:00:00+00:00", "2021-06-01T10:00:00.000000"],
    ["2021-06-01T10:00:00.5"], ["2021-13-01T10:00:00"], [], [1622541600],
])
def test_utc_micros_leaves_every_other_form_to_pandas(stamps: list[Any]) -> None:
    assert stream._utc_micros(stamps) is None


def _old_event_metrics(events: pd.DataFrame, model_predictions: int) -> dict[str, Any]:
    """The frame formula event_metrics had before it took plain rows (main f9a6021), the oracle."""
    etype = events["type"].astype(str) if not events.empty else pd.Series(dtype=str)
    errors = events[etype == ERROR_EVENT]
    rejections = events[etype == RISK_EVENT]
    errors_by_type = {str(k): int(v) for k, v in errors["reason"].fillna("unknown").value_counts().items()}
    attempts = model_predictions + len(errors)
    rows: list[dict[str, Any]] = [{str(k): v for k, v in r.items()} for r in events.to_dict("records")]
    disabled = [r for r in rows if r.get("type") == ALERT_EVENT and "disabl" in _text(r)]
    loss_events = [r for r in rows if "daily" in _text(r) and "loss" in _text(r)]
    return {
        "errors_total": len(errors),
        "errors_by_type": errors_by_type,
        "error_rate": (len(errors) / attempts) if attempts else None,
        "risk_rejections": {str(k): int(v) for k, v in rejections["reason"].fillna("unknown").value_counts().items()},
        "disabled": bool(disabled),
        "disabled_reason": disabled[-1].get("reason") if disabled else None,
        "daily_loss_limit_hits": len(loss_events),
    }


def _events_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """As the in-memory reader builds it: object columns, payload decoded."""
    cols = ["id", "ts", "type", "symbol", "model_id", "reason", "payload"]
    df = pd.DataFrame({c: np.array([r[c] for r in rows], dtype=object) for c in cols}, columns=cols)
    df["payload"] = df["payload"].map(stream._decode)
    return df


#: The frame formula's order of tied counts is the oracle only on pandas 3, whose value_counts keeps ties in
#: the order first seen; on pandas 2.2 the formula ordered some ties otherwise (CI's pandas 2.2 pass), so there
#: the counts are checked and not their order (monitor's own order is first seen on any pandas: it uses none).
_STABLE_TIES = int(pd.__version__.split(".")[0]) >= 3


@pytest.mark.parametrize("seed", range(12))
def test_event_metrics_on_rows_equal_the_frame_formula(seed: int) -> None:
    rng = np.random.default_rng(seed)
    types = [ERROR_EVENT, RISK_EVENT, ALERT_EVENT, "NOTE", None]
    reasons = ["timeout", "bad_input", "max_positions", "daily_loss", "model_disabled", "", None, "x"]
    models = ["m:v1", "m", "n:v1", "", None]
    payloads = [None, "{}", json.dumps({"why": "disabled by breaker"}), json.dumps("daily loss hit"), "not json"]
    rows = [{"id": i, "ts": f"2024-01-01T00:{i % 60:02d}:00", "type": types[rng.integers(len(types))],
             "symbol": "AAA", "model_id": models[rng.integers(len(models))],
             "reason": reasons[rng.integers(len(reasons))], "payload": payloads[rng.integers(len(payloads))]}
            for i in range(int(rng.integers(0, 80)))]
    entry: Mapping[str, Any] = {"model_id": "m:v1", "name": "m", "version": 1, "digest": "d" * 8}
    frame = _events_frame(rows)
    want = _old_event_metrics(_model_rows(frame, entry, keep_unassigned=True), 100)
    decoded = [{**r, "payload": stream._decode(r["payload"])} for r in rows]
    for got_rows in (model_events(decoded, entry), model_events(event_rows(frame), entry)):
        got = event_metrics(got_rows, 100, (None, None))
        assert {k: got[k] for k in want} == want
        if _STABLE_TIES:  # the frame formula's order is the oracle's only where pandas orders ties by first sight
            assert list(got["errors_by_type"]) == list(want["errors_by_type"])  # the same order (ties: first seen)
            assert list(got["risk_rejections"]) == list(want["risk_rejections"])


def test_event_rows_by_digest_when_the_table_has_one() -> None:
    rows = [{"type": ERROR_EVENT, "model_id": "m:v1", "digest": "a", "reason": "r1"},
            {"type": ERROR_EVENT, "model_id": "m:v1", "digest": "b", "reason": "r2"},
            {"type": ERROR_EVENT, "model_id": None, "digest": None, "reason": "r3"}]
    frame = pd.DataFrame(rows, dtype=object)
    entry = {"model_id": "m:v1", "digest": "b"}
    assert model_events(rows, entry) == event_rows(_model_rows(frame, entry, keep_unassigned=True)) == [rows[1]]


@pytest.mark.parametrize("values", [
    [1.5, None, 3, -0.0, float("inf"), 2**53, -(2**53)],
    [None, None],
    [],
    ["1.25", None, 2.0, "abc", b"x"],  # text in a numeric column of a hand-made ledger: pandas converts
    [2**63, 1.0],
    [True, 2.0],
])
def test_numeric_equals_pandas_to_numeric(values: list[Any]) -> None:
    want = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float)
    np.testing.assert_array_equal(stream._numeric(values), want)


def test_average_ranks_equal_pandas_rank() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(0, 40))
        a = rng.integers(-4, 4, n).astype(float)
        a[rng.random(n) < 0.1] = np.nan
        a[rng.random(n) < 0.05] = np.inf
        a[rng.random(n) < 0.05] = -0.0
        want = pd.Series(a).rank(method="average").to_numpy(dtype=np.float64)
        np.testing.assert_array_equal(_ranks(a), want)
