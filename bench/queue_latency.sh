#!/usr/bin/env bash
# Add → start latency at a steady rate, keel vs BullMQ 5 side by side on this machine: a Node
# producer adds one job per call at <rate> jobs/s for <seconds>, workers in the same process
# note when each starts (bench/queue/latency.mjs). BullMQ runs on a redis-server this script
# starts; keel is the release binary with a fresh data directory.
#
# Usage: bench/queue_latency.sh [rounds] [rate] [seconds]     (defaults 3, 1000, 10)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-3}
RATE=${2:-1000}
SECONDS_PER_RUN=${3:-10}

prepare_bullmq_comparison
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

REDIS_PORT=$(free_port)
start_redis "$REDIS_PORT"
export REDIS_PORT
TOKEN=$BENCH_TOKEN
write_bench_config "$WORK/keel.toml"
export KEEL_TOKEN=$TOKEN

p99() { awk '{for (i = 1; i <= NF; i++) if ($i == "p99") print $(i + 1)}'; }
bp=(); kp=()
for round in $(seq "$ROUNDS"); do
  redis-cli -p "$REDIS_PORT" flushall >/dev/null
  b=$(node bench/queue/latency.mjs bullmq "$RATE" "$SECONDS_PER_RUN")
  rm -rf "$WORK/data"
  KEEL_PORT=$(free_port)
  KEEL_SERVER_WORKER_THREADS=1 target/release/keel serve --config "$WORK/keel.toml" --listen "127.0.0.1:$KEEL_PORT" --data-dir "$WORK/data" >/dev/null 2>&1 &
  KEEL_PID=$!
  export KEEL_URL="http://127.0.0.1:$KEEL_PORT"
  for _ in $(seq 100); do curl -fs "$KEEL_URL/ready" >/dev/null 2>&1 && break; sleep 0.05; done
  k=$(node bench/queue/latency.mjs keel "$RATE" "$SECONDS_PER_RUN")
  kill "$KEEL_PID"; wait "$KEEL_PID" 2>/dev/null || true
  echo "round $round: $b | $k"
  bp+=("$(echo "$b" | p99)"); kp+=("$(echo "$k" | p99)")
done
awk -v k="$(median "${kp[@]}")" -v b="$(median "${bp[@]}")" -v r="$RATE" \
  'BEGIN { printf "p99 add -> start at %d jobs/s, median of rounds: keel %.2f ms, bullmq %.2f ms (target: keel <= 5 ms)\n", r, k, b }'
