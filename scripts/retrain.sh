#!/usr/bin/env bash
# Cron wrapper for aitrader's model lifecycle jobs (see docs/operations.md).
#
#   scripts/retrain.sh nightly   retrain the production model; promote the challenger if better
#   scripts/retrain.sh hourly    monitor the latest paper-trade run; on an alert, retrain --if-alert
#
# Settings (environment): AITRADER_MODEL (registry name, default aapl_lgbm), AITRADER_METRIC
# (ic | sharpe | mae, default ic), AITRADER_MIN_IMPROVEMENT (default 0.005), AITRADER_TRAIN_CONFIG
# (default config/train.yaml), AITRADER_ON_ALERT (retrain | notify, default retrain),
# AITRADER_HOME (project folder, default the folder above scripts/), AITRADER_BIN (the aitrader command).
#
# Exit status for cron (non-zero makes cron mail the output):
#   0  done: retrained/promoted/kept/unchanged/skipped, healthy, or another retrain held the lock
#   1  an error (aitrader printed `error: ...`); 3  hourly: an alert fired and AITRADER_ON_ALERT=notify
set -uo pipefail

SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="${AITRADER_HOME:-$SCRIPTS/..}"     # the project folder: config/, models/, runs/, logs/
cd "$ROOT" || exit 1
AITRADER="${AITRADER_BIN:-$SCRIPTS/../.venv/bin/aitrader}"
MODEL="${AITRADER_MODEL:-aapl_lgbm}"
METRIC="${AITRADER_METRIC:-ic}"
MARGIN="${AITRADER_MIN_IMPROVEMENT:-0.005}"
CONFIG="${AITRADER_TRAIN_CONFIG:-config/train.yaml}"
ON_ALERT="${AITRADER_ON_ALERT:-retrain}"
mkdir -p logs

note() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $*" >> logs/cron.log; }

run_retrain() {  # $@: extra retrain flags
    local out rc
    out="$("$AITRADER" retrain --name "$MODEL" --config "$CONFIG" --metric "$METRIC" \
        --min-improvement "$MARGIN" --promote-if-better --json "$@")"
    rc=$?
    # One JSON document per line (JSON strings hold no raw newline, so dropping them is safe).
    [ -n "$out" ] && printf '%s\n' "${out//$'\n'/}" >> logs/retrain.jsonl
    case $rc in
        0) note "retrain $MODEL: done (see logs/retrain.log)"; return 0 ;;
        4) note "retrain $MODEL: another retrain holds the lock; skipped this time"; return 0 ;;
        *) note "retrain $MODEL: FAILED with exit code $rc"; echo "aitrader retrain failed ($rc); see logs/retrain.log" >&2
           return 1 ;;
    esac
}

nightly() {
    run_retrain
}

hourly() {
    local out rc
    out="$("$AITRADER" monitor --latest --model-id "$MODEL" --json --report reports/monitor.html)"
    rc=$?
    [ -n "$out" ] && printf '%s\n' "$out" > logs/monitor_last.json
    case $rc in
        0) note "monitor: healthy"; return 0 ;;
        3) note "monitor: ALERT (see logs/monitor_last.json, reports/monitor.html)"
           if [ "$ON_ALERT" = "retrain" ]; then
               run_retrain --if-alert
           else
               echo "aitrader monitor raised an alert; see $ROOT/reports/monitor.html" >&2
               return 3
           fi ;;
        *) note "monitor: FAILED with exit code $rc"; echo "aitrader monitor failed ($rc)" >&2; return 1 ;;
    esac
}

case "${1:-}" in
    nightly) nightly ;;
    hourly) hourly ;;
    *) echo "usage: $0 nightly|hourly" >&2; exit 2 ;;
esac
