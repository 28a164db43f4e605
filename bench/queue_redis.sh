#!/usr/bin/env bash
# keel's Redis job store vs BullMQ 5 on the same redis-server, in the same run: bulk enqueue
# and processing throughput, same job count, payload and concurrency. BullMQ is driven by
# bench/queue/bench.mjs (one Worker); keel by the same driver over HTTP (the release binary
# with queue.backend = "redis" on that Redis, one request-serving thread as Redis has one) and
# in process (crates/keel-redis/benches/queue_store.rs: direct store calls, and the in-process
# Rust worker with a no-op handler). Redis is flushed before every measurement. Each
# processing run also prints the CPU time per job of Redis, keel and the Node driver (stderr).
# Last, when valgrind is installed, keel's own instructions per job on the HTTP pull path (the
# release binary under callgrind, 10,000 jobs): a figure machine noise does not move.
#
# Usage: bench/queue_redis.sh [rounds] [jobs] [concurrency]     (defaults 3, 50000, 100)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-3}
JOBS=${2:-50000}
CONCURRENCY=${3:-100}

prepare_bullmq_comparison
cargo bench -q -p keel-redis --bench queue_store --no-run 2>/dev/null
STORE_BENCH=$(ls -t target/release/deps/queue_store-* | grep -v '\.d$' | head -1)
KEEL=$PWD/target/release/keel
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
rate() { awk '{print $(NF-1)}'; }

REDIS_PORT=$(free_port)
start_redis "$REDIS_PORT"
export REDIS_PORT
flush() { redis-cli -p "$REDIS_PORT" flushall >/dev/null; }
REDIS_PID=$(redis-cli -p "$REDIS_PORT" info server | awk -F: '/^process_id/ {print $2}' | tr -d '\r')
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
# Runs the Node driver command "$@" (a processing run; its output passes through) and prints
# to stderr the CPU time per job it took, and that Redis and keel (when running) took meanwhile.
cpu_per_job() {
  local r0 r1 k0=0 k1=0
  local keel_up=""
  if [ -n "${KEEL_PID:-}" ] && kill -0 "$KEEL_PID" 2>/dev/null; then keel_up=1; fi
  r0=$(cpu_seconds "$REDIS_PID"); if [ -n "$keel_up" ]; then k0=$(cpu_seconds "$KEEL_PID"); fi
  /usr/bin/time -o "$WORK/time" -f '%U %S' "$@"
  r1=$(cpu_seconds "$REDIS_PID"); if [ -n "$keel_up" ]; then k1=$(cpu_seconds "$KEEL_PID"); fi
  awk -v r0="$r0" -v r1="$r1" -v k0="$k0" -v k1="$k1" -v n="$JOBS" '{
    printf "cpu per job: redis %.0f us, keel %.0f us, driver %.0f us\n",
      (r1 - r0) * 1e6 / n, (k1 - k0) * 1e6 / n, ($1 + $2) * 1e6 / n }' "$WORK/time" >&2
}

write_bench_config "$WORK/keel.toml"
printf '[queue]\nbackend = "redis"\n[redis]\nurl = "redis://127.0.0.1:%s"\n' "$REDIS_PORT" >> "$WORK/keel.toml"
export KEEL_TOKEN=$BENCH_TOKEN

be=(); bp=(); ke=(); kp=(); sa=(); sd=(); si=()
for round in $(seq "$ROUNDS"); do
  flush; b1=$(node bench/queue/bench.mjs bullmq enqueue "$JOBS" "$CONCURRENCY" | rate)
  b2=$(cpu_per_job node bench/queue/bench.mjs bullmq process "$JOBS" "$CONCURRENCY" | rate)
  flush; start_keel
  k1=$(node bench/queue/bench.mjs keel enqueue "$JOBS" "$CONCURRENCY" | rate)
  k2=$(cpu_per_job node bench/queue/bench.mjs keel process "$JOBS" "$CONCURRENCY" | rate)
  kill "$KEEL_PID"; wait "$KEEL_PID" 2>/dev/null || true
  out=$("$STORE_BENCH" "$JOBS" "$CONCURRENCY")
  s1=$(awk '/^add/ {print int($2)}' <<<"$out"); s2=$(awk '/^direct/ {print int($2)}' <<<"$out"); s3=$(awk '/^in-process/ {print int($2)}' <<<"$out")
  be+=("$b1"); bp+=("$b2"); ke+=("$k1"); kp+=("$k2"); sa+=("$s1"); sd+=("$s2"); si+=("$s3")
  echo "round $round: enqueue bullmq $b1 keel http $k1 store $s1 | process bullmq $b2 keel http $k2 direct $s2 in-process $s3 jobs/s"
done
mbe=$(median "${be[@]}"); mbp=$(median "${bp[@]}")
for row in "enqueue (HTTP, bulk of 1,000):$(median "${ke[@]}"):$mbe:2" "enqueue (store, bulk of 1,000):$(median "${sa[@]}"):$mbe:2" \
           "process (HTTP pull workers):$(median "${kp[@]}"):$mbp:3" "process (direct store calls):$(median "${sd[@]}"):$mbp:3" \
           "process (in-process worker):$(median "${si[@]}"):$mbp:3"; do
  IFS=: read -r what keel bull target <<<"$row"
  echo "$what median bullmq $bull, keel $keel jobs/s, keel/bullmq = $(ratio "$keel" "$bull") (target >= $target)"
done

if command -v valgrind >/dev/null 2>&1; then
  N=${INSTRUCTION_JOBS:-10000}
  flush
  KEEL_PORT=$(free_port)
  rm -rf "$WORK/data"
  KEEL_SERVER_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$WORK/keel.cg" \
    "$KEEL" serve --config "$WORK/keel.toml" --listen "127.0.0.1:$KEEL_PORT" --data-dir "$WORK/data" >/dev/null 2>&1 &
  VALGRIND_PID=$!
  export KEEL_URL="http://127.0.0.1:$KEEL_PORT"
  for _ in $(seq 300); do curl -fs "$KEEL_URL/ready" >/dev/null 2>&1 && break; sleep 0.2; done
  node bench/queue/bench.mjs keel enqueue "$N" "$CONCURRENCY" >/dev/null
  # Count the processing run alone: zero the counters before it, dump them after it.
  callgrind_control -z "$VALGRIND_PID" >/dev/null 2>&1
  node bench/queue/bench.mjs keel process "$N" "$CONCURRENCY" >/dev/null
  callgrind_control -d "$VALGRIND_PID" >/dev/null 2>&1
  kill "$VALGRIND_PID"; wait "$VALGRIND_PID" 2>/dev/null || true
  awk -v n="$N" '/^(summary|totals):/ {printf "keel instructions per job, HTTP pull path (%d jobs, callgrind): %.0f\n", n, $2 / n; exit}' "$WORK/keel.cg.1"
fi
