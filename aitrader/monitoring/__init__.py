"""Monitoring of deployed models and champion/challenger retraining.

- ``drift``: PSI and KS of live values against the manifest's training baseline.
- ``accuracy``: MAE, RMSE, hit rate, IC, rank IC of predictions whose outcome is known.
- ``ledger``: read-only access to a run's SQLite ledger.
- ``monitor``: operational metrics, accuracy, drift and alerts of one run's model.
- ``alerts``: the alert rules and their thresholds (``monitoring:`` config section).
- ``report``: the self-contained HTML report with PNG charts.
- ``check``: ``run_monitor``, the one call behind ``aitrader monitor`` (and its persisted state).
- ``lock`` and ``retrain``: cron-safe champion/challenger retraining behind ``aitrader retrain``.

Submodules import numpy/pandas; import them where needed so ``aitrader --help`` stays fast.
"""
