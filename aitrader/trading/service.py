"""What the commands call: ``paper_trade``, ``run_status``, ``export_table``.

Each loads what it needs (config, registry models, bars), delegates to :mod:`session` and
returns plain data for rendering. A resumed run uses the configuration, model versions and data
recorded in its ledger, not the current files, so that it continues exactly the same run.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aitrader.errors import DataError, TradingError
from aitrader.trading.ledger import LEDGER_NAME, connect, ledger_state, read_table, validate_run_id
from aitrader.trading.strategy import strategy_class

if TYPE_CHECKING:  # the session, the sources, pandas and the config are imported where they are used, so
    # that `status` and `export` (which only read a ledger) import neither pandas nor pydantic
    import pandas as pd

    from aitrader.config import TradingConfig
    from aitrader.data.stream import BarFile
    from aitrader.trading.session import ModelSpec
    from aitrader.trading.sources import BarSeries

DEFAULT_RUNS_DIR = "runs"


def run_session(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`aitrader.trading.session.run_session`, imported on the first call (tests replace this name)."""
    from aitrader.trading.session import run_session as run

    return run(*args, **kwargs)


# ---------------------------------------------------------------------------- models
#: ``ModelEntry.symbol`` of a ``--model`` given without a symbol: the manifest's ``data.symbol`` fills it.
SYMBOL_FROM_MANIFEST = "*"


def deployed_models(reg: Any) -> list[str]:
    """``NAME@production`` of every model whose production alias is set (for error messages)."""
    try:
        return sorted({f"{v.name}@production" for v in reg.list_versions() if "production" in (v.aliases or [])})
    except Exception:  # noqa: BLE001 - only a hint in an error message; an unreadable index gives none
        return []


def _deployed_hint(reg: Any, name: str, *, others: bool = True) -> str:
    deployed = [d for d in deployed_models(reg) if not others or d.split("@")[0] != name]
    if not deployed:
        return (f"register and deploy one first: aitrader register ARTIFACT_DIR --name {name} && "
                f"aitrader deploy --model-id {name}")
    return f"deployed models: {', '.join(deployed)}; pass --model {deployed[0].split('@')[0]}"


def _version_for(reg: Any, name: str, saved: dict[str, Any] | None, source: str = "") -> str:
    if saved is not None:
        return str(saved["model_id"])
    if ":" in name or "@" in name:
        return name
    info = reg.alias_target(name, "production")
    if info is None:
        where = f" ({source})" if source else ""
        raise TradingError(f"model {name}{where} has no production version; {_deployed_hint(reg, name)}")
    return str(info.model_id)


def trained_symbol(manifest: dict[str, Any]) -> str | None:
    """The symbol a model was trained on (``data.symbol`` of its manifest), None when not recorded."""
    symbol = (manifest.get("data") or {}).get("symbol")
    return str(symbol) if symbol else None


def _load_once(reg: Any, loaded_versions: dict[str, Any], model_id: str, prior: dict[str, Any] | None,
               source: str, backend: str, notes: list[str] | None) -> Any:
    """The loaded version an entry names, loaded (verified, runner built) on its first use in this call."""
    from aitrader.errors import ModelNotFoundError

    try:
        version = _version_for(reg, model_id, prior, source)
        loaded = loaded_versions.get(version)
        if loaded is None:
            loaded = loaded_versions[version] = reg.load(version, backend=backend)
            if notes is not None:
                notes.extend(loaded.warnings)
    except ModelNotFoundError as exc:
        where = f" ({source})" if source else ""
        name = model_id.split("@")[0].split(":")[0]
        raise TradingError(f"model {model_id}{where}: {str(exc).rstrip('.')}; "
                           f"{_deployed_hint(reg, name, others=False)}") from exc
    return loaded


