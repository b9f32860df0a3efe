"""The training library call: artifact contents, reproducibility, data bounds, atomic output."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from aitrader.config import TrainConfig, build_model
from aitrader.data.synthetic import generate_bars
from aitrader.errors import ConfigError, DataError, ModelError
from aitrader.models import load_model
from aitrader.training.manifest import read_manifest
from aitrader.training.trainer import override_config, train


def small_config(**over) -> TrainConfig:
    raw = {
        "target": {"horizon": 5, "task": "regression"},
        "model": {"kind": "lightgbm", "params": {"n_estimators": 30}, "random_state": 3},
        "split": {"n_folds": 3, "embargo": 5, "holdout": 0.2, "min_train": 200},
    }
    for key, value in over.items():
        section, name = key.split("__")
        raw.setdefault(section, {})[name] = value
    return build_model(TrainConfig, raw)


@pytest.fixture(scope="module")
def bars():
    return generate_bars(1200, seed=11)


@pytest.fixture(scope="module")
def trained(bars, tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "lgbm"
    return train(small_config(), bars=bars, out_dir=out)


def test_artifact_has_model_onnx_and_a_valid_manifest(trained):
    files = sorted(p.name for p in trained.out_dir.iterdir())
    assert files == ["manifest.json", "model.onnx", "model.txt"]
    m = read_manifest(trained.out_dir)
    assert m == json.loads((trained.out_dir / "manifest.json").read_text())
    assert m["model"]["files"] == {"native": "model.txt", "onnx": "model.onnx"}
    assert m["target"] == {"name": "fwd_return_5", "horizon": 5, "task": "regression"}
    assert m["split"]["n_folds"] == 3 and len(m["metrics"]["folds"]) == 3
    assert set(m["metrics"]["baselines"]) == {"zero", "always_long", "prev_sign"}
    headline = {"mae", "rmse", "r2", "hit_rate", "ic", "rank_ic", "total_return", "sharpe", "max_drawdown",
                "turnover"}
    assert headline <= set(m["metrics"]["holdout"]) and headline <= set(m["metrics"]["cv_mean"])
    assert m["metrics"]["baselines"]["zero"]["turnover"] == 0.0
    # the baselines run through the trading engine: always_long enters once and holds
    assert m["metrics"]["holdout_backtest"]["baselines"]["always_long"]["fills"] == 1
    assert m["onnx"]["max_rel_diff"] <= m["onnx"]["tolerance_rel"]
    assert m["data"]["rows"] == 1200 and len(m["data"]["sha256"]) == 64
    assert m["versions"]["lightgbm"] and m["versions"]["python"]
    assert set(m["baseline"]["features"]) == set(m["features"]["names"])
    assert m["baseline"]["holdout_mae"] == m["metrics"]["holdout"]["mae"]
    assert len(m["sample"]["rows"]) == 20 and m["sample"]["columns"] == m["features"]["names"]
    # the split keeps the holdout away from everything the model was selected on
    assert m["split"]["folds"][-1]["test_end"] + 5 == m["split"]["holdout_start"]
    assert m["split"]["final_train_rows"] == m["split"]["holdout_start"] - 5
    assert m["split"]["final_train_last"] < m["split"]["holdout_first"] <= m["data"]["last"]


def test_sample_predictions_reproduce_from_the_saved_model(trained):
    m = trained.manifest
    model = load_model(trained.out_dir, m["model"])
    pred = model.predict_score(np.asarray(m["sample"]["rows"]))
    np.testing.assert_allclose(pred, m["sample"]["predictions"], rtol=1e-12, atol=1e-15)


def test_same_data_config_and_seed_give_byte_identical_files(trained, bars, tmp_path):
    again = train(small_config(), bars=bars, out_dir=tmp_path / "again")
    for name in ("model.txt", "model.onnx"):
        assert (again.out_dir / name).read_bytes() == (trained.out_dir / name).read_bytes(), name
    a, b = dict(trained.manifest), dict(again.manifest)
    a.pop("created_at"), b.pop("created_at")
    assert json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def test_too_few_bars_names_the_minimum_and_exactly_that_many_works(bars, tmp_path):
    cfg = small_config(model__kind="ridge", model__params={}, onnx__export=False)
    with pytest.raises(DataError, match=r"need at least (\d+) bars") as info:
        train(cfg, bars=bars.iloc[:300], out_dir=tmp_path / "short")
    needed = int(re.search(r"need at least (\d+) bars", str(info.value)).group(1))
    assert needed > 300
    result = train(cfg, bars=bars.iloc[:needed], out_dir=tmp_path / "exact")
    assert result.manifest["data"]["rows"] == needed
    with pytest.raises(DataError, match=f"need at least {needed} bars"):
        train(cfg, bars=bars.iloc[: needed - 1], out_dir=tmp_path / "one_short")
    assert not (tmp_path / "short").exists() and not (tmp_path / "one_short").exists()


def test_non_empty_out_is_refused_unless_overwrite(bars, tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    cfg = small_config(model__kind="ridge", model__params={}, onnx__export=False)
    with pytest.raises(ConfigError, match="not empty; pass --force"):
        train(cfg, bars=bars, out_dir=out)
    assert (out / "keep.txt").exists()
    # --force replaces an artifact only, never a folder holding anything else (issue 10)
    with pytest.raises(ConfigError, match="keep.txt"):
        train(cfg, bars=bars, out_dir=out, overwrite=True)
    (out / "keep.txt").unlink()
    train(cfg, bars=bars, out_dir=out)
    result = train(cfg, bars=bars, out_dir=out, overwrite=True)
    assert sorted(p.name for p in result.out_dir.iterdir()) == ["manifest.json", "model.joblib"]
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # no temp or old folders left behind


def test_a_failure_leaves_nothing_behind(bars, tmp_path, monkeypatch):
    import aitrader.training.trainer as trainer_module

    def fail(*args, **kwargs):
        raise ModelError("cannot write the manifest")

    monkeypatch.setattr(trainer_module, "write_manifest", fail)  # after the model files are written
    with pytest.raises(ModelError, match="cannot write the manifest"):
        train(small_config(), bars=bars, out_dir=tmp_path / "art")
    assert list(tmp_path.iterdir()) == []


def test_classification_reports_probability_metrics(bars, tmp_path):
    cfg = small_config(target__task="classification", onnx__export=False)
    m = train(cfg, bars=bars, out_dir=tmp_path / "cls").manifest
    hold = m["metrics"]["holdout"]
    assert {"accuracy", "log_loss", "auc"} <= set(hold)
    assert all(0.0 <= p <= 1.0 for p in m["sample"]["predictions"])
    assert m["onnx"] is None and m["model"]["task"] == "classification"


def test_bars_passed_in_keep_their_symbol_and_a_conflicting_data_symbol_is_refused(bars, tmp_path):
    from aitrader.training.trainer import training_symbol

    assert bars.attrs["symbol"] == "SYN"
    assert training_symbol(small_config(), bars) == "SYN"  # data.symbol unset: the bars name themselves
    assert training_symbol(small_config(data__symbol="syn"), bars) == "SYN"
    unnamed = bars.copy()
    unnamed.attrs = {}
    assert training_symbol(small_config(data__symbol="BTC"), unnamed) == "BTC"
    with pytest.raises(ConfigError, match=r"data\.symbol is 'AAPL' but the bars passed in are 'SYN'"):
        train(small_config(data__symbol="AAPL"), bars=bars, out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_override_config_validates_flags_like_the_file():
    cfg = small_config()
    with pytest.raises(ConfigError, match=r"^target\.horizon: must be >= 1, got 0$"):
        override_config(cfg, horizon=0)
    with pytest.raises(ConfigError, match=r"model\.kind: must be one of"):
        override_config(cfg, model="catboost")
    new = override_config(cfg, data="bars.csv", features=["rsi_14"], task="classification")
    assert new.data.path == "bars.csv" and new.data.symbol is None  # the file names its own symbol
    assert new.features.names == ["rsi_14"] and new.target.task == "classification"
    assert override_config(cfg, data="b.csv", symbol="BTC").data.symbol == "BTC"
    assert override_config(cfg, model="ridge").model.params == {}  # lightgbm params do not apply
    assert override_config(cfg, model="lightgbm").model.params == {"n_estimators": 30}


# Trains every kind and task in a child process and prints one sha256 per artifact file (the
# manifest with created_at blanked). Two children with different PYTHONHASHSEED values must print
# the same lines: set iteration order, UUIDs or timestamps leaking into a file would show here.
_TRAIN_ALL = """
import hashlib, re, tempfile
from pathlib import Path
from aitrader.config import TrainConfig, build_model
from aitrader.data.synthetic import generate_bars
from aitrader.models import MODEL_KINDS
from aitrader.training.trainer import train
FAST = {"lightgbm": {"n_estimators": 30}, "xgboost": {"n_estimators": 10}, "ridge": {},
        "random_forest": {"n_estimators": 5, "min_samples_leaf": 20}}
