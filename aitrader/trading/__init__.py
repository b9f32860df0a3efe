"""Paper trading: bars -> streaming features -> model -> strategy -> signal handler -> paper broker -> ledger.

Entry points: :func:`aitrader.trading.service.paper_trade`, ``run_status``, ``export_table``;
the loop is :class:`aitrader.trading.engine.Engine`. See docs/trading.md.
"""