def load_models(
    cfg: TradingConfig, registry_root: str | None, saved: list[dict[str, Any]] | None = None, *,
    source: str = "", allow_symbol_mismatch: bool = False, books: str | dict[str, str] | None = None,
    backend: str = "onnx", notes: list[str] | None = None, remote: Callable[[int], Any] | None = None,
) -> list[ModelSpec]:
    """Verified models of the config's enabled entries (the production version, or the run's own on resume).

    ``source`` (e.g. "from config/ml_trading_config.yaml") names where the entries came from in errors.
    A model configured for another symbol than the one it was trained on is refused unless
    ``allow_symbol_mismatch``; an entry with symbol :data:`SYMBOL_FROM_MANIFEST` takes the trained one.
    ``books``: order-book snapshots (``--book``: a path, or {SYMBOL: path}) for models whose feature
    contract reads them (docs/orderbook.md); such a model without its symbol's snapshots is refused.
    ``backend``: the runner mode (``aitrader.registry.backends``); ``notes`` collects its warnings.
    ``remote(n_features)``: the predictions come from elsewhere (``paper-trade --bus``: predict-workers compute
    the features and predict); it makes each spec's predictor and feature stream, so the model is not warmed
    here and a book model needs no snapshots.
    """
    from aitrader.features import FeaturePipeline
    from aitrader.features.registry import FeatureRegistry
    from aitrader.registry import Registry
    from aitrader.trading.session import ModelSpec

    ml = cfg.ml_trading
    if not ml.enabled:
        raise TradingError("ml_trading.enabled is false in the config; set it to true to paper-trade")
    entries = [m for m in ml.models if m.enabled]
    if not entries:
        raise TradingError("no enabled model in ml_trading.models; add one (model_id, symbol) to the config")
    reg = Registry(registry_root)
    by_key = {(m["name"], m["symbol"]): m for m in saved or []}
    specs = []
    # One load (SHA256 verify, trust check, manifest, runner) and one warm-up per distinct version: entries
    # of the same model share the runner; each entry still gets its own feature pipeline and stream.
    loaded_versions: dict[str, Any] = {}
    features: FeatureRegistry | None = None
    warmed: set[int] = set()
    for entry in entries:
        strategy_class(entry.strategy)  # a plug-in strategy that cannot load fails before the run starts
        prior = by_key.get((entry.model_id, entry.symbol)) if saved is not None else None
        if saved is not None and prior is None:
            raise TradingError(f"the run's ledger has no model {entry.model_id} for {entry.symbol}")
        loaded = _load_once(reg, loaded_versions, entry.model_id, prior, source, backend, notes)
        symbol = entry.symbol
        trained = trained_symbol(loaded.manifest)
        if symbol == SYMBOL_FROM_MANIFEST:
            if trained is None:
                raise TradingError(f"model {loaded.info.model_id} does not record the symbol it was trained on; "
                                   "pass --data SYMBOL=PATH to name the symbol it trades")
            symbol = trained
        elif (prior is None and trained is not None and trained.upper() != symbol.upper()
              and not allow_symbol_mismatch):
            raise TradingError(
                f"model {loaded.info.model_id} was trained on {trained} but is configured to trade {symbol}"
                f"{f' ({source})' if source else ''}; trade {trained} (--data {trained}=PATH), or pass "
                f"--allow-symbol-mismatch to trade {symbol} with it anyway"
            )
        if prior is not None and loaded.info.digest != prior["digest"]:
            raise TradingError(
                f"{loaded.info.model_id} has digest {loaded.info.digest[:12]} but the run started with "
                f"{str(prior['digest'])[:12]}; resume needs the same model files"
            )
        if features is None:  # features.yaml parsed once per call, not once per entry
            features = FeatureRegistry.load()
        pipeline = FeaturePipeline.from_contract(loaded.manifest["features"], registry=features, folder=loaded.path)
        if remote is not None:
            predictor = stream = remote(len(pipeline.names))
        else:
            predictor, stream = _local_model(loaded.runner, pipeline, symbol, books, warmed,
                                             ml.feature_pipeline.buffer_size)
        specs.append(ModelSpec(
            model_id=loaded.info.model_id, name=entry.model_id, symbol=symbol, digest=loaded.info.digest,
            predictor=predictor, stream=stream, manifest=loaded.manifest,
            min_confidence=entry.min_confidence, position_size=entry.position_size, weight=entry.weight,
            strategy=entry.strategy, pipeline=pipeline,
        ))
    reg.close()  # the index connection sits in a reference cycle: closed now, not by the collector (cli/_exit.py)
    return specs


def _local_model(runner: Any, pipeline: Any, symbol: str, books: str | dict[str, str] | None, warmed: set[int],
                 buffer: int) -> tuple[Any, Any]:
    """The runner (warmed once per distinct runner) and a feature stream with the symbol's snapshots."""
    from aitrader.trading.model_runner import warm_up

    if pipeline.needs_book:
        from aitrader.features.book import book_for

        pipeline.with_book(book_for(books, symbol, pipeline.book_features, where="--book"))
    if id(runner) not in warmed:
        warm_up(runner, len(pipeline.names))
        warmed.add(id(runner))
    return runner, pipeline.stream(buffer)


def with_models(cfg: TradingConfig, models: list[str], data: list[str] | None) -> TradingConfig:
    """``cfg`` with ``ml_trading.models`` replaced by the ``--model`` references (and ml_trading enabled).

    Each entry's symbol: the SYMBOL of the matching ``--data SYMBOL=PATH`` (one model and one pair,
    or as many pairs as models, in order), else :data:`SYMBOL_FROM_MANIFEST` (the trained symbol).
    Sizing (min_confidence, position_size, weight) comes from the config's entry of the same name,
    else its first entry (as ``train``'s holdout backtest picks it), else the entry defaults.
    """
    from aitrader.config import ModelEntry

    pairs = [item.partition("=")[0] for item in data or [] if "=" in item and not Path(item).exists()]
    paired = len(pairs) == len(models)
    old = list(cfg.ml_trading.models)
    entries = []
    for i, ref in enumerate(models):
        name = ref.split("@")[0].split(":")[0]
        like = next((m for m in old if m.model_id == name), old[0] if old else None)
        sizing = ({"min_confidence": like.min_confidence, "position_size": like.position_size,
                   "weight": like.weight, "strategy": like.strategy} if like is not None else {})
        entries.append(ModelEntry(model_id=ref, symbol=pairs[i] if paired else SYMBOL_FROM_MANIFEST, **sizing))
    ml = cfg.ml_trading.model_copy(update={"models": entries, "enabled": True})
    return cfg.model_copy(update={"ml_trading": ml})


