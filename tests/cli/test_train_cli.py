"""`aitrader train` through the CLI: exit codes, stderr messages, JSON output, the sample end to end."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.config import load_train_config
from aitrader.data.synthetic import generate_bars
from aitrader.training.manifest import read_manifest
from aitrader.training.trainer import load_training_bars, override_config

runner = CliRunner()

FAST = """\
model:
  kind: lightgbm
  params: {n_estimators: 20}
split: {n_folds: 3, embargo: 5, holdout: 0.2, min_train: 200}
"""


@pytest.fixture
def project(in_tmp):
    (in_tmp / "config").mkdir()
    (in_tmp / "config" / "train.yaml").write_text(FAST)
    generate_bars(1200, seed=5).to_csv(in_tmp / "bars.csv")
    return in_tmp


def invoke(*args: str):
    return runner.invoke(app, ["train", *args])


def test_json_output_has_model_holdout_and_baselines(project):
    result = invoke("--data", "bars.csv", "--out", "art", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["model"] == "lightgbm" and doc["symbol"] == "bars" and doc["target"] == "fwd_return_5"
    assert set(doc["metrics"]["baselines"]) == {"zero", "always_long", "prev_sign"}
    assert {"mae", "ic", "sharpe", "turnover"} <= set(doc["metrics"]["holdout"])
    assert len(doc["metrics"]["folds"]) == 3
    manifest = read_manifest(project / "art")
    assert manifest["metrics"]["holdout"] == pytest.approx(doc["metrics"]["holdout"], nan_ok=True)


def test_table_output_and_refusal_to_overwrite(project):
    first = invoke("--data", "bars.csv", "--out", "art", "--model", "ridge")
    assert first.exit_code == 0, first.stderr
    assert "always_long" in first.stdout and "prev_sign" in first.stdout and "artifact: art" in first.stdout
    again = invoke("--data", "bars.csv", "--out", "art", "--model", "ridge")
    assert again.exit_code == 1
    assert again.stderr.startswith("error: output folder art already exists") and "--force" in again.stderr
    forced = invoke("--data", "bars.csv", "--out", "art", "--model", "ridge", "--force", "--json")
    assert forced.exit_code == 0, forced.stderr


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("split: {n_folds: 1}\n", "split.n_folds: must be >= 2, got 1"),
        ("split: {bogus: 3}\n", "split.bogus: unknown key"),
        ("target: {task: ranking}\n", "target.task: must be one of"),
    ],
)
def test_bad_config_names_the_key_path(project, yaml_text, message):
    (project / "config" / "train.yaml").write_text(yaml_text)
    result = invoke("--data", "bars.csv")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: config/train.yaml: ") and message in result.stderr
    assert not (project / "artifacts").exists()


def test_bad_flag_values_are_validated_like_the_file(project):
    result = invoke("--data", "bars.csv", "--horizon", "0")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: target.horizon: must be >= 1, got 0"
    result = invoke("--data", "bars.csv", "--model", "catboost")
    assert result.exit_code == 1 and "model.kind: must be one of" in result.stderr
    missing = invoke("--config", "nope.yaml")
    assert missing.exit_code == 1 and "config file not found: nope.yaml" in missing.stderr


def test_unknown_feature_suggests_the_closest_names(project):
    result = invoke("--data", "bars.csv", "--features", "rsi14,ret_1")
    assert result.exit_code == 1
    assert "unknown feature 'rsi14'" in result.stderr and "rsi_14" in result.stderr
    assert result.stdout == ""


def test_too_little_data_states_the_bars_needed(project):
    generate_bars(300, seed=5).to_csv(project / "short.csv")
    result = invoke("--data", "short.csv", "--out", "art")
    assert result.exit_code == 1
    match = re.search(r"need at least (\d+) bars", result.stderr)
    assert match and int(match.group(1)) > 300
    assert not (project / "art").exists()
    assert [p.name for p in project.iterdir() if p.name.startswith(".")] == []


def test_features_flag_and_classification(project):
    result = invoke("--data", "bars.csv", "--features", "rsi_14,ret_1", "--task", "classification",
                    "--horizon", "3", "--out", "cls", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["features"] == ["rsi_14", "ret_1"] and doc["task"] == "classification"
    assert "auc" in doc["metrics"]["holdout"] and doc["target"] == "fwd_return_3"


def test_train_on_the_sample_and_register(in_tmp):
    (in_tmp / "config").mkdir()
    (in_tmp / "config" / "train.yaml").write_text(FAST.replace("min_train: 200", "min_train: 250"))
    result = invoke("--out", "art/aapl", "--register", "aapl", "--registry", "reg", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["symbol"] == "AAPL" and doc["registered"]["model_id"] == "aapl:v1"
    manifest = read_manifest(in_tmp / "art" / "aapl")  # the full format_version 1 schema
    assert manifest["data"]["symbol"] == "AAPL" and manifest["data"]["interval"].startswith("1 days")
    assert manifest["features"]["spec_hash"] and manifest["features"]["warmup"] > 0
    assert (in_tmp / "reg").is_dir()


SYMBOL_CASES = [  # (file, data.symbol / --symbol, recorded symbol or the DataError expected)
    ("x.csv", None, "x"),  # a plain file names itself: no config default relabels it
    ("x.csv", "BTC", "BTC"),  # an explicit symbol names a file without a symbol column
    ("long.csv", None, "MSFT"),  # a file with one symbol in its symbol column
    ("long.csv", "msft", "MSFT"),  # picked case-insensitively, recorded as the file spells it
    ("long.csv", "AAPL", "error: long.csv: symbol 'AAPL' not found; available: MSFT"),
    ("folder", "eth_btc", "ETH_BTC"),  # a folder: the file picked, spelt as the file is named
    ("folder", None,
     "error: folder: 2 symbols in the directory (ADA_BTC, ETH_BTC); pass symbol (--symbol) to pick one"),
]


@pytest.mark.parametrize(("file", "symbol", "expected"), SYMBOL_CASES)
def test_the_library_and_the_cli_record_the_same_symbol(in_tmp, file, symbol, expected):
    from aitrader.config import TrainConfig, build_model
    from aitrader.errors import DataError
    from aitrader.training.trainer import train

    bars = generate_bars(700, seed=5)
    bars.to_csv(in_tmp / "x.csv")
    bars.assign(symbol="MSFT").to_csv(in_tmp / "long.csv")
    (in_tmp / "folder").mkdir()
    for name in ("ETH_BTC", "ADA_BTC"):
        bars.to_csv(in_tmp / "folder" / f"{name}.csv")
    quick = {"model": {"kind": "ridge"}, "split": {"n_folds": 2, "min_train": 100, "holdout": 0.2}}
    (in_tmp / "quick.yaml").write_text(json.dumps(quick))  # JSON is YAML
    flags = ["--symbol", symbol] if symbol else []
    result = invoke("-c", "quick.yaml", "--data", file, *flags, "--out", "cli", "--json")
    # the library with the same config: data.symbol left at its default when the flag is absent
    cfg = build_model(TrainConfig, {**quick, "data": {"path": file, **({"symbol": symbol} if symbol else {})}})
    if expected.startswith("error: "):
        assert result.exit_code == 1 and result.stderr.strip() == expected and result.stdout == ""
        with pytest.raises(DataError, match=re.escape(expected[len("error: "):])):
            train(cfg, out_dir="lib")
        assert not (in_tmp / "cli").exists() and not (in_tmp / "lib").exists()
        return
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["symbol"] == expected
    assert train(cfg, out_dir="lib").manifest["data"]["symbol"] == expected
    # the shipped train.yaml and a bare TrainConfig() given only data.path: their default symbol
    # must not relabel the file
    for base in (load_train_config(None), TrainConfig()):
        raw = base.model_dump()
        raw["data"]["path"] = file
        if symbol:
            raw["data"]["symbol"] = symbol
        assert load_training_bars(build_model(TrainConfig, raw)).attrs["symbol"] == expected
        assert load_training_bars(override_config(base, data=file, symbol=symbol)).attrs["symbol"] == expected


def test_the_default_out_folder_is_named_after_the_file_not_a_config_default(in_tmp):
    generate_bars(700, seed=5).to_csv(in_tmp / "btc_1d.csv")
    (in_tmp / "quick.yaml").write_text("model: {kind: ridge}\nsplit: {n_folds: 2, min_train: 100}\n")
    result = invoke("-c", "quick.yaml", "--data", "btc_1d.csv", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["out_dir"] == "artifacts/btc_1d_ridge"


def test_a_classification_model_registers_and_passes_the_deploy_checks(project):
    import numpy as np

    from aitrader.models.runner import ModelRunner

    result = invoke("--data", "bars.csv", "--task", "classification", "--out", "cls", "--register", "cls",
                    "--registry", "reg", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["registered"]["model_id"] == "cls:v1"
    sample = read_manifest(project / "cls")["sample"]
    # the sample holds P(up) (what the runner returns and deploy compares), not 0/1 labels
    p_up = np.asarray(sample["predictions"])
    assert ((p_up > 0) & (p_up < 1)).all() and len(np.unique(p_up)) > 2
    onnx = ModelRunner.from_artifact(project / "cls", read_manifest(project / "cls"), prefer="onnx")
    np.testing.assert_allclose(onnx.predict_batch(np.asarray(sample["rows"])), p_up, rtol=1e-4, atol=1e-6)
    deploy = runner.invoke(app, ["deploy", "--model-id", "cls", "--dry-run", "--registry", "reg", "--json"])
    assert deploy.exit_code == 0, deploy.stderr
    checks = json.loads(deploy.stdout)["checks"]
    assert {c["name"] for c in checks} >= {"hashes", "loads", "reproduces_sample", "feature_contract"}
    assert all(c["status"] == "passed" for c in checks), checks


def test_register_a_pickle_model_trusted_or_not(project):
    plain = invoke("--data", "bars.csv", "--model", "ridge", "--task", "classification", "--out", "a",
                   "--register", "lin", "--registry", "reg")
    assert plain.exit_code == 0, plain.stderr
    assert "registered: lin:v1 (pickle-based and untrusted" in plain.stdout
    refused = runner.invoke(app, ["deploy", "--model-id", "lin", "--dry-run", "--registry", "reg"])
    assert refused.exit_code == 1 and "--trust-pickle" in refused.stderr
    trusted = invoke("--data", "bars.csv", "--model", "ridge", "--task", "classification", "--out", "b",
                     "--register", "lin2", "--registry", "reg", "--trust-pickle", "--json")
    assert trusted.exit_code == 0, trusted.stderr
    assert json.loads(trusted.stdout)["registered"]["trusted"] is True
    deploy = runner.invoke(app, ["deploy", "--model-id", "lin2", "--dry-run", "--registry", "reg", "--json"])
    assert deploy.exit_code == 0, deploy.stderr
    assert all(c["status"] == "passed" for c in json.loads(deploy.stdout)["checks"])
    misuse = invoke("--data", "bars.csv", "--trust-pickle", "--out", "c")
    assert misuse.exit_code == 1 and misuse.stderr.startswith("error: --trust-pickle only applies with --register")
    assert not (project / "c").exists()


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost", "ridge", "random_forest"])
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_every_kind_and_task_trains_through_the_cli(in_tmp, kind, task):
    params = {"lightgbm": {"n_estimators": 10}, "xgboost": {"n_estimators": 10}, "ridge": {},
              "random_forest": {"n_estimators": 5, "min_samples_leaf": 20}}[kind]
    quick = {"model": {"kind": kind, "params": params}, "split": {"n_folds": 2, "min_train": 100}}
    (in_tmp / "quick.yaml").write_text(json.dumps(quick))
    generate_bars(600, seed=2).to_csv(in_tmp / "bars.csv")
    result = invoke("-c", "quick.yaml", "--data", "bars.csv", "--task", task, "--out", "art", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["model"] == kind and doc["task"] == task and doc["onnx"]["max_rel_diff"] < 1e-3
    native = {"lightgbm": "model.txt", "xgboost": "model.ubj"}.get(kind, "model.joblib")
    assert sorted(p.name for p in (in_tmp / "art").iterdir()) == sorted(["manifest.json", "model.onnx", native])
    manifest = read_manifest(in_tmp / "art")
    assert manifest["model"]["pickle_based"] is (native == "model.joblib")
    if task == "classification":
        assert {"accuracy", "log_loss", "auc"} <= set(doc["metrics"]["holdout"])


def test_the_verdict_is_the_last_line_and_is_recorded(project):
    table = invoke("--data", "bars.csv", "--out", "art")
    assert table.exit_code == 0, table.stderr
    last = table.stdout.strip().splitlines()[-1]
    num, ic = r"-?\d+\.\d\d", r"-?\d\.\d{3}"
    assert re.fullmatch(rf"verdict: (edge|no edge|suspect result) over (zero|always_long|prev_sign): Sharpe {num} "
                        rf"\[{num}, {num}\] vs {num}, IC {ic} \[{ic}, {ic}\].*", last), last
    verdict = read_manifest(project / "art")["metrics"]["verdict"]
    assert last == f"verdict: {verdict['text']}"
    doc = json.loads(invoke("--data", "bars.csv", "--out", "art2", "--json").stdout)
    assert doc["metrics"]["verdict"] == verdict  # deterministic: same bars, same seed, same interval
    holdout = doc["metrics"]["holdout"]
    # the verdict's point figures are the holdout's (its Sharpe from the backtest's per-bar P&L)
    assert verdict["sharpe"] == pytest.approx(holdout["sharpe"], rel=1e-9, abs=1e-12)
    assert verdict["ic"] == pytest.approx(holdout["ic"], rel=1e-9, abs=1e-12)
    lo, hi = verdict["ic_ci"]
    assert lo < verdict["ic"] < hi and verdict["method"]["ic_block"] == 10  # 2 x horizon 5
    best = max(doc["metrics"]["baselines"].items(), key=lambda kv: kv[1]["sharpe"])
    assert verdict["best_baseline"] == best[0] and verdict["baseline_sharpe"] == best[1]["sharpe"]
    assert verdict["edge"] is (lo > 0 and verdict["sharpe"] > best[1]["sharpe"] and not verdict["warnings"])


def test_onnx_flag_overrides_the_config(project):
    off = invoke("--data", "bars.csv", "--out", "off", "--no-onnx", "--json")
    assert off.exit_code == 0, off.stderr
    assert json.loads(off.stdout)["onnx"] is None and not (project / "off" / "model.onnx").exists()
    (project / "no_onnx.yaml").write_text(FAST + "onnx: {export: false}\n")
    on = invoke("-c", "no_onnx.yaml", "--data", "bars.csv", "--out", "on", "--onnx", "--json")
    assert on.exit_code == 0, on.stderr
    assert json.loads(on.stdout)["onnx"]["file"] == "model.onnx" and (project / "on" / "model.onnx").is_file()


def hourly_fx(n: int = 6000, seed: int = 0, decimals: int = 4):
    """Hourly 24x5 bars with forex-sized moves (0.07% a bar) quoted to ``decimals`` places near 1.10."""
    bars = generate_bars(n, seed=seed, freq="1h", volatility=0.0007, start_price=1.1)
    bars = bars[bars.index.day_of_week < 5].copy()  # no weekend bars
    for col in ("open", "high", "low", "close"):
        bars[col] = bars[col].round(decimals)  # monotone rounding keeps low <= open/close <= high
    return bars


def test_hourly_fx_trains_with_defaults_and_falls_back_to_the_native_model(in_tmp):
    # Hourly EURUSD failed `train` with ONNX parity 0.0149 > 0.001: quoted prices make features
    # whose float64 values collapse in float32, so the ONNX graph takes other branches on some rows.
    hourly_fx().to_csv(in_tmp / "eurusd_1h.csv")
    result = invoke("--data", "eurusd_1h.csv", "--out", "fx", "--register", "fx", "--registry", "reg")
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert any("ONNX export of the lightgbm model differs from the native model" in w for w in warnings), result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("verdict: ")
    manifest = read_manifest(in_tmp / "fx")
    onnx = manifest["onnx"]
    assert onnx["file"] is None and onnx["fallback"] == "native" and onnx["max_rel_diff"] > onnx["tolerance_rel"]
    assert "onnx" not in manifest["model"]["files"] and not (in_tmp / "fx" / "model.onnx").exists()
    deploy = runner.invoke(app, ["deploy", "--model-id", "fx", "--dry-run", "--registry", "reg", "--json"])
    checks = {c["name"]: c for c in json.loads(deploy.stdout)["checks"]}
    assert checks["loads"]["detail"] == "runner built on the lightgbm backend"
    assert all(c["status"] == "passed" for c in checks.values()), checks


def bouncing(n: int = 4000, half_spread: float = 0.0015):
    """5-minute bars whose close is the bid or the ask at random around a random-walk mid."""
    import numpy as np

    bars = generate_bars(n, seed=3, freq="5min", volatility=0.0005, signal=0.0)
    side = np.random.default_rng(3).choice([-1.0, 1.0], n)
    bars["close"] = bars["close"] * (1 + half_spread * side)
    bars["open"] = bars["close"].shift(1).fillna(bars["open"])
    bars["high"] = np.maximum(bars["high"], np.maximum(bars["open"], bars["close"]))
    bars["low"] = np.minimum(bars["low"], np.minimum(bars["open"], bars["close"]))
    return bars


def test_bid_ask_bounce_is_flagged_and_is_not_an_edge(project):
    # 5-minute LTC/BTC showed holdout IC 0.39 and Sharpe 97 from bid/ask bounce alone.
    bouncing().to_csv(project / "ltcbtc_5m.csv")
    result = invoke("--data", "ltcbtc_5m.csv", "--horizon", "1", "--out", "bounce", "--no-onnx")
    assert result.exit_code == 0, result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert "lag-1 autocorrelation of 1-bar returns" in warning and "bid/ask bounce" in warning
    # The executed backtest pays crypto costs on every bounce, so its Sharpe alone already denies an
    # edge ("no edge"); without that it would be "suspect result". Either way: never an edge.
    assert re.match(r"verdict: (no edge|suspect result) over ", result.stdout.strip().splitlines()[-1])
    verdict = read_manifest(project / "bounce")["metrics"]["verdict"]
    assert verdict["edge"] is False and verdict["ic"] > 0.2 and verdict["warnings"] == [warning[len("warning: "):]]
    doc = invoke("--data", "ltcbtc_5m.csv", "--horizon", "1", "--out", "bounce", "--no-onnx", "--force", "--json")
    assert json.loads(doc.stdout)["warnings"] == verdict["warnings"]  # --json: the same, and still on stderr
    assert doc.stderr.splitlines() == [warning]


def test_real_5m_ltc_btc_bounce_is_flagged(shared_data, in_tmp):
    # The case, with default settings: holdout IC 0.39, Sharpe 97 on 5-minute LTC/BTC.
    result = invoke("--data", str(shared_data / "crypto_5m" / "LTC_BTC.csv.gz"), "--out", "ltc", "--no-onnx")
    assert result.exit_code == 0, result.stderr
    assert "bid/ask bounce" in result.stderr
    verdict = read_manifest(in_tmp / "ltc")["metrics"]["verdict"]
    # The signal looks strong (IC > 0.2) but the bounce warning fires; the executed backtest (next-open
    # fills, crypto costs) decides whether the Sharpe alone already denies an edge.
    assert verdict["edge"] is False and re.match(r"(no edge|suspect result) over ", verdict["text"])
    assert verdict["ic"] > 0.2
