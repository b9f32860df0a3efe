"""``python -m aitrader``: the same command as the ``aitrader`` script."""

from aitrader.cli.main import app

if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess test
    app(prog_name="aitrader")
