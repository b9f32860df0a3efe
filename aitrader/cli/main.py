"""Entry point of the ``aitrader`` command and its single error boundary.

Every command module exposes ``register(app)``; heavy libraries are imported inside the
command functions so that ``aitrader --help`` stays fast (a test checks that pandas, numpy,
lightgbm, xgboost, sklearn and onnxruntime are not imported by it).
"""

from __future__ import annotations

import errno
import logging
import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from aitrader import __version__
from aitrader.cli._params import lazy_param_coercion
from aitrader.errors import AitraderError

log = logging.getLogger("aitrader")


class AitraderGroup(TyperGroup):
    """Click group that turns library errors into one clean line on stderr."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click Context
        try:
            return super().invoke(ctx)
        except typer.BadParameter as exc:
            exc.message = with_suggestion(exc.message)  # a choice typo: "did you mean 'lightgbm'?"
            raise
        except AitraderError as exc:
            # The traceback goes to the --log-file only (DEBUG); stderr gets the one line below.
            log.debug("command failed: %s", exc, exc_info=True)
            # One line, always: several problems (e.g. one per broken data rule) are joined by "; ".
            message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            typer.echo(f"error: {message}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:
            # The machine, not the code, refused: full disk, file size limit, read-only or too-long name.
            fix = ENVIRONMENT_ERRORS.get(exc.errno or 0)
            if fix is None:
                raise  # anything else is a bug: its traceback is wanted
            log.debug("command failed: %s", exc, exc_info=True)
            where = f" ({exc.filename})" if exc.filename else ""
            typer.echo(f"error: {exc.strerror or exc}{where}; {fix}".replace("\n", " "), err=True)
            ctx.exit(1)


def with_suggestion(message: str) -> str:
    """``'APPL' is not one of 'aapl', 'msft'.`` + `` Did you mean 'aapl'?`` (closest choice, any case)."""
    import difflib
    import re

    match = re.search(r"(?P<value>'[^']*'|\"[^\"]*\") is not one of (?P<choices>.+?)\.?$", message)
    if match is None:
        return message
    value = match["value"][1:-1]
    choices = re.findall(r"'([^']*)'", match["choices"])
    close = difflib.get_close_matches(value.lower(), [c.lower() for c in choices], n=1, cutoff=0.5)
    if not close:
        return message
    return f"{message.rstrip()} Did you mean {choices[[c.lower() for c in choices].index(close[0])]!r}?"


def _flags_take_no_value() -> None:
    """Help shows ``--json``, not ``--json <bool>``: typer (0.2x) prints a type column for every
    option, flags included, which reads as if a flag took a value. A flag's type is left blank."""
    from typer.core import TyperOption

    original = TyperOption.display_type_rich
    if getattr(original, "aitrader_flags", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if (self.is_flag or self.count) and self.metavar is None:
            return None
        return original(self, ctx)

    display_type_rich.aitrader_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_take_no_value()
lazy_param_coercion()  # no pydantic for str options or absent ones: ~80 ms of short commands (cli/_params.py)


#: OS errors a command cannot prevent, with the fix each needs: one ``error:`` line, never a traceback.
ENVIRONMENT_ERRORS = {
    errno.ENOSPC: "free disk space and run the command again (nothing half-written is kept)",
    errno.EDQUOT: "free space within your disk quota and run the command again",
    errno.EFBIG: "the file size limit (ulimit -f) was reached; raise it and run the command again",
    errno.EROFS: "the file system is read-only; write to another folder",
    errno.ENAMETOOLONG: "a file name is too long; pass a shorter name (e.g. --out PATH)",
}


app = typer.Typer(
    cls=AitraderGroup,
    name="aitrader",
    help="Model lifecycle toolkit for algorithmic trading: train, register, deploy, paper-trade, "
    "monitor and retrain gradient-boosted models on OHLCV bars.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"aitrader {__version__}")
        raise typer.Exit()


def setup_logging(verbose: bool, log_file: str | None) -> None:
    """Log to stderr (INFO with --verbose, WARNING otherwise) and optionally to a rotating file.

    The file gets everything (DEBUG), including the traceback of a failed command; stderr never
    shows a traceback for an expected error, even with --verbose. A bare file name for
    ``log_file`` goes under ``logs/``; a path is used as given.
    """
    import shlex

    root = logging.getLogger("aitrader")
    for old in list(root.handlers):  # a second call (tests, embedding) must not leak open files
        root.removeHandler(old)
        old.close()
    root.setLevel(logging.DEBUG)
    root.propagate = False
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.INFO if verbose else logging.WARNING)
    stderr.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(stderr)
    if log_file:
        path = Path(log_file)
        if path.parent == Path():
            path = Path("logs") / path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = _log_file_handler(path)
        except OSError as exc:
            raise AitraderError(
                f"cannot open log file {path}: {exc.strerror}; pass a writable --log-file path"
            ) from exc
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        log.debug("run: %s", shlex.join(["aitrader", *sys.argv[1:]]))
        failure = getattr(handler, "failure", None)
        if failure is not None:  # the first line did not reach the file (full disk, ...)
            raise AitraderError(
                f"cannot write log file {path}: {failure}; free space or pass another --log-file"
            )
        handler.announce = True  # type: ignore[attr-defined]


def _log_file_handler(path: Path) -> logging.Handler:
    """A rotating file handler whose write errors become one warning line, not a traceback.

    logging's default ``handleError`` prints "--- Logging error ---" and a traceback on stderr for
    every record and the command still exits 0; here the first failure is reported once, in one
    line, and the handler detaches itself (the command's own result is not affected)."""
    from logging.handlers import RotatingFileHandler

    class LogFileHandler(RotatingFileHandler):
        failure: str | None = None
        announce = False  # the first line is checked by setup_logging, which raises instead

        def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
            exc = sys.exc_info()[1]
            reason = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__) if exc else "unknown error"
            first = self.failure is None
            self.failure = self.failure or str(reason)
            if first and self.announce:
                try:
                    sys.stderr.write(f"warning: cannot write log file {self.baseFilename}: {reason}; "
                                     "no longer logging to it\n")
                except (OSError, ValueError):
                    pass
            logging.getLogger("aitrader").removeHandler(self)

    return LogFileHandler(path, maxBytes=5_000_000, backupCount=5, encoding="utf-8")


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details to stderr."),
    log_file: str | None = typer.Option(
        None, "--log-file", help="Also log to this rotating file (a bare name goes under logs/)."
    ),
) -> None:
    """Model lifecycle toolkit for algorithmic trading."""
    setup_logging(verbose, log_file)


def _register_commands() -> None:
    from aitrader.cli import backtest, config_cmd, data, features, monitor, registry, serve, trade, train

    for module in (data, features, train, registry, trade, backtest, monitor, config_cmd, serve):
        module.register(app)
    from aitrader.cli import plugins_cmd

    plugins_cmd.register(app)
    from aitrader.cli import bus

    bus.register(app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    from aitrader.cli._exit import mark_process_entry

    mark_process_entry()  # a command that closed its resources may skip the exit's collections (cli/_exit.py)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
