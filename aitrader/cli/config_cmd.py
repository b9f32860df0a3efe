"""CLI command ``aitrader config show``: the merged effective configuration and where each value came from."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import typer

from aitrader.cli._output import console, print_json


class Which(StrEnum):
    train = "train"
    trading = "trading"


def show_cmd(
    which: Which | None = typer.Argument(None, help="train (train.yaml) or trading (ml_trading_config.yaml); "
                                         "default: both."),
    config: str | None = typer.Option(None, "--config", help="Config file to read instead of the default "
                                      "(./config/NAME, else the packaged one); needs train or trading."),
    sets: list[str] = typer.Option(None, "--set", help="KEY=VALUE override as a command-line flag would set it, "
                                   "e.g. split.n_folds=3 (value parsed as YAML); repeatable."),
    json_out: bool = typer.Option(False, "--json", help="Print exactly one JSON document on stdout."),
) -> None:
    """Print the effective configuration, each value with its source: default, file, environment or flag."""
    from aitrader.config import TRADING_CONFIG, TRAIN_CONFIG, explain_config
    from aitrader.errors import ConfigError

    files = {Which.train: TRAIN_CONFIG, Which.trading: TRADING_CONFIG}
    if which is None and (config is not None or sets):
        raise ConfigError("--config and --set apply to one file: pass `train` or `trading`, e.g. "
                          "aitrader config show train --config my_train.yaml")
    chosen = [which] if which is not None else [Which.train, Which.trading]
    views = {w.value: explain_config(files[w], config, sets=sets or None) for w in chosen}
    if json_out:
        print_json(views if which is None else views[which.value])
        return
    for name, view in views.items():
        _render(name, view)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return format(value, ".6g")
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": "))


def _render(name: str, view: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    where = f"{view['file']} (packaged defaults)" if view["packaged"] else view["file"]
    out = console()
    out.print(Text.assemble((name, "bold"), f": {where}"), soft_wrap=True)
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("key", no_wrap=True)
    table.add_column("value", no_wrap=True, overflow="ellipsis", max_width=40)  # --json has the whole value
    table.add_column("source", overflow="fold")
    styles = {"default": "dim", "file": "", "environment": "yellow", "flag": "cyan"}
    for key, item in view["values"].items():
        style = styles.get(item["source"].split(" ", 1)[0], "")
        table.add_row(key, Text(_value(item["value"])), Text(item["source"], style=style))
    out.print(table)


def register(app: typer.Typer) -> None:
    """Attach ``config show`` to the root app."""
    group = typer.Typer(help="Inspect the configuration: the effective values and where each came from.",
                        no_args_is_help=True)
    group.command("show")(show_cmd)
    app.add_typer(group, name="config")