bars = generate_bars(900, seed=11)
with tempfile.TemporaryDirectory() as tmp:
    for kind in MODEL_KINDS:
        for task in ("regression", "classification"):
            cfg = build_model(TrainConfig, {"target": {"horizon": 5, "task": task},
                "model": {"kind": kind, "params": FAST[kind], "random_state": 3},
                "split": {"n_folds": 2, "embargo": 5, "holdout": 0.2, "min_train": 200}})
            out = train(cfg, bars=bars, out_dir=Path(tmp) / f"{kind}-{task}").out_dir
            for f in sorted(out.iterdir()):
                data = f.read_bytes()
                if f.name == "manifest.json":
                    data, n = re.subn(rb'"created_at": "[^"]+"', b'"created_at": ""', data)
                    assert n == 1, "created_at not found once in the manifest"
                print(kind, task, f.name, hashlib.sha256(data).hexdigest())
"""


def test_artifacts_are_byte_identical_across_processes_except_created_at():
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    outputs = []
    for seed in ("0", "20"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", _TRAIN_ALL], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=180, check=False)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.splitlines())
    # 4 kinds x 2 tasks x (native file, model.onnx, manifest.json)
    assert len(outputs[0]) == 24 and {line.split()[2] for line in outputs[0]} >= {"model.onnx", "manifest.json"}
    assert outputs[0] == outputs[1]


# ---------------------------------------------------------------------------- the executed holdout backtest
def _replayed(m):
    """The bars train's backtest replays (holdout led by the warm-up), from the manifest alone."""
    import pandas as pd

    bars = generate_bars(1200, seed=11)
    first = int(bars.index.searchsorted(pd.Timestamp(m["split"]["holdout_first"])))
    return bars.iloc[first - m["features"]["warmup"]:]


