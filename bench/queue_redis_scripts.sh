#!/usr/bin/env bash
# Redis's time per job in each Lua script of the Redis job store (lease, complete, prune), by
# SLOWLOG, driving the scripts straight from bench/queue/scripts.mjs as keel's HTTP pull path
# uses them. The figures behind the script-level steps in docs/benchmarks.md. Then, when
# valgrind is installed, Redis's instructions per job over the same loop (a redis-server run
# under callgrind, counting the loop alone): a figure machine noise does not move, for
# comparing two versions of the scripts.
#
# Usage: bench/queue_redis_scripts.sh [rounds] [jobs]     (defaults 3, 50000)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-3}
JOBS=${2:-50000}
command -v redis-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
(cd bench/queue && npm install --no-audit --no-fund --silent)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
REDIS_PORT=$(free_port)
start_redis "$REDIS_PORT"
export REDIS_PORT
for _ in $(seq "$ROUNDS"); do node bench/queue/scripts.mjs "$JOBS"; done

if command -v valgrind >/dev/null 2>&1; then
  N=${INSTRUCTION_JOBS:-5000}
  OUT=$(mktemp -d)
  PORT=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$OUT/redis" \
    redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
  VALGRIND_PID=$!
  for _ in $(seq 300); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  REDIS_PORT=$PORT CALLGRIND_PID=$VALGRIND_PID node bench/queue/scripts.mjs "$N" >/dev/null
  redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
  wait "$VALGRIND_PID" 2>/dev/null || true
  # The dump taken after the loop is the first numbered part.
  ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$OUT/redis.1")
  echo "Redis instructions per job over lease, complete and prune ($N jobs, callgrind): $((ir / N))"
  rm -rf "$OUT"
fi