def _resolved_models(cfg: TradingConfig, specs: list[ModelSpec]) -> TradingConfig:
    """``cfg`` with each :data:`SYMBOL_FROM_MANIFEST` entry's symbol set (what the ledger records)."""
    entries, it = [], iter(specs)
    for entry in cfg.ml_trading.models:
        if entry.enabled:
            spec = next(it)
            entry = entry.model_copy(update={"symbol": spec.symbol})
        entries.append(entry)
    return cfg.model_copy(update={"ml_trading": cfg.ml_trading.model_copy(update={"models": entries})})


# ---------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Window:
    """Which bars a run trades: ``--from``/``--to`` (None: the model's first unseen bar / the end)."""

    start: str | None = None
    end: str | None = None
    allow_in_sample: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.start, "to": self.end, "allow_in_sample": self.allow_in_sample}


def _unseen_start(manifest: dict[str, Any]) -> tuple[Any, int]:
    """Where a model's unseen bars begin, and how many earlier bars its features need to warm up.

    The final model is fit on the rows before the holdout (and the purge gap), so the holdout's first
    bar is the first one it never saw; older manifests without it fall back to the end of the data.
    """
    split = manifest.get("split") or {}
    start = split.get("holdout_first") or (manifest.get("data") or {}).get("last")
    return start, int((manifest.get("features") or {}).get("warmup") or 0)


def _aligned(value: Any, index: Any) -> Any:
    """``value`` as a Timestamp comparable with ``index`` (:func:`aitrader.trading.trades.aligned`)."""
    from aitrader.trading.trades import aligned

    return aligned(value, index)


def _parse_when(option: str, value: str) -> pd.Timestamp:
    import pandas as pd

    try:
        ts: Any = pd.Timestamp(value)
    except (TypeError, ValueError, OverflowError):
        ts = pd.NaT
    if ts is pd.NaT:
        raise TradingError(f"{option} {value!r} is not a date or time; use e.g. 2024-01-31 or 2024-01-31T14:00")
    return ts


def _is_date(value: str) -> bool:
    return len(value.strip()) == 10  # YYYY-MM-DD: the whole day


def _first_unseen(index: pd.DatetimeIndex, specs: list[ModelSpec]) -> tuple[int, str, str]:
    """Position in ``index`` of the first bar every model of this symbol never saw, its stamp and the model."""
    best, stamp, model = 0, "", ""
    for spec in specs:
        start, _ = _unseen_start(spec.manifest)
        if not start:
            continue
        unseen_from_cut = "holdout_first" in (spec.manifest.get("split") or {})  # else cut is the last seen bar
        pos = int(index.searchsorted(_aligned(str(start), index), side="left" if unseen_from_cut else "right"))
        if pos >= best:
            best, model = pos, spec.model_id
            stamp = str(index[pos]) if pos < len(index) else f"after {start}"
    return best, stamp, model


def select_window(index: pd.DatetimeIndex, symbol: str, specs: list[ModelSpec], window: Window, *,
                  what: str) -> tuple[int, int, float | None]:
    """The rows ``lo:hi`` of the bars stamped ``index`` to replay (led by the feature warm-up) and
    the epoch of the first bar to trade: decided from the stamps alone, no bar is read or copied.

    By default trading starts at the models' first unseen bar (``split.holdout_first``); ``--from``
    earlier than that, or a replay of the whole file, needs ``allow_in_sample``.
    """
    import pandas as pd

    from aitrader.trading.session import to_epoch

    warmup = max((_unseen_start(s.manifest)[1] for s in specs), default=0)
    unseen, unseen_ts, model = _first_unseen(index, specs)
    if window.start is not None:
        start_ts = _aligned(_parse_when("--from", window.start), index)
        start = int(index.searchsorted(start_ts, side="left"))
        if start < unseen and not window.allow_in_sample:
            raise TradingError(
                f"--from {window.start} reaches into the training period of {model} ({symbol}): its first unseen "
                f"bar is {unseen_ts}; trade from there or later, or pass --allow-in-sample to trade bars the model "
                "was trained on (monitor will flag the run)"
            )
    else:
        start = 0 if window.allow_in_sample else unseen
    stop = len(index)
    if window.end is not None:
        end = _aligned(_parse_when("--to", window.end), index)
        whole_day = _is_date(window.end)
        stop = int(index.searchsorted(end + pd.Timedelta(days=1) if whole_day else end,
                                         side="left" if whole_day else "right"))
    if start >= stop:
        if window.start is None and window.end is None and len(index):
            raise DataError(
                f"{what} for {symbol} ({index[0]} .. {index[-1]}) has no bars after the model's training "
                f"period ({model}: first unseen bar {unseen_ts}); pass bars after it with --data PATH, or "
                "--allow-in-sample to replay bars the model was trained on (monitor will flag the run)"
            )
        raise DataError(
            f"{what} for {symbol} has no bar to trade in the window --from {window.start or unseen_ts} "
            f"--to {window.end or 'the end'}; widen the window"
        )
    return max(0, start - warmup), stop, to_epoch(index[start])


