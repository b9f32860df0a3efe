"""``python -m aitrader``: the same command as the ``aitrader`` script."""

from aitrader.cli.main import app

if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess test
    from aitrader.cli._exit import mark_process_entry

    mark_process_entry()  # as the console script does (aitrader/cli/_exit.py)
    app(prog_name="aitrader")
