#!/usr/bin/env bash
# keel's job queue vs BullMQ 5, side by side on this machine: bulk enqueue and processing
# throughput, same job count, payload and concurrency, the same Node.js client runtime driving
# both (bench/queue/bench.mjs); and keel's in-process Rust worker (a no-op handler, the same
# job count and concurrency; crates/keel-queue/benches/store.rs). BullMQ runs on a
# redis-server this script starts on a free port; keel is the release binary with a fresh data directory (SQLite, default durability) and, as
# Redis executes commands on one thread, one request-serving thread
# (KEEL_SERVER_WORKER_THREADS=1).
#
# Usage: bench/queue.sh [rounds] [jobs] [concurrency]     (defaults 3, 50000, 100)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-3}
JOBS=${2:-50000}
CONCURRENCY=${3:-100}

prepare_bullmq_comparison
cargo bench -q -p keel-queue --bench store --no-run 2>/dev/null
KEEL=$PWD/target/release/keel
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
rate() { awk '{print $(NF-1)}'; }

REDIS_PORT=$(free_port)
start_redis "$REDIS_PORT"
export REDIS_PORT
TOKEN=$BENCH_TOKEN
write_bench_config "$WORK/keel.toml"
export KEEL_TOKEN=$TOKEN

be=(); bp=(); ke=(); kp=(); ki=()
for round in $(seq "$ROUNDS"); do
  redis-cli -p "$REDIS_PORT" flushall >/dev/null
  b1=$(node bench/queue/bench.mjs bullmq enqueue "$JOBS" "$CONCURRENCY" | rate)
  b2=$(node bench/queue/bench.mjs bullmq process "$JOBS" "$CONCURRENCY" | rate)
  start_keel
  k1=$(node bench/queue/bench.mjs keel enqueue "$JOBS" "$CONCURRENCY" | rate)
  k2=$(node bench/queue/bench.mjs keel process "$JOBS" "$CONCURRENCY" | rate)
  kill "$KEEL_PID"; wait "$KEEL_PID" 2>/dev/null || true
  k3=$(cargo bench -q -p keel-queue --bench store -- "$JOBS" "$CONCURRENCY" 2>/dev/null | awk '/in-process/ {print int($2)}')
  be+=("$b1"); bp+=("$b2"); ke+=("$k1"); kp+=("$k2"); ki+=("$k3")
  echo "round $round: enqueue bullmq $b1 keel $k1 jobs/s | process bullmq $b2 keel http $k2 in-process $k3 jobs/s"
done
mbe=$(median "${be[@]}"); mke=$(median "${ke[@]}"); mbp=$(median "${bp[@]}"); mkp=$(median "${kp[@]}"); mki=$(median "${ki[@]}")
awk -v a="$mke" -v b="$mbe" 'BEGIN { printf "enqueue median: bullmq %d, keel %d jobs/s, keel/bullmq = %.2f (target >= 2)\n", b, a, a/b }'
awk -v a="$mkp" -v b="$mbp" 'BEGIN { printf "process median (HTTP pull workers): bullmq %d, keel %d jobs/s, keel/bullmq = %.2f (target >= 3)\n", b, a, a/b }'
awk -v a="$mki" -v b="$mbp" 'BEGIN { printf "process median (in-process worker): bullmq %d, keel %d jobs/s, keel/bullmq = %.2f (target >= 3)\n", b, a, a/b }'