def _after_training(df: pd.DataFrame, manifest: dict[str, Any], symbol: str) -> pd.DataFrame:
    """The sample's bars from the model's first unseen bar on, led by its feature warm-up bars."""
    import pandas as pd

    from aitrader.trading.session import ModelSpec

    spec = ModelSpec(model_id="model", symbol=symbol, digest="", predictor=None, stream=None,  # type: ignore[arg-type]
                     manifest=manifest)
    lo, hi, _ = select_window(pd.DatetimeIndex(df.index), symbol, [spec], Window(), what="the built-in sample")
    return df.iloc[lo:hi]


def load_frames(data: list[str] | None, specs: list[ModelSpec],
                window: Window | None = None) -> dict[str, BarSeries]:
    """Bars of every traded symbol: ``--data`` items (file, directory, SYMBOL=PATH) or the sample.

    Each symbol's bars are a :class:`aitrader.trading.sources.BarSeries`: the rows of its file in
    the window (see :func:`select_window`), prices read in blocks as the replay goes; the specs'
    ``trade_from`` is set.
    """
    from aitrader.trading.sources import BarSeries

    window = window or Window()
    symbols = sorted({s.symbol for s in specs})
    if not data:
        from aitrader.data.sample import SAMPLE_SYMBOLS

        if unknown := [s for s in symbols if s.upper() not in SAMPLE_SYMBOLS]:
            raise DataError(
                f"no bars for {', '.join(unknown)}: the built-in sample has only {', '.join(SAMPLE_SYMBOLS)}; "
                f"pass --data {unknown[0]}=PATH"
            )
        files = _sample_files(symbols)
        what = "the built-in sample"
    else:
        what = "--data"
        files, explicit = _data_files(data)
        if not explicit and len(files) == 1 and len(symbols) == 1 and symbols[0] not in files:
            files = {symbols[0]: next(iter(files.values()))}  # one file for the one traded symbol
        missing = [s for s in symbols if s not in files]
        if missing:
            raise DataError(
                f"no bars for {', '.join(missing)} in --data (found: {', '.join(sorted(files)) or 'none'}); "
                "pass SYMBOL=PATH for each traded symbol"
            )
    out: dict[str, BarSeries] = {}
    for sym in symbols:
        mine = [s for s in specs if s.symbol == sym]
        lo, hi, trade_from = select_window(files[sym].index, sym, mine, window, what=what)
        out[sym] = BarSeries(files[sym], lo, hi, symbol=sym)
        for spec in mine:
            spec.trade_from = trade_from
    return out


def _sample_files(symbols: list[str]) -> dict[str, BarFile]:
    from aitrader.data import load_sample
    from aitrader.data.stream import BarFile

    return {sym: BarFile.from_frame(sym, load_sample(sym)) for sym in symbols}


def _data_files(data: list[str]) -> tuple[dict[str, BarFile], bool]:
    """The ``--data`` items as :class:`aitrader.data.stream.BarFile` (same symbols, same errors as
    :func:`aitrader.data.load_data_items`: validated block by block, only the stamps held), and
    whether their symbols were named explicitly."""
    from aitrader.data.stream import scan_data_items

    return scan_data_items(data)


def _follow_window(path: Path, specs: list[ModelSpec], window: Window) -> None:
    """``--follow``: bars before the first unseen bar (or ``--from``) only warm the features."""
    from aitrader.trading.session import to_epoch

    if window.end is not None:
        raise TradingError("--to does not apply to --follow (it trades bars as they arrive); drop --to")
    for spec in specs:
        unseen_ts, _ = _unseen_start(spec.manifest)
        unseen = to_epoch(unseen_ts)
        if unseen is not None and "holdout_first" not in (spec.manifest.get("split") or {}):
            unseen += 1e-9  # data.last: the last bar it saw
        if window.start is not None:
            start = to_epoch(_parse_when("--from", window.start))
            if unseen is not None and start is not None and start < unseen and not window.allow_in_sample:
                raise TradingError(
                    f"--from {window.start} reaches into the training period of {spec.model_id} ({spec.symbol}): "
                    f"its first unseen bar is {unseen_ts}; trade from there or later, or pass --allow-in-sample "
                    "to trade bars the model was trained on (monitor will flag the run)"
                )
            spec.trade_from = start
        else:
            spec.trade_from = None if window.allow_in_sample else unseen


def _follow_target(data: list[str] | None, specs: list[ModelSpec]) -> tuple[str, Path]:
    symbols = sorted({s.symbol for s in specs})
    if not data or len(data) != 1:
        raise TradingError("--follow tails exactly one file: pass --data PATH (or SYMBOL=PATH)")
    sym, sep, path = data[0].partition("=")
    if sep and not Path(data[0]).exists():
        return sym, Path(path)
    if len(symbols) != 1:
        raise TradingError(f"--follow with several traded symbols ({', '.join(symbols)}): pass --data SYMBOL=PATH")
    return symbols[0], Path(data[0])


