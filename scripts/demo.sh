#!/usr/bin/env bash
# Quick-start command 1: set up .venv if needed, then run the whole model lifecycle on the
# built-in sample (daily AAPL 2000-2013 from bokeh_sampledata; no network needed after install).
# Everything it writes goes under demo/ (git-ignored); rerunning it starts from a clean demo/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
rm -rf demo && mkdir -p demo
export AITRADER_REGISTRY="$ROOT/demo/models"
step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

step "1/8 write the built-in sample: daily AAPL bars, split-adjusted"
aitrader data sample --symbol AAPL --out demo/AAPL.csv
step "2/8 check the bars"
aitrader data check demo/AAPL.csv
step "3/8 build the default feature set (batch evaluator)"
aitrader features build --data demo/AAPL.csv --out demo/AAPL_features.parquet
step "4/8 train LightGBM with purged walk-forward evaluation (holdout kept unseen)"
aitrader train --data demo/AAPL.csv --symbol AAPL --model lightgbm --out demo/artifacts/aapl_lgbm
step "5/8 register the artifact (SHA256 of every file)"
aitrader register demo/artifacts/aapl_lgbm --name aapl_lgbm --tag source=demo
step "6/8 deploy to production after checks (hashes, load, sample reproduction, feature contract)"
aitrader deploy --model-id aapl_lgbm --reason "quick-start demo"
aitrader list
aitrader verify
aitrader history aapl_lgbm
step "7/8 paper-trade the production model on the bars after its training period"
aitrader paper-trade --run-id demo --runs-dir demo/runs --speed 0
step "8/8 monitor the run: accuracy, drift and alerts, with an HTML report"
rc=0
aitrader monitor --run demo --runs-dir demo/runs --report demo/report.html || rc=$?
case "$rc" in
    0) echo "monitor: healthy (exit 0)" >&2 ;;
    3) echo "monitor: alerts fired (exit 3; in cron this is what pages you)" >&2 ;;
    *) exit "$rc" ;;
esac
printf '\nDone. Report: %s\nRun ledger: %s\nRegistry:   %s\n' \
    "$ROOT/demo/report.html" "$ROOT/demo/runs/demo/ledger.db" "$AITRADER_REGISTRY" >&2
