"""Example aitrader plug-in: one feature kind, one model adapter, one strategy (docs/plugins.md)."""

__version__ = "0.1.0"