# ---------------------------------------------------------------------------- runs
def resolve_run(runs_dir: str | Path, run_id: str | None, state_dir: str | Path | None = None,
                option: str = "RUN_ID") -> Path:
    """A run's folder: ``--state`` as given, ``runs_dir/RUN_ID``, or the most recently updated run
    (runs killed before their ledger's first commit are not candidates)."""
    if state_dir is not None:
        return Path(state_dir)
    root = Path(runs_dir)
    if run_id is not None:
        return root / validate_run_id(run_id, option)
    runs = [p.parent for p in root.glob(f"*/{LEDGER_NAME}")] if root.is_dir() else []
    runs = [p for p in runs if ledger_state(p / LEDGER_NAME) != "empty"]
    if not runs:
        raise TradingError(f"no runs under {root}/; start one with aitrader paper-trade or pass --runs-dir")
    return max(runs, key=lambda p: ((p / LEDGER_NAME).stat().st_mtime, p.name))


def _saved_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, tuple[int, str]], set[int]]:
    """The meta, cursors and reported bad-bar lines of a run to resume, or a clean error."""
    path = run_dir / LEDGER_NAME
    state = ledger_state(path)
    if state == "missing":
        raise TradingError(f"cannot resume: no ledger at {path}; pass the RUN_ID of an existing run")
    if state == "empty":
        raise TradingError(f"cannot resume: the run in {run_dir} was stopped before it started (its ledger is "
                           f"empty); start it again with --run-id {run_dir.name}")
    try:
        conn = connect(path, readonly=True)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if missing := [t for t in RUN_TABLES if t not in tables]:
                raise TradingError(f"cannot resume: {path} lacks the table(s) {', '.join(missing)}: the ledger is "
                                   "damaged; start a new run")
            meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
            cursors = {str(sym): (int(i), str(ts)) for sym, i, ts in conn.execute("SELECT * FROM cursors")}
            reported = {int(json.loads(p).get("line")) for (p,) in conn.execute(
                "SELECT payload FROM events WHERE type = 'ALERT' AND reason = 'bad_bar'")}
        finally:
            conn.close()
    except (sqlite3.Error, ValueError, TypeError, AttributeError) as exc:
        raise TradingError(f"cannot resume: {path} is damaged ({type(exc).__name__}: {exc}); start a new run") \
            from exc
    return meta, cursors, reported


#: The tables every run's ledger has had since the first version (equity_chunks came later).
RUN_TABLES = ("meta", "cursors", "orders", "fills", "positions", "equity", "events", "predictions")


def _resumed_config(saved: dict[str, Any], run_dir: Path) -> tuple[TradingConfig, dict[str, Any], list[Any]]:
    from pydantic import ValidationError

    from aitrader.config import TradingConfig

    try:
        cfg = TradingConfig.model_validate(saved.get("config"))
    except ValidationError as exc:
        errors: list[Any] = list(exc.errors())
        where = ".".join(str(x) for x in errors[0].get("loc", ())) if errors else "config"
        msg = errors[0].get("msg", str(exc)) if errors else str(exc)
        raise TradingError(
            f"cannot resume: the config stored in {run_dir / LEDGER_NAME} is invalid ({where or 'config'}: "
            f"{msg}); start a new run"
        ) from exc
    request, models = saved.get("request") or {}, saved.get("models") or []
    if not isinstance(request, dict) or not isinstance(models, list) or not all(
        isinstance(m, dict) and {"name", "symbol", "digest", "model_id"} <= set(m) for m in models
    ):
        raise TradingError(f"cannot resume: the run's request or models in {run_dir / LEDGER_NAME} are damaged; "
                           "start a new run")
    data = request.get("data")
    if data is not None and not (isinstance(data, list) and all(isinstance(d, str) for d in data)):
        raise TradingError(f"cannot resume: the run's recorded --data in {run_dir / LEDGER_NAME} is damaged; "
                           "start a new run")
    return cfg, request, models