def test_holdout_metrics_are_the_executed_backtest(trained):
    m = trained.manifest
    executed = m["metrics"]["holdout_backtest"]
    for key in ("total_return", "sharpe", "max_drawdown", "turnover"):
        assert m["metrics"]["holdout"][key] == executed["model"][key]
        for name in ("zero", "always_long", "prev_sign"):
            assert m["metrics"]["baselines"][name][key] == executed["baselines"][name][key]
    assert executed["bars"] == len(_replayed(m)) and executed["warmup_bars"] == m["features"]["warmup"]
    # the packaged/project trading config: position_size 0.02, min_confidence 0.6, class defaults
    assert (executed["position_size"], executed["min_confidence"]) == (0.02, 0.6)
    # synthetic daily bars run seven days a week: crypto costs, 10 bp commission + 5 bp slippage
    assert executed["costs"] == {"asset_class": "crypto", "commission_bps": 10.0, "slippage_bps": 5.0,
                                 "source": "class default", "detected": True}
    assert m["metrics"]["backtest"]["fees_bps"] == 10.0 and m["metrics"]["backtest"]["slippage_bps"] == 5.0
    run = trained.backtest["model"]
    assert len(run.fills) == executed["model"]["fills"] and run.equity[-1] == executed["model"]["final_equity"]


def test_always_long_and_zero_baselines_by_hand(trained):
    """always_long: one buy at the open after the first bar with every feature, held to the end."""
    m = trained.manifest
    frame = _replayed(m)
    from aitrader.features import FeaturePipeline

    feats = FeaturePipeline.from_contract(m["features"]).transform(frame)  # the batch evaluator
    k = int(np.argmax(np.isfinite(feats.to_numpy()).all(axis=1)))  # first bar the model can predict
    initial = 100_000.0
    qty = round(0.02 * initial / frame["close"].iloc[k], 8)
    price = frame["open"].iloc[k + 1] * (1 + 5 / 1e4)
    commission = qty * price * 10 / 1e4
    final = initial - qty * price - commission + qty * frame["close"].iloc[-1]
    run = trained.backtest["always_long"]
    assert len(run.fills) == 1 and run.fills[0]["side"] == "buy"
    assert run.fills[0]["ts"] == frame.index[k + 1].isoformat()
    assert run.fills[0]["quantity"] == qty
    assert run.fills[0]["price"] == pytest.approx(price, rel=1e-12)
    assert run.metrics["final_equity"] == pytest.approx(final, abs=1e-6)
    assert run.metrics["total_return"] == pytest.approx(final / initial - 1, abs=1e-12)
    zero = trained.backtest["zero"]
    assert zero.fills == [] and zero.metrics["final_equity"] == initial and zero.metrics["sharpe"] == 0.0


