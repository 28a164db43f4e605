#!/usr/bin/env bash
# keel's job store under a long steady load with the default retention (keep the newest 1,000
# completed jobs per queue): pushes <jobs> jobs through the release keel (HTTP pull workers,
# bench/queue/soak.mjs) and samples keel's RSS and the store's size on disk (queue.db and its
# WAL) every <every> processed jobs. Both should stay flat once retention kicks in.
#
# Usage: bench/queue_soak.sh [jobs] [every]     (defaults 1000000, 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
JOBS=${1:-1000000}
EVERY=${2:-100000}

cargo build --release -q -p keel-server
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
TOKEN=$BENCH_TOKEN
write_bench_config "$WORK/keel.toml"
PORT=$(free_port)
KEEL_SERVER_WORKER_THREADS=1 target/release/keel serve --config "$WORK/keel.toml" --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >/dev/null 2>&1 &
KEEL_PID=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break; sleep 0.05; done

sample() {
  local rss store
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$KEEL_PID/status")
  store=$(cat "$WORK"/data/queue.db* 2>/dev/null | wc -c)
  awk -v n="$1" -v r="$rss" -v s="$store" 'BEGIN { printf "%10s  %8.1f MiB  %8.1f MiB\n", n, r / 1024, s / 1048576 }'
}
printf '%10s  %12s  %12s\n' processed "keel RSS" "store size"
sample 0
started=$(date +%s%N)
KEEL_URL="http://127.0.0.1:$PORT" KEEL_TOKEN=$TOKEN node bench/queue/soak.mjs "$JOBS" "$EVERY" |
  while read -r what n; do
    if [ "$what" = processed ]; then sample "$n"; fi
  done
elapsed=$(( ($(date +%s%N) - started) / 1000000 ))
sleep 2   # one more maintenance round prunes the last batch
sample "+2s"
awk -v n="$JOBS" -v ms="$elapsed" 'BEGIN { printf "%d jobs in %.1f s: %d jobs/s\n", n, ms / 1000, n * 1000 / ms }'