def paper_trade(
    *,
    config_path: str | None = None,
    data: list[str] | None = None,
    state_dir: str | None = None,
    run_id: str | None = None,
    resume: str | None = None,
    speed: float = 0.0,
    follow: bool = False,
    registry_root: str | None = None,
    max_bars: int | None = None,
    runs_dir: str = DEFAULT_RUNS_DIR,
    view: str = "none",
    start: str | None = None,
    end: str | None = None,
    allow_in_sample: bool = False,
    pin: bool = False,
    models: list[str] | None = None,
    allow_symbol_mismatch: bool = False,
    collect: dict[str, Any] | None = None,
    model_endpoint: str | None = None,
    books: str | dict[str, str] | None = None,
    backend: str | None = None,
    workers: int | str = "auto",
    ledger_thread: bool = False,
    ledger_features: bool = True,
) -> dict[str, Any]:
    """Start (or ``resume``) a paper-trading run; returns the final summary.

    ``workers`` (``--workers N|auto``): threads of the batch replay route (docs/trading.md, *Workers*; auto:
    a worker thread when a core is free).
    ``ledger_thread`` (``--ledger-thread``): a replay at speed 0 commits its ledger on a writer thread.
    ``ledger_features`` False: predictions are recorded without their feature rows (``backtest``'s
    temporary ledger, which nothing reads features from; ``monitor``'s drift needs them).

    A ``follow`` run swaps in newly deployed versions at bar boundaries unless ``pin`` (recorded, so a
    resumed run keeps it); see :mod:`aitrader.trading.swap`.

    ``start``/``end`` (``--from``/``--to``) pick the bars to trade; by default a run trades from each
    model's first unseen bar, and bars the model was trained on need ``allow_in_sample``.
    ``models`` (``--model NAME[:vN|@alias]``) replace the config's model list (:func:`with_models`).
    ``collect``, when given, receives the replayed series (``BarSeries``), each symbol's first traded bar (epoch)
    and the specs (what ``backtest`` reports on). ``model_endpoint`` (``--model-endpoint``, or
    ``endpoint:`` per model in the config): predictions come from that ``aitrader serve``
    (:mod:`aitrader.serve.hook`). ``backend``: the runner mode (``--backend``;
    None: ``$AITRADER_BACKEND``, else auto: the compiled library a deploy made, else ONNX); the
    summary's ``runners`` names each model's backend and ``warnings`` any fallback.
    """
    from aitrader.config import load_trading_config
    from aitrader.registry.backends import default_mode, validate_mode
    from aitrader.trading.batch import requested_workers
    from aitrader.trading.session import REPLAY_COMMIT_EVERY, RunOptions, new_run_id
    from aitrader.trading.sources import FollowSource, ReplayFingerprint, describe, replay_steps

    if not math.isfinite(speed) or speed < 0:
        raise TradingError(f"--speed must be a finite number >= 0 (0: as fast as possible), got {speed}")
    workers = requested_workers(workers)  # checked before anything is written
    window = Window(start, end, allow_in_sample)
    mode = validate_mode(backend) if backend is not None else default_mode()
    notes: list[str] = []
    cursors: dict[str, tuple[int, str]] = {}
    reported: set[int] = set()
    saved: dict[str, Any] = {}
    if resume is not None:
        if window != Window():
            raise TradingError("--from, --to and --allow-in-sample cannot change a resumed run; it continues "
                               "with the window it started with")
        run_dir = resolve_run(runs_dir, resume, state_dir, "--resume")
        saved, cursors, reported = _saved_run(run_dir)
        if models:
            raise TradingError("--model cannot change a resumed run; it continues with the models it started with")
        cfg, request, saved_models = _resumed_config(saved, run_dir)
        data, follow = request.get("data"), bool(request.get("follow"))
        books = books if books is not None else request.get("book")
        pin = pin or bool(request.get("pin"))
        if "allow_in_sample" in request:
            window = Window(request.get("from"), request.get("to"), bool(request.get("allow_in_sample")))
        else:  # a run started before windows existed replayed all of --data (the sample: after training)
            window = Window(allow_in_sample=bool(data))
        specs = load_models(cfg, registry_root, saved_models, books=books, backend=mode, notes=notes)
        rid = str(saved.get("run_id") or run_dir.name)
    else:
        from aitrader.config import TRADING_CONFIG, resolve_config_path

        cfg = load_trading_config(config_path)
        origin = f"from {resolve_config_path(TRADING_CONFIG, config_path)}"
        listed = [m.model_id for m in cfg.ml_trading.models if m.enabled]
        if len(listed) > 1:
            origin += f", which lists {', '.join(listed)}"
        if models:
            cfg, origin = with_models(cfg, models, data), "from --model"
        rid = validate_run_id(run_id) if run_id is not None else new_run_id()
        run_dir = Path(state_dir) if state_dir else Path(runs_dir) / rid
        specs = load_models(cfg, registry_root, source=origin, allow_symbol_mismatch=allow_symbol_mismatch,
                            books=books, backend=mode, notes=notes)
        cfg = _resolved_models(cfg, specs)
    data = [str(Path(d).resolve()) if Path(d).exists() else d for d in data or []] or None
    opts = RunOptions(speed=speed, max_bars=max_bars, commit_every=1 if follow else REPLAY_COMMIT_EVERY, live=follow,
                      workers=workers, ledger_thread=ledger_thread, ledger_features=ledger_features)
    from aitrader.trading.view import attach_view

    attach_view(opts, view)
    books = {k: str(Path(v).resolve()) for k, v in books.items()} if isinstance(books, dict) else (
        str(Path(books).resolve()) if books else None)
    meta: dict[str, Any] = {"request": {"data": data, "follow": follow, **window.to_dict(), "pin": pin}}
    if books:
        meta["request"]["book"] = books  # a resumed run re-reads the same snapshots
    if follow:
        if not pin:
            from aitrader.trading.swap import RegistrySource, SwapSettings

            opts.swap = SwapSettings(RegistrySource(registry_root, backend=mode))
        symbol, path = _follow_target(data, specs)
        _follow_window(path, specs, window)
        done = cursors.get(symbol)
        source = FollowSource(path, symbol, bad_bar=cfg.ml_trading.live.bad_bar,
                              min_bars=done[0] + 1 if done else 0, reported=reported)
        opts.subscribers.append(source.attach)
        opts.fingerprint = source.fingerprint
        steps = source.steps()
        stop_event = source.stop_event
        indexes = _follow_index(path, symbol)
    else:
        replayed = load_frames(data, specs, window)
        meta["data"] = describe(replayed)
        # the traded bars' calendar, so the summary annualises with it (docs/metrics.md)
        from aitrader.trading.summary import calendar_of

        indexes = [s.index for s in replayed.values()]
        meta["calendar"] = calendar_of(indexes)
        series = list(replayed.values())
        opts.fingerprint = ReplayFingerprint(series)
        opts.total_bars = sum(len(s) for s in series)  # the progress view's total
        steps = replay_steps(series)
        stop_event = None
        if collect is not None:  # backtest reports on the replayed series' blocks (no frames)
            collect.update(series=dict(replayed), specs=specs,
                           calendar=meta["calendar"], trade_from={s.symbol: s.trade_from for s in specs})
            _backtest_hooks(collect, opts)  # backtest records the fills as the replay makes them
    from aitrader.serve.hook import remote_models

    cfg = remote_models(cfg, specs, opts, rid, model_endpoint)  # models served by `aitrader serve`
    # Costs by asset class, resolved from the traded bars and recorded in the ledger's meta (a resumed
    # run keeps its recorded costs).
    from aitrader.training.backtest import resolve_costs

    costs = saved.get("costs") or resolve_costs(cfg.ml_trading.execution, indexes).to_dict()
    meta["costs"] = costs
    summary = run_session(cfg, specs, steps, run_dir, run_id=rid, resume=resume is not None, meta=meta, opts=opts,
                          stop_event=stop_event)
    runners = {s.model_id: str(getattr(s.predictor, "backend", "?")) for s in specs}
    return {**summary, "costs": costs, "runners": runners, **({"warnings": notes} if notes else {})}


