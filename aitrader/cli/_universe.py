"""Shared by ``train`` and ``retrain`` for a universe: the progress bar, the final table, the exit code.

Exit codes (for cron): 0 every symbol ok (registered, promoted, unchanged or skipped), 3 none
failed but some challenger was rejected (lost to its champion, or too few fair rows to compare),
1 any symbol failed (its error is in the table / ``--json``), 4 another retrain holds the lock.
"""

from __future__ import annotations

from typing import Any

import typer

from aitrader.cli._output import console, err_console, print_json

UNIVERSE_HELP = ("Universe: a YAML/CSV file (symbol, data, name template, overrides) or a folder with one "
                 "bar file per symbol; trains every symbol in parallel.")
EXECUTOR_HELP = "Where universe tasks run: process (a local process pool) or dask (dask.distributed)."
JOBS_HELP = "Universe: worker processes (process pool, or the Dask LocalCluster); default: the cores."
SCHEDULER_HELP = "Universe with --executor dask: an existing scheduler, tcp://HOST:8786 (default: a LocalCluster)."


class _Bar:
    """done/total, failures and ETA on stderr (off for --json and when stderr is not a terminal)."""

    def __init__(self, enabled: bool, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        errc = err_console()
        self.bar = Progress(TextColumn(f"{label} {{task.description}}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("failures {task.fields[failures]}"), TimeRemainingColumn(),
                            console=errc, transient=True, disable=not (enabled and errc.is_terminal))
        self.task: Any = None

    def __enter__(self) -> Any:
        self.bar.__enter__()

        def update(done: int, total: int, failures: int) -> None:
            if self.task is None:
                self.task = self.bar.add_task("symbols", total=total, failures=0)
            self.bar.update(self.task, completed=done, failures=failures)

        return update

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)  # type: ignore[arg-type]


def _score(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}"


def render(summary: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=f"{summary['mode']} universe {summary['universe']}: {summary['total']} symbols, "
                    f"{summary['executor']} ({summary.get('scheduler') or summary.get('jobs')}), "
                    f"{summary['elapsed_s']:.1f} s")
    for col in ("symbol", "model", "outcome", "challenger", "champion", "duration s", "detail"):
        t.add_column(col, justify="right" if col in ("challenger", "champion", "duration s") else "left")
    for r in summary["results"]:
        colour = {"failed": "red", "rejected": "yellow", "insufficient": "yellow"}.get(r["outcome"])
        outcome = f"[{colour}]{r['outcome']}[/{colour}]" if colour else r["outcome"]
        detail = r["error"] or r["model_id"] or ""
        t.add_row(r["symbol"], r["name"], outcome, _score(r["challenger_score"]), _score(r["champion_score"]),
                  "-" if r["duration_s"] is None else f"{r['duration_s']:.1f}", detail)
    out = console()
    out.print(t)
    out.print(", ".join(f"{n} {k}" for k, n in sorted(summary["counts"].items())))


def run(universe: str, *, mode: str, as_json: bool, **kwargs: Any) -> None:
    """Run the universe, render it, exit with its code."""
    from aitrader.monitoring.universe import run_universe

    with _Bar(enabled=not as_json, label=mode) as progress:
        summary = run_universe(universe, mode=mode, progress=progress, **kwargs)
    if as_json:
        print_json(summary)
    else:
        render(summary)
    if summary["exit_code"]:
        raise typer.Exit(summary["exit_code"])