def test_confidence_is_calibrated_on_out_of_fold_predictions(trained):
    m = trained.manifest
    cal, pred = m["baseline"]["calibration"], m["baseline"]["prediction"]
    oof_rows = sum(f["test_rows"] for f in m["metrics"]["folds"])
    assert sum(cal["counts"]) == oof_rows != m["split"]["holdout_rows"]
    assert sum(pred["counts"]) == m["split"]["holdout_rows"]  # the drift baseline stays the holdout's
    assert cal["quantiles"] != pred["quantiles"]


def test_confidence_model_prefers_the_calibration_and_reads_old_manifests():
    from aitrader.trading.strategy import ConfidenceModel

    def dist(lo, hi):
        return {"quantiles": np.linspace(lo, hi, 101).tolist()}

    both = {"target": {"task": "regression"}, "baseline": {"calibration": dist(-1, 1), "prediction": dist(-10, 10)}}
    # uniform on [-1, 1]: P(|P| < 0.5) = 0.5; on [-10, 10]: 0.05
    assert ConfidenceModel.from_manifest(both).score(0.5)[1] == pytest.approx(0.5)
    old = {"target": {"task": "regression"}, "baseline": {"prediction": dist(-10, 10)}}
    assert ConfidenceModel.from_manifest(old).score(0.5)[1] == pytest.approx(0.05)


def test_train_yaml_backtest_costs_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"backtest.fees_bps is no longer used.*ml_trading.execution.commission_bps"):
        small_config(backtest__fees_bps=1.0)
    with pytest.raises(ConfigError, match=r"backtest.slippage_bps is no longer used"):
        small_config(backtest__slippage_bps=2.0)


# ---------------------------------------------------------------------------- costs by asset class
def _index(freq, days, *, weekends=True, hours=None, start="2024-01-01"):  # a Monday
    import pandas as pd

    ix = pd.date_range(start, periods=int(days * pd.Timedelta("1D") / pd.Timedelta(freq)), freq=freq)
    if not weekends:
        ix = ix[ix.day_of_week < 5]
    if hours is not None:
        ix = ix[(ix.hour >= hours[0]) & (ix.hour < hours[1])]
    return ix


def test_asset_class_of_reads_the_calendar():
    from aitrader.training.backtest import asset_class_of

    assert asset_class_of(_index("1D", 400)) == "crypto"  # daily, seven days a week
    assert asset_class_of(_index("5min", 30)) == "crypto"
    assert asset_class_of(_index("1h", 3, start="2024-01-06")) == "crypto"  # Sat, Sun, Mon: short span
    assert asset_class_of(_index("1h", 3)) == "forex"  # Mon..Wed around the clock
    assert asset_class_of(_index("1h", 120, weekends=False)) == "forex"  # 24 x 5
    sessions = _index("1D", 400, weekends=False)
    assert asset_class_of(sessions[np.arange(len(sessions)) % 25 != 7]) == "equity"  # daily, ~10 holidays a year
    assert asset_class_of(_index("1h", 120, weekends=False, hours=(14, 21))) == "equity"  # 7 bars a session
    # an exchange stamped in UTC spilling a few after-hours bars into Saturday stays equity
    import pandas as pd

    spill = _index("1h", 120, weekends=False, hours=(14, 21))
    spill = spill.append(pd.DatetimeIndex([d + pd.Timedelta(hours=4) for d in spill if d.day_of_week == 4
                                           and d.hour == 20][:5])).sort_values()
    assert asset_class_of(spill) == "equity"


def test_resolve_costs_class_defaults_and_overrides():
    from aitrader.config import Execution
    from aitrader.training.backtest import resolve_costs

    crypto, equity = _index("1h", 30), _index("1h", 120, weekends=False, hours=(14, 21))
    got = resolve_costs(Execution(), [crypto])
    assert (got.asset_class, got.commission_bps, got.slippage_bps, got.source) == ("crypto", 10.0, 5.0,
                                                                                   "class default")
    got = resolve_costs(Execution(asset_class="forex", slippage_bps=1.5), [crypto])
    assert (got.asset_class, got.commission_bps, got.slippage_bps, got.detected) == ("forex", 0.2, 1.5, False)
    assert got.source == "config + class default"
    got = resolve_costs(Execution(commission_bps=0.0, slippage_bps=0.0), [equity])
    assert (got.commission_bps, got.slippage_bps, got.source) == (0.0, 0.0, "config")
    assert resolve_costs(Execution()).asset_class == "equity"  # no bars to read: the equity defaults
    with pytest.raises(ConfigError, match="look like crypto and equity; set asset_class"):
        resolve_costs(Execution(), [crypto, equity])