def _backtest_hooks(collect: dict[str, Any], opts: Any) -> None:
    """``collect["subscribers"]`` on the bus, ``collect["scratch_ledger"]``: ``RunOptions.ledger_scratch``
    (backtest's temporary ledger)."""
    opts.subscribers.extend(collect.get("subscribers") or ())
    opts.ledger_scratch = bool(collect.get("scratch_ledger"))


def _follow_index(path: Path, symbol: str) -> list[pd.DatetimeIndex]:
    """The bars already in a followed file (for the asset class); none when it cannot be read yet."""
    import pandas as pd

    from aitrader.data import load_bars
    from aitrader.errors import AitraderError

    try:
        return [pd.DatetimeIndex(load_bars(path, symbol=symbol).index)]
    except (AitraderError, OSError, ValueError):
        return []


def _existing_run(runs_dir: str, run_id: str | None, state_dir: str | None) -> Path:
    run_dir = resolve_run(runs_dir, run_id, state_dir)
    state = ledger_state(run_dir / LEDGER_NAME)
    if state == "missing":
        raise TradingError(
            f"run {run_id!r} not found: no {run_dir / LEDGER_NAME}; pass an existing RUN_ID or --runs-dir"
        )
    if state == "empty":
        raise TradingError(f"run {run_dir.name!r} was stopped before it started (its ledger is empty); start it "
                           f"again with aitrader paper-trade --run-id {run_dir.name}")
    return run_dir


def run_status(run_id: str | None = None, runs_dir: str = DEFAULT_RUNS_DIR, state_dir: str | None = None) -> dict:
    from aitrader.trading.summary import summarise

    run_dir = _existing_run(runs_dir, run_id, state_dir)
    try:
        return summarise(run_dir)
    except (sqlite3.Error, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TradingError(
            f"cannot summarise the run in {run_dir}: its ledger is damaged or incomplete ({type(exc).__name__}: "
            f"{exc}); export the tables that remain with aitrader export, or start a new run"
        ) from exc


def run_trades(run_dir: Path, frames: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """The round trips of a run (:mod:`aitrader.trading.trades`), MAE/MFE from ``frames`` or the run's
    recorded ``--data`` (left empty when those bars cannot be read any more).

    The frame :func:`aitrader.trading.trades.round_trips` gives, from columns (:mod:`aitrader.trading.trips`,
    as ``backtest`` builds its trades; :func:`aitrader.trading.backtest.frame_excursions`): ~150 us a trade
    less than a Timestamp pair, a Timedelta text and pandas slices per trade."""
    from aitrader.trading.backtest import frame_excursions
    from aitrader.trading.trades import trades_frame
    from aitrader.trading.trips import FillColumns, match_fills, records, trade_columns

    fills = FillColumns.read(run_dir / LEDGER_NAME)
    if frames is None:
        frames = _recorded_bars(run_dir, sorted(set(fills.symbol)))
    trades = trade_columns(match_fills(fills))
    return trades_frame(records(trades, *frame_excursions(trades, frames)) if frames is not None else
                        records(trades))


def _recorded_bars(run_dir: Path, symbols: list[str]) -> dict[str, pd.DataFrame] | None:
    from aitrader.data import load_data_items, load_sample
    from aitrader.errors import AitraderError

    try:
        conn = connect(run_dir / LEDGER_NAME, readonly=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'request'").fetchone()
        finally:
            conn.close()
        data = (json.loads(row[0]) if row else {}).get("data")
        frames: dict[str, pd.DataFrame] = {}
        if not data:
            return {s: load_sample(s) for s in symbols}
        frames = load_data_items(data)[0]
        if len(frames) == 1 and len(symbols) == 1:
            frames = {symbols[0]: next(iter(frames.values()))}
        return frames
    except (AitraderError, OSError, ValueError, sqlite3.Error):
        return None


_PLAIN_CELL = (type(None), bool, int, float, str)


def csv_text(cols: list[str], rows: list[tuple[Any, ...]], lineterminator: str = "\n") -> str | None:
    """The CSV that ``pandas.DataFrame.from_records(rows, columns=cols).to_csv(index=False)`` writes,
    without importing pandas (``export`` of a ledger table stays light); None when a value is not a plain
    Python scalar (then pandas formats it).

    pandas' column inference, reproduced: a column of numbers holding a float or a null becomes float64
    (every number written as ``repr(float)``, nulls and NaN empty), a column of ints only stays int; any
    other column is written value by value with ``str`` (None and NaN empty). Checked against pandas on
    random tables (tests/cli/test_slim.py).
    """
    import csv
    import io

    columns: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [() for _ in cols]
    cells: list[list[str]] = []
    for values in columns:
        if not all(type(v) in _PLAIN_CELL for v in values) or any(type(v) is int and abs(v) >= 2**63 for v in values):
            return None
        nulls = [v is None or (type(v) is float and math.isnan(v)) for v in values]
        present = [v for v, null in zip(values, nulls, strict=True) if not null]
        numeric = bool(present) and all(type(v) in (int, float) for v in present)
        if numeric and (any(nulls) or any(type(v) is float for v in present)):
            cells.append(["" if null else repr(float(v)) for v, null in zip(values, nulls, strict=True)])
        else:
            cells.append(["" if null else str(v) for v, null in zip(values, nulls, strict=True)])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=lineterminator)
    writer.writerow(cols)
    writer.writerows(zip(*cells, strict=True))
    return buf.getvalue()


def _write_export(tmp: Path, suffix: str, plain: str | None, frame: Callable[[], pd.DataFrame]) -> None:
    """Write ``plain`` CSV text (gzipped for .csv.gz) or, when None, the frame as CSV or parquet."""
    if plain is not None:
        import gzip

        with (gzip.open(tmp, "wt", encoding="utf-8", newline="") if suffix == ".csv.gz"
              else tmp.open("w", encoding="utf-8", newline="")) as fh:
            fh.write(plain)
    elif suffix == ".parquet":
        frame().to_parquet(tmp, index=False)
    else:
        frame().to_csv(tmp, index=False, compression="gzip" if suffix == ".csv.gz" else None)


def export_table(run_id: str, table: str, out: str | None = None, runs_dir: str = DEFAULT_RUNS_DIR,
                 state_dir: str | None = None) -> str | None:
    """CSV text of a ledger table when ``out`` is None; else write CSV or parquet (by extension) atomically.

    A ledger table goes to CSV without pandas (:func:`csv_text`, the same text); parquet and the
    ``trades`` table (round trips, MAE/MFE from the bars) use pandas.
    """
    from aitrader.trading.ledger import EXPORT_TABLES, unknown_table_message

    if table not in EXPORT_TABLES and table != "trades":
        raise TradingError(unknown_table_message(table, [*EXPORT_TABLES, "trades"]))
    run_dir = _existing_run(runs_dir, run_id, state_dir)
    cols: list[str] = []
    rows: list[tuple[Any, ...]] = []
    if table == "trades":
        df = run_trades(run_dir)
    else:
        cols, rows = read_table(run_dir / LEDGER_NAME, table)
        df = None

    def frame() -> pd.DataFrame:
        import pandas as pd

        return df if df is not None else pd.DataFrame.from_records(rows, columns=cols)

    def text(lineterminator: str) -> str | None:
        return csv_text(cols, rows, lineterminator) if df is None else None

    if out is None:
        plain = text("\n")
        return plain if plain is not None else frame().to_csv(index=False, lineterminator="\n")
    dest = Path(out)
    if dest.is_dir() or out.endswith(("/", os.sep)):
        raise TradingError(f"--out {out} is a directory; pass a file name such as {dest / (table + '.csv')}")
    suffix = "".join(dest.suffixes[-2:]).lower() if dest.suffix.lower() == ".gz" else dest.suffix.lower()
    if suffix not in (".csv", ".csv.gz", ".parquet"):
        raise TradingError(f"--out {out}: unknown extension {suffix or '(none)'}; use .csv, .csv.gz or .parquet")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".export.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise TradingError(f"cannot write --out {out}: {exc.strerror or exc}; pass a writable path") from exc
    try:
        _write_export(Path(tmp), suffix, None if suffix == ".parquet" else text(os.linesep), frame)
        Path(tmp).replace(dest)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise TradingError(
            f"cannot write --out {out}: {exc.strerror or exc}; free disk space (or raise the file size limit) or "
            "pass another path; nothing was written"
        ) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return None
